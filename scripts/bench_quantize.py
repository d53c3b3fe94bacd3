r"""Decode speed and size of a GPT-2-124M-sized model before and after quantization, on this CPU.

Run: .venv/bin/python scripts/bench_quantize.py [--new-tokens 64] [--beams 4]
Builds GPT-2 small (124M parameters, random weights: speed does not depend on what the weights are) with
the GPT-2 tokenizer layout retrained locally (no download), then measures in one process, on the same prompts:
PyTorch fp32, OpenVINO fp32 / int8 / int4 (optimum-intel + NNCF), INC weight-only int8 / int4 (RTN) and GGUF
f16 / Q8_0 / Q4_K_M / Q4_0 (llama.cpp's converter and quantizer, decoded through llmctl's GGUF model).
Prints tokens/s (greedy, batch 1), ms/token, beam-search tokens/s (not GGUF: llama.cpp has none) and size on
disk, with ratios to PyTorch fp32. Target (issue 6): OpenVINO int8 greedy decode >= 2.5x PyTorch fp32.

llama.cpp as the peer (issue 32): for each GGUF file also llama.cpp's own decode loop (llama-cpp-python's
`Llama.generate`, greedy sampler in C) on the same prompt ids, alternated with llmctl's --rounds times; prints
llmctl / llama.cpp min, median and max. --only gguf skips the other backends. Note the CPU kind (`grep -o
'amx_bf16\|avx512_bf16' /proc/cpuinfo | sort -u`) and the model size beside each bandwidth share: a VM with a
very large L3 can hold a small model in cache, and its share then exceeds what DRAM allows.

Roofline (issue 20): at batch 1 every weight is read once per token, so decode cannot beat read bandwidth /
weight bytes. The script measures the read bandwidth (a 1 GiB sum on all threads, best of 15) and prints each
variant's weight bytes read per second as a share of it; for OpenVINO also the share in OpenVINO's own infer
time alone (the rest of a token is transformers' generate loop in Python), in OpenVINO GenAI's C++ decode loop,
and in the FullyConnected kernels alone (the part of a token that reads the weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "The history of the city begins",
    "In a quiet village there lived",
    "Scientists have discovered that",
    "The best way to learn a language is",
]


def build(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmctl.data.demo import corpus
    from llmctl.models.causal_lm import save
    from llmctl.models.tokenizers import train_bpe

    tokenizer = train_bpe(corpus(2000, seed=1), 50257)
    config = GPT2Config(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    save(GPT2LMHeadModel(config), tokenizer, folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--only", choices=["all", "gguf"], default="all", help="gguf: PyTorch fp32 and GGUF only")
    parser.add_argument("--rounds", type=int, default=5, help="alternated llmctl / llama.cpp rounds per GGUF file")
    args = parser.parse_args()

    from llmctl.models import causal_lm, measure, openvino
    from llmctl.render import quiet_libraries

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="bench-quantize-"))
    source = build(work / "fp32")
    tokenizer = causal_lm.load_tokenizer(str(source))
    variants = {
        "pytorch fp32": lambda: causal_lm.load(str(source)).eval(),
        "openvino fp32": lambda: _openvino_fp32(source, work / "ovfp"),
        "openvino int8": lambda: openvino.export(str(source), {"bits": 8, "sym": False}, work / "ov8"),
        "openvino int8 sym": lambda: openvino.export(str(source), {"bits": 8, "sym": True}, work / "ov8s"),
        "openvino int4 g128": lambda: openvino.export(
            str(source), {"bits": 4, "sym": False, "group_size": 128, "ratio": 1.0}, work / "ov4"
        ),
        "inc rtn int8": lambda: _inc(
            source, tokenizer, {"method": "rtn", "bits": 8, "group_size": -1, "sym": True}, work / "inc8"
        ),
        "inc rtn int4 g128": lambda: _inc(
            source, tokenizer, {"method": "rtn", "bits": 4, "group_size": 128, "sym": True}, work / "inc4"
        ),
    }
    if args.only == "gguf":
        variants = {"pytorch fp32": variants["pytorch fp32"]}
    for fmt in GGUF_FORMATS:
        variants[f"gguf {fmt}"] = lambda fmt=fmt: _gguf(source, fmt, work)
    folders = {
        "pytorch fp32": source,
        "openvino fp32": work / "ovfp",
        "openvino int8": work / "ov8",
        "openvino int8 sym": work / "ov8s",
        "openvino int4 g128": work / "ov4",
        "inc rtn int8": work / "inc8",
        "inc rtn int4 g128": work / "inc4",
    } | {f"gguf {fmt}": work / f"gguf-{fmt}" for fmt in GGUF_FORMATS}
    bandwidth_before = read_bandwidth_gb_s()
    results = {}
    for name, make in variants.items():
        model = make()
        infer = _time_infer(model) if name.startswith("openvino") else None
        greedy = measure.generation_speed(model, tokenizer, PROMPTS, args.new_tokens)
        if infer:
            greedy["infer_ms_per_token"] = round(1000 * statistics.median(infer), 3)  # 5 prefills among 325 calls
        gguf_model = name.startswith("gguf")
        beam = (
            {"tokens_per_s": float("nan")}
            if gguf_model
            else measure.generation_speed(model, tokenizer, PROMPTS[:2], args.new_tokens, beams=args.beams)
        )
        results[name] = greedy | {
            "beam_tokens_per_s": beam["tokens_per_s"],
            "size_mb": measure.folder_size_mb(folders[name]),
        }
        if name.startswith("openvino"):
            del model
            results[name] |= _openvino_decode(folders[name], tokenizer, args.new_tokens)
        base = results["pytorch fp32"]
        print(
            f"{name:20s} greedy {greedy['tokens_per_s']:7.1f} tok/s ({greedy['ms_per_token']:6.2f} ms/token, "
            f"{greedy['tokens_per_s'] / base['tokens_per_s']:.2f}x)  beam-{args.beams} {beam['tokens_per_s']:7.1f} tok/s "
            f"({beam['tokens_per_s'] / base['beam_tokens_per_s']:.2f}x)  size {results[name]['size_mb']:.0f} MB",
            flush=True,
        )
        if gguf_model:
            results[name] |= _against_llama_cpp(model, tokenizer, args.new_tokens, args.rounds)
            del model
    bandwidth = max(bandwidth_before, read_bandwidth_gb_s())
    print(
        f"read bandwidth {bandwidth:.1f} GB/s; weight bytes read per second as a share of it (greedy decode, then for OpenVINO its parts):"
    )
    for name, result in results.items():
        result["bandwidth_share"] = round(result["tokens_per_s"] * result["size_mb"] / 1000 / bandwidth, 3)
        line = f"{name:20s} {result['bandwidth_share']:4.0%}"
        if name.startswith("openvino"):
            for key, label in (("infer", "OpenVINO's infer"), ("genai", "GenAI decode"), ("fc", "FC kernels")):
                result[f"{key}_bandwidth_share"] = round(
                    result["size_mb"] / result[f"{key}_ms_per_token"] / bandwidth, 3
                )
                line += f"  {label} {result[f'{key}_bandwidth_share']:4.0%} ({result[f'{key}_ms_per_token']:.2f} ms)"
        print(line)
    print(json.dumps(results))


GGUF_FORMATS = ("f16", "q8_0", "q4_k_m", "q4_0")


def _gguf(source: Path, fmt: str, work: Path) -> object:
    from llmctl.models import gguf, gguf_runtime

    gguf.export(str(source), fmt, work / f"gguf-{fmt}", f16_cache=work / "gguf-f16.gguf")
    return gguf_runtime.load(str(work / f"gguf-{fmt}"))


def _against_llama_cpp(model: object, tokenizer: object, new_tokens: int, rounds: int) -> dict[str, float]:
    """llmctl's GGUF decode (transformers' generate() contract, Python loop over llama.cpp's logits) against
    llama.cpp's own (llama-cpp-python's generate(): the greedy sampler in C), same context, same prompt ids,
    alternated `rounds` times; prints and returns the ratio's min/median/max."""
    from llmctl.models import measure

    llm = model.llm  # type: ignore[attr-defined]
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]  # type: ignore[operator]

    def llama_cpp_tokens_per_s() -> float:
        started, made = time.perf_counter(), 0
        for ids in prompt_ids:  # (generate() reuses the cached prompt prefix, as llmctl's loop does)
            for made_here, _ in enumerate(llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0), start=1):
                if made_here == new_tokens:
                    break
            made += new_tokens
        return made / (time.perf_counter() - started)

    llama_cpp_tokens_per_s()  # warm-up
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(measure.generation_speed(model, tokenizer, PROMPTS, new_tokens)["tokens_per_s"])
        theirs.append(llama_cpp_tokens_per_s())
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    print(
        f"{'':20s} llama.cpp's own loop {statistics.median(theirs):7.1f} tok/s; llmctl / llama.cpp "
        f"min {ratios[0]:.3f} median {statistics.median(ratios):.3f} max {ratios[-1]:.3f}",
        flush=True,
    )
    return {
        "llama_cpp_tokens_per_s": round(statistics.median(theirs), 1),
        "vs_llama_cpp": {
            "min": round(ratios[0], 3),
            "median": round(statistics.median(ratios), 3),
            "max": round(ratios[-1], 3),
        },
    }


def read_bandwidth_gb_s() -> float:
    """Memory read bandwidth: the best of 15 sums over 1 GiB of fp32 (far beyond any cache) on all threads. On a
    shared VM it moves with the neighbours (32-42 GB/s here), so main() takes the best of a reading before and after."""
    import torch

    data = torch.ones(2**28)
    best = 0.0
    for _ in range(15):
        started = time.perf_counter()
        data.sum()
        best = max(best, data.numel() * 4 / (time.perf_counter() - started) / 1e9)
    return best


def _time_infer(model: object) -> list[float]:
    """Wrap an optimum-intel model's infer request so that the seconds of each inference (one per decoded token,
    one per prompt) are appended to the list returned."""
    model.compile()
    request, spent = model.request, []

    class Timed:
        def start_async(self, *args: object, **kwargs: object) -> None:
            self.started = time.perf_counter()
            request.start_async(*args, **kwargs)

        def wait(self) -> None:
            request.wait()
            spent.append(time.perf_counter() - self.started)

        def __getattr__(self, name: str) -> object:
            return getattr(request, name)

    model.request = Timed()
    return spent


def _openvino_decode(folder: Path, tokenizer: object, new_tokens: int) -> dict[str, float]:
    """Where an OpenVINO token's time goes, without transformers' Python loop: the median time per output token
    of OpenVINO GenAI's C++ decode loop (`LLMPipeline`, the runtime `llmctl serve` uses for these folders), and
    the time of the FullyConnected nodes alone — the kernels that read the weights — in one decode step (the
    plugin's per-node profile of the last inference of a generation)."""
    import numpy
    import openvino
    import openvino_genai as genai
    from optimum.intel import OVModelForCausalLM

    from llmctl.models.openvino import ov_config

    pipe = genai.LLMPipeline(str(folder), "CPU", **ov_config())
    config = genai.GenerationConfig()
    config.max_new_tokens = config.min_new_tokens = new_tokens
    tpots = []
    for prompt in PROMPTS[:1] + PROMPTS:  # the first is a warm-up
        ids = numpy.array([tokenizer(prompt)["input_ids"]], dtype=numpy.int64)
        result = pipe.generate(
            genai.TokenizedInputs(openvino.Tensor(ids), openvino.Tensor(numpy.ones_like(ids))), config
        )
        tpots.append(result.perf_metrics.get_tpot().mean)
    del pipe
    model = OVModelForCausalLM.from_pretrained(str(folder), ov_config=ov_config() | {"PERF_COUNT": "YES"})
    fc_ms = []
    for prompt in PROMPTS:
        # The last inference is then a decode step
        model.generate(
            **tokenizer(prompt, return_tensors="pt", return_token_type_ids=False),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        )
        fc_ms.append(
            sum(
                node.real_time.total_seconds() * 1000
                for node in model.request.get_profiling_info()
                if node.node_type.startswith("FullyConnected")
            )
        )
    return {
        "genai_ms_per_token": round(statistics.median(tpots[1:]), 3),
        "fc_ms_per_token": round(statistics.median(fc_ms), 3),
    }


def _openvino_fp32(source: Path, out: Path) -> object:
    """The model exported to OpenVINO uncompressed: the same runtime reading fp32 weights."""
    from optimum.intel import OVModelForCausalLM

    from llmctl.models import openvino

    OVModelForCausalLM.from_pretrained(str(source), export=True, load_in_8bit=False).save_pretrained(out)
    return openvino.load(str(out))


def _inc(source: Path, tokenizer: object, trial: dict, out: Path) -> object:
    from llmctl.models import causal_lm, inc

    inc.save(inc.quantize(causal_lm.load(str(source)), trial, []), tokenizer, out)
    return inc.load(str(out))


if __name__ == "__main__":
    main()
