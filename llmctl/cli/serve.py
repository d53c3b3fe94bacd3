"""`serve` and `chat`: a model folder, or a registry name's current version, over HTTP or in the terminal."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmctl.cli.common import handle_errors
from llmctl.errors import UsageError
from llmctl.serve.limits import Limits as ServeLimits

if TYPE_CHECKING:
    from llmctl.serve.state import Source

ModelDirArg = Annotated[Path | None, typer.Argument(help="A model folder (plain, merged, INC or OpenVINO).")]
ModelNameOpt = Annotated[str | None, typer.Option(help="Model name in the registry.")]


class Engine(str, Enum):
    llmctl = "llmctl"
    vllm = "vllm"


AliasOpt = Annotated[str, typer.Option(help="With --name: follow this alias of the registry (e.g. champion).")]


def _model_source(
    command: str, model_dir: Path | None, registry: Path | None, name: str | None, alias: str = "current"
) -> Source:
    """A model folder, or a registry name whose current version (or aliased one) is meant (serve and chat take
    either)."""
    from llmctl.serve.state import Source

    if (model_dir is None) == (name is None):
        raise UsageError(f"{command} takes a MODEL_DIR, or --registry DIR --name NAME")
    if model_dir is not None and not model_dir.is_dir():
        raise UsageError(f"{model_dir}: no such model folder")
    if model_dir:
        return Source(str(model_dir))
    return Source(registry=str(registry or Path("models")), name=name, alias=alias)


def _model_sources(
    model_dirs: list[Path], registry: Path | None, names: list[str], alias: str = "current"
) -> list[Source]:
    """The models one server serves: folders, and registry names (`NAME@ALIAS` follows that alias; a plain NAME
    follows `--alias`)."""
    sources = [_model_source("serve", folder, None, None) for folder in model_dirs]
    for name in names:
        plain, _, own = name.partition("@")
        sources.append(_model_source("serve", None, registry, plain, own or alias))
    if not sources:
        raise UsageError("serve takes MODEL_DIR…, or --registry DIR --name NAME (repeat --name to serve several)")
    return sources


@handle_errors
def serve(
    model_dirs: Annotated[
        list[Path] | None,
        typer.Argument(metavar="MODEL_DIR", help="Model folders (plain, merged, INC, OpenVINO or GGUF)."),
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="Serve NAME's current version from this registry (hot reload).")
    ] = None,
    names: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            help="Model name in the registry; NAME@ALIAS follows that alias. Repeat to serve several models, "
            "routed by each request's `model`.",
        ),
    ] = None,
    alias: AliasOpt = "current",
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer KEY' (or set LLMCTL_API_KEY).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Cap on max_tokens per request.")] = ServeLimits.max_tokens,
    max_batch: Annotated[
        int,
        typer.Option(
            help="Sequences generated at once (one batch, or the running set of an "
            "OpenVINO model's continuous batching)."
        ),
    ] = ServeLimits.max_batch,
    max_queue: Annotated[int, typer.Option(help="Waiting requests before answering 429.")] = ServeLimits.max_queue,
    watch: Annotated[
        float,
        typer.Option(help="Seconds between checks of the registry's current version (0: only POST /admin/reload)."),
    ] = 2.0,
    engine: Annotated[
        Engine,
        typer.Option(
            help="llmctl: the built-in engine (any machine, any backend); vllm: hand the "
            "folder to vLLM's OpenAI server (GPU, vLLM installed)."
        ),
    ] = Engine.llmctl,
    served_model_name: Annotated[
        str | None, typer.Option(help="The model id clients send and /v1/models lists (default: the folder or NAME).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per request.")] = False,
) -> None:
    """Serve models over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/embeddings,
    streaming): one, or several routed by each request's `model` (/v1/models lists them)."""
    sources = _model_sources(model_dirs or [], registry, names or [], alias)
    if served_model_name is not None:
        if len(sources) > 1:
            raise UsageError("--served-model-name names one model; with several, each is served under its own name")
        sources[0].served_name = served_model_name
    limits = ServeLimits(max_tokens=max_tokens, max_batch=max_batch, max_queue=max_queue)
    key = api_key or os.environ.get("LLMCTL_API_KEY") or None
    if engine is Engine.vllm:
        from llmctl.serve import vllm

        if len(sources) > 1:
            raise UsageError("--engine vllm serves one model per server; start one per model")
        return vllm.run(sources[0], host, port, key, limits)
    from llmctl.serve.app import run_server

    run_server(sources, host, port, key, limits, watch, quiet)


@handle_errors
def chat(
    model_dir: ModelDirArg = None,
    registry: Annotated[Path | None, typer.Option(help="Chat with NAME's current version in this registry.")] = None,
    name: ModelNameOpt = None,
    system: Annotated[str, typer.Option(help="System prompt (change it in the chat with /system TEXT).")] = "",
    template: Annotated[
        str | None,
        typer.Option(
            help="Prompt template with {prompt} for a model without a chat template "
            "(default: the recipe's data.template, found through its run "
            "folder)."
        ),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer at most.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.9,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0: no cut).")] = 0,
    repetition_penalty: Annotated[float, typer.Option(help="Above 1 discourages repeating tokens.")] = 1.0,
) -> None:
    """Chat with a model in the terminal, answers streamed as they are generated (/reset, /system, /exit)."""
    from llmctl.serve.requests import Sampling
    from llmctl.serve.terminal_chat import Conversation, Session, recipe_template, repl

    path, _ = _model_source("chat", model_dir, registry, name).resolve()
    sampling = Sampling(temperature, top_p, top_k, repetition_penalty=repetition_penalty)
    session = Session(path, sampling, max_new_tokens, template if template is not None else recipe_template(Path(path)))

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    repl(session, Conversation(system), input, write)
