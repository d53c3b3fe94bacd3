"""Commented starter recipes written by `llmctl init`."""

PRETRAIN = """\
# A starter recipe (written by `llmctl init`). Check it with `llmctl validate`, preview with `llmctl plan`,
# run with `llmctl run`. Every key is described in `llmctl schema`; unknown keys are errors.
name: my-model            # the run folder is runs/<name>
seed: 42                  # python/numpy/torch seed for every stage
dtype: auto               # auto picks fp32 on CPUs without native bf16, bf16/fp16 on capable GPUs

stages:
  - type: pretrain        # train a causal LM with the Hugging Face Trainer
    model:
      # from scratch: any transformers config fields (model_type defaults to gpt2) ...
      config: {model_type: gpt2, n_layer: 4, n_head: 4, n_embd: 256, n_positions: 512}
      # ... or continue pretraining existing weights instead:
      # init: gpt2            # a hub id, a folder, 'previous' or 'stage:NAME'
    tokenizer:
      vocab_size: 8192    # a byte-level BPE trained on the corpus; or `path: gpt2` for an existing one
    data:
      path: data/*.jsonl  # .jsonl/.json/.txt/.csv/.parquet, globs allowed
      columns: {text: text}
      validation: 0.05    # held-out share (or a row count) for eval loss / perplexity
    block_size: 256       # tokens per training sequence
    train:
      max_steps: 1000
      batch_size: 16
      grad_accum: 1
      lr: 5.0e-4
      scheduler: cosine
      warmup_steps: 100
      weight_decay: 0.1
      save_steps: 200     # resumable checkpoints; a killed run resumes from the last one
    samples: ["Once upon a time"]   # generated after training, shown in the summary
"""

SFT = """\
# A starter recipe (written by `llmctl init --template sft`): LoRA fine-tuning of an existing model on
# question/answer pairs, then a reward model from the result. `llmctl schema` describes every key.
name: my-sft
seed: 42
dtype: auto

stages:
  - type: sft
    model: facebook/opt-125m          # a hub id or a model folder
    data:
      path: data/qa                   # a Deep Lake dataset, a .jsonl/.csv/.parquet file, or demo://instructions
      format: prompt_completion       # text | prompt_completion | instruction | chat
      columns: {prompt: question, completion: answer}   # {name the format expects: your column}
      template: "Question: {prompt}\\n\\nAnswer: {completion}"
      completion_only: true           # loss on the answer only
      validation: 0.05
    peft: {method: lora, r: 16, alpha: 32, dropout: 0.05}   # method: none for full fine-tuning
    max_length: 512
    packing: false
    train: {epochs: 3, batch_size: 8, lr: 2.0e-4, scheduler: cosine, warmup_ratio: 0.03, save_steps: 200}
    samples: ["Question: What is LoRA?\\n\\nAnswer:"]

  - type: reward                      # optional: a reward model for RLHF, starting from the SFT model
    model: previous
    data: {path: data/preferences, format: preference}   # prompt, chosen, rejected
    train: {epochs: 1, batch_size: 8, lr: 1.0e-5}
"""

TEMPLATES = {"pretrain": PRETRAIN, "sft": SFT}
