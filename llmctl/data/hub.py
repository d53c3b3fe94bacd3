"""Hugging Face Hub datasets (`hf://ORG/NAME`), read with the `datasets` library.

Online, `datasets` resolves the revision to a commit and caches what it downloads; offline
(`HF_DATASETS_OFFLINE=1` / `HF_HUB_OFFLINE=1`) it reads that cache, and a dataset that is not there stops with
a message saying how to fetch it. The fingerprint is the resolved commit (the cache folder `datasets` keeps per
commit), so a new revision on the hub re-runs the stages that read it and nothing else."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

SCHEME = "hf://"
HUB_TIMEOUT_S = 10
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
FETCH_HINT = (
    "fetch it once where there is network: python -c \"import datasets; datasets.load_dataset('{repo}'{args})\" "
    "(it lands in the Hugging Face cache), or pin a copy with `llmctl data import hf://{repo} DEST`"
)


def is_hub_path(path: str) -> bool:
    return path.startswith(SCHEME)


def repo_id(path: str) -> str:
    """`hf://ORG/NAME` → `ORG/NAME`, checked."""
    repo = path[len(SCHEME) :].strip("/")
    if not REPO_ID.match(repo):
        raise DataError(f"data.path {path}: a Hugging Face dataset is hf://ORG/NAME (or hf://NAME)")
    return repo


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def read(
    path: str,
    config: str | None,
    split: str | None,
    revision: str | None,
    streaming: bool = False,
    limit: int | None = None,
) -> Dataset:
    """The rows of one split (default train); streamed datasets are read up to `limit` rows."""
    from datasets import Dataset, load_dataset

    repo = repo_id(path)
    try:
        loaded = load_dataset(repo, config, split=split or "train", revision=revision, streaming=streaming)
        return Dataset.from_list(list(loaded.take(limit or 0))) if streaming else loaded
    except Exception as err:
        raise _load_error(path, repo, config, revision, err) from err


def resolved_revision(path: str, config: str | None, revision: str | None) -> str:
    """The commit `revision` (default: the main branch) resolves to: asked of the hub (one call, a short
    timeout) unless offline, else the newest commit the `datasets` cache holds for this dataset."""
    repo = repo_id(path)
    if not offline():
        from huggingface_hub import HfApi

        try:
            return str(HfApi().dataset_info(repo, revision=revision, timeout=HUB_TIMEOUT_S).sha)
        except Exception:  # noqa: BLE001 - unreachable or unknown: what this machine has cached decides
            pass
    commit = cached_commit(repo, config)
    if commit is None:
        raise DataError(
            f"{path}: not on the hub from here and not in the local Hugging Face cache; "
            + _fetch_hint(repo, config, revision)
        )
    return commit


def cached_commit(repo: str, config: str | None) -> str | None:
    """The newest commit of `repo` in the `datasets` cache (it keeps one folder per config, version and commit:
    NAMESPACE___NAME/CONFIG/VERSION/COMMIT), or None."""
    import datasets.config
    from datasets.naming import camelcase_to_snakecase

    namespace, _, name = repo.rpartition("/")
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "___".join(
        filter(None, [namespace, camelcase_to_snakecase(name)])
    )
    found = [p for p in folder.glob(f"{config or '*'}/*/*") if p.is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime).name if found else None


def _fetch_hint(repo: str, config: str | None, revision: str | None) -> str:
    args = (f", {config!r}" if config else "") + (f", revision={revision!r}" if revision else "")
    return FETCH_HINT.format(repo=repo, args=args)


def _load_error(path: str, repo: str, config: str | None, revision: str | None, err: Exception) -> DataError:
    """The `datasets` library's failure as one DataError naming the dataset and what to do."""
    text = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}" if str(err) else type(err).__name__
    if offline():
        return DataError(
            f"{path}: not in the local Hugging Face cache and the hub is offline "
            f"(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE); {_fetch_hint(repo, config, revision)} ({text})"
        )
    return DataError(f"{path}: cannot load it from the Hugging Face hub ({text})")
