"""Fill the `datasets` cache with local rows as if `datasets.load_dataset(REPO)` had downloaded them at commit
COMMIT on a machine with network — so the hf:// path can be exercised offline (tests/data/test_hub.py,
scripts/bench_data.py). It writes exactly what a download leaves: REPO's packaged JSON builder output under
HF_DATASETS_CACHE/NS___NAME/default/0.0.0/COMMIT.
"""

from __future__ import annotations

from pathlib import Path


def cache_commit(repo: str, commit: str, rows_file: Path) -> None:
    """Cache `rows_file` (JSON lines) as split train of `repo` at `commit`."""
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.json.json import Json

    builder = Json(
        dataset_name=repo.split("/")[-1],
        hash=commit,
        config_name="default",
        config_id="default",
        data_files=DataFilesDict.from_patterns({"train": [str(rows_file)]}),
    )
    builder.repo_id = repo  # (set after __init__: its check wants hub URLs for the data files)
    builder._cache_dir = builder._build_cache_dir()
    builder.download_and_prepare()
