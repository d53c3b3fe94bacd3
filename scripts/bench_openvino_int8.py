"""Which OpenVINO CPU-plugin settings make an int8 (or int4) weight-compressed model decode fastest on this CPU, and which
kernels its FullyConnected layers then run (issue 32, item 4: on VNNI/AMX CPUs the plugin picked bf16 and
decompressed the int8 weights, `brgemm_avx512_bf16`, instead of an int8 kernel).

Run: .venv/bin/python scripts/bench_openvino_int8.py [--new-tokens 64]
Builds the GPT-2-124M-sized model of scripts/bench_quantize.py, exports it to OpenVINO int8 (asymmetric and
symmetric) and int4 (group 128; NNCF weight compression), then for each setting times OpenVINO GenAI's C++ decode loop (what
`llmctl serve` runs for these folders: median time per output token over 4 prompts, after a warm-up) and reads
the plugin's per-node profile of one decode step: the FullyConnected layers' time and kernel (exec_type).
Prints one line per (model, setting) and the JSON of all of them.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
from pathlib import Path

from scripts.bench_quantize import PROMPTS, build

MODELS = {  # NNCF weight compression of the same model
    "int8": {"bits": 8, "sym": False},
    "int8 sym": {"bits": 8, "sym": True},
    "int4 g128": {"bits": 4, "sym": True, "group_size": 128, "ratio": 1.0},
}
SETTINGS = {
    "plugin default": {},
    "f32": {"INFERENCE_PRECISION_HINT": "f32"},
    "f32 + dynamic quantization 32": {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"},
    "f32 + dynamic quantization off": {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"},
    "bf16 + dynamic quantization 32": {"INFERENCE_PRECISION_HINT": "bf16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()

    from llmctl.models import causal_lm, openvino
    from llmctl.render import quiet_libraries

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="bench-ov-int8-"))
    source = build(work / "fp32")
    tokenizer = causal_lm.load_tokenizer(str(source))
    native, capabilities = openvino._cpu()
    print(f"plugin default precision {native}; capabilities {', '.join(capabilities)}", flush=True)
    results = {}
    for name, trial in MODELS.items():
        folder = work / name.replace(" ", "-")
        openvino.export(str(source), trial, folder)
        for setting, extra in SETTINGS.items():
            config = openvino.ov_config() | extra
            config["KV_CACHE_PRECISION"] = config["INFERENCE_PRECISION_HINT"]  # GenAI needs them to match
            found = _decode(folder, tokenizer, args.new_tokens, config)
            results[f"{name} / {setting}"] = found
            print(
                f"{name:9s} {setting:32s} {found['tokens_per_s']:7.1f} tok/s  ({found['ms_per_token']:5.2f} ms/token; "
                f"FC {found['fc_ms']:5.2f} ms: {found['fc_kernels']})",
                flush=True,
            )
    print(json.dumps(results))


def _decode(folder: Path, tokenizer: object, new_tokens: int, config: dict[str, str]) -> dict[str, object]:
    import numpy
    import openvino as ov
    import openvino_genai as genai

    pipe = genai.LLMPipeline(str(folder), "CPU", **config)
    settings = genai.GenerationConfig()
    settings.max_new_tokens = settings.min_new_tokens = new_tokens
    tpots = []
    for prompt in PROMPTS[:1] + PROMPTS:  # the first is a warm-up
        ids = numpy.array([tokenizer(prompt)["input_ids"]], dtype=numpy.int64)  # type: ignore[operator]
        result = pipe.generate(genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(numpy.ones_like(ids))), settings)
        tpots.append(result.perf_metrics.get_tpot().mean)
    del pipe
    ms = statistics.median(tpots[1:])
    fc_ms, kernels = _fc_profile(folder, tokenizer, new_tokens, config)
    return {"tokens_per_s": round(1000 / ms, 1), "ms_per_token": round(ms, 3), "fc_ms": fc_ms, "fc_kernels": kernels}


def _fc_profile(folder: Path, tokenizer: object, new_tokens: int, config: dict[str, str]) -> tuple[float, str]:
    """The FullyConnected nodes of the last decode step: their time (ms) and kernels, e.g. 'brgemm_avx512_bf16 ×49'."""
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(str(folder), ov_config=config | {"PERF_COUNT": "YES"})
    model.generate(
        **tokenizer(PROMPTS[0], return_tensors="pt", return_token_type_ids=False),  # type: ignore[operator]
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
    )
    nodes = [n for n in model.request.get_profiling_info() if n.node_type.startswith("FullyConnected")]
    kinds = collections.Counter(n.exec_type for n in nodes)
    total = sum(n.real_time.total_seconds() * 1000 for n in nodes)
    return round(total, 3), ", ".join(f"{k} ×{v}" for k, v in kinds.most_common())


if __name__ == "__main__":
    main()
