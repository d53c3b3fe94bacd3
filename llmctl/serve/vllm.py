"""`llmctl serve --engine vllm`: hand the model folder to vLLM's own OpenAI server (GPU machines with vLLM
installed), with the same host, port, API key and batch flags as the built-in engine.

vLLM is not a dependency: it is found on PATH at run time. The API key goes through VLLM_API_KEY, never the
command line (which `ps` shows to every user)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from llmctl.errors import UsageError
from llmctl.serve.limits import Limits
from llmctl.serve.state import Source


def command(source: Source, host: str, port: int, limits: Limits) -> list[str]:
    """The `vllm serve` command line for the folder `source` names now (a registry's current version)."""
    path, _ = source.resolve()
    _check_servable(path)
    return [
        "vllm",
        "serve",
        str(Path(path).resolve()),
        "--served-model-name",
        source.model_id,
        "--host",
        host,
        "--port",
        str(port),
        "--max-num-seqs",
        str(limits.max_batch),
    ]


def environment(api_key: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    return env


def run(source: Source, host: str, port: int, api_key: str | None, limits: Limits) -> None:
    """Replace this process with vLLM's server (signals and the exit code are vLLM's own)."""
    argv = command(source, host, port, limits)
    executable = shutil.which("vllm")
    if executable is None:
        raise UsageError(
            "--engine vllm: the `vllm` command is not installed here (pip install vllm, on a machine with a GPU); "
            "the built-in engine (--engine llmctl) serves on any machine"
        )
    if source.registry:
        print(
            f"vllm serves {source.model_id} version {source.resolve()[1]}; it does not follow the registry: restart it after a promotion",
            flush=True,
        )
    os.execve(executable, argv, environment(api_key))


def _check_servable(path: str) -> None:
    from llmctl.models import adapters, quantized

    if adapters.is_adapter_folder(path):
        raise UsageError(
            f"--engine vllm: {path} is a LoRA adapter folder; deploy a merged model (peft.merge: true) "
            "or serve it with the built-in engine"
        )
    backend = quantized.backend_of(path)
    if backend != "pytorch":
        raise UsageError(
            f"--engine vllm: {path} is an {backend} model, which vLLM cannot load; serve it with the built-in "
            "engine, or deploy the model before quantization"
        )
