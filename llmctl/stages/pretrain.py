"""Stage `pretrain`: train a causal LM from a config (from scratch) or continue pretraining a checkpoint.

Uses the Hugging Face Trainer on text blocks of `block_size` tokens; the tokenizer is an existing one
or a byte-level BPE trained on the corpus. Output: a standalone model folder (safetensors, tokenizer,
generation config) that `AutoModelForCausalLM.from_pretrained` loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from llmctl.spec.base import PREVIOUS, Block, InputSlot
from llmctl.spec.data import DataSpec
from llmctl.spec.generation import GREEDY, GenerationSpec
from llmctl.spec.stage import TrainingSpec
from llmctl.spec.training import TrainArgs
from llmctl.store.artifacts import Artifact, ArtifactKind

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext


class PretrainModel(Block):
    """Which network to train: a fresh one from `config`, or existing weights from `init`."""

    config: dict[str, Any] | str | None = None
    """From scratch: config fields (`model_type` defaults to gpt2; `vocab_size` defaults to the tokenizer's), or a config.json path / hub id."""
    init: str | None = None
    """Continue pretraining: 'previous', 'stage:NAME', a model folder or a hub id."""

    @model_validator(mode="after")
    def _one_source(self) -> PretrainModel:
        if (self.config is None) == (self.init is None):
            raise ValueError(
                "set exactly one of model.config (train from scratch) or model.init (continue pretraining)"
            )
        return self


class TokenizerSpec(Block):
    """An existing tokenizer, or a byte-level BPE trained on the training corpus."""

    path: str | None = None
    """Tokenizer folder or hub id. Default: the `init` model's tokenizer, else train a BPE."""
    vocab_size: int = Field(8192, ge=260)
    """Vocabulary size of a trained BPE (256 byte symbols + merges + special tokens)."""
    min_frequency: int = Field(2, ge=1)
    """Merges seen fewer times than this are not learned."""


class PretrainSpec(TrainingSpec):
    """Causal-LM pretraining with the Hugging Face Trainer."""

    eval_metrics = ("eval_loss",)

    type: Literal["pretrain"] = "pretrain"
    """pretrain: train a causal LM from scratch (or continue) with the Hugging Face Trainer."""
    model: PretrainModel
    """The architecture to build (config) or the weights to continue from (init)."""
    tokenizer: TokenizerSpec = TokenizerSpec()
    """Train a byte-level BPE on the corpus, or load an existing tokenizer (path)."""
    data: DataSpec
    """The training corpus."""
    block_size: int = Field(512, ge=8)
    """Tokens per training sequence."""
    packing: Literal["concat", "pad_each"] = "concat"
    """concat: documents are joined with EOS and cut into block_size blocks (no padding); pad_each: each document
    is truncated to block_size and padded (the course's GPT-2 pretraining; padding is masked out of the loss)."""
    train: TrainArgs = TrainArgs(lr=5e-4)
    """Training settings."""
    samples: list[str] = []
    """Prompts to generate from after training; the text lands in samples.json and the run summary."""
    generation: GenerationSpec = GREEDY
    """How samples are generated: do_sample, temperature, top_k, top_p, repetition_penalty, length_penalty,
    num_beams, max_new_tokens (default greedy)."""
    sample_tokens: int = Field(32, ge=1)
    """Tokens generated per sample prompt after training."""

    produces = ArtifactKind.causal_lm
    distributable = True

    def inputs(self) -> dict[str, InputSlot]:
        if self.model.init is None:
            return {}
        return {"model": InputSlot(self.model.init, (ArtifactKind.causal_lm,), "model.init")}

    @property
    def seq_len(self) -> int:
        return self.block_size

    @property
    def tokenizer_ref(self) -> str | None:
        return self.tokenizer.path


def run(spec: PretrainSpec, ctx: StageContext) -> Artifact:
    """Tokenize the corpus, build or load the model, train, evaluate, save."""
    from llmctl.data.sources import load_text_splits
    from llmctl.models import causal_lm, training

    train_texts, eval_texts = load_text_splits(spec.data, seed=ctx.seed)
    tokenizer = _tokenizer(spec, ctx, train_texts)
    tokenize = causal_lm.tokenize_blocks if spec.packing == "concat" else causal_lm.tokenize_padded
    train_ds = tokenize(train_texts, tokenizer, spec.block_size)
    eval_ds = tokenize(eval_texts, tokenizer, spec.block_size) if eval_texts is not None else None
    model = _model(spec, ctx, tokenizer)
    ctx.log(
        f"model: {causal_lm.describe(model)}; {len(train_ds)} train sequences of {spec.block_size} tokens ({spec.packing})"
    )
    metrics = training.train_causal_lm(model, tokenizer, train_ds, eval_ds, spec.train, ctx)
    causal_lm.save(model, tokenizer, ctx.out_dir)
    if spec.samples:
        metrics["samples"] = causal_lm.write_samples(
            model, tokenizer, spec.samples, spec.sample_tokens, ctx.work_dir, generation=spec.generation
        )
    return Artifact(ArtifactKind.causal_lm, str(ctx.out_dir), meta={"metrics": metrics, **causal_lm.summary(model)})


def _tokenizer(spec: PretrainSpec, ctx: StageContext, texts: Any) -> Any:
    from llmctl.models import causal_lm, tokenizers

    if spec.tokenizer.path:
        return causal_lm.load_tokenizer(spec.tokenizer.path)
    if spec.model.init is not None:
        return causal_lm.load_tokenizer(ctx.input("model"))
    ctx.log(f"training a byte-level BPE tokenizer (vocab {spec.tokenizer.vocab_size}) on the corpus")
    return tokenizers.train_bpe(texts, spec.tokenizer.vocab_size, spec.tokenizer.min_frequency)


def _model(spec: PretrainSpec, ctx: StageContext, tokenizer: Any) -> Any:
    from llmctl.models import causal_lm

    if spec.model.init is not None:
        return causal_lm.load(ctx.input("model"))
    config = causal_lm.build_config(spec.model.config, tokenizer=tokenizer, block_size=spec.block_size)
    return causal_lm.from_config(config, seed=ctx.seed)


def model_config(spec: PretrainSpec) -> Any | None:
    """The architecture this stage trains, built without weights (for `plan`); None when it comes from a run."""
    from llmctl.models import causal_lm

    if spec.model.config is not None:
        vocab = None if spec.tokenizer.path else spec.tokenizer.vocab_size
        return causal_lm.build_config(spec.model.config, vocab_size=vocab, block_size=spec.block_size)
    if spec.model.init not in (None, PREVIOUS) and not spec.model.init.startswith("stage:"):
        return causal_lm.load_config(spec.model.init)
    return None
