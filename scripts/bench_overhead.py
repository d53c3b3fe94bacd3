"""llmctl's overhead: the same LoRA SFT job through `llmctl run` and as a hand-written TRL script.

Run: .venv/bin/python scripts/bench_overhead.py [--steps 200] [--pairs 3]
Prints wall-clock (start-up included) and peak RSS of each, and the ratios (target, issue 20: time ratio <= 1.00).
Both jobs train the same tiny GPT-2 on the same demo rows with the same hyperparameters, then merge and save.
The two alternate (script, llmctl, script, llmctl, ...: --pairs pairs, each llmctl run in a fresh run folder) and
the median of the per-pair ratios is the figure: on a shared 2-core machine one unpaired run swings by 20%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HAND_WRITTEN = """
import json, sys
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

base, data, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [json.loads(line) for line in open(data)]
ds = Dataset.from_list([{"prompt": f"Question: {r['question']}\\n\\nAnswer:", "completion": " " + r["answer"]} for r in rows])
tok = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base)
args = SFTConfig(output_dir=out + "/ckpt", max_steps=steps, per_device_train_batch_size=16, learning_rate=2e-3,
                 max_length=64, completion_only_loss=True, report_to="none", use_cpu=True, save_strategy="no", bf16=False,
                 gradient_checkpointing=False,  # TRL defaults it on; llmctl (like the Trainer) off
                 logging_steps=50, disable_tqdm=True, seed=42)
trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                     peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["c_attn", "c_proj", "c_fc"],
                                            task_type="CAUSAL_LM"))
trainer.train()
trainer.model.merge_and_unload().save_pretrained(out + "/model")
tok.save_pretrained(out + "/model")
"""

RECIPE = """
name: overhead
seed: 42
dtype: fp32
run_dir: {run_dir}
stages:
  - type: sft
    model: {base}
    data: {{path: {data}, format: prompt_completion, columns: {{prompt: question, completion: answer}},
            template: "Question: {{prompt}}\\n\\nAnswer: {{completion}}", completion_only: true, validation: 0, shuffle: false}}
    peft: {{method: lora, r: 16, alpha: 32, dropout: 0.0, target_modules: [c_attn, c_proj, c_fc]}}
    max_length: 64
    train: {{max_steps: {steps}, batch_size: 16, lr: 2.0e-3, logging_steps: 50, save_steps: 100000}}
"""


def measure(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in MiB) of a command, via GNU time."""
    result = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    wall, rss = result.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    setup = textwrap.dedent(f"""
        import json
        from transformers import GPT2Config, GPT2LMHeadModel
        from llmctl.data.demo import corpus, qa_pairs
        from llmctl.models.causal_lm import save
        from llmctl.models.tokenizers import train_bpe
        rows = qa_pairs(1000, 10)
        open("{work}/qa.jsonl", "w").write("".join(json.dumps(r) + "\\n" for r in rows))
        tok = train_bpe(corpus(2000) + [r["question"] + " " + r["answer"] for r in rows], 512)
        cfg = GPT2Config(n_layer=4, n_head=4, n_embd=128, n_positions=128, vocab_size=len(tok),
                         bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
        save(GPT2LMHeadModel(cfg), tok, __import__("pathlib").Path("{work}/base"))
    """)
    subprocess.run([sys.executable, "-c", setup], check=True, cwd=ROOT)
    (work / "hand.py").write_text(HAND_WRITTEN)
    pairs = []
    for index in range(args.pairs):
        recipe = work / f"recipe{index}.yaml"
        recipe.write_text(
            RECIPE.format(run_dir=work / f"run{index}", base=work / "base", data=work / "qa.jsonl", steps=args.steps)
        )
        hand = measure(
            [
                sys.executable,
                str(work / "hand.py"),
                str(work / "base"),
                str(work / "qa.jsonl"),
                str(work / f"hand{index}"),
                str(args.steps),
            ]
        )
        ours = measure([sys.executable, "-m", "llmctl", "run", str(recipe)])
        pairs.append(
            {
                "trl_script": {"wall_s": hand[0], "peak_rss_mib": hand[1]},
                "llmctl_run": {"wall_s": ours[0], "peak_rss_mib": ours[1]},
                "time_ratio": round(ours[0] / hand[0], 3),
                "memory_ratio": round(ours[1] / hand[1], 3),
            }
        )
        print(json.dumps(pairs[-1]), flush=True)
    print(
        json.dumps(
            {
                "steps": args.steps,
                "pairs": len(pairs),
                "median_time_ratio": statistics.median(p["time_ratio"] for p in pairs),
                "median_memory_ratio": statistics.median(p["memory_ratio"] for p in pairs),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
