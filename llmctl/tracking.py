"""Experiment trackers (tensorboard, mlflow, wandb): offline-friendly defaults and one tracker run per stage.

The trainers' own callbacks (transformers' TensorBoardCallback, MLflowCallback, WandbCallback) log the curves
and TrainingArguments. llmctl adds what they cannot know: the resolved recipe as parameters, and, for mlflow and
wandb, a run that spans the whole stage, so evaluation after training and the metrics of stages without a
trainer (quantize, benchmark) land in the stage's run. Left alone, MLflowCallback ends its run when training
ends (the final evaluation then opens a second, unnamed one) and WandbCallback never ends its run (every later
stage would log into the first stage's).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmctl.spec.context import StageContext
    from llmctl.spec.recipe import RecipeBase as Recipe
    from llmctl.spec.stage import StageSpec


def stage_trackers(spec: StageSpec, recipe_trackers: Sequence[str]) -> list[str]:
    """A training stage's own `train.report_to`, else the recipe's."""
    own = spec.train_args.report_to if spec.train_args is not None else []
    return list(own or recipe_trackers)


def recipe_trackers(recipe: Recipe) -> set[str]:
    """Every tracker any stage of the recipe reports to."""
    return {n for spec in recipe.stages for n in stage_trackers(spec, recipe.report_to)}


def configure(names: list[str], recipe_name: str) -> None:
    """Environment defaults that keep trackers local and offline unless the user configured them."""
    if "mlflow" in names:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"file:{os.path.abspath('mlruns')}")
        # MLflow 3.x refuses its file store unless this opt-out is set; it needs no database and `mlflow ui
        # --backend-store-uri ./mlruns` reads it. Set MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db) to use another.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", recipe_name)
    if "wandb" in names and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    if "wandb" in names:
        os.environ.setdefault("WANDB_PROJECT", recipe_name)
    quiet_wandb_notice()


def quiet_wandb_notice() -> None:
    """transformers prints "Running in WANDB offline mode" to stdout when its integrations are first imported
    with WANDB_MODE=offline (set by llmctl, or by the user for any run); stdout carries `--json` events, so
    import them now with that line going to stderr."""
    if os.environ.get("WANDB_MODE") == "offline" and "transformers.integrations.integration_utils" not in sys.modules:
        with contextlib.redirect_stdout(sys.stderr):
            import transformers.integrations.integration_utils  # noqa: F401 - imported for its side effect (wandb's banner), here


def recipe_params(ctx: StageContext) -> dict[str, str]:
    """The recipe's settings and this stage's validated spec, flattened to {"stage.train.lr": "0.001", …}."""
    public = ctx.recipe.public_dump()  # values read from the environment (tokens) show as `${oc.env:…}`
    stage = next(stage for stage in public.pop("stages") if stage["name"] == ctx.name)
    tree = {"recipe": public, "stage": stage}
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)

    walk("recipe", tree["recipe"])
    walk("stage", tree["stage"])
    return flat


Log = Callable[[dict[str, float]], None]


@contextlib.contextmanager
def stage_runs(spec: StageSpec, ctx: StageContext, launched: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """One run named RECIPE/STAGE per tracker that needs one, around the whole stage (see the module docstring):
    mlflow always, wandb for in-process stages (a launched stage's rank 0 opens its own). Yields a function
    that records the stage's final numeric metrics, as `stage/NAME`, in those runs."""
    names = stage_trackers(spec, ctx.recipe.report_to)
    configure(names, ctx.recipe.name)
    with contextlib.ExitStack() as runs:
        logs: list[Log] = []
        if "mlflow" in names:
            logs.append(runs.enter_context(_mlflow_run(ctx, launched)))
        if "wandb" in names and not launched:
            logs.append(runs.enter_context(_wandb_run(ctx)))

        def log_stage_metrics(metrics: dict[str, Any]) -> None:
            numbers = {  # flags (gate_passed, promoted) as 0/1
                f"stage/{key}": float(value) for key, value in metrics.items() if isinstance(value, (int, float))
            }
            for log in logs:
                if numbers:
                    log(numbers)

        yield log_stage_metrics


@contextlib.contextmanager
def firing_run(recipe: Recipe, lineage: dict[str, Any]) -> Iterator[None]:
    """With mlflow among the recipe's trackers: one parent run RECIPE/RUN_ID around the whole `llmctl run`,
    the stages' runs nested in it, tagged with the run id, git commit and data versions; it ends FAILED with
    tag llmctl.outcome (rejected, failed, interrupted) unless the run completed."""
    if "mlflow" not in recipe_trackers(recipe):
        yield
        return
    configure(["mlflow"], recipe.name)
    check_mlflow_server(os.environ["MLFLOW_TRACKING_URI"])
    import mlflow

    from llmctl.errors import GateFailed, Interrupted

    mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
    git = lineage.get("git") or {}
    tags = {"llmctl.run_id": lineage.get("run_id", ""), "llmctl.git_commit": git.get("commit", "")}
    for stage, blocks in (lineage.get("data") or {}).items():
        tags[f"llmctl.data.{stage}"] = json.dumps(blocks, sort_keys=True)[:5000]
    with mlflow.start_run(run_name=f"{recipe.name}/{lineage.get('run_id', 'run')}", tags=tags) as run:
        try:
            yield
        except BaseException as err:
            outcome = (
                "rejected"
                if isinstance(err, GateFailed)
                else "interrupted"
                if isinstance(err, (KeyboardInterrupt, Interrupted))
                else "failed"
            )
            mlflow.set_tag("llmctl.outcome", outcome)
            mlflow.end_run("FAILED" if outcome != "interrupted" else "KILLED")
            raise
        mlflow.set_tag("llmctl.outcome", "complete")
        del run


def tag_outcome(recipe_name: str, run_id: str, outcome: str) -> None:
    """Set `llmctl.outcome` on firing `run_id`'s MLflow parent run once the firing's outcome is known (a
    complete firing after an incident is `recovered`, as in the history)."""
    configure(["mlflow"], recipe_name)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    if experiment is not None:
        for run in client.search_runs([experiment.experiment_id], f"tags.`llmctl.run_id` = '{run_id}'"):
            client.set_tag(run.info.run_id, "llmctl.outcome", outcome)


def close_killed(recipe_name: str, run_id: str) -> None:
    """End the MLflow parent run of firing `run_id` (and its stage runs) that a SIGKILL left RUNNING: status
    KILLED, tag llmctl.outcome=killed. Called by the firing that records the kill."""
    configure(["mlflow"], recipe_name)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    if experiment is None:
        return
    parents = client.search_runs([experiment.experiment_id], f"tags.`llmctl.run_id` = '{run_id}'")
    for parent in parents:
        children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        for run in [parent, *children]:
            if run.info.status == "RUNNING":
                client.set_tag(run.info.run_id, "llmctl.outcome", "killed")
                client.set_terminated(run.info.run_id, "KILLED")


PROBE_S = 3.0


def check_mlflow_server(uri: str) -> None:
    """An http(s) tracking server that does not accept a connection within PROBE_S is a UsageError (exit 2)
    before any stage runs: mlflow's client retries for minutes (a run stalled 261 s, then failed as an
    internal error)."""
    import socket
    from urllib.parse import urlsplit

    from llmctl.errors import UsageError

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_S).close()
    except OSError as err:
        raise UsageError(
            f"MLFLOW_TRACKING_URI {uri} does not answer ({err}); start the tracking server, or unset "
            "MLFLOW_TRACKING_URI to log to ./mlruns"
        ) from None


@contextlib.contextmanager
def _mlflow_run(ctx: StageContext, launched: bool) -> Iterator[Log]:
    """The resolved recipe as `llmctl.*` params plus its YAML as an artifact, nested in the firing's run; a
    launched stage's rank 0 joins the same run (MLFLOW_RUN_ID). A stage whose gate rejected its model ends
    FAILED."""
    import mlflow

    mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
    rejected: list[bool] = []
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=f"{ctx.recipe.name}/{ctx.name}", nested=nested) as run:
        items = [(f"llmctl.{key}", value[:6000]) for key, value in recipe_params(ctx).items()]
        for start in range(0, len(items), 100):  # mlflow takes at most 100 params per call
            mlflow.log_params(dict(items[start : start + 100]))
        mlflow.log_text(ctx.recipe.resolved_yaml(), "llmctl/recipe.resolved.yaml")
        if launched:
            os.environ["MLFLOW_RUN_ID"] = run.info.run_id  # inherited by the launcher's processes
        try:
            yield _logger(mlflow, rejected)
        finally:
            if launched:
                del os.environ["MLFLOW_RUN_ID"]
    if rejected:
        mlflow.MlflowClient().set_terminated(run.info.run_id, "FAILED")


@contextlib.contextmanager
def _wandb_run(ctx: StageContext) -> Iterator[Log]:
    """Left alone, transformers' WandbCallback never finishes its run, so every later stage of the process
    would log into the first stage's run; this one is the stage's own and is finished when the stage ends."""
    import wandb

    with wandb.init(
        project=os.environ["WANDB_PROJECT"],
        name=f"{ctx.recipe.name}/{ctx.name}",
        config={"llmctl": recipe_params(ctx)},
        reinit="finish_previous",
    ) as run:
        yield run.summary.update


def recipe_params_callback(ctx: StageContext, trainer: Any) -> Any:
    """A TrainerCallback that adds the resolved recipe to tensorboard (a text table) and wandb (run config) once
    their callbacks have started; mlflow gets it from `stage_runs`."""
    from transformers import TrainerCallback
    from transformers.integrations import TensorBoardCallback, WandbCallback

    class RecipeParams(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if not state.is_world_process_zero:
                return
            params = recipe_params(ctx)
            for callback in trainer.callback_handler.callbacks:
                if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                    table = "\n".join(f"| {key} | {value} |" for key, value in params.items())
                    callback.tb_writer.add_text("llmctl/recipe", "| field | value |\n|---|---|\n" + table)
                elif isinstance(callback, WandbCallback) and callback._wandb.run is not None:
                    callback._wandb.config.update({"llmctl": params}, allow_val_change=True)

    return RecipeParams()


def _logger(mlflow: Any, rejected: list[bool]) -> Callable[[dict[str, float]], None]:
    def log(metrics: dict[str, float]) -> None:
        mlflow.log_metrics(metrics)
        if metrics.get("stage/gate_passed") == 0.0:
            rejected.append(True)
            mlflow.set_tag("llmctl.gate", "rejected")

    return log
