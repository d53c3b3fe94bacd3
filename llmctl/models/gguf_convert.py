"""`python -m llmctl.models.gguf_convert CONVERTER_DIR MODEL --outfile F --outtype T`: llama.cpp's
convert_hf_to_gguf.py, run unchanged except for two gaps it has on models llmctl makes:

- a BPE tokenizer it does not know (it recognises pre-tokenizers by hashing the ids of a test string, so a
  tokenizer trained here is refused): when its tokenizer.json pre-tokenizer is GPT-2's byte-level split, the
  pre-tokenizer is named `gpt-2`, the one llama.cpp implements for it (a test checks both tokenize alike);
- a GPT-2 config without `n_ctx` (transformers writes `n_positions` only): `n_ctx` is taken from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def pre_tokenizer(model_dir: Path) -> str | None:
    """llama.cpp's name for the tokenizer's pre-tokenizer, when it is GPT-2's byte-level one; else None."""
    file = model_dir / "tokenizer.json"
    if not file.is_file():
        return None
    pre = json.loads(file.read_text()).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return None


def main(argv: list[str]) -> None:
    converter_dir, args = argv[0], argv[1:]
    sys.path.insert(0, converter_dir)
    import convert_hf_to_gguf
    from conversion import base

    load_hparams = base.ModelBase.load_hparams

    def with_n_ctx(dir_model: Path, is_mistral_format: bool) -> Any:
        hparams = load_hparams(dir_model, is_mistral_format)
        if "n_positions" in hparams and "n_ctx" not in hparams:
            hparams["n_ctx"] = hparams["n_positions"]
        return hparams

    known_pre = base.TextModel.get_vocab_base_pre

    def any_pre(self: Any, tokenizer: Any) -> str:
        try:
            return known_pre(self, tokenizer)
        except NotImplementedError:
            name = pre_tokenizer(Path(self.dir_model))
            if name is None:
                raise
            return name

    base.ModelBase.load_hparams = staticmethod(with_n_ctx)
    base.TextModel.get_vocab_base_pre = any_pre
    sys.argv = ["convert_hf_to_gguf.py", *args]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(sys.argv[1:])
