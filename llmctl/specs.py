"""Typed recipe blocks: the StageSpec base every stage extends, and the blocks stages share.

Attribute docstrings become descriptions in `llmctl schema`. Defaults live here, never in stage code.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmctl.artifacts import ArtifactKind
from llmctl.data.formats import FORMATS, allowed

PREVIOUS = "previous"
STAGE_PREFIX = "stage:"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Recipe, stage and model names: they become folder names, so no `/`, no leading `.`, at most 64 characters."""


def optional_pattern(pattern: str) -> str:
    """`pattern`, or the empty string."""
    return f"^(?:{pattern[1:-1]})?$"


MAX_SEED = 2**32 - 1  # numpy's seed range (transformers.set_seed seeds numpy too)


class Block(BaseModel):
    """Base of every recipe block: unknown keys are errors, values are immutable once validated. Validators are
    built on first use (`defer_build`: `--help` never needs them). Attribute docstrings describe the fields in
    `llmctl schema` (`field_docs`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


def field_docs(cls: type[BaseModel]) -> dict[str, str]:
    """{field: its attribute docstring} for a recipe block, inherited fields included: the descriptions of
    `llmctl schema`. Read only when a schema is asked for (pydantic's `use_attribute_docstrings` walks the call
    stack with inspect.getmodule at every class definition, and even one parse per module costs every command
    ~45 ms of start-up)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, BaseModel) and klass.__module__.startswith("llmctl."):
            docs |= _attribute_docstrings(inspect.getsourcefile(klass) or "").get(klass.__qualname__, {})
    return docs


@functools.cache
def _attribute_docstrings(filename: str) -> dict[str, dict[str, str]]:
    """{class qualname: {attribute: its docstring}} for the classes of a source file (nested ones too)."""
    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return {}
    found: dict[str, dict[str, str]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                found[prefix + node.name] = {
                    attr.target.id: inspect.cleandoc(doc.value.value)
                    for attr, doc in zip(node.body, node.body[1:], strict=False)
                    if isinstance(attr, ast.AnnAssign)
                    and isinstance(attr.target, ast.Name)
                    and isinstance(doc, ast.Expr)
                    and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)
                }
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return found


@dataclass(frozen=True)
class InputSlot:
    """One input a stage consumes: a reference (`previous`, `stage:NAME`, a path or hub id) and the kinds it accepts."""

    ref: str
    accepts: tuple[ArtifactKind, ...]
    field: str  # the spec field that holds the reference, for error messages


# Slurm fields are written into a batch script that bash runs: nothing that could end a line, quote, expand or
# chain a command gets through (newlines, spaces, quotes, $, `, ;, \).
SLURM_NAME = r"^[A-Za-z0-9_.,+-]{1,128}$"
SLURM_CONSTRAINT = r"^[A-Za-z0-9_.,&|*\[\]()!:=-]{1,256}$"
SLURM_OPTION = r"^--[A-Za-z][A-Za-z0-9-]*(=[A-Za-z0-9_.,:/@%+=*&|\[\]()!-]*)?$"


class LauncherSpec(Block):
    """How a training stage is started: in-process, as a job of torchrun / Accelerate (DeepSpeed, FSDP), or as a
    Slurm batch job (torchrun on every node)."""

    engine: Literal["none", "torchrun", "accelerate", "slurm", "ray"] = "none"
    """How training stages are launched: none (in-process), torchrun, accelerate, slurm (sbatch) or ray (Ray Train
    on an existing cluster)."""
    num_processes: int = Field(1, ge=1)
    """Processes in total (per machine × machines)."""
    num_machines: int = Field(1, ge=1)
    """Machines taking part in the job (accelerate)."""
    machine_rank: int = Field(0, ge=0)
    """This machine's rank among num_machines (0 is the main one)."""
    main_process_ip: str | None = None
    """Address of the rank-0 machine, for multi-machine jobs."""
    main_process_port: int = Field(29500, ge=1, le=65535)
    """Port of the rank-0 machine's rendezvous."""
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    """accelerate: overrides the recipe's dtype for the launch."""
    config_file: str | None = None
    """accelerate: an `accelerate config` YAML."""
    deepspeed: str | Literal[1, 2, 3] | None = None
    """accelerate: a DeepSpeed JSON config, or a ZeRO stage."""
    offload: bool = False
    """accelerate + DeepSpeed ZeRO stage: offload optimizer state and parameters to CPU."""
    fsdp: str | None = None
    """accelerate: FSDP sharding strategy, e.g. FULL_SHARD."""
    nodes: int = Field(1, ge=1)
    """slurm: nodes of the job (num_processes is split evenly across them)."""
    gpus_per_node: int = Field(0, ge=0)
    """slurm: GPUs per node (--gpus-per-node); num_processes defaults to nodes × this."""
    cpus_per_task: int | None = Field(None, ge=1)
    """slurm: CPUs for each node's task (it runs that node's ranks); ray: CPUs per worker."""
    partition: str | None = Field(None, pattern=SLURM_NAME)
    """slurm: --partition (a name, or names separated by commas)."""
    account: str | None = Field(None, pattern=SLURM_NAME)
    """slurm: --account."""
    qos: str | None = Field(None, pattern=SLURM_NAME)
    """slurm: --qos."""
    time: str | None = Field(None, pattern=r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
    """slurm: --time limit (minutes, HH:MM:SS or D-HH:MM:SS); the job checkpoints before it and is submitted again."""
    constraint: str | None = Field(None, pattern=SLURM_CONSTRAINT)
    """slurm: --constraint (node features, with Slurm's & | [ ] * operators)."""
    extra: list[Annotated[str, Field(pattern=SLURM_OPTION)]] = []
    """slurm: more sbatch options, each one `--name` or `--name=value` with no spaces, quotes or `$` (e.g.
    ["--exclusive", "--mem=0", "--gres=gpu:4"])."""
    signal_s: int = Field(120, ge=10)
    """slurm: seconds before the time limit at which every rank is told to checkpoint (--signal=TERM@N)."""
    max_requeues: int = Field(3, ge=0)
    """slurm: times a job that hit its time limit or was preempted is submitted again from its checkpoint."""
    address: str = "auto"
    """ray: the cluster (auto: the one this machine belongs to or RAY_ADDRESS; HOST:PORT; ray://HOST:10001)."""
    gpus_per_worker: float = Field(0, ge=0)
    """ray: GPUs per worker (one worker per process; NCCL when > 0, gloo otherwise)."""
    max_failures: int = Field(2, ge=0)
    """ray: worker-group restarts after a worker dies (Ray's FailureConfig); each resumes from the newest checkpoint."""

    @model_validator(mode="after")
    def _check(self) -> LauncherSpec:
        if self.engine != "ray" and (self.address != "auto" or self.gpus_per_worker):
            raise ValueError("address and gpus_per_worker need engine: ray")
        slurm_only = ("partition", "account", "qos", "time", "constraint")
        if self.engine not in ("slurm", "ray") and self.cpus_per_task is not None:
            raise ValueError("cpus_per_task needs engine: slurm or ray")
        if self.engine != "slurm" and (
            any(getattr(self, n) is not None for n in slurm_only) or self.extra or self.nodes > 1 or self.gpus_per_node
        ):
            raise ValueError(f"nodes, gpus_per_node, extra and {', '.join(slurm_only)} need engine: slurm")
        if self.engine == "slurm":
            if self.gpus_per_node and self.num_processes == 1:
                object.__setattr__(self, "num_processes", self.nodes * self.gpus_per_node)
            if self.num_processes % self.nodes:
                raise ValueError("num_processes must be a multiple of nodes")
            if self.num_machines > 1 or self.main_process_ip:
                raise ValueError("engine slurm places the ranks itself: use nodes, not num_machines/main_process_ip")
        if self.engine != "accelerate" and (
            self.deepspeed is not None or self.fsdp or self.config_file or self.mixed_precision
        ):
            raise ValueError("deepspeed, fsdp, config_file and mixed_precision need engine: accelerate")
        if self.deepspeed is not None and self.fsdp:
            raise ValueError("choose deepspeed or fsdp, not both")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("num_machines > 1 needs main_process_ip (the rank-0 machine)")
        if self.num_processes % self.num_machines:
            raise ValueError("num_processes must be a multiple of num_machines")
        return self


class StageSpec(Block):
    """Fields every stage has."""

    type: str
    name: str = Field("", pattern=optional_pattern(NAME_PATTERN))
    """Unique stage name (defaults to the type); used by `stage:NAME`, `--from`, `${stages.NAME.output}`.
    Letters, digits, `_ . -`; it names the stage's folder, so no `/`."""
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    """Overrides the recipe's seed for this stage."""
    launcher: LauncherSpec | None = None
    """Overrides the recipe's launcher for this stage (training stages: pretrain, sft, reward, dpo)."""

    produces: ClassVar[ArtifactKind]
    distributable: ClassVar[bool] = False  # trains with the HF Trainer, so torchrun/accelerate can scale it out
    eval_metrics: ClassVar[tuple[str, ...] | None] = None  # what its evaluation reports, where llmctl knows it all

    @model_validator(mode="after")
    def _default_name(self) -> StageSpec:
        if not self.name:
            object.__setattr__(self, "name", self.type)
        if self.launcher is not None and self.launcher.engine != "none" and not self.distributable:
            raise ValueError(
                f"stage type {self.type} runs in-process only; a launcher applies to pretrain, sft, reward and dpo"
            )
        return self

    @model_validator(mode="after")
    def _best_is_measurable(self) -> StageSpec:
        """early_stopping and keep_best compare evaluations: found at validate, not after paid training, when
        there is nothing to evaluate on or the metric is never measured."""
        train, data = self.train_args, self.training_data
        metric = train.best_metric if train is not None else None
        if metric is None:
            return self
        what = "train.early_stopping" if train is not None and train.early_stopping else "train.keep_best"
        if data is not None and not data.mix and data.validation in (0, 0.0):
            raise ValueError(f"{what} compares evaluations, and data.validation is 0: hold some rows out (0.05)")
        if metric in ("eval_exact_match", "eval_f1") and getattr(self, "eval_set", None) is None:
            raise ValueError(f"{what}: {metric} is measured on an eval_set during training; add eval_set")
        known = self.eval_metrics
        if known is not None and getattr(self, "eval_set", None) is not None:
            known = (*known, "eval_exact_match", "eval_f1")
        if not metric.startswith("eval_") or (known is not None and metric not in known):
            listed = ", ".join(known) if known else "eval_loss, …"
            raise ValueError(f"{what}: metric {metric!r} is not measured by this stage's evaluation ({listed})")
        return self

    def inputs(self) -> dict[str, InputSlot]:
        """The inputs this stage consumes, by slot name. Stages override this."""
        return {}

    def baseline_ref(self) -> str | None:
        """Where this stage's quality gate takes its baseline metrics from ('previous', 'registry:DIR/NAME', a
        run); resolved by the pipeline, which also fingerprints them. Stages with a gate override this."""
        return None

    def output_kind(self) -> ArtifactKind:
        """What this stage hands on (a stage whose output depends on its settings overrides this)."""
        return self.produces

    def check_environment(self, cuda_visible: bool) -> list[tuple[str, str]]:
        """(field path, message) for settings this machine cannot run; checked by validate/plan/run."""
        return self.peft_settings.check_environment(cuda_visible) if self.peft_settings is not None else []

    # What the pipeline, `plan`, tracking and `data preview` need to know of any stage; stages override these.
    @property
    def train_args(self) -> TrainArgs | None:
        """The Trainer settings of a training stage."""
        return None

    @property
    def peft_settings(self) -> PeftSpec | None:
        """LoRA/QLoRA settings of a stage that can train an adapter."""
        return None

    @property
    def seq_len(self) -> int | None:
        """Tokens per training sequence (block_size, max_length), for the memory estimate."""
        return None

    @property
    def training_data(self) -> DataSpec | None:
        """The data block the stage trains on (what `llmctl data preview` shows)."""
        return None

    @property
    def tokenizer_ref(self) -> str | None:
        """A tokenizer named by the stage itself (else its model input's is used)."""
        return None

    @property
    def quantized_bits(self) -> int | None:
        """Weight bits of a quantizing stage's output."""
        return None

    def data_files(self) -> dict[str, str]:
        """Data the stage reads outside its data blocks, by field path (a benchmark's task_data files): they
        are fingerprinted like data blocks."""
        return {}

    @property
    def reference_copies(self) -> int:
        """Frozen copies of the model held beside the trained one (dpo's reference), for the memory estimate."""
        return 0

    @property
    def sequences_at_once(self) -> int:
        """Sequences a stage that runs the model decodes together (each holds a KV cache), for the estimate."""
        return 1


if TYPE_CHECKING:
    DataFormat = str
else:
    DataFormat = Literal[tuple(FORMATS)]  # one choice per registered format (data/formats.py)


class DataSpec(Block):
    """Where rows come from, how they are filtered and split, and how a row becomes training text."""

    path: str = ""
    """A Deep Lake dataset (local folder, file://, hub://, s3://, gcs://, az://), a Hugging Face Hub dataset
    (hf://ORG/NAME), a file or glob (.jsonl .json .txt .csv .parquet), or a `datasets.save_to_disk` folder.
    Local paths are relative to the working directory. (Empty when `mix` lists the sources.)"""
    config: str | None = None
    """hf:// datasets: the configuration (`datasets.load_dataset`'s name), e.g. plain_text."""
    revision: str | None = None
    """hf:// datasets: a branch, tag or commit (default: main); the resolved commit is the data fingerprint."""
    streaming: bool = False
    """hf:// datasets: stream rows instead of downloading the whole split (needs `limit`)."""
    query: str | None = None
    """Deep Lake TQL applied before anything else, e.g. "SELECT * WHERE contains(question, 'python')"."""
    split: str | None = None
    """Named split of a saved DatasetDict or of an hf:// dataset (default there: train)."""
    columns: dict[str, str] = {}
    """Renames, {name the format expects: column in the data}, e.g. {prompt: question, completion: answer}.
    A column may be a path into nested values: {completion: "answers.text[0]"} (SQuAD)."""
    format: DataFormat = "text"
    """text | prompt_completion | instruction (instruction/input/output) | chat (messages) |
    preference (prompt/chosen/rejected) | prompt (prompts only, for RL rollouts) | choice (prompt, choices:
    a list of strings, answer: its index or text; for multiple-choice evaluation)."""
    template: str | None = None
    """Python format string over the row's columns, e.g. "Question: {prompt}\n\nAnswer: {completion}". For
    prompt_completion/instruction the completion starts at the completion placeholder."""
    completion_only: bool = False
    """Train on the completion only (the prompt is masked out of the loss; chat: the assistant turns only)."""
    chat_template: str | None = None
    """format chat (and preference rows given as turns): `chatml` (built in, with the markers that mask all but
    assistant turns) or a Jinja template; default: the tokenizer's own chat template."""
    roles: dict[str, str] = {}
    """format chat: speaker → role renames, e.g. {bot: assistant} (ShareGPT's human/gpt map to user/assistant
    without being told)."""
    validation: float | int | str = Field(0.05)
    """Held-out share (0 < x < 1), row count (>= 1), or the path of a second source laid out the same way;
    0 disables evaluation."""
    limit: int | None = Field(None, ge=1)
    """Use at most this many rows (after the query and shuffling)."""
    shuffle: bool = True
    """Shuffle rows (seeded) before splitting."""
    too_long: Literal["truncate", "drop", "error"] = "truncate"
    """Rows longer than the stage's max_length (counted with its tokenizer before training): truncate them
    (the trainer cuts them), drop them, or stop with an error naming the first one."""
    mix: list[DataSpec] = []
    """Several sources mixed into this one (instead of `path`): each with its own path, columns, template,
    query, split, limit and, when interleaving, `weight`; they share this block's format, validation and limit."""
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    """Seed of this block's shuffle, split and interleaving (default: the stage's seed)."""
    strategy: Literal["concat", "interleave"] = "concat"
    """How `mix` sources combine: concat (all rows, shuffled together) or interleave (drawn by `weight` until
    every source is used up)."""
    weight: float | None = Field(None, gt=0)
    """A `mix` source's share of the draws when the mixture interleaves (default: equal shares)."""

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if isinstance(self.validation, float) and not 0 <= self.validation < 1:
            raise ValueError("validation is a fraction below 1 (0.05), a row count (500) or a second source path")
        if isinstance(self.validation, int) and self.validation < 0:
            raise ValueError("validation must not be negative")
        if self.completion_only and not allowed(self.format, "sft"):
            raise ValueError(f"completion_only needs a prompt and a completion; format {self.format} has none")
        completion = {"prompt_completion": "{completion}", "instruction": "{output}"}.get(self.format)
        if self.template and completion and completion not in self.template:
            raise ValueError(f"template must contain {completion}, where the completion starts (format {self.format})")
        if self.template and self.format == "chat":
            raise ValueError("format chat renders messages with the tokenizer's chat template; drop `template`")
        if self.chat_template and self.format not in ("chat", "preference"):
            raise ValueError("chat_template applies to format chat (and conversational preference rows)")
        if problem := _mix_problem(self):
            raise ValueError(problem)
        hub = self.path.startswith("hf://")
        if not hub and (self.config or self.revision or self.streaming):
            raise ValueError("config, revision and streaming apply to hf:// datasets")
        if self.streaming and self.limit is None:
            raise ValueError("streaming reads `limit` rows: set limit")
        return self


SHARED_BY_MIX = ("format", "completion_only", "validation", "too_long", "shuffle", "chat_template", "seed")


def _mix_problem(mixture: DataSpec) -> str | None:
    """What is wrong with a mixture's sources or with a block that is none, if anything."""
    if not mixture.mix:
        return None if mixture.path else "path is required (or list the sources under mix)"
    if mixture.path:
        return "give either path or mix, not both"
    if isinstance(mixture.validation, str):
        return "a mixture holds out a share or a row count, not a second source"
    for index, source in enumerate(mixture.mix):
        if source.mix:
            return f"mix[{index}]: a mix source cannot be a mixture itself"
        for name in SHARED_BY_MIX:  # (a dumped recipe repeats the defaults: only a different value is a mistake)
            value = getattr(source, name)
            if value != DataSpec.model_fields[name].default and value != getattr(mixture, name):
                return (
                    f"mix[{index}]: {name} belongs to the mixture ({', '.join(SHARED_BY_MIX)} are set once, above mix)"
                )
        if source.weight is not None and mixture.strategy != "interleave":
            return f"mix[{index}]: weight needs strategy: interleave"
    return None


class EvalSetSpec(DataSpec):
    """Prompt/completion pairs scored by exact match of the greedy generation (first line, stripped)."""

    format: Literal["prompt_completion", "instruction"] = "prompt_completion"
    """How rows are read: prompt_completion or instruction."""
    validation: float | int | str = 0
    """Rows held out for the evaluation: a share (0.1), a count (50), or a file or split."""
    max_new_tokens: int = Field(8, ge=1)
    """Tokens generated per answer."""


class GenerationSpec(Block):
    """How a stage generates its `samples` and its `eval_set` answers (transformers' generate() settings, as in
    the course's LoRA inference lesson). The default is greedy: exact match then measures the model, not luck."""

    max_new_tokens: int | None = Field(None, ge=1)
    """Tokens per sample (default: the stage's sample_tokens / response_length; eval_set keeps its own)."""
    do_sample: bool = False
    """Sample tokens (true) or decode greedily (false)."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (with do_sample)."""
    top_k: int = Field(50, ge=0)
    """Sample among the k most likely tokens (0: no cut)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: the smallest set of tokens holding this probability mass."""
    repetition_penalty: float = Field(1.0, gt=0)
    """Above 1 discourages tokens already present (transformers' repetition_penalty)."""
    length_penalty: float = 1.0
    """Beam search only: > 1 favours longer sequences."""
    num_beams: int = Field(1, ge=1)
    """Beam search width (1: no beam search)."""

    def kwargs(self) -> dict[str, Any]:
        """The generate() keyword arguments (sampling ones only when sampling, so greedy stays warning-free)."""
        out: dict[str, Any] = {
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.do_sample:
            out |= {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
        if self.num_beams > 1:
            out["length_penalty"] = self.length_penalty
        return out


GREEDY = GenerationSpec()


class PromptSetSpec(DataSpec):
    """Prompts to sample from: every row is one unless `validation` holds some out (they are then not sampled)."""

    validation: float | int | str = 0
    """Rows held out and not sampled (a share, a count); default none."""


class EndpointSpec(Block):
    """An OpenAI-compatible API to generate with instead of a local model (generate, a benchmark's judge)."""

    url: str = Field(pattern=r"^https?://")
    """Base URL of the API, e.g. http://127.0.0.1:8000/v1 (`llmctl serve`, vLLM) or a hosted one."""
    model: str | None = None
    """The model name sent with each request (default: the first the endpoint lists)."""
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the API key (a key is never written in a recipe); unset: no key."""
    timeout_s: float = Field(120.0, gt=0)
    """Seconds one request may take."""
    max_retries: int = Field(2, ge=0)
    """Retries of a request that failed for a transient reason (the openai client's back-off)."""
    concurrency: int = Field(4, ge=1)
    """Requests in flight at once."""
    api: Literal["completions", "chat"] = "completions"
    """completions (/v1/completions: the prompt as written) or chat (/v1/chat/completions: the prompt as one
    user message — hosted chat models have no completions API)."""


BUILTIN_REWARDS = ("exact_match", "numeric_match", "regex", "length_penalty")


class RewardTerm(Block):
    """One term of a reward: a Python function, a built-in check, or the stage's reward model; terms are summed
    with their weights (TRL's reward_funcs and reward_weights)."""

    function: str | None = None
    """A Python function `module.path:name` (importable) or `path/to/file.py:name`, called like TRL's reward
    functions: fn(prompts, completions, **columns) -> one float per completion. Its file is part of the stage's
    fingerprint: edit it and the stage re-runs."""
    builtin: Literal["exact_match", "numeric_match", "regex", "length_penalty"] | None = None
    """exact_match: the completion's first line equals `column`'s (case, spaces and end punctuation ignored);
    numeric_match: its first number equals `column`'s first number; regex: `pattern` is found in it;
    length_penalty: -(characters over `max_chars`) / max_chars."""
    model: str | None = None
    """The reward model ('previous', 'stage:NAME', a folder or a hub id) as a term."""
    column: str | None = None
    """exact_match, numeric_match: the prompt data's column holding the reference answer."""
    pattern: str | None = None
    """regex: a Python regular expression."""
    max_chars: int | None = Field(None, ge=1)
    """length_penalty: completions longer than this are penalised in proportion."""
    weight: float = 1.0
    """This term's weight in the sum."""
    timeout_s: float = Field(10.0, gt=0, le=3600)
    """Seconds one call of a function or built-in term may take (it runs in a worker process, which is stopped
    past this and the stage fails naming the term); the model term has none."""

    @model_validator(mode="after")
    def _one_kind(self) -> RewardTerm:
        kinds = [k for k in ("function", "builtin", "model") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a reward term is exactly one of function, builtin or model")
        if self.function is not None and not re.fullmatch(r"[\w./-]+(\.py)?:[A-Za-z_]\w*", self.function):
            raise ValueError(f"function {self.function!r}: write module.path:name or path/to/file.py:name")
        needs = {"exact_match": "column", "numeric_match": "column", "regex": "pattern", "length_penalty": "max_chars"}
        if self.builtin is not None and getattr(self, needs[self.builtin]) is None:
            raise ValueError(f"builtin {self.builtin} needs `{needs[self.builtin]}`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {err}") from None
        return self

    @property
    def name(self) -> str:
        """How logs and metrics call the term (TRL logs rewards/NAME)."""
        if self.function is not None:
            return self.function.rsplit(":", 1)[1]
        return self.builtin or "reward_model"

    def source_files(self) -> list[str]:
        """The files a function term runs: its own and the local modules it imports, transitively (beside it, or
        in the working directory) — each fingerprinted like data, so editing a helper re-runs the stage."""
        first = self.source_file()
        if first is None:
            return []
        found: list[str] = []
        pending = [Path(first)]
        while pending:
            path = pending.pop()
            if str(path) in found or len(found) >= MAX_SOURCE_FILES:
                continue
            found.append(str(path))
            pending += _local_imports(path)
        return found

    def source_file(self) -> str | None:
        """The file defining a function term (fingerprinted like data), or None when it cannot be found."""
        if self.function is None:
            return None
        module, _ = self.function.rsplit(":", 1)
        if module.endswith(".py"):
            return module
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        return found.origin if found is not None and found.origin not in (None, "built-in", "frozen") else None


MAX_SOURCE_FILES = 200


def _local_imports(path: Path) -> list[Path]:
    """The modules `path` imports that live in its folder or the working directory (not installed packages)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names += [base] if base else []
            names += [f"{base}.{alias.name}".lstrip(".") for alias in node.names]
    found = []
    for root in dict.fromkeys((path.parent, Path("."))):
        for name in names:
            parts = name.split(".")
            for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
                if candidate.is_file() and candidate.resolve() != path.resolve():
                    found.append(candidate)
    return found


class PeftSpec(Block):
    """Parameter-efficient fine-tuning with peft."""

    method: Literal["none", "lora", "qlora"] = "lora"
    """none: full fine-tuning; lora; qlora: LoRA on a 4-bit NF4 base (bitsandbytes, CUDA GPU only)."""
    r: int = Field(16, ge=1)
    """LoRA rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA branch."""
    target_modules: list[str] | Literal["all-linear"] | None = None
    """Module names to adapt (e.g. [q_proj, v_proj]); default: what peft picks for the architecture."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train alongside LoRA: none, all, or those of LoRA layers."""
    merge: bool = True
    """Merge the adapter into the base after training, handing on a standalone model; false hands on base + adapter."""

    def output_kind(self) -> ArtifactKind:
        """What a causal-LM stage training with these settings hands on: a merged model, or the adapter alone."""
        return ArtifactKind.causal_lm if self.merge or self.method == "none" else ArtifactKind.adapter

    def check_environment(self, cuda_visible: bool, field: str = "peft.method") -> list[tuple[str, str]]:
        if self.method != "qlora":
            return []
        if not cuda_visible:
            return [(field, "qlora needs a CUDA GPU (bitsandbytes 4-bit); none is visible here — use method: lora")]
        if importlib.util.find_spec("bitsandbytes") is None:
            return [(field, "qlora needs bitsandbytes: .venv/bin/pip install bitsandbytes (or use method: lora)")]
        return []


class EarlyStoppingSpec(Block):
    """Stop a training stage whose evaluation stopped improving (transformers' EarlyStoppingCallback)."""

    metric: str = "eval_loss"
    """A metric of the stage's evaluation every eval_steps (eval_loss; eval_reward_accuracy for dpo; with an eval_set,
    eval_exact_match or eval_f1); which way is better follows its name (loss and perplexity: lower)."""
    patience: int = Field(3, ge=1)
    """Evaluations without an improvement of at least min_delta before stopping."""
    min_delta: float = Field(0.0, ge=0)
    """The smallest change that counts as an improvement."""


class TrainArgs(Block):
    """Optimisation settings shared by the training stages (mapped onto transformers.TrainingArguments)."""

    max_steps: int = Field(-1, ge=-1)
    """Stop after this many optimizer steps (-1: run `epochs`)."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training data (fractions allowed); max_steps overrides it."""
    batch_size: int = Field(8, ge=1)
    """Per-device batch size."""
    grad_accum: int = Field(1, ge=1)
    """Gradient accumulation steps (effective batch = batch_size × grad_accum × processes)."""
    lr: float = Field(5e-5, gt=0)
    """Peak learning rate."""
    scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = "linear"
    """Learning-rate schedule after warm-up."""
    warmup_steps: int = Field(0, ge=0)
    """Optimizer steps of linear warm-up (wins over warmup_ratio when both are set)."""
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    """Share of all optimizer steps used for linear warm-up."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Gradient clipping norm (0: no clipping)."""
    logging_steps: int = Field(10, ge=1)
    """Optimizer steps between logged training metrics."""
    eval_steps: int | None = Field(None, ge=1)
    """Evaluate every N steps (default: only at the end)."""
    eval_strategy: Literal["steps", "epoch"] = "steps"
    """steps: every `eval_steps` (or only at the end); epoch: at the end of each epoch."""
    save_steps: int = Field(500, ge=1)
    """Write a resumable checkpoint every N steps."""
    save_strategy: Literal["steps", "epoch"] = "steps"
    """steps: a checkpoint every `save_steps`; epoch: one at the end of each epoch."""
    optim: (
        Literal[
            "adamw_torch",
            "adamw_torch_fused",
            "adafactor",
            "sgd",
            "adagrad",
            "rmsprop",
            "adamw_bnb_8bit",
            "paged_adamw_32bit",
            "paged_adamw_8bit",
            "adamw_torch_4bit",
            "adamw_torch_8bit",
        ]
        | None
    ) = None
    """The optimizer (transformers' `optim`); default: transformers' AdamW (fused where torch supports it).
    The bitsandbytes ones (…8bit, paged_…) need a CUDA GPU."""
    save_total_limit: int = Field(2, ge=1)
    """Checkpoints kept in checkpoints/ (older ones are deleted)."""
    keep_checkpoints: bool = False
    """Keep trainer checkpoints in the stage folder after success (they are deleted by default to save disk)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = []
    """Experiment trackers for this stage (default: the recipe's `report_to`)."""
    early_stopping: EarlyStoppingSpec | None = None
    """Stop when the evaluation stops improving (needs eval_steps and a validation split); the best checkpoint
    by its metric is handed on."""
    keep_best: bool = False
    """Hand on the checkpoint with the best evaluation (early_stopping's metric, else eval_loss), not the last
    (needs eval_steps and a validation split; checkpoints are then saved at each evaluation)."""

    @property
    def best_metric(self) -> str | None:
        """The evaluation metric that picks the checkpoint handed on, when one is picked."""
        if self.early_stopping is not None:
            return self.early_stopping.metric
        return "eval_loss" if self.keep_best else None

    @model_validator(mode="after")
    def _evaluates_for_best(self) -> TrainArgs:
        if self.best_metric and self.eval_steps is None and self.eval_strategy == "steps":
            raise ValueError("early_stopping and keep_best need eval_steps (an evaluation to compare)")
        return self

    dataloader_workers: int = Field(0, ge=0)
    """Worker processes loading batches (0: in the training process)."""

    @model_validator(mode="after")
    def _steps(self) -> TrainArgs:
        if self.max_steps == 0:
            raise ValueError("max_steps is -1 (train for `epochs`) or at least 1")
        return self


class Settings(Block):
    """Recipe-wide settings (everything but `stages`)."""

    name: str = Field(pattern=NAME_PATTERN)
    """Recipe name; the run folder is runs/<name> unless `run_dir` is set."""
    description: str = ""
    """Free text describing the recipe (shown by `plan` and in reports)."""
    seed: int = Field(42, ge=0, le=MAX_SEED)
    """Seeds python, numpy and torch for every stage (a stage's own `seed` wins)."""
    run_dir: str | None = None
    """Run folder (default runs/<name>)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where models run: auto picks CUDA when present, else the CPU."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on GPUs and CPUs with native bf16 (AVX-512-BF16/AMX), fp16 on older GPUs, fp32 otherwise."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Verbosity of llmctl and the libraries it drives."""
    launcher: LauncherSpec = LauncherSpec()
    """Default launcher of the training stages (pretrain, sft, reward, dpo): none runs them in-process."""
    smoke: bool = False
    """Set by `llmctl run --smoke` (never written by hand): a cut-down check run on tiny models, whose gates
    are shown but not enforced and whose benchmarks skip lm-eval datasets that cannot be fetched."""
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = []
    """Experiment trackers for every training stage: tensorboard (event files in each stage's logs/tensorboard),
    mlflow (a local ./mlruns file store unless MLFLOW_TRACKING_URI is set), wandb (offline without WANDB_API_KEY)."""


def stage_ref_name(ref: str) -> str | None:
    """`stage:sft` → `sft`; anything else → None."""
    return ref[len(STAGE_PREFIX) :] if ref.startswith(STAGE_PREFIX) else None


def data_blocks(block: Any, prefix: str = "") -> list[tuple[str, DataSpec]]:
    """(field path, DataSpec) for every data block inside `block`, however deeply nested (`data`, `accuracy.data`,
    `local_tasks[0].data`)."""
    if isinstance(block, DataSpec):
        return [(prefix, block)]
    found: list[tuple[str, DataSpec]] = []
    if isinstance(block, BaseModel):
        for name in type(block).model_fields:
            found += data_blocks(getattr(block, name), f"{prefix}.{name}" if prefix else name)
    elif isinstance(block, (list, tuple)):
        for index, item in enumerate(block):
            found += data_blocks(item, f"{prefix}[{index}]")
    return found


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def split_path(path: str) -> list[str | int]:
    """`answers.text[0]` → ["answers", "text", 0] (field paths in blocks, nested columns in rows)."""
    return [name if name else int(index) for name, index in _PATH_PART.findall(path)]


def is_local_path(ref: str) -> bool:
    """Whether a model/data reference names the local file system rather than a hub id."""
    return ref.startswith(("/", "./", "../", "~", "file://")) or Path(ref).expanduser().exists()


class TrainingSpec(StageSpec):
    """A stage trained with the Hugging Face Trainer on a data block (pretrain, sft, reward, dpo, ppo)."""

    data: DataSpec
    train: TrainArgs = TrainArgs()

    @property
    def train_args(self) -> TrainArgs:
        return self.train

    @property
    def training_data(self) -> DataSpec:
        return self.data


class FineTuneSpec(TrainingSpec):
    """A training stage that starts from a model and may train a LoRA/QLoRA adapter (sft, reward, dpo)."""

    peft: PeftSpec = PeftSpec()
    max_length: int = Field(1024, ge=8)

    @property
    def peft_settings(self) -> PeftSpec:
        return self.peft

    @property
    def seq_len(self) -> int:
        return self.max_length


class TunedLMSpec(FineTuneSpec):
    """A fine-tuning stage that hands on a causal LM (or its adapter) measured before and after training (sft, dpo)."""

    eval_set: EvalSetSpec | None = None
    """Exact-match evaluation before and after training (metrics exact_match_before / exact_match)."""
    samples: list[str] = []
    """Prompts to generate from after training (samples.json and the run summary; dpo also shows the output before)."""
    generation: GenerationSpec = GREEDY
    """How samples (and eval_set answers) are generated: do_sample, temperature, top_k, top_p,
    repetition_penalty, length_penalty, num_beams, max_new_tokens (default greedy)."""
    sample_tokens: int = Field(32, ge=1)
    """Tokens generated per sample prompt, before and after training."""

    produces: ClassVar[ArtifactKind] = ArtifactKind.causal_lm
    distributable: ClassVar[bool] = True

    def output_kind(self) -> ArtifactKind:
        return self.peft.output_kind()
