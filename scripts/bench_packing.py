"""SFT throughput with and without packing on short samples (the demo question/answer pairs).

Run: .venv/bin/python scripts/bench_packing.py [--steps 100]
Both runs see the same rows for one epoch; prints real (non-padding) tokens per second, the share of the
computed positions that are padding, and the packed/unpacked ratio (issue target: >= 1.5x). `--lengths mixed` (default) draws 1-12 corpus documents
per sample (most short, some long), `--lengths uniform` uses the ~14-token question/answer pairs.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--packed-batch", type=int, default=2, help="packed sequences per step (each max_length)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lengths", default="mixed", choices=["mixed", "uniform"], help="sample length distribution")
    parser.add_argument("--strategy", default="bfd", choices=["bfd", "wrapped"], help="TRL packing strategy")
    args = parser.parse_args()

    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel
    from trl import SFTConfig, SFTTrainer

    from llmctl.data.demo import corpus, qa_pairs
    from llmctl.models.tokenizers import train_bpe

    rng = random.Random(0)
    docs = corpus(args.rows * 4, seed=3)
    if args.lengths == "uniform":  # question/answer pairs: all about 14 tokens
        texts = [f"Question: {r['question']}\n\nAnswer: {r['answer']}" for r in qa_pairs(args.rows, 10)]
    else:  # 1 to 12 documents per sample: 20 to ~400 tokens, most of them short
        texts = [" ".join(rng.sample(docs, min(12, int(rng.paretovariate(1.2))))) for _ in range(args.rows)]
    tokenizer = train_bpe(corpus(2000) + texts, 512)
    real_tokens = sum(len(ids) + 1 for ids in tokenizer(texts)["input_ids"])  # +1: EOS
    config = GPT2Config(
        n_layer=4,
        n_head=4,
        n_embd=128,
        n_positions=512,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    results: dict = {
        "lengths": args.lengths,
        "strategy": args.strategy,
        "packed_batch": args.packed_batch,
        "max_length": args.max_length,
    }
    for packing in (False, True):
        model = GPT2LMHeadModel(config)
        out = tempfile.mkdtemp()
        sft = SFTConfig(
            output_dir=out,
            num_train_epochs=1,
            max_length=args.max_length,
            bf16=False,
            per_device_train_batch_size=args.packed_batch if packing else 16,
            packing=packing,
            packing_strategy=args.strategy,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=1000,
            seed=0,
        )
        trainer = SFTTrainer(
            model=model,
            args=sft,
            train_dataset=Dataset.from_list([{"text": t} for t in texts]),
            processing_class=tokenizer,
        )
        computed = sum(batch["input_ids"].numel() for batch in trainer.get_train_dataloader())
        start = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - start
        results["packed" if packing else "unpacked"] = {
            "steps": trainer.state.global_step,
            "seconds": round(elapsed, 2),
            "tokens_per_s": round(real_tokens / elapsed),
            "padding_fraction": round(1 - real_tokens / computed, 3),
        }
    results["ratio"] = round(results["packed"]["tokens_per_s"] / results["unpacked"]["tokens_per_s"], 2)
    print(json.dumps({"rows": args.rows, "real_tokens": real_tokens, **results}, indent=2))


if __name__ == "__main__":
    main()
