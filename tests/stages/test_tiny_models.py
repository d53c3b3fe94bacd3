"""Tiny models of the course's real architectures (what `--smoke` builds): same classes and module names as
the full models, tokenizers of the same family with the family's special-token layout."""

from __future__ import annotations

from pathlib import Path

from llmctl.models import tiny

TEXTS = ["Question: What is the capital of France?\n\nAnswer: Paris.", "The river Nile flows through Cairo."] * 20


def test_tiny_opt_keeps_opt_modules_and_its_bos_layout(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny.folder_for("facebook/opt-1.3b", "causal_lm", TEXTS, tmp_path)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert type(model).__name__ == "OPTForCausalLM" and {"q_proj", "v_proj", "fc1", "fc2"} <= names
    assert model.config.hidden_size == tiny.TINY["hidden"] and model.config.num_hidden_layers == tiny.TINY["layers"]
    ids = tokenizer("Question: hi")["input_ids"]
    assert ids[0] == 2 == tokenizer.bos_token_id == model.config.bos_token_id  # OPT prepends </s> (id 2)
    assert tokenizer.pad_token_id == 1 == model.config.pad_token_id
    assert tiny.folder_for("facebook/opt-1.3b", "causal_lm", TEXTS, tmp_path) == folder  # built once, by content
    assert tiny.folder_for("facebook/opt-1.3b", "causal_lm", TEXTS + ["new"], tmp_path) != folder


def test_tiny_deberta_v2_is_an_encoder_with_a_unigram_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tiny.folder_for("microsoft/deberta-v3-base", "base", TEXTS, tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(model).__name__ == "DebertaV2ForSequenceClassification"
    assert model.config.pooler_hidden_size == model.config.hidden_size == tiny.TINY["hidden"]
    ids = tokenizer("the river")["input_ids"]
    assert tokenizer.convert_ids_to_tokens([ids[0], ids[-1]]) == ["[CLS]", "[SEP]"] and tokenizer.pad_token_id == 0
    assert tokenizer.convert_ids_to_tokens(ids[1])[0] == "▁"  # sentencepiece-style pieces


def test_a_llama_family_tokenizer_prepends_bos() -> None:
    tokenizer = tiny.train_family_tokenizer(tiny.FAMILIES["llama"], TEXTS, vocab_size=200)
    ids = tokenizer("Paris")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 1 and tokenizer.unk_token_id == 0


def test_qlora_style_merge_into_a_reloaded_base_equals_the_in_memory_merge(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from llmctl.models import adapters
    from llmctl.spec.training import PeftSpec

    base = tiny.folder_for("facebook/opt-1.3b", "causal_lm", TEXTS, tmp_path)
    model = adapters.apply(AutoModelForCausalLM.from_pretrained(base), PeftSpec(target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    reloaded = adapters.merged_into(model, AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapter", "fp32")
    in_memory = adapters.merged(model)
    for (name, a), (_, b) in zip(reloaded.state_dict().items(), in_memory.state_dict().items(), strict=False):
        assert torch.allclose(a, b, atol=1e-6), name


def test_pad_each_truncates_pads_and_masks_padding_out_of_the_loss() -> None:
    from datasets import Dataset

    from llmctl.models import causal_lm

    tokenizer = tiny.train_family_tokenizer(tiny.FAMILIES["opt"], TEXTS, vocab_size=300)
    rows = causal_lm.tokenize_padded(
        Dataset.from_dict({"text": ["short", "a much longer document " * 20]}), tokenizer, 16
    )
    short, long = rows[0], rows[1]
    assert len(short["input_ids"]) == len(long["input_ids"]) == 16
    assert short["labels"][short["attention_mask"].index(0)] == -100 and -100 not in long["labels"]
