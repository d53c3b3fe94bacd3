"""Data-loading throughput: Deep Lake (batched column reads into Arrow) vs JSONL vs a Hugging Face Hub dataset
(hf://, from the datasets cache, offline) vs a naive row-by-row torch Dataset over the same Deep Lake dataset.

Run: .venv/bin/python scripts/bench_data.py [--rows 20000]
Prints rows/s and tokens/s (GPT-2-style byte-level BPE trained on the rows) for each path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def timed(label: str, fn, rows: int, tokens: int) -> None:
    start = time.perf_counter()
    count = fn()
    elapsed = time.perf_counter() - start
    assert count == rows, (label, count, rows)
    print(f"{label:48s} {rows / elapsed:12,.0f} rows/s {tokens / elapsed:14,.0f} tokens/s  ({elapsed:.2f}s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()

    import os

    from datasets import Dataset
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    from llmctl.data import lake
    from llmctl.data.demo import corpus
    from llmctl.data.sources import read_rows
    from llmctl.models.tokenizers import train_bpe

    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    os.environ["LLMCTL_CACHE"] = str(work / "cache")
    texts = corpus(args.rows, seed=0)
    (work / "rows.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    lake.write(str(work / "lake"), Dataset.from_list([{"text": t} for t in texts]), "bench")
    import datasets.config
    from hf_cache import cache_commit  # (scripts/ is on sys.path when this file runs)

    os.environ["HF_DATASETS_OFFLINE"] = "1"
    datasets.config.HF_DATASETS_CACHE = work / "hf"
    datasets.config.HF_HUB_OFFLINE = True
    cache_commit("bench/rows", "0" * 40, work / "rows.jsonl")
    tokenizer = train_bpe(texts[:2000], 1024)
    tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"])
    print(f"{args.rows} rows, {tokens} tokens; tokenizing is included in every path\n")

    def through_llmctl(path: str) -> int:
        rows = read_rows(path)
        return sum(
            len(batch)
            for batch in (tokenizer(rows[i : i + 1000]["text"])["input_ids"] for i in range(0, len(rows), 1000))
        )

    class RowByRow(TorchDataset):
        """The naive way: one Deep Lake read per row."""

        def __init__(self, path: str) -> None:
            self.view = lake.open_view(path)[1]

        def __len__(self) -> int:
            return len(self.view)

        def __getitem__(self, index: int) -> list[int]:
            return tokenizer(self.view[index]["text"])["input_ids"]

    def naive() -> int:
        loader = DataLoader(RowByRow(str(work / "lake")), batch_size=32, collate_fn=list)
        return sum(len(batch) for batch in loader)

    timed(
        "Deep Lake → Arrow, batched (llmctl, first read)", lambda: through_llmctl(str(work / "lake")), args.rows, tokens
    )
    timed("Deep Lake → Arrow, batched (llmctl, cached)", lambda: through_llmctl(str(work / "lake")), args.rows, tokens)
    timed("JSONL via datasets (llmctl)", lambda: through_llmctl(str(work / "rows.jsonl")), args.rows, tokens)
    timed(
        "hf:// from the datasets cache, offline (llmctl)", lambda: through_llmctl("hf://bench/rows"), args.rows, tokens
    )
    timed("Deep Lake, naive torch Dataset row by row", naive, args.rows, tokens)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
