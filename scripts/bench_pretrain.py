"""Pretraining throughput: the quickstart's pretrain stage through `llmctl run` against a hand-written HF Trainer
script on the same config, tokenizer, data and settings, and a bare PyTorch loop as the floor.

Run: .venv/bin/python scripts/bench_pretrain.py [--steps 600] [--pairs 3]
Prints, per pair, wall-clock (start-up included) and training tokens/s (the Trainer's own train_runtime) of each,
then the median ratios (issue 20: llmctl must not be slower than the script). The script builds GPT2Config the
way a user would (transformers' defaults, so `gelu_new`); llmctl builds the same architecture from the recipe.
`--floor` adds a bare loop (AdamW, the same batches, no Trainer) on each activation as the compute floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": 128}

HAND_WRITTEN = """
import json, sys
from datasets import Dataset
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments, default_data_collator

tok_dir, train_file, val_file, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
tok = AutoTokenizer.from_pretrained(tok_dir)

def blocks(path, size=64):  # the run_clm recipe: join documents with EOS, cut into blocks
    flat = [t for line in open(path) for t in tok(json.loads(line)["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    rows = [flat[i:i + size] for i in range(0, len(flat) // size * size, size)]
    return Dataset.from_dict({"input_ids": rows, "labels": rows, "attention_mask": [[1] * size for _ in rows]})

config = GPT2Config(**json.loads(sys.argv[6]), vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id)
model = GPT2LMHeadModel(config)
args = TrainingArguments(output_dir=out + "/ckpt", max_steps=steps, per_device_train_batch_size=16, per_device_eval_batch_size=16,
                         learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=20, weight_decay=0.01, logging_steps=50,
                         eval_strategy="steps", eval_steps=100, save_steps=200, use_cpu=True, report_to="none", seed=42,
                         disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=blocks(train_file), eval_dataset=blocks(val_file),
                  data_collator=default_data_collator, processing_class=tok)
result = trainer.train()
trainer.evaluate()
trainer.save_model(out + "/model")
print(json.dumps({"train_samples_per_s": result.metrics["train_samples_per_second"]}))
"""

RECIPE = """
name: bench-pretrain
seed: 42
dtype: auto
run_dir: {run_dir}
stages:
  - type: pretrain
    model: {{config: {config}}}
    tokenizer: {{path: {tok}}}
    data: {{path: {train}, validation: {val}, shuffle: false}}
    block_size: 64
    train: {{max_steps: {steps}, batch_size: 16, lr: 1.0e-3, scheduler: cosine, warmup_steps: 20,
            weight_decay: 0.01, logging_steps: 50, eval_steps: 100, save_steps: 200}}
"""


def measure(cmd: list[str]) -> tuple[float, str]:
    """(wall seconds, stdout) of a command."""
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stdout[-2000:] + result.stderr[-3000:])
    return time.perf_counter() - start, result.stdout


def floor(steps: int, activation: str) -> float:
    """Tokens/s of a bare loop: the same model shape, AdamW, clipping, batches of 16 × 64, no Trainer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**CONFIG, vocab_size=512, activation_function=activation))
    data = torch.randint(0, 512, (736, 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    start = time.perf_counter()
    for _ in range(steps):
        batch = data[torch.randint(0, len(data), (16,))]
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return steps * 16 * 64 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--floor", action="store_true", help="also time a bare PyTorch loop (gelu_new and the fused GELU)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_pretrain_"))
    setup = textwrap.dedent(f"""
        import json
        from llmctl.data.demo import corpus
        from llmctl.models.tokenizers import train_bpe
        docs = corpus(4000, seed=0)
        for name, part in (("train", docs[:3800]), ("val", docs[3800:])):
            open("{work}/" + name + ".jsonl", "w").write("".join(json.dumps({{"text": d}}) + "\\n" for d in part))
        train_bpe(docs, 512).save_pretrained("{work}/tok")
    """)
    subprocess.run([sys.executable, "-c", setup], check=True, cwd=ROOT)
    (work / "hand.py").write_text(HAND_WRITTEN)
    pairs = []
    for index in range(args.pairs):
        recipe = work / f"recipe{index}.yaml"
        recipe.write_text(
            RECIPE.format(
                run_dir=work / f"run{index}",
                config=json.dumps(CONFIG),
                tok=work / "tok",
                train=work / "train.jsonl",
                val=work / "val.jsonl",
                steps=args.steps,
            )
        )
        hand_wall, out = measure(
            [
                sys.executable,
                str(work / "hand.py"),
                str(work / "tok"),
                str(work / "train.jsonl"),
                str(work / "val.jsonl"),
                str(work / f"hand{index}"),
                str(args.steps),
                json.dumps(CONFIG),
            ]
        )
        hand_tps = json.loads(out.strip().splitlines()[-1])["train_samples_per_s"] * 64
        ours_wall, _ = measure([sys.executable, "-m", "llmctl", "run", str(recipe)])
        metrics = json.loads((work / f"run{index}" / "01-pretrain" / "artifact.json").read_text())["meta"]["metrics"]
        pairs.append(
            {
                "script": {"wall_s": round(hand_wall, 1), "train_tokens_per_s": round(hand_tps)},
                "llmctl": {"wall_s": round(ours_wall, 1), "train_tokens_per_s": metrics["train_tokens_per_s"]},
                "wall_ratio": round(ours_wall / hand_wall, 3),
                "speed_ratio": round(metrics["train_tokens_per_s"] / hand_tps, 3),
            }
        )
        print(json.dumps(pairs[-1]), flush=True)
    summary = {
        "steps": args.steps,
        "pairs": len(pairs),
        "median_wall_ratio": statistics.median(p["wall_ratio"] for p in pairs),
        "median_speed_ratio": statistics.median(p["speed_ratio"] for p in pairs),
    }
    if args.floor:
        summary["bare_loop_tokens_per_s"] = {act: round(floor(200, act)) for act in ("gelu_new", "gelu_pytorch_tanh")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
