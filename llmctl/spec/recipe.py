"""Recipe-wide settings, and the recipe as stages, the run folder and trackers see it (RecipeBase: below the
stage registry, so nothing that names a recipe needs the stage union)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr

from llmctl.spec.base import MAX_SEED, Block, KeyPath, get_path
from llmctl.spec.launcher import LauncherSpec
from llmctl.store.layout import NAME_PATTERN, RunLayout

if TYPE_CHECKING:
    from llmctl.spec.stage import StageSpec


class NotifySpec(Block):
    """Built-in notification: each firing's record POSTed as JSON to a webhook (beside `--notify-cmd`)."""

    webhook: str = Field(pattern=r"^https?://[^\s]+$")
    """The URL the record is POSTed to (Slack-, Teams- or PagerDuty-compatible relays, your own service)."""
    secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """An environment variable holding a shared secret: the body is signed with HMAC-SHA256 and sent as
    `X-Llmctl-Signature: sha256=HEX` (GitHub's scheme), so the receiver can tell llmctl sent it."""
    on: Literal["alerts", "every"] = "alerts"
    """alerts: only firings that open, change or close an incident or override an operator; every: all firings."""
    retries: int = Field(3, ge=0, le=10)
    """Further attempts after a connection error, a timeout, 429 or 5xx (backoff 1 s, 2 s, 4 s…)."""
    timeout_s: float = Field(10.0, gt=0, le=120)
    """Per attempt."""


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
    notify: NotifySpec | None = None
    """A webhook each firing's record is POSTed to (signed, retried, its delivery recorded in the history)."""
    timeout_s: float | None = Field(None, gt=0)
    """Wall-clock limit of a firing's stages (a night's budget): when reached, the running stage stops at its
    next safe point with a checkpoint, the firing ends `interrupted` naming the limit, the next one resumes."""


class RecipeBase(Settings):
    """The recipe as a stage, the pipeline's context, the run folder and the trackers see it: its settings, its
    stages as StageSpecs, and how it is written out. `llmctl.recipe.schema.Recipe` adds the stage union that
    validation needs (it imports the stage registry, which imports what stages are given: this class)."""

    if TYPE_CHECKING:  # declared (and validated) by Recipe, as the union of every stage type
        stages: list[StageSpec]
    _from_env: dict[KeyPath, str] = PrivateAttr(default_factory=dict)

    def public_dump(self) -> dict[str, Any]:
        """The recipe as JSON-able data for files, logs and trackers: a value read from the environment
        (`${oc.env:HF_TOKEN}`) shows as the text the user wrote, never as its value."""
        data = self.model_dump(mode="json")
        for key_path, text in self._from_env.items():
            parent = get_path(data, key_path[:-1])
            if isinstance(parent, (dict, list)) and get_path(data, key_path) is not None:
                parent[key_path[-1]] = text  # type: ignore[index]  # a list's key in the path is an int
        return data

    def env_entries(self) -> list[tuple[list[str | int], Any]]:
        """(key path, value) of every value read from the environment: what a launched worker, which gets the
        public dump, needs to rebuild this recipe (passed in its environment, never written to disk)."""
        data = self.model_dump(mode="json")
        return [(list(path), get_path(data, path)) for path in self._from_env]

    @property
    def layout(self) -> RunLayout:
        """Where this recipe's run folder and its stage folders are."""
        return RunLayout.of(self.name, self.run_dir)

    def resolved_yaml(self) -> str:
        """The validated recipe with every default filled in, as YAML (recipe.resolved.yaml; values read from the
        environment show as the `${oc.env:…}` text the user wrote)."""
        import yaml

        return yaml.safe_dump(self.public_dump(), sort_keys=False, allow_unicode=True)
