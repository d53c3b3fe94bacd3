"""llmctl as a library: what the CLI does, as typed functions for Airflow, Prefect, Dagster, notebooks and tests.

    from llmctl import api
    api.validate("recipes/quickstart.yaml")                       # -> Validated, or raises RecipeError
    plan = api.plan("recipes/quickstart.yaml", ["seed=7"])         # -> run.plan.Plan: steps, actions, why, estimates
    result = api.run("recipes/quickstart.yaml", emit=print)        # -> RunResult; events go to `emit` as dicts
    api.show(result.run_dir)                                       # -> store.manifest.RunRecord

Every failure is an `llmctl.errors.LlmctlError` whose `exit_code` is the CLI's. Events are the dicts `llmctl --json
run` prints (`plan`, `stage_start`, `progress`, `log`, `stage_end`, `warning`, `skipped`, `run_end`).

Split like cli/: pipeline (validate, plan, run, doctor), runs, models (a registry), data, recipes. This file only
names them, so `api.run(...)` stays the one way in; each module imports heavy libraries inside its functions, so
importing the API costs what the CLI's start-up costs."""

from llmctl.api.data import demo_data, describe_data, import_data, preview_data
from llmctl.api.models import model_info, model_log, models, pin, promote, rollback, unpin
from llmctl.api.pipeline import (
    RunResult,
    Validated,
    doctor,
    estimate_memory,
    expected,
    killed,
    load,
    mixtures,
    new_run_id,
    plan,
    run,
    step_summary,
    validate,
)
from llmctl.api.recipes import init_recipe
from llmctl.api.runs import compare, firing, firings, incidents, report, runs, show

__all__ = [
    "RunResult",
    "Validated",
    "compare",
    "demo_data",
    "describe_data",
    "doctor",
    "estimate_memory",
    "expected",
    "firing",
    "firings",
    "import_data",
    "incidents",
    "init_recipe",
    "killed",
    "load",
    "mixtures",
    "model_info",
    "model_log",
    "models",
    "new_run_id",
    "plan",
    "preview_data",
    "pin",
    "promote",
    "unpin",
    "report",
    "rollback",
    "run",
    "runs",
    "show",
    "step_summary",
    "validate",
]
