"""Pick the device and training dtype from what the machine can actually do fast.

bf16 on a CPU without native support (AVX-512-BF16 or AMX) is several times slower than fp32
(~7x measured on a 2-core AVX2 machine), so `auto` only chooses it where the hardware has it; there it is
faster (the quickstart's pretraining 1.18x, pretrain + sft 1.13x on a 2-core AVX-512-BF16 AMD EPYC).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Hardware:
    device: str  # "cpu" or "cuda"
    dtype: str  # "fp32", "bf16" or "fp16"
    reason: str  # why, for logs and `plan`
    gpus: int = 0


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    try:
        return set(cpuinfo.read_text().split())
    except OSError:
        return set()


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU advertises AVX-512-BF16 or AMX-BF16."""
    flags = cpu_flags(cpuinfo)
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def cuda_visible() -> bool:
    """Whether an NVIDIA GPU is usable, without importing torch (for `validate`): the driver is loaded
    and CUDA_VISIBLE_DEVICES does not hide every device. LLMCTL_ASSUME_CUDA=0/1 overrides (tests)."""
    forced = os.environ.get("LLMCTL_ASSUME_CUDA")
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists()


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup (cgroup v2
    `memory.events`, v1 `memory.oom_control`), or None where neither can be read: a SIGKILL is called the OOM
    killer's only when this count rose."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        candidates = []
        if controllers == "":
            candidates = [Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events"]
        elif "memory" in controllers.split(","):
            candidates = [Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control"]
        for candidate in candidates:
            try:
                for entry in candidate.read_text().splitlines():
                    key, _, value = entry.partition(" ")
                    if key == "oom_kill" and value.strip().isdigit():
                        return int(value)
            except OSError:
                continue
    return None


@cache
def detect(device: str = "auto", dtype: str = "auto") -> Hardware:
    """Resolve the recipe's `device`/`dtype` policy ("auto" or explicit) against this machine."""
    cuda = False
    if device == "cuda" or cuda_visible():  # torch takes seconds to import: not without a GPU driver
        import torch

        cuda = torch.cuda.is_available()
    chosen_device = "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"
    if chosen_device == "cuda" and not cuda:
        from llmctl.errors import UsageError

        raise UsageError("device: cuda was requested but no CUDA GPU is visible; use device: auto or cpu")
    gpus = torch.cuda.device_count() if chosen_device == "cuda" else 0  # (torch imported when cuda)
    if dtype != "auto":
        return Hardware(chosen_device, dtype, f"dtype {dtype} set in the recipe", gpus)
    if chosen_device == "cuda":
        if torch.cuda.is_bf16_supported():
            return Hardware("cuda", "bf16", "GPU supports bf16", gpus)
        return Hardware("cuda", "fp16", "GPU lacks bf16; using fp16", gpus)
    if cpu_has_native_bf16():
        return Hardware("cpu", "bf16", "CPU has native bf16 (AVX-512-BF16/AMX)", 0)
    return Hardware("cpu", "fp32", "CPU lacks native bf16 (no AVX-512-BF16/AMX): fp32 is faster", 0)


DOCTOR_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "deeplake",
    "neural-compressor",
    "optimum-intel",
    "openvino",
    "lm-eval",
    "llama-cpp-python",
    "fastapi",
    "uvicorn",
)
DOCTOR_IMPORTS = {
    "deeplake": "deeplake",
    "neural-compressor": "neural_compressor.torch.quantization",
    "openvino": "optimum.intel.openvino",
    "lm-eval": "lm_eval",
    "llama.cpp": "llama_cpp",
}
LOW_DISK_GIB = 5


def environment_report(runs_root: Path) -> dict[str, Any]:
    """What `llmctl doctor` shows: versions, devices, whether the optional backends import, free disk, warnings."""
    import importlib
    import platform
    import shutil
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "missing"

    hw = detect("auto", "auto")
    found: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: installed(name) for name in DOCTOR_PACKAGES},
        "warnings": [],
    }
    found["devices"] = {
        "cuda": torch.cuda.is_available(),
        "gpus": torch.cuda.device_count(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_threads": torch.get_num_threads(),
        "auto_device": hw.device,
        "auto_dtype": hw.dtype,
        "why": hw.reason,
    }
    found["imports"] = {}
    for name, module in DOCTOR_IMPORTS.items():
        try:
            importlib.import_module(module)
            found["imports"][name] = "ok"
        except Exception as problem:  # noqa: BLE001 - report any import failure
            found["imports"][name] = f"{type(problem).__name__}: {str(problem)[:120]}"
            found["warnings"].append(f"{name} does not import: {found['imports'][name]}")
    probe = runs_root if runs_root.exists() else Path(".")
    found["disk_free_gib"], found["disk_probe"] = round(shutil.disk_usage(probe).free / 2**30, 1), str(probe.absolute())
    if found["disk_free_gib"] < LOW_DISK_GIB:
        found["warnings"].append(f"only {found['disk_free_gib']} GiB free under {probe.absolute()}")
    return found
