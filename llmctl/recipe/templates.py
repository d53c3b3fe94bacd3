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

DPO = """\
# A starter recipe (written by `llmctl init --template dpo`): LoRA SFT, then Direct Preference Optimization on
# pairs of answers people preferred — no reward model, no RL loop. `llmctl schema` describes every key.
name: my-dpo
seed: 42
dtype: auto

stages:
  - type: sft
    model: facebook/opt-125m          # a hub id or a model folder
    data:
      path: data/qa                   # a Deep Lake dataset or a .jsonl/.csv/.parquet file
      format: prompt_completion
      columns: {prompt: question, completion: answer}
      template: "Question: {prompt}\\n\\nAnswer: {completion}"
      completion_only: true
    peft: {method: lora, r: 16, alpha: 32}
    train: {epochs: 2, batch_size: 8, lr: 2.0e-4}

  - type: dpo
    model: previous                   # the SFT model; its frozen copy is the reference (LoRA: the adapter off)
    algorithm: dpo                    # dpo | ipo | kto | orpo | simpo
    beta: 0.1                         # how far the policy may move from the reference
    data: {path: data/preferences, format: preference}   # prompt, chosen, rejected
    peft: {method: lora, r: 16, alpha: 32}
    train: {epochs: 1, batch_size: 8, lr: 5.0e-6}
    eval_set:                         # exact match before and after (and at every eval_steps)
      path: data/qa_test.jsonl
      columns: {prompt: question, completion: answer}
      template: "Question: {prompt}\\n\\nAnswer: {completion}"
"""

RLHF = """\
# A starter recipe (written by `llmctl init --template rlhf`): SFT, a reward model, then GRPO against it plus a
# verifiable check of your own (any Python function `fn(prompts, completions, **columns) -> [float]`), with a KL
# penalty to the SFT model. `llmctl schema` describes every key.
name: my-rlhf
seed: 42
dtype: auto

stages:
  - type: sft
    model: facebook/opt-125m
    data:
      path: data/qa
      format: prompt_completion
      columns: {prompt: question, completion: answer}
      template: "Question: {prompt}\\n\\nAnswer: {completion}"
      completion_only: true
    peft: {method: lora, r: 16, alpha: 32}
    train: {epochs: 2, batch_size: 8, lr: 2.0e-4}

  - type: reward
    name: rm
    model: previous
    data: {path: data/preferences, format: preference}   # prompt, chosen, rejected
    train: {epochs: 1, batch_size: 8, lr: 1.0e-5}

  - type: ppo
    algorithm: grpo                   # ppo (value model) | rloo | grpo
    model: stage:sft
    data:
      path: data/qa
      format: prompt                  # prompts only; `answer` rides along for the check below
      columns: {prompt: question}
      template: "Question: {prompt}\\n\\nAnswer:"
    rewards:
      - {model: stage:rm}                               # the learned reward model
      - {builtin: exact_match, column: answer, weight: 2.0}   # or {function: my_rewards.py:score}
    num_generations: 4
    response_length: 64
    kl: {init: 0.05}
    train: {batch_size: 8, lr: 1.0e-5}
"""

CHAT = """\
# A starter recipe (written by `llmctl init --template chat`): a chat model fine-tuned on conversations
# (`messages`: a list of {role, content}), loss on the assistant turns only, published to a registry that
# `llmctl serve --registry models --name my-chat` serves over an OpenAI-compatible API.
name: my-chat
seed: 42
dtype: auto

stages:
  - type: sft
    model: facebook/opt-125m
    data:
      path: data/conversations        # rows with `messages` (ShareGPT's from/value are read too)
      format: chat
      chat_template: chatml           # or the tokenizer's own (leave it out), or a Jinja template
      completion_only: true           # assistant turns only
    peft: {method: lora, r: 16, alpha: 32}
    max_length: 1024
    train: {epochs: 2, batch_size: 4, grad_accum: 4, lr: 2.0e-4, save_steps: 200}
    samples: ["Hello! What can you do?"]

  - type: deploy
    model: previous                   # the adapter is merged into its base
    registry: models
    model_name: my-chat
"""

TEMPLATES = {"pretrain": PRETRAIN, "sft": SFT, "dpo": DPO, "rlhf": RLHF, "chat": CHAT}
