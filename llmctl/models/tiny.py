"""Tiny random models of a real architecture, for `--smoke` runs: the model's own config (shipped in
models/configs/, or the hub's) with layers, widths and heads shrunk and every module name kept, saved with a
tokenizer of the same family — the real one when it can be loaded, else one trained here on the stage's texts.

The folder is content-addressed (config, kind, tokenizer texts), so the stages that read it are cached like
any other input and a changed fixture builds a new one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import UsageError

TINY = {"layers": 2, "hidden": 64, "heads": 4, "intermediate": 128}
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers")
HIDDEN_FIELDS = ("hidden_size", "n_embd", "d_model")
HEAD_FIELDS = ("num_attention_heads", "n_head")
INTERMEDIATE_FIELDS = ("intermediate_size", "ffn_dim", "n_inner")
SIZE_FIELDS = (*LAYER_FIELDS, *HIDDEN_FIELDS, *HEAD_FIELDS, *INTERMEDIATE_FIELDS)
KEEP_FIELDS = ("vocab_size", "max_position_embeddings", "n_positions", "n_ctx", "position_buckets")
TOKENIZER_VOCAB = 1000
BUILD_VERSION = "1"  # part of the folder's key: bump when what is built here changes


@dataclass(frozen=True)
class Family:
    """How a model family tokenizes: the algorithm, its special tokens (in id order) and their roles."""

    algorithm: str  # bpe (byte-level) | unigram (sentencepiece-style, metaspace)
    specials: tuple[str, ...]
    roles: dict[str, str]  # bos/eos/pad/unk/cls/sep/mask -> token
    single: str | None = None  # post-processor template, e.g. "</s> $A" (OPT prepends its BOS)
    pair: str | None = None


FAMILIES = {
    "gpt2": Family("bpe", ("<|endoftext|>",), {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"}),
    "opt": Family(
        "bpe",
        ("<s>", "<pad>", "</s>", "<unk>"),
        {"bos": "</s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"},
        "</s> $A",
        "</s> $A </s> $B",
    ),
    "roberta": Family(
        "bpe",
        ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
        {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"},
        "<s> $A </s>",
        "<s> $A </s> </s> $B </s>",
    ),
    "deberta-v2": Family(
        "unigram",
        ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"),
        {
            "pad": "[PAD]",
            "cls": "[CLS]",
            "sep": "[SEP]",
            "unk": "[UNK]",
            "mask": "[MASK]",
            "bos": "[CLS]",
            "eos": "[SEP]",
        },
        "[CLS] $A [SEP]",
        "[CLS] $A [SEP] $B:1 [SEP]:1",
    ),
    "llama": Family(
        "unigram", ("<unk>", "<s>", "</s>"), {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}, "<s> $A", "<s> $A <s> $B"
    ),
}
FAMILY_OF = {
    "gpt2": "gpt2",
    "gpt_neo": "gpt2",
    "gptj": "gpt2",
    "gpt_neox": "gpt2",
    "codegen": "gpt2",
    "qwen2": "gpt2",
    "opt": "opt",
    "bart": "roberta",
    "roberta": "roberta",
    "deberta": "roberta",
    "deberta-v2": "deberta-v2",
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "gemma": "llama",
    "t5": "llama",
}


def shrink_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` (a config's dict) at TINY size: depth, width, heads and MLP width cut, every other field — and
    so every module name — kept. A field equal to the old width (OPT's word_embed_proj_dim, DeBERTa's
    pooler_hidden_size) follows the new width; per-layer lists are cut to the new depth."""
    out = dict(config)
    hidden = next((out[k] for k in HIDDEN_FIELDS if isinstance(out.get(k), int)), None)
    layers = next((out[k] for k in LAYER_FIELDS if isinstance(out.get(k), int)), None)
    intermediate = next((out[k] for k in INTERMEDIATE_FIELDS if isinstance(out.get(k), int)), None)
    heads = next((out[k] for k in HEAD_FIELDS if isinstance(out.get(k), int)), None)
    for key, value in list(out.items()):
        if key in KEEP_FIELDS or isinstance(value, bool) or not isinstance(value, int):
            continue
        if key in HIDDEN_FIELDS or (hidden and value == hidden and key not in SIZE_FIELDS):
            out[key] = TINY["hidden"]
        elif key in INTERMEDIATE_FIELDS or (intermediate and value == intermediate and key not in SIZE_FIELDS):
            out[key] = TINY["intermediate"]
    for key in LAYER_FIELDS:
        if isinstance(out.get(key), int):
            out[key] = TINY["layers"]
    for key in HEAD_FIELDS:
        if isinstance(out.get(key), int):
            out[key] = TINY["heads"]
    if isinstance(out.get("num_key_value_heads"), int) and heads:  # keep grouped-query attention's ratio
        out["num_key_value_heads"] = max(1, TINY["heads"] * out["num_key_value_heads"] // heads)
    if isinstance(out.get("head_dim"), int):
        out["head_dim"] = TINY["hidden"] // TINY["heads"]
    for key, value in list(out.items()):
        if isinstance(value, list) and layers and len(value) == layers:
            out[key] = value[: TINY["layers"]]
    out["torch_dtype"] = "float32"
    return out


def folder_for(ref: str, kind: str, texts: list[str], cache: Path) -> Path:
    """Build (once) and return the tiny stand-in for model `ref`: kind is causal_lm, classifier (a one-output
    sequence classifier, for reward models) or base (an encoder without a head, as hub encoders ship),
    or tokenizer (a tokenizer alone)."""
    from llmctl.models import causal_lm

    config = causal_lm.load_config(ref).to_dict()
    small = shrink_config(config)
    key = hashlib.sha256(
        json.dumps([BUILD_VERSION, ref, kind, small, texts], sort_keys=True, default=str).encode()
    ).hexdigest()
    folder = cache / f"{ref.strip('/').replace('/', '--')[-60:]}-{kind}-{key[:12]}"
    if (folder / "config.json").exists() or (kind == "tokenizer" and (folder / "tokenizer_config.json").exists()):
        return folder
    scratch = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    tokenizer = tokenizer_for(ref, config["model_type"], texts)
    tokenizer.save_pretrained(scratch)
    if kind != "tokenizer":
        _model(small, kind, tokenizer).save_pretrained(scratch, safe_serialization=True)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        scratch.rename(folder)
    except OSError:  # built meanwhile by another run
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _model(fields: dict[str, Any], kind: str, tokenizer: Any) -> Any:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, set_seed

    fields = dict(fields)
    config = AutoConfig.for_model(
        fields.pop("model_type"), **{k: v for k, v in fields.items() if not k.startswith("_")}
    )
    config.vocab_size = max(len(tokenizer), config.vocab_size if _real_vocab(tokenizer) else 0)
    for role in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{role}_token_id")
        if token_id is not None:
            setattr(config, f"{role}_token_id", token_id)
    set_seed(0)
    if kind == "classifier":
        config.num_labels = 1
        return AutoModelForSequenceClassification.from_config(config)
    return (AutoModelForCausalLM if kind == "causal_lm" else AutoModel).from_config(config)


def has_causal_lm(model_type: str) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def tokenizer_for(ref: str, model_type: str, texts: list[str]) -> Any:
    """The real tokenizer of `ref` when it loads (local folder, the hub's cache, or the hub when online), else
    one of the same family trained on `texts`."""
    real = _real_tokenizer(ref)
    if real is not None:
        return real
    family = FAMILIES[FAMILY_OF.get(model_type, "gpt2")]
    return train_family_tokenizer(family, texts)


def _real_vocab(tokenizer: Any) -> bool:
    return getattr(tokenizer, "_llmctl_real", False)


def _real_tokenizer(ref: str) -> Any | None:
    from transformers import AutoTokenizer

    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    for local_only in (True, False) if not offline else (True,):
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_only)
        except Exception:  # noqa: BLE001 - not cached, not reachable, or no tokenizer: train one instead
            continue
        tokenizer._llmctl_real = True
        return tokenizer
    return None


def train_family_tokenizer(family: Family, texts: list[str], vocab_size: int = TOKENIZER_VOCAB) -> Any:
    """A `PreTrainedTokenizerFast` of `family` (byte-level BPE or a sentencepiece-style unigram), its special
    tokens at the family's ids and its post-processor (OPT's leading `</s>`, DeBERTa's [CLS] … [SEP])."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise UsageError("--smoke: no text to train a tokenizer on (the stage's data is empty)")
    if family.algorithm == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer: Any = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(family.specials),
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=list(family.specials),
            unk_token=family.roles["unk"],
            show_progress=False,
        )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if family.single:
        ids = [(t, tokenizer.token_to_id(t)) for t in family.specials]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=family.single, pair=family.pair, special_tokens=ids
        )
    roles = {f"{role}_token": token for role, token in family.roles.items()}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_input_names=["input_ids", "attention_mask"], **roles
    )
