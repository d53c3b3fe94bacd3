"""Stage `benchmark`: EleutherAI's lm-eval harness on the stage's model (plain, adapter, INC or OpenVINO) —
built-in tasks, task YAML folders and tasks written inline in the recipe — plus perplexity on a data block,
generation latency/throughput, and a quality gate that stops the pipeline (exit 3) before `deploy`."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from llmctl import gate
from llmctl.errors import DataError, RecipeMismatch
from llmctl.spec.base import PREVIOUS, Block, InputSlot
from llmctl.spec.data import DataSpec, PromptSetSpec
from llmctl.spec.formats import allowed
from llmctl.spec.generation import GREEDY, EndpointSpec, GenerationSpec
from llmctl.spec.smokesize import SUFFIX, SmokeSize
from llmctl.spec.stage import StageSpec
from llmctl.store.artifacts import Artifact, ArtifactKind
from llmctl.store.files import write_atomic
from llmctl.store.layout import REF_PREFIX, parse_ref

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext

MODEL_KINDS = (ArtifactKind.causal_lm, ArtifactKind.adapter, ArtifactKind.quantized_lm)
LOCAL_METRICS = {
    "prompt_completion": ("exact_match",),
    "instruction": ("exact_match",),
    "choice": ("acc", "acc_norm"),
    "text": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
}  # what models/harness.write_task asks for
TASK_FORMATS = tuple(LOCAL_METRICS)
SPEED_TEXT = "The quick brown fox jumps over the lazy dog while the city sleeps and the river runs to the sea. "
OFFLINE_HINT = (
    "built-in lm-eval tasks download their datasets from the Hugging Face hub; this machine could not "
    'get {tasks} ({error}). Fetch them once where there is network (python -c "import lm_eval, datasets; ..." or '
    "`lm_eval --tasks {tasks} --limit 1`), then run with HF_DATASETS_OFFLINE=1 — or use local_tasks"
)


class LocalTask(Block):
    """A task written in the recipe: its data's format decides the kind — prompt_completion/instruction: exact
    match of the greedy answer; choice: accuracy over choices by log-likelihood (acc, acc_norm); text: perplexity."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """Task name in the results."""
    data: DataSpec
    """Prompt/completion (or prompt/choices/answer) rows of the task."""
    max_new_tokens: int = Field(16, ge=1)
    """Tokens generated per answer."""
    stop: list[str] = ["\n"]
    """Generation stops at any of these strings (generate tasks)."""

    @model_validator(mode="after")
    def _format(self) -> LocalTask:
        if self.data.format not in TASK_FORMATS:
            raise ValueError(f"a local task's data.format is one of {', '.join(TASK_FORMATS)}, not {self.data.format}")
        return self


class PerplexitySpec(Block):
    """Token-level perplexity of the model on a data block's texts (computed by llmctl, any backend)."""

    data: DataSpec
    """Texts the perplexity is measured on."""
    max_length: int = Field(512, ge=8)
    """Tokens per evaluated window."""


class SpeedSpec(Block):
    """Generation latency and throughput on synthetic prompts of a set length."""

    prompt_tokens: int = Field(32, ge=1)
    """Prompt length of the timed generations."""
    new_tokens: int = Field(32, ge=1)
    """Tokens generated per timed generation."""
    batch_sizes: list[int] = [1, 4]
    """Batch sizes timed."""
    prompts: int = Field(4, ge=1)
    """Prompts per batch size."""


JUDGE_METRICS = {
    "pairwise": ("win_rate", "wins", "losses", "ties", "consistency", "unparsed"),
    "rubric": ("score", "unparsed"),
}


class JudgeSpec(Block):
    """An LLM judge of the model's answers to `prompts`: pairwise against a reference model's answers (each pair
    judged in both orders; metrics judge/win_rate, wins, losses, ties, consistency) or graded 1–10 on a rubric
    (judge/score). MT-bench's judge prompts unless `template` says otherwise."""

    mode: Literal["pairwise", "rubric"] = "pairwise"
    """pairwise (a win rate against `reference`) or rubric (a 1–10 rating of each answer)."""
    endpoint: EndpointSpec | None = None
    """The judge as an OpenAI-compatible API (`llmctl serve`, vLLM, a hosted model; api: chat for chat models):
    its reply is read for [[A]]/[[B]]/[[C]] or [[rating]]."""
    model: str | None = None
    """The judge as a local model ('stage:NAME', a folder or a hub id): it picks the verdict it finds likeliest."""
    prompts: PromptSetSpec
    """The questions both models answer (format: prompt)."""
    reference: str | None = None
    """pairwise: whose answers the model's are compared with — 'stage:NAME', a folder, a hub id or
    'registry:DIR/NAME' (the version served there). Default: the gate's champion (gate.baseline: registry:…);
    with no champion yet the judge is skipped and gate checks on judge/ metrics are waived, once."""
    rubric: str = ""
    """What the judge is asked to weigh, added to the prompt (e.g. "a correct sum as a bare number is best")."""
    template: str | None = None
    """Your own judge prompt: pairwise with {question} {answer_a} {answer_b}, rubric with {question} {answer};
    {rubric} is optional."""
    max_new_tokens: int = Field(64, ge=1)
    """Tokens per answer of the judged models."""
    generation: GenerationSpec = GREEDY
    """How the judged models answer (default greedy)."""
    stop: list[str] = []
    """Cut each answer at the first of these strings."""
    judge_tokens: int = Field(512, ge=1)
    """endpoint: tokens the judge may write (its explanation, then the verdict)."""

    @model_validator(mode="after")
    def _check(self) -> JudgeSpec:
        if (self.endpoint is None) == (self.model is None):
            raise ValueError("a judge is either an endpoint or a local model: set one of them")
        if not allowed(self.prompts.format, "prompt"):
            raise ValueError("judge.prompts are questions: set format: prompt")
        if self.mode == "rubric" and self.reference:
            raise ValueError("a rubric grades each answer alone: reference applies to mode pairwise")
        if self.template is not None:
            wanted = (
                ("{question}", "{answer_a}", "{answer_b}") if self.mode == "pairwise" else ("{question}", "{answer}")
            )
            if missing := [w for w in wanted if w not in self.template]:
                raise ValueError(f"template lacks {', '.join(missing)} (mode {self.mode})")
        return self


class GateSpec(Block):
    """Turn results into a decision: absolute thresholds and/or no regression against a baseline."""

    checks: list[str] = []
    """`METRIC OP NUMBER`, e.g. 'toy_add/exact_match >= 0.6' or 'perplexity <= 40'."""
    baseline: str | None = None
    """'previous' (this stage's last successful run of this recipe), a run folder or run name (same stage
    name), or 'registry:DIR/NAME' (the metrics stored with the model currently deployed there)."""
    compare: list[str] = []
    """Metrics compared with the baseline (default: every metric both have)."""
    tolerance: float = Field(0.0, ge=0)
    """Largest allowed absolute regression against the baseline."""
    rescore: bool = True
    """With `baseline: registry:…`: evaluate the served champion in this run, on this stage's tasks and rows, and
    compare with that (false: with the metrics stored when it was deployed)."""
    min_improvement: Annotated[float, Field(ge=0)] | Annotated[str, Field(pattern=r"^\d+(\.\d+)?%$")] = 0.0
    """The challenger must beat the baseline by at least this much on every compared metric: absolute (0.01), or
    relative to the baseline's value ('2%': a perplexity of 20 must drop below 19.6); lower perplexity or loss,
    higher scores. 0: not being worse than `tolerance` allows is enough."""

    @model_validator(mode="after")
    def _checks_parse(self) -> GateSpec:
        for check in self.checks:
            gate.Check.parse(check)
        if self.min_improvement and self.tolerance:
            raise ValueError("set tolerance (how much worse is allowed) or min_improvement (how much better is needed)")
        return self


class BenchmarkSpec(StageSpec):
    """Evaluation with lm-eval, perplexity and speed; optional quality gate."""

    type: Literal["benchmark"] = "benchmark"
    """benchmark: lm-eval tasks, local tasks, perplexity and speed of a model, with an optional gate."""
    model: str = PREVIOUS
    """'previous' (the last causal LM, adapter or quantized model), 'stage:NAME', a folder or hub id."""
    tasks: list[str] = []
    """lm-eval tasks by name (built-in, e.g. hellaswag, or from include_path)."""
    include_path: str | None = None
    """A folder of lm-eval task YAML files."""
    task_data: dict[str, str] = {}
    """Local files for built-in tasks, by task name, laid out like the task's hub dataset (e.g. {hellaswag:
    data/hellaswag_val.jsonl}): the task runs on them as its evaluation split instead of downloading."""
    local_tasks: list[LocalTask] = []
    """Tasks built from your own data (exact match or multiple choice)."""
    num_fewshot: int | None = Field(None, ge=0)
    """Examples shown before each question (null: the task's default)."""
    limit: float | None = Field(None, gt=0)
    """Examples per task (a count, or a share below 1)."""
    batch_size: int = Field(1, ge=1)
    """lm-eval batch size."""
    perplexity: PerplexitySpec | None = None
    """Perplexity on held-out text."""
    speed: SpeedSpec | None = None
    """Generation speed (ms per token) at several batch sizes."""
    judge: JudgeSpec | None = None
    """An LLM judge of the model's answers: a win rate against a reference model (the champion), or a rubric score."""
    gate: GateSpec | None = None
    """Checks on the metrics; a failed gate stops the pipeline (exit 3)."""

    produces = ArtifactKind.eval_report

    @property
    def sequences_at_once(self) -> int:
        return max([self.batch_size, *(self.speed.batch_sizes if self.speed else [])])

    @model_validator(mode="after")
    def _something_to_measure(self) -> BenchmarkSpec:
        if not (self.tasks or self.local_tasks or self.perplexity or self.speed or self.judge):
            raise ValueError("nothing to measure: add tasks, local_tasks, perplexity, speed or judge")
        names = [t.name for t in self.local_tasks]
        if len(set(names)) != len(names):
            raise ValueError("local_tasks names must be unique")
        if stray := sorted(set(self.task_data) - set(self.tasks)):
            raise ValueError(f"task_data: {', '.join(stray)} not in tasks ({', '.join(self.tasks) or 'none'})")
        for metric in [gate.Check.parse(c).metric for c in self.gate.checks] + self.gate.compare if self.gate else []:
            self._check_metric(metric)
        return self

    def _check_metric(self, metric: str) -> None:
        """A gate may only name a metric this stage produces (lm-eval built-in tasks' metrics are known only
        once they ran, so those are taken on trust)."""
        task, _, name = metric.rpartition("/")
        if not task:
            produced = (["perplexity"] if self.perplexity else []) + [
                f"{kind}_batch{n}"
                for n in (self.speed.batch_sizes if self.speed else [])
                for kind in ("tokens_per_s", "ms_per_token")
            ]
            if metric not in produced:
                raise ValueError(
                    f"gate: metric {metric!r} is not measured here (stage metrics: {', '.join(produced) or 'none'}; "
                    "task metrics are TASK/METRIC, e.g. toy_add/exact_match)"
                )
            return
        if task == "judge":
            judged = JUDGE_METRICS[self.judge.mode] if self.judge else ()
            if name not in judged:
                raise ValueError(
                    f"gate: {metric!r} is not measured here (judge metrics: "
                    f"{', '.join(f'judge/{m}' for m in judged) or 'none: add a judge'})"
                )
            return
        local = {t.name: LOCAL_METRICS[t.data.format] for t in self.local_tasks}
        if task in local and name.removesuffix("_stderr") not in local[task]:
            raise ValueError(f"gate: task {task!r} reports {', '.join(local[task])}, not {name!r}")
        if task not in local and task not in self.tasks and self.include_path is None:
            known = sorted(set(self.tasks) | set(local))
            raise ValueError(f"gate: task {task!r} is not benchmarked here ({', '.join(known) or 'none'})")

    def inputs(self) -> dict[str, InputSlot]:
        slots = {"model": InputSlot(self.model, MODEL_KINDS, "model")}
        if self.judge is not None and self.judge.model is not None:
            slots["judge"] = InputSlot(self.judge.model, MODEL_KINDS, "judge.model")
        reference = self.judge.reference if self.judge is not None else None
        if reference is not None and parse_ref(reference) is None:
            slots["judge_reference"] = InputSlot(reference, MODEL_KINDS, "judge.reference")
        return slots

    def data_files(self) -> dict[str, str]:
        return {f"task_data.{task}": path for task, path in self.task_data.items()}

    def baseline_ref(self) -> str | None:
        return self.gate.baseline if self.gate else None


def run(spec: BenchmarkSpec, ctx: StageContext) -> Artifact:
    """Check tasks and data, evaluate, measure, decide the gate (re-scoring a registry champion first)."""
    from llmctl.models import harness

    tasks, manager = _task_list(spec, ctx)
    metrics = _measure(spec, ctx, ctx.input("model"), tasks, manager, ctx.out_dir)
    judged = _judge(spec.judge, ctx) if spec.judge else True
    metrics |= judged if isinstance(judged, dict) else {}
    meta: dict[str, Any] = {"metrics": metrics}
    if spec.gate:
        baseline_metrics, baseline_name = _baseline(spec, ctx, tasks, manager)
        checks = [c for c in spec.gate.checks if judged or not gate.Check.parse(c).metric.startswith(gate.JUDGE)]
        decision = gate.evaluate(
            metrics,
            checks,
            baseline_metrics,
            spec.gate.compare,
            spec.gate.tolerance,
            baseline_name,
            spec.gate.min_improvement,
        )
        metrics["gate_passed"] = decision["passed"]
        meta["gate"] = decision | {"baseline": baseline_metrics}
        ctx.log(decision["message"])
    if spec.local_tasks:
        harness.relocate_tasks(ctx.work_dir / "tasks", ctx.work_dir.absolute(), ctx.committed_dir.absolute())
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(ctx.out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return Artifact(ArtifactKind.eval_report, str(ctx.out_dir), meta=meta)


def _measure(
    spec: BenchmarkSpec, ctx: StageContext, ref: str, tasks: list[str], manager: Any, out: Path, speed: bool = True
) -> dict[str, Any]:
    """The stage's metrics of the model at `ref`: lm-eval tasks (results written to `out`), perplexity, speed."""
    from llmctl.models import causal_lm, measure, quantized

    metrics: dict[str, Any] = _harness(spec, ctx, ref, tasks, manager, out) if tasks else {}
    if spec.perplexity or (spec.speed and speed):
        with ctx.library_output():
            model = quantized.load_any(ref)
        tokenizer = causal_lm.load_tokenizer(ref)
        if spec.perplexity:
            metrics["perplexity"] = measure.perplexity(
                model, tokenizer, _texts(spec.perplexity.data, ctx), spec.perplexity.max_length
            )
        if spec.speed and speed:
            metrics |= _speed(spec.speed, model, tokenizer)
    return metrics


def _baseline(spec: BenchmarkSpec, ctx: StageContext, tasks: list[str], manager: Any) -> tuple[dict | None, str]:
    """The gate's baseline metrics and name. A registry champion is re-scored now, on this stage's tasks and
    rows (`gate.rescore`, the default), so challenger and champion are compared on the same data; the metrics
    stored at its deploy are used when asked, or when its folder is gone."""
    baseline = ctx.baseline
    if baseline is None:
        return None, ""
    if spec.gate and spec.gate.rescore and baseline.path and Path(baseline.path).is_dir():
        ctx.log(f"re-scoring the champion ({baseline.name}) on this stage's data")
        rescored = _measure(spec, ctx, baseline.path, tasks, manager, ctx.work_dir / "champion", speed=False)
        return rescored, f"{baseline.name}, re-scored now"
    return baseline.metrics, baseline.name


def _judge(judge: JudgeSpec, ctx: StageContext) -> dict[str, Any] | None:
    """The judge's metrics (judgments in output/judge.jsonl), or None when a pairwise judge has no reference yet."""
    from llmctl.models import judging
    from llmctl.models.endpoint import api_key

    key = api_key(judge.endpoint, "judge.endpoint.api_key_env") if judge.endpoint else None
    reference = _reference(judge, ctx)
    if judge.mode == "pairwise" and reference is None:
        ctx.log("judge: no reference model yet (no champion deployed): skipped, and gate checks on judge/ waived")
        return None
    questions = list(_all_rows(judge.prompts, ctx)["prompt"])
    answers = _answers(ctx.input("model"), questions, judge, ctx)
    ask = _asker(judge, ctx, key)
    if judge.mode == "rubric":
        metrics, judged = judging.graded(questions, answers, ask, judge.rubric, judge.template or judging.RUBRIC)
    else:
        assert reference is not None
        others = _answers(reference, questions, judge, ctx)
        metrics, judged = judging.pairwise(
            questions, answers, others, ask, judge.rubric, judge.template or judging.PAIRWISE
        )
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "judge.jsonl").write_text("".join(json.dumps(j, ensure_ascii=False) + "\n" for j in judged))
    ctx.log("judge: " + ", ".join(f"{k.removeprefix(gate.JUDGE)} {v:g}" for k, v in metrics.items()))
    return metrics


def _reference(judge: JudgeSpec, ctx: StageContext) -> str | None:
    """The folder of the model a pairwise judge compares with: the slot, a registry's served version, or the
    gate's champion; None when there is none."""
    if "judge_reference" in ctx.inputs:
        return ctx.input("judge_reference")
    if judge.reference is not None and (named := parse_ref(judge.reference)) is not None:
        from llmctl.store.registry import Registry

        folder, name = named
        registry = Registry(Path(folder))
        return str(registry.current_path(name)) if registry.current(name) else None
    champion = ctx.baseline
    return champion.path if champion is not None and champion.path and Path(champion.path).is_dir() else None


def _answers(ref: str, questions: list[str], judge: JudgeSpec, ctx: StageContext) -> list[str]:
    """Each question's answer from the model at `ref`, generated as the judge block says, cut at `stop`."""
    from llmctl.models import causal_lm, quantized

    with ctx.library_output():
        model = quantized.load_any(ref)
    tokenizer = causal_lm.load_tokenizer(ref)
    causal_lm.check_room(model, tokenizer, questions, judge.max_new_tokens, "judge.max_new_tokens")
    answers = []
    for start in range(0, len(questions), 8):
        batch = questions[start : start + 8]
        answers += [
            out[0]
            for out in causal_lm.sample(
                model, tokenizer, batch, 1, judge.max_new_tokens, judge.generation, ctx.seed + start
            )
        ]
    return [causal_lm.cut(a, judge.stop).strip() for a in answers]


def _asker(judge: JudgeSpec, ctx: StageContext, key: str | None) -> Any:
    """The judge: (prompts, options) -> replies, from the endpoint (greedy) or from the local model's likelihoods."""
    from llmctl.models import judging

    if judge.endpoint is not None:
        from llmctl.models.endpoint import Endpoint

        endpoint = Endpoint(judge.endpoint, key)
        return lambda prompts, _: [
            r[0] for r in endpoint.complete(prompts, ctx.seed, 1, max_tokens=judge.judge_tokens, temperature=0.0)
        ]
    from llmctl.models import causal_lm, quantized

    model, tokenizer = quantized.load_any(ctx.input("judge")), causal_lm.load_tokenizer(ctx.input("judge"))
    return lambda prompts, options: judging.likeliest(model, tokenizer, prompts, options)


def _task_list(spec: BenchmarkSpec, ctx: StageContext) -> tuple[list[str], Any]:
    """Write the local tasks as lm-eval YAML and index every task source once; check requested task names
    before any model loads. Returns (task names, lm-eval task manager)."""
    from llmctl.models import harness

    for task in spec.local_tasks:
        harness.write_task(task.name, _all_rows(task.data, ctx), task.max_new_tokens, task.stop, ctx.work_dir / "tasks")
    with ctx.library_output():
        for task_name, path in spec.task_data.items():
            harness.write_task_data(task_name, path, ctx.work_dir / "tasks")
        include = [str(ctx.work_dir / "tasks")] if spec.local_tasks or spec.task_data else []
        include += [spec.include_path] if spec.include_path else []
        manager = harness.task_manager(include, builtin=bool(spec.tasks))
    unknown = [t for t in spec.tasks if t not in manager.all_tasks]
    if unknown:
        hints = {t: difflib.get_close_matches(t, manager.all_tasks, n=1) for t in unknown}
        raise RecipeMismatch(
            "benchmark.tasks",
            "benchmark.tasks: unknown lm-eval task "
            + ", ".join(f"{t!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for t, h in hints.items()),
        )
    return [*spec.tasks, *(t.name for t in spec.local_tasks)], manager


def _harness(
    spec: BenchmarkSpec, ctx: StageContext, ref: str, tasks: list[str], manager: Any, out: Path
) -> dict[str, float]:
    """Run lm-eval; write its results JSON and table into `out`; return flattened metrics."""
    from lm_eval.utils import make_table

    from llmctl.models import harness

    limit = int(spec.limit) if spec.limit and spec.limit >= 1 else spec.limit
    with ctx.library_output():
        lm = harness.lm_for(ref, spec.batch_size)
        try:
            results = harness.run(lm, tasks, manager, spec.num_fewshot, limit, ctx.seed)
        except Exception as err:
            if not (spec.tasks and _is_offline_error(err)):
                raise
            if not ctx.recipe.smoke:
                raise DataError(
                    OFFLINE_HINT.format(tasks=",".join(spec.tasks), error=f"{type(err).__name__}: {str(err)[:160]}")
                ) from err
            ctx.log(
                f"smoke run: skipped lm-eval task {', '.join(spec.tasks)} — its dataset is not on this machine "
                "(give local files with task_data, or fetch it once)"
            )
            tasks = [t for t in tasks if t not in spec.tasks]
            if not tasks:
                return {}
            results = harness.run(lm, tasks, manager, spec.num_fewshot, limit, ctx.seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lm_eval_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = make_table(results)
    (out / "results.md").write_text(table)
    for line in table.strip().splitlines():
        ctx.log(line)
    return harness.flatten(results)


def _is_offline_error(err: BaseException) -> bool:
    names = " ".join(type(e).__name__ for e in (err, err.__cause__, err.__context__) if e is not None)
    text = str(err).lower()
    return any(k in names for k in ("Offline", "Connection", "HTTP", "Hub", "NotFound", "Timeout")) or "offline" in text


def _all_rows(data: DataSpec, ctx: StageContext) -> Any:
    """Every row of a data block (an evaluation set is not split into train and validation)."""
    from llmctl.data.sources import load_examples

    return load_examples(data.model_copy(update={"validation": 0}), seed=ctx.seed)[0]


def _texts(data: DataSpec, ctx: StageContext) -> list[str]:
    from llmctl.models import measure

    return measure.texts_of(_all_rows(data, ctx))


def _speed(speed: SpeedSpec, model: Any, tokenizer: Any) -> dict[str, float]:
    """tokens/s and ms/token at each batch size, on prompts of exactly `prompt_tokens` tokens."""
    from llmctl.models import measure

    ids = tokenizer(SPEED_TEXT * (1 + speed.prompt_tokens // 8), add_special_tokens=False)["input_ids"]
    prompts = [tokenizer.decode(ids[i : i + speed.prompt_tokens]) for i in range(speed.prompts)]
    out: dict[str, float] = {}
    for batch in speed.batch_sizes:
        result = measure.generation_speed(model, tokenizer, prompts * batch, speed.new_tokens, batch_size=batch)
        out |= {
            f"tokens_per_s_batch{batch}": result["tokens_per_s"],
            f"ms_per_token_batch{batch}": result["ms_per_token"],
        }
    return out


def smoke(stage: dict[str, Any], size: SmokeSize, notes: list[str], name: str) -> None:
    """--smoke: a few documents per task, short generations and speed tests."""
    limit = stage.get("limit")
    stage["limit"] = size.docs if limit is None or limit < 1 or limit > size.docs else limit
    for task in stage.get("local_tasks", []):
        task["max_new_tokens"] = min(task["max_new_tokens"], size.new_tokens)
    if speed := stage.get("speed"):
        speed |= {
            "new_tokens": min(speed["new_tokens"], size.new_tokens),
            "prompt_tokens": min(speed["prompt_tokens"], 16),
            "prompts": min(speed["prompts"], 2),
        }
    if judge := stage.get("judge"):
        judge["max_new_tokens"] = min(judge["max_new_tokens"], size.new_tokens)
        judge["judge_tokens"] = min(judge["judge_tokens"], 4 * size.new_tokens)
    if perplexity := stage.get("perplexity"):
        perplexity["max_length"] = min(perplexity["max_length"], size.seq_len)
    gate_spec = stage.get("gate") or {}
    if (named := parse_ref(str(gate_spec.get("baseline") or ""))) is not None:  # never the production champion
        folder, model = named
        gate_spec["baseline"] = f"{REF_PREFIX}{folder.rstrip('/')}{SUFFIX}/{model}"
        notes.append(
            f"stage '{name}': a smoke run's gate compares with {gate_spec['baseline']}, where smoke runs deploy"
        )
    stage["batch_size"] = max(1, stage.get("batch_size", 1))
