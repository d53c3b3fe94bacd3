"""Every on-disk format and its owner: run folder layout, files written atomically and never through links, JSON-lines
records, the run lock, artifacts, the manifest (llmctl.lock.json), history.jsonl, the model registry, gate baselines."""
