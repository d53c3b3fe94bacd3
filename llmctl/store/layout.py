"""Where a run's files go: run folders, stage folders and the names inside them.

runs/<name>/
  recipe.resolved.yaml    the validated recipe, dumped from the specs
  llmctl.lock.json        per stage: fingerprint, status, times, metrics, output path, versions (store/manifest.py)
  history.jsonl           one line per firing (store/history.py)
  estimates.json          each stage's size and memory estimate, by fingerprint and dtype (run/estimate.py)
  firings/                one marker per firing in progress (store/history.py): a killed firing's is found
  .lock                   held (flock) while a run is active; records pid and start time (store/lock.py)
  01-pretrain/            artifact.json  output/  logs/  metrics.json  (checkpoints/ while training)
  01-pretrain.tmp/        the stage being written; renamed to 01-pretrain/ when whole
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from llmctl.errors import UsageError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # folder-safe: stage, recipe and model names name folders
RUNS_ROOT = Path("runs")  # where runs live unless a recipe sets run_dir


def cache_root() -> Path:
    """Where llmctl keeps what it can rebuild (Deep Lake Arrow caches, demo sets, smoke models): $LLMCTL_CACHE,
    else ~/.cache/llmctl."""
    root = Path(os.environ.get("LLMCTL_CACHE", Path.home() / ".cache" / "llmctl"))
    if root.exists() and not root.is_dir():
        source = "LLMCTL_CACHE" if "LLMCTL_CACHE" in os.environ else "the default cache folder"
        raise UsageError(
            f"{source} {root} is a file; llmctl keeps rebuildable caches (demo data, Deep Lake reads, smoke "
            "models) in a folder: point LLMCTL_CACHE at one"
        )
    return root


OUTPUT, CHECKPOINTS, LOGS = "output", "checkpoints", "logs"  # inside a stage folder
PROGRESS_FILE = "progress.jsonl"  # in checkpoints/: what a stage that is no trainer has done so far (generate)
MANIFEST = "llmctl.lock.json"
HISTORY = "history.jsonl"  # one line per firing (store/history.py)
ESTIMATES = "estimates.json"  # stage estimates by fingerprint (run/estimate.py)
FIRINGS = "firings"  # markers of firings in progress (store/history.py)
RESOLVED = "recipe.resolved.yaml"
LOCKFILE = ".lock"
TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"
STAGE_DIR_RE = re.compile(r"^\d{2,}-[A-Za-z0-9]")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def newest_checkpoint(stage_tmp: Path) -> str | None:
    """The newest complete trainer checkpoint (or a non-trainer stage's progress file) in a stage's temp folder.
    (transformers.trainer_utils.get_last_checkpoint does the same, but importing transformers here would make
    `plan` slow.)"""
    checkpoints = stage_tmp / "checkpoints"
    progress = checkpoints / PROGRESS_FILE  # a stage that is no trainer (generate) keeps its progress here
    if progress.is_file() and progress.stat().st_size:
        return str(progress)
    found = [(int(m.group(1)), p) for p in checkpoints.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name))]
    complete = [(n, p) for n, p in found if (p / "trainer_state.json").exists()]
    return str(max(complete)[1]) if complete else None


def stage_dir_name(index: int, name: str) -> str:
    """`01-pretrain`: the folder of the stage at list position `index` (0-based)."""
    return f"{index + 1:02d}-{name}"


@dataclass(frozen=True)
class RunLayout:
    """The one owner of where a run's files go (see the module docstring)."""

    run_dir: Path

    @classmethod
    def of(cls, name: str, run_dir: str | None = None) -> RunLayout:
        """A recipe's run folder: `run_dir`, else runs/<name>."""
        return cls(Path(run_dir) if run_dir else RUNS_ROOT / name)

    def stage_dir(self, index: int, name: str) -> Path:
        return self.run_dir / stage_dir_name(index, name)

    def output_of(self, index: int, name: str) -> Path:
        return self.stage_dir(index, name) / OUTPUT

    @property
    def manifest(self) -> Path:
        return self.run_dir / MANIFEST

    @property
    def resolved(self) -> Path:
        return self.run_dir / RESOLVED


def unsafe_run_dir(run_dir: Path) -> str | None:
    """Why llmctl must not use `run_dir` as a run folder, or None. llmctl deletes and renames folders inside a
    run folder, so it takes only a folder of its own: a new one, an empty one, or one it made before."""
    folder = run_dir.expanduser().absolute()
    here = Path.cwd().absolute()
    if folder == Path(folder.anchor) or folder == Path.home().absolute() or here.is_relative_to(folder):
        return f"{run_dir} would put a run folder around the root, home or working directory; name a folder of its own (e.g. runs/NAME)"
    if folder.exists() and not folder.is_dir():
        return f"{run_dir} is a file; a run folder is a directory llmctl creates"
    if folder.is_dir() and any(folder.iterdir()) and not _looks_like_a_run(folder):
        return f"{run_dir} is not an llmctl run folder (it holds other files); name a new or empty folder"
    return None


def _looks_like_a_run(folder: Path) -> bool:
    """A folder llmctl made: it holds the manifest, lock or resolved recipe, or stage folders (`01-name`)."""
    return any((folder / n).exists() for n in (MANIFEST, HISTORY, LOCKFILE, RESOLVED, FIRINGS, ESTIMATES)) or any(
        STAGE_DIR_RE.match(p.name) for p in folder.iterdir()
    )


REF_PREFIX = "registry:"


def parse_ref(ref: str) -> tuple[str, str] | None:
    """`registry:DIR/NAME` → (DIR, NAME): a registry's model, as gate baselines and judge references name it
    (NAME may end in `@ALIAS`: the version that alias names); None for any other reference."""
    if not ref.startswith(REF_PREFIX):
        return None
    folder, _, name = ref.removeprefix(REF_PREFIX).rpartition("/")
    return folder, name
