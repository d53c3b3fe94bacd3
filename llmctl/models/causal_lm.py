"""Causal LMs: configs, loading, tokenizing text into blocks, saving a standalone folder, sample generations."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from llmctl.errors import RecipeMismatch
from llmctl.spec.base import is_local_path

DEFAULT_MODEL_TYPE = "gpt2"
POSITION_FIELDS = ("n_positions", "max_position_embeddings")


def load_tokenizer(ref: str) -> Any:
    """AutoTokenizer from a folder or hub id, with a pad token (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load(ref: str, quantization_config: Any = None) -> Any:
    """AutoModelForCausalLM in fp32 (mixed precision comes from the trainer's autocast, not the weights).
    An adapter folder (base + LoRA, from `merge: false`) is loaded onto its base and merged."""
    from transformers import AutoModelForCausalLM

    from llmctl.models import adapters

    if adapters.is_adapter_folder(ref):
        from peft import AutoPeftModelForCausalLM

        adapters.spare_inc_import()
        return adapters.merged(AutoPeftModelForCausalLM.from_pretrained(ref))
    return AutoModelForCausalLM.from_pretrained(ref, quantization_config=quantization_config)


def standalone(ref: str, scratch: Path) -> str:
    """`ref` itself, or — for an adapter folder — the adapter merged onto its base and saved into `scratch`
    (for stages that need a self-contained model: quantize, deploy)."""
    from llmctl.models import adapters

    if not adapters.is_adapter_folder(ref):
        return ref
    save(load(ref), load_tokenizer(ref), scratch)
    return str(scratch)


def load_config(ref: str) -> Any:
    """The config of a folder or hub id. The course models' configs ship with llmctl (models/configs/) and
    are used first, so `plan` needs no network for them; other hub ids come from the hub or its cache."""
    from transformers import AutoConfig

    from llmctl.models import adapters

    if adapters.is_adapter_folder(ref):
        ref = json.loads((Path(ref) / adapters.ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    if is_local_path(ref) and not (Path(ref).expanduser() / "config.json").is_file():
        why = (
            "does not exist" if not Path(ref).expanduser().exists() else "is not a model folder (it has no config.json)"
        )
        raise RecipeMismatch(
            "model",
            f"model {ref} {why}; name a folder written by save_pretrained (or an llmctl stage's output) or a hub id",
        )
    bundled = Path(__file__).parent / "configs" / (ref.replace("/", "--") + ".json")
    if bundled.exists() and not Path(ref).exists():
        return _config_from_file(bundled)
    if is_local_path(ref):
        return AutoConfig.from_pretrained(ref)
    return _hub_config(ref)


class HubUnreachable(OSError):
    """A hub id that is neither bundled nor in the local cache, while the Hub cannot be reached."""


def _hub_config(ref: str) -> Any:
    """A hub id's config: from the local cache first; from the Hub only when it answers — a machine without
    network gets one line at once instead of urllib3's retries (27 s of them) and a cut-off message."""
    import os

    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref, local_files_only=True)
    except OSError:
        pass
    fix = (
        f"download it where there is network (`hf download {ref}`, then copy ~/.cache/huggingface here) or name a "
        "local model folder; on machines without network set HF_HUB_OFFLINE=1"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise HubUnreachable(f"model {ref} is not in the local cache and HF_HUB_OFFLINE is set: {fix}")
    host = hub_host()
    if not reachable(host):
        raise HubUnreachable(f"model {ref} is not in the local cache and the Hub ({host}) cannot be reached: {fix}")
    return AutoConfig.from_pretrained(ref)


def hub_host() -> str:
    import os
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


@functools.lru_cache(maxsize=4)
def reachable(host: str, port: int = 443, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to host:port opens within `timeout_s` (name resolution included)."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def build_config(
    config: dict[str, Any] | str | None, *, tokenizer: Any = None, vocab_size: int | None = None, block_size: int = 0
) -> Any:
    """A transformers config from recipe fields (`model_type` defaults to gpt2) or a config path/hub id.
    `vocab_size` defaults to the tokenizer's; the context must hold `block_size` tokens."""
    from transformers import AutoConfig

    if isinstance(config, str):
        built = AutoConfig.from_pretrained(config)
    else:
        fields = dict(config or {})
        model_type = fields.pop("model_type", DEFAULT_MODEL_TYPE)
        if "vocab_size" not in fields and (tokenizer is not None or vocab_size):
            fields["vocab_size"] = len(tokenizer) if tokenizer is not None else vocab_size
        _check_config_fields(model_type, fields)
        try:
            built = AutoConfig.for_model(model_type, **fields)
        except ValueError as err:
            raise RecipeMismatch("model.config", f"model.config: {err}") from None
    _fuse_tanh_gelu(built, set(config) if isinstance(config, dict) else set())
    if tokenizer is not None:
        built.bos_token_id, built.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        built.pad_token_id = tokenizer.pad_token_id
    context = context_length(built)
    if context is not None and block_size > context:
        raise RecipeMismatch(
            "block_size", f"block_size {block_size} exceeds the model's context of {context} positions"
        )
    return built


def _fuse_tanh_gelu(config: Any, named: set[str]) -> None:
    """GPT-2's default `gelu_new` is the tanh GELU written as six tensor ops; `gelu_pytorch_tanh` is the same
    function (max difference 2.4e-7) as one fused kernel, and trains the quickstart's model ~11% faster on CPU.
    A model built from scratch gets the fused one unless the recipe names its activation."""
    for field in ("activation_function", "hidden_act"):
        if field not in named and getattr(config, field, None) == "gelu_new":
            setattr(config, field, "gelu_pytorch_tanh")


def _check_config_fields(model_type: str, fields: dict[str, Any]) -> None:
    """transformers keeps unknown config keys as plain attributes, so `n_lyer: 2` would train the default
    depth without a word: every key must be a field of the architecture's config class."""
    import difflib

    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=1)
        raise RecipeMismatch(
            "model.config.model_type",
            f"model.config.model_type: unknown architecture {model_type!r}"
            + (f" — did you mean {close[0]!r}?" if close else ""),
        )
    config_class = CONFIG_MAPPING[model_type]
    known = set(config_class().to_dict()) | set(config_class.attribute_map)
    for key in fields:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise RecipeMismatch(
                f"model.config.{key}",
                f"model.config.{key}: not a field of {config_class.__name__}"
                + (f" — did you mean {close[0]!r}?" if close else ""),
            )
    _check_values(config_class, fields)


SIZE_FIELDS = re.compile(
    r"^(n_(layer|head|embd|positions|inner|ctx)|vocab_size|hidden_size|intermediate_size|head_dim|ffn_dim|"
    r"num_(hidden_layers|attention_heads|key_value_heads)|max_position_embeddings|word_embed_proj_dim)$"
)


def _check_values(config_class: Any, fields: dict[str, Any]) -> None:
    """A field whose default is a whole number takes one (`n_layer: '1'` failed deep inside torch), and a size is
    at least 1 (`n_layer: -1` trained a model of no layers)."""
    defaults = config_class().to_dict()
    for key, value in fields.items():
        default = defaults.get(config_class.attribute_map.get(key, key))
        if (
            isinstance(default, int)
            and not isinstance(default, bool)
            and (not isinstance(value, int) or isinstance(value, bool))
        ):
            raise RecipeMismatch(f"model.config.{key}", f"model.config.{key}: {value!r} is not a whole number")
        if SIZE_FIELDS.match(key) and isinstance(value, int) and value < 1:
            raise RecipeMismatch(f"model.config.{key}", f"model.config.{key}: {value} is a size; it must be at least 1")


def context_length(config: Any) -> int | None:
    """How many positions the model's config allows (None when it does not say)."""
    return next((getattr(config, f) for f in POSITION_FIELDS if hasattr(config, f)), None)


def _config_from_file(path: Path) -> Any:
    from transformers import AutoConfig

    data = json.loads(path.read_text())
    return AutoConfig.for_model(data.pop("model_type"), **data)


def from_config(config: Any, seed: int) -> Any:
    """A freshly initialised model (seeded, so the same recipe gives the same weights)."""
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def tokenize_blocks(texts: Any, tokenizer: Any, block_size: int) -> Any:
    """Tokenize documents, join them with EOS and cut into `block_size` blocks (labels = input ids)."""
    eos = tokenizer.eos_token_id

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"ids": [row + [eos] for row in ids]}

    def group(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        flat = [token for row in batch["ids"] for token in row]
        usable = len(flat) // block_size * block_size
        blocks = [flat[i : i + block_size] for i in range(0, usable, block_size)]
        return {
            "input_ids": blocks,
            "labels": [list(b) for b in blocks],
            "attention_mask": [[1] * block_size for _ in blocks],
        }

    tokenized = texts.map(tokenize, batched=True, remove_columns=texts.column_names)
    blocks = tokenized.map(group, batched=True, batch_size=1000, remove_columns=["ids"])
    if len(blocks) == 0:
        raise RecipeMismatch(
            "block_size", f"the data holds fewer than block_size={block_size} tokens; lower block_size or add data"
        )
    return blocks


def tokenize_padded(texts: Any, tokenizer: Any, block_size: int) -> Any:
    """One sequence per document: truncated to `block_size` tokens, padded to it; padding is masked out of
    attention and of the loss (labels -100)."""

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        encoded = tokenizer(
            batch["text"], truncation=True, max_length=block_size, padding="max_length", return_token_type_ids=False
        )
        labels = [
            [t if m else -100 for t, m in zip(ids, mask, strict=False)]
            for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=False)
        ]
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}

    return texts.map(tokenize, batched=True, remove_columns=texts.column_names)


def parameter_counts(model: Any) -> tuple[int, int]:
    """(total, trainable) parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def summary(model: Any) -> dict[str, Any]:
    total, trainable = parameter_counts(model)
    return {"architecture": type(model).__name__, "parameters": total, "trainable_parameters": trainable}


def describe(model: Any) -> str:
    total, trainable = parameter_counts(model)
    return f"{type(model).__name__}, {total / 1e6:.2f}M parameters ({trainable / 1e6:.2f}M trainable)"


def save(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """A standalone folder: safetensors weights, config, generation config (models that generate), tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if model.generation_config is not None:  # None for a reward model (a sequence classifier)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, generation: Any = None) -> list[str]:
    """Continuations of `prompts` (the prompt itself is not repeated): greedy, or as a `generation:` block says."""
    import torch

    settings = generation.kwargs() if generation is not None else {"do_sample": False}
    model.eval()
    outputs = []
    with torch.no_grad():
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False).to(model.device)
            ids = model.generate(
                **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **settings
            )
            outputs.append(tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return outputs


def sample(
    model: Any, tokenizer: Any, prompts: list[str], n: int, max_new_tokens: int, generation: Any = None, seed: int = 0
) -> list[list[str]]:
    """`n` continuations of each prompt from one batched generate() call (left-padded, seeded, the prompt not
    repeated), as a `generation:` block says (greedy without one). Any model with transformers' generate() works
    (PyTorch, INC, OpenVINO through optimum)."""
    import torch

    settings = generation.kwargs() if generation is not None else {"do_sample": False}
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, return_token_type_ids=False)
    finally:
        tokenizer.padding_side = side
    torch.manual_seed(seed)
    with torch.no_grad():
        ids = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=tokenizer.pad_token_id,
            **settings,
        )
    decoded = tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [decoded[i * n : (i + 1) * n] for i in range(len(prompts))]


def cut(text: str, stop: list[str]) -> str:
    """`text` up to the first of the `stop` strings (as the OpenAI API's `stop` does)."""
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text


def check_room(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int, field: str) -> None:
    """A RecipeMismatch naming `field` when the longest prompt plus `new_tokens` exceeds the model's context."""
    context = context_length(model.config)
    longest = max((len(ids) for ids in tokenizer(prompts)["input_ids"]), default=0)
    if context is not None and longest + new_tokens > context:
        raise RecipeMismatch(
            field,
            f"{field} {new_tokens} + the longest prompt ({longest} tokens) exceed the model's context of {context} "
            "tokens; generate fewer tokens or shorten the prompts",
        )


def write_samples(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    folder: Path,
    before: list[str] | None = None,
    generation: Any = None,
) -> list[dict[str, str]]:
    """Generate for each prompt (as `generation` says; its max_new_tokens wins), write samples.json into
    `folder`, return the pairs (with the output of the model before training, when given)."""
    tokens = generation.max_new_tokens if generation is not None and generation.max_new_tokens else max_new_tokens
    outputs = generate(model, tokenizer, prompts, tokens, generation)
    pairs = [
        {"prompt": p, "output": o} | ({"before": before[i]} if before else {})
        for i, (p, o) in enumerate(zip(prompts, outputs, strict=False))
    ]
    (folder / "samples.json").write_text(json.dumps(pairs, indent=2, ensure_ascii=False) + "\n")
    return pairs
