"""Train a byte-level BPE tokenizer on a corpus with the `tokenizers` library (GPT-2 style)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

EOS = "<|endoftext|>"
BATCH = 1000


def train_bpe(texts: Any, vocab_size: int, min_frequency: int = 2) -> Any:
    """A `PreTrainedTokenizerFast` with a byte-level BPE trained on `texts` (a Dataset with `text`, or strings)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_batches(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: GPT-2 would embed them
    )


def _batches(texts: Any) -> Iterator[list[str]]:
    if hasattr(texts, "column_names"):  # a datasets.Dataset
        for start in range(0, len(texts), BATCH):
            yield texts[start : start + BATCH]["text"]
        return
    batch: list[str] = []
    for text in texts if isinstance(texts, Iterable) else []:
        batch.append(text)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
