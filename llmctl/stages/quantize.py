"""Stage `quantize`: post-training quantization with Intel Neural Compressor (weight-only RTN/GPTQ/AWQ),
OpenVINO (optimum-intel export with NNCF weight compression) or llama.cpp (GGUF: llama.cpp's converter and
quantizer, for llama.cpp, Ollama and LM Studio), optionally accuracy-aware: configurations are tried from the
most aggressive to the safest and the first within `tolerable_loss` is kept.

Size, decode speed (greedy and beam search) and the accuracy metric are measured before and after, in the
same process on the same prompts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from llmctl.errors import GateFailed, RecipeMismatch
from llmctl.spec.base import PREVIOUS, Block, InputSlot
from llmctl.spec.data import DataSpec
from llmctl.spec.smokesize import SmokeSize
from llmctl.spec.stage import StageSpec
from llmctl.store.artifacts import Artifact, ArtifactKind
from llmctl.store.files import write_atomic

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext

Backend = Literal["inc", "openvino", "gguf"]
Method = Literal["rtn", "gptq", "awq", "weight_only", "llama_quantize", "dynamic", "static", "smoothquant"]
GGUFFormat = Literal[
    "f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_0", "q5_1", "q4_k_m", "q4_k_s", "q4_0", "q4_1",
    "q3_k_l", "q3_k_m", "q3_k_s", "q2_k",
]  # fmt: skip
METHODS: dict[str, tuple[str, ...]] = {
    "inc": ("rtn", "gptq", "awq"),
    "openvino": ("weight_only",),
    "gguf": ("llama_quantize",),
}
DEFAULT_METHOD = {"inc": "rtn", "openvino": "weight_only", "gguf": "llama_quantize"}
DEFAULT_SYM = {
    "inc": True,
    "openvino": False,
    "gguf": True,
}  # each library's own default (llama.cpp: q*_0 are symmetric)
NEEDS_CALIBRATION = ("gptq", "awq")
UNSUPPORTED = {
    "dynamic": "INC 3.x quantizes activations dynamically only through torch.export (PT2E), which cannot export a "
    "generating transformers model; use backend: openvino (int8 weights, activations quantized at run "
    "time by the OpenVINO CPU plugin) or method: rtn with bits: 8",
    "static": "INC 3.x static int8 needs intel-extension-for-pytorch, which has no build for torch 2.13; use "
    "backend: openvino or a weight-only method (rtn, gptq, awq)",
    "smoothquant": "INC 3.x SmoothQuant needs intel-extension-for-pytorch, which has no build for torch 2.13; use "
    "backend: openvino or a weight-only method (rtn, gptq, awq)",
}
# Accuracy-aware search order when `accuracy.search` is empty: most aggressive first, int8 last.
LADDERS: dict[str, list[dict[str, Any]]] = {
    "inc": [
        {"method": "rtn", "bits": 4, "group_size": 128},
        {"method": "rtn", "bits": 4, "group_size": 32},
        {"method": "awq", "bits": 4, "group_size": 32},
        {"method": "gptq", "bits": 4, "group_size": 32},
        {"method": "rtn", "bits": 8, "group_size": -1, "sym": True},
    ],
    "openvino": [
        {"bits": 4, "group_size": 128, "ratio": 1.0},
        {"bits": 4, "group_size": 64, "ratio": 1.0},
        {"bits": 4, "group_size": 32, "ratio": 1.0},
        {"bits": 4, "group_size": 32, "ratio": 0.5},
        {"bits": 8},
    ],
    "gguf": [{"format": "q4_k_m"}, {"format": "q5_k_m"}, {"format": "q6_k"}, {"format": "q8_0"}],
}
SPEED_PROMPTS = [
    "Once upon a time",
    "The meaning of life is",
    "Question: What is 3 plus 4?\n\nAnswer:",
    "def add(a, b):",
]


class QuantConfig(Block):
    """One configuration to try; unset fields come from the stage."""

    method: Method | None = None
    """Quantization method (backend-specific: rtn, awq, gptq, …; OpenVINO picks its own)."""
    bits: Literal[4, 8] | None = None
    """Weight bits: 4 or 8."""
    group_size: int | None = Field(None, ge=-1)
    """Weights sharing one scale (-1: per channel)."""
    sym: bool | None = None
    """Symmetric quantization (no zero point)."""
    ratio: float | None = Field(None, gt=0, le=1)
    """OpenVINO: share of layers in 4 bits, the rest in 8."""
    format: GGUFFormat | None = None
    """gguf: llama.cpp's file type (q4_k_m, q5_k_m, q8_0, …)."""


class AccuracySpec(Block):
    """Accuracy-aware quantization: keep the first configuration whose metric stays within `tolerable_loss`."""

    metric: Literal["perplexity", "exact_match", "f1"] = "perplexity"
    """perplexity of the data's texts (lower is better), or exact match / SQuAD token F1 of greedy answers to
    prompt_completion rows (higher is better; a baseline of 0 is refused: it cannot tell configurations apart)."""
    data: DataSpec
    """Held-out questions the accuracy is measured on."""
    tolerable_loss: float = Field(0.01, ge=0)
    """Largest relative loss accepted: 0.01 = at most 1% worse than the unquantized model."""
    max_trials: int = Field(10, ge=1)
    """Configurations tried at most before giving up."""
    search: list[QuantConfig | GGUFFormat] = []
    """Configurations to try in order (default: the backend's ladder from int4 to int8; gguf: q4_k_m, q5_k_m,
    q6_k, q8_0)."""
    max_length: int = Field(256, ge=8)
    """Tokens per text for perplexity."""
    max_new_tokens: int = Field(8, ge=1)
    """Tokens generated per prompt for exact_match."""

    @field_validator("search")
    @classmethod
    def _format_names(cls, search: list[Any]) -> list[Any]:
        """A bare GGUF type name stands for {format: NAME}."""
        return [QuantConfig(format=c) if isinstance(c, str) else c for c in search]

    def configs(self) -> list[QuantConfig]:
        return [c for c in self.search if isinstance(c, QuantConfig)]


class SpeedSpec(Block):
    """Decode-speed measurement before and after (same process, same prompts)."""

    enabled: bool = True
    """Measure generation speed before and after quantization."""
    prompts: list[str] = SPEED_PROMPTS
    """Prompts timed."""
    new_tokens: int = Field(32, ge=1)
    """Tokens generated per timed prompt."""
    beams: int = Field(4, ge=1)
    """Beam width for the beam-search figure (1 skips it)."""


class QuantizeSpec(StageSpec):
    """Post-training quantization with Intel Neural Compressor, OpenVINO or llama.cpp (GGUF)."""

    type: Literal["quantize"] = "quantize"
    """quantize: post-training weight quantization (OpenVINO/NNCF, Intel Neural Compressor or llama.cpp GGUF)."""
    model: str = PREVIOUS
    """'previous' (the last causal LM or adapter; adapters are merged first), 'stage:NAME', a folder or hub id."""
    backend: Backend = "openvino"
    """inc: Intel Neural Compressor weight-only (PyTorch); openvino: OpenVINO IR with NNCF weight compression;
    gguf: a GGUF file by llama.cpp's converter and quantizer (llama.cpp, Ollama, LM Studio; `llmctl serve` too)."""
    method: Method | None = None
    """inc: rtn | gptq | awq (default rtn); openvino: weight_only; gguf: llama_quantize. Filled in at validation."""
    format: GGUFFormat = "q8_0"
    """gguf: llama.cpp's file type when no accuracy search is given (q8_0, q6_k, q5_k_m, q4_k_m, f16, …)."""
    bits: Literal[4, 8] = 8
    """Weight bits when no accuracy search is given."""
    group_size: int = Field(128, ge=-1)
    """Weights per quantization group for 4-bit (-1: one scale per output channel)."""
    sym: bool | None = None
    """Symmetric quantization (no zero point); default true for inc, false for openvino (each library's default),
    filled in at validation."""
    ratio: float = Field(1.0, gt=0, le=1)
    """openvino int4: share of layers in int4, the rest int8."""
    calibration: DataSpec | None = None
    """Calibration texts (required by gptq and awq)."""
    calibration_samples: int = Field(32, ge=1)
    """Calibration texts for data-aware methods."""
    calibration_length: int = Field(128, ge=8)
    """Tokens per calibration text."""
    accuracy: AccuracySpec | None = None
    """Accuracy-aware search: try configurations until one loses at most the allowed accuracy."""
    speed: SpeedSpec = SpeedSpec()
    """Speed measurement before and after."""

    produces = ArtifactKind.quantized_lm

    @model_validator(mode="after")
    def _check(self) -> QuantizeSpec:
        # The backend's defaults are filled in here, so the resolved recipe shows what runs (not `method: null`).
        if self.method is None:
            object.__setattr__(self, "method", DEFAULT_METHOD[self.backend])
        if self.sym is None:
            object.__setattr__(self, "sym", DEFAULT_SYM[self.backend])
        configs = [QuantConfig(method=self.method)] + (self.accuracy.configs() if self.accuracy else [])
        for config in configs:
            method = config.method or self.method
            if method in UNSUPPORTED:
                raise ValueError(f"method {method}: {UNSUPPORTED[method]}")
            if method not in METHODS[self.backend]:
                raise ValueError(
                    f"backend {self.backend} supports method {' | '.join(METHODS[self.backend])}, not {method}"
                )
            if config.format is not None and self.backend != "gguf":
                raise ValueError(f"format {config.format} is a GGUF file type; set backend: gguf, or give bits")
            if method in NEEDS_CALIBRATION and self.calibration is None:
                raise ValueError(f"method {method} needs calibration data: add `calibration: {{path: ...}}`")
            if config.group_size == 0 or (config.group_size is None and self.group_size == 0):
                raise ValueError("group_size is a positive number of weights, or -1 for per-channel")
            sym = config.sym if config.sym is not None else self.sym
            if self.backend == "inc" and (config.bits or self.bits) == 8 and not sym:
                # measured with neural-compressor 3.10: ~100% relative error per layer (4-bit asymmetric is fine)
                raise ValueError("INC 3.10's asymmetric 8-bit weight-only quantization is broken; use sym: true")
        return self

    def inputs(self) -> dict[str, InputSlot]:
        return {"model": InputSlot(self.model, (ArtifactKind.causal_lm, ArtifactKind.adapter), "model")}

    @property
    def quantized_bits(self) -> int:
        if self.backend == "gguf":
            from llmctl.models.gguf import FORMATS

            return FORMATS[self.format]
        return self.bits


def candidates(spec: QuantizeSpec) -> list[dict[str, Any]]:
    """The configurations to try, complete and in order (one unless accuracy-aware)."""
    base: dict[str, Any] = {
        "method": spec.method,
        "bits": spec.bits,
        "group_size": spec.group_size,
        "sym": spec.sym,
        "ratio": spec.ratio,
    }
    if spec.backend == "gguf":
        base = {"method": spec.method, "format": spec.format}
    if spec.accuracy is None:
        return [base]
    fields = ("method", "format") if spec.backend == "gguf" else tuple(base)
    search = [c.model_dump(exclude_none=True, include=set(fields)) for c in spec.accuracy.configs()] or LADDERS[
        spec.backend
    ]
    usable = [base | c for c in search if spec.calibration or c.get("method") not in NEEDS_CALIBRATION]
    return usable[: spec.accuracy.max_trials]


def run(spec: QuantizeSpec, ctx: StageContext) -> Artifact:
    """Measure the original, try configurations in order, keep the first that passes, measure it."""
    from llmctl.models import causal_lm, measure

    source = _standalone_source(ctx)
    if spec.backend == "gguf":
        from llmctl.models import gguf

        gguf.check_convertible(source)
    tokenizer = causal_lm.load_tokenizer(source)
    evaluate = _evaluator(spec, ctx, tokenizer)
    calibration = _calibration(spec, ctx, tokenizer)
    original = causal_lm.load(source).eval()
    before = {
        "size_mb": measure.folder_size_mb(source),
        **_greedy(spec, original, tokenizer),
        **_beam(spec, original, tokenizer),
    }
    if evaluate:
        before[spec.accuracy.metric] = evaluate(original)  # type: ignore[union-attr]
        _check_baseline(spec, before, ctx)
    del original
    ctx.log(f"original: {_describe(before)}")
    chosen, trials = _search(spec, ctx, source, tokenizer, calibration, evaluate, before)
    trial_dir = ctx.work_dir / "trials" / f"{chosen['index']:02d}"
    shutil.move(str(trial_dir), ctx.out_dir)
    shutil.rmtree(ctx.work_dir / "trials", ignore_errors=True)
    shutil.rmtree(ctx.work_dir / "merged", ignore_errors=True)
    # (the OpenVINO model is compiled: the move is harmless)
    after = chosen["measured"] | _beam(spec, chosen["model"], tokenizer)
    metrics = _metrics(before, after, trials, chosen["config"])
    return Artifact(
        ArtifactKind.quantized_lm, str(ctx.out_dir), meta={"metrics": metrics, "quantization": chosen["config"]}
    )


def _check_baseline(spec: QuantizeSpec, before: dict[str, Any], ctx: StageContext) -> None:
    """An accuracy metric the unquantized model scores 0 on passes every configuration: refuse it."""
    metric = spec.accuracy.metric  # type: ignore[union-attr]
    if metric == "perplexity" or before[metric] > 0:
        return
    if ctx.recipe.smoke:
        ctx.log(f"smoke run: the unquantized model scores {metric} 0 (a random model); a real run stops here")
        return
    raise RecipeMismatch(
        "quantize.accuracy",
        f"quantize.accuracy: the unquantized model scores {metric} 0 on accuracy.data, so every configuration "
        "would pass; give prompts it can answer (e.g. the context with the question, the template it was "
        "fine-tuned on) or use metric: perplexity",
    )


def _search(
    spec: QuantizeSpec,
    ctx: StageContext,
    source: str,
    tokenizer: Any,
    calibration: list[Any],
    evaluate: Any,
    before: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Try each candidate; return the first that passes (or raise GateFailed listing every trial)."""
    from llmctl.models import measure

    trials: list[dict[str, Any]] = []
    for index, config in enumerate(candidates(spec)):
        out = ctx.work_dir / "trials" / f"{index:02d}"
        try:
            with ctx.library_output():
                model = _quantize(spec.backend, source, config, calibration, tokenizer, out)
        except Exception as err:  # noqa: BLE001 - a configuration the model cannot take (e.g. group size > layer width)
            trials.append({"config": config, "error": f"{type(err).__name__}: {err}"[:300], "passed": False})
            ctx.log(f"trial {index + 1}: {_config_name(config)} failed: {trials[-1]['error']}")
            continue
        measured = {"size_mb": measure.folder_size_mb(out), **_greedy(spec, model, tokenizer)}
        trial = {"config": config, **measured, "passed": True}
        if evaluate:
            assert spec.accuracy is not None  # `evaluate` exists only with an accuracy block
            metric = spec.accuracy.metric
            measured[metric] = evaluate(model)
            loss = relative_loss(metric, before[metric], measured[metric])
            trial |= {metric: measured[metric], "loss": loss, "passed": loss <= spec.accuracy.tolerable_loss}
        trials.append(trial)
        write_atomic(ctx.work_dir / "trials.json", json.dumps(trials, indent=2) + "\n")
        ctx.log(
            f"trial {index + 1}: {_config_name(config)} → {_describe(measured)}{'' if trial['passed'] else ' (over tolerance)'}"
        )
        if trial["passed"]:
            return {"index": index, "config": config, "measured": measured, "model": model}, trials
        shutil.rmtree(out, ignore_errors=True)
    raise GateFailed(_no_config_message(spec, before, trials))


def relative_loss(metric: str, before: float, after: float) -> float:
    """How much worse `after` is than `before`, relative (0.01 = 1% worse; negative = better)."""
    if metric == "perplexity":
        return round((after - before) / before, 6)
    return round((before - after) / before, 6) if before > 0 else (0.0 if after >= before else 1.0)


def _quantize(
    backend: str, source: str, config: dict[str, Any], calibration: list[Any], tokenizer: Any, out: Path
) -> Any:
    """Quantize `source` per `config` into folder `out` (with descriptor); return the model loaded from it."""
    from llmctl.models import causal_lm, quantized

    if backend == "gguf":
        from llmctl.models import gguf, gguf_runtime

        # the 16-bit conversion is shared by every trial of a search
        gguf.export(source, config["format"], out, f16_cache=out.parent / "f16.gguf")
        model = gguf_runtime.load(str(out))
    elif backend == "openvino":
        from llmctl.models import openvino

        # compared at f32, like the PyTorch original, on every CPU: the loss is the quantization's alone, not
        # also that of bf16 inference (the CPU plugin's choice on AVX-512-BF16/AMX CPUs)
        model = openvino.export(source, config, out, precision="f32")
    else:
        from llmctl.models import inc

        inc.save(inc.quantize(causal_lm.load(source), config, calibration), tokenizer, out)
        model = inc.load(str(out))
    config_file = json.loads((out / "config.json").read_text())
    quantized.write_descriptor(
        out,
        {
            "backend": backend,
            **config,
            "model_type": config_file.get("model_type"),
            "architectures": config_file.get("architectures"),
        },
    )
    return model


def _standalone_source(ctx: StageContext) -> str:
    """The input as a standalone model folder or hub id; an adapter is merged into its base first."""
    from llmctl.models import causal_lm

    source = causal_lm.standalone(ctx.input("model"), ctx.work_dir / "merged")
    if source != ctx.input("model"):
        ctx.log("merged the adapter into its base before quantizing")
    return source


def _evaluator(spec: QuantizeSpec, ctx: StageContext, tokenizer: Any) -> Any:
    """model → the accuracy metric, or None when the stage is not accuracy-aware."""
    if spec.accuracy is None:
        return None
    from llmctl.data.sources import load_examples
    from llmctl.models import evaluate, measure

    accuracy = spec.accuracy
    rows = load_examples(accuracy.data, seed=ctx.seed)[0]
    if accuracy.metric in ("exact_match", "f1"):
        score = getattr(evaluate, accuracy.metric)
        return lambda model: score(model, tokenizer, rows, accuracy.max_new_tokens)
    texts = measure.texts_of(rows)
    return lambda model: measure.perplexity(model, tokenizer, texts, accuracy.max_length)


def _calibration(spec: QuantizeSpec, ctx: StageContext, tokenizer: Any) -> list[Any]:
    """Input-id tensors for GPTQ/AWQ (empty when the stage has no calibration data)."""
    if spec.calibration is None:
        return []
    from llmctl.data.sources import load_examples
    from llmctl.models import measure

    texts = measure.texts_of(load_examples(spec.calibration, seed=ctx.seed)[0])[: spec.calibration_samples]
    return [
        tokenizer(
            t, return_tensors="pt", truncation=True, max_length=spec.calibration_length, return_token_type_ids=False
        )["input_ids"]
        for t in texts
    ]


def _greedy(spec: QuantizeSpec, model: Any, tokenizer: Any) -> dict[str, float]:
    """Greedy decode speed at batch 1 (measured for the original and every trial)."""
    from llmctl.models import measure

    return (
        measure.generation_speed(model, tokenizer, spec.speed.prompts, spec.speed.new_tokens)
        if spec.speed.enabled
        else {}
    )


def _beam(spec: QuantizeSpec, model: Any, tokenizer: Any) -> dict[str, float]:
    """Beam-search decode speed (measured for the original and the kept configuration only)."""
    from llmctl.models import measure

    if not spec.speed.enabled or spec.speed.beams == 1 or spec.backend == "gguf":
        return {}  # (llama.cpp's API has no beam search: a GGUF stage measures greedy decoding only)
    beam = measure.generation_speed(model, tokenizer, spec.speed.prompts, spec.speed.new_tokens, beams=spec.speed.beams)
    return {"beam_tokens_per_s": beam["tokens_per_s"]}


def _metrics(
    before: dict[str, Any], after: dict[str, Any], trials: list[dict[str, Any]], config: dict[str, Any]
) -> dict[str, Any]:
    metrics: dict[str, Any] = dict(after)
    metrics |= {f"{key}_before": value for key, value in before.items()}
    if before.get("tokens_per_s") and after.get("tokens_per_s"):
        metrics["speedup"] = round(after["tokens_per_s"] / before["tokens_per_s"], 3)
    if before.get("beam_tokens_per_s") and after.get("beam_tokens_per_s"):
        metrics["beam_speedup"] = round(after["beam_tokens_per_s"] / before["beam_tokens_per_s"], 3)
    metrics["compression"] = round(before["size_mb"] / max(after["size_mb"], 1e-9), 3)
    return metrics | {"config": config, "trials": trials}


def _config_name(config: dict[str, Any]) -> str:
    if "format" in config:
        return f"gguf {config['format'].upper()}"
    group = "per-channel" if config["group_size"] == -1 or config["bits"] == 8 else f"g{config['group_size']}"
    ratio = f" ratio {config['ratio']}" if config["bits"] == 4 and config["ratio"] < 1 else ""
    return f"{config['method']} int{config['bits']} {group}{' sym' if config['sym'] else ''}{ratio}"


def _describe(measured: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in measured.items() if isinstance(v, (int, float)))


def _no_config_message(spec: QuantizeSpec, before: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    accuracy = spec.accuracy
    metric = accuracy.metric if accuracy else "metric"
    lines = [
        f"stage '{spec.name}': no configuration stayed within tolerable_loss "
        f"{accuracy.tolerable_loss if accuracy else 0:g} of {metric} {before.get(metric)} "
        f"({len(trials)} trial{'s' if len(trials) != 1 else ''}):"
    ]
    for trial in trials:
        outcome = trial.get("error") or f"{metric} {trial.get(metric)}, loss {trial.get('loss', 0):+.2%}"
        lines.append(f"  {_config_name(trial['config'])}: {outcome}")
    lines.append("  raise accuracy.tolerable_loss, add safer configurations to accuracy.search, or raise max_trials")
    return "\n".join(lines)


def smoke(stage: dict[str, Any], size: SmokeSize, notes: list[str], name: str) -> None:
    """--smoke: the first trials of the search, a few calibration samples, a short speed test."""
    stage["calibration_samples"] = min(stage["calibration_samples"], size.calibration)
    if accuracy := stage.get("accuracy"):
        accuracy["max_trials"] = min(accuracy["max_trials"], size.trials)
        accuracy["max_new_tokens"] = min(accuracy["max_new_tokens"], size.new_tokens)
        accuracy["max_length"] = min(accuracy["max_length"], size.seq_len)
    speed = stage["speed"]
    speed |= {"new_tokens": min(speed["new_tokens"], size.new_tokens), "prompts": speed["prompts"][:2]}
