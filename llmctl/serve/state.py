"""What a running server holds: the model source, its limits and key, the batching engine, the version being
served (swapped by hot reload) and the Prometheus metrics. The routes in serve/app.py read and update it."""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.serve.engine import Engine, Loaded
from llmctl.serve.limits import Limits
from llmctl.serve.protocol import APIError, RequestBase
from llmctl.serve.requests import Request as GenRequest


@dataclass
class Source:
    """What to serve: a model folder, or a registry name whose `current` version (or another alias) is followed."""

    path: str | None = None
    registry: str | None = None
    name: str | None = None
    alias: str = "current"
    served_name: str | None = None  # the model id clients send and see (--served-model-name)

    def resolve(self) -> tuple[str, str]:
        """(folder, version label) to load now."""
        if self.path:
            return self.path, Path(self.path).name
        from llmctl.store.registry import Registry

        registry = Registry(self.registry or "models")
        name = self.name or ""
        return str(registry.current_path(name, self.alias)), registry.alias(name, self.alias) or ""

    @property
    def model_id(self) -> str:
        return self.served_name or self.name or Path(self.path or "model").name


def unique_ids(sources: list[Source]) -> list[Source]:
    """The sources with distinct model ids: the same registry name under two aliases is served as NAME and
    NAME@ALIAS (`--served-model-name` sets one for a single model); a name served twice is a UsageError."""
    from llmctl.errors import UsageError

    seen: set[str] = set()
    for source in sources:
        if source.model_id in seen and source.name and source.alias != "current" and not source.served_name:
            source.served_name = f"{source.name}@{source.alias}"
        if source.model_id in seen:
            raise UsageError(f"model {source.model_id!r} is named twice; serve each model once")
        seen.add(source.model_id)
    return sources


MEMORY_MARGIN = 1.2  # weights on disk → in memory (tokenizer, buffers, the first batch's activations)


def check_memory(sources: list[Source]) -> None:
    """Refuse (UsageError) models whose files together exceed the memory available now, before loading any:
    a second model that does not fit would otherwise push the first into swap or the OOM killer. Skipped where
    /proc/meminfo cannot be read, and with a GPU (models load into its memory)."""
    from llmctl.errors import UsageError
    from llmctl.hardware import cuda_visible

    if cuda_visible():
        return
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return
    available = next(
        (int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:")), 0
    )
    sizes = {s.model_id: _folder_bytes(Path(s.resolve()[0])) for s in sources}
    needed = sum(sizes.values()) * MEMORY_MARGIN
    if available and needed > available:
        listed = ", ".join(f"{m} {b / 2**30:.1f} GiB" for m, b in sizes.items())
        raise UsageError(
            f"the models need ~{needed / 2**30:.1f} GiB ({listed}, ×{MEMORY_MARGIN} for loading) and this machine has "
            f"{available / 2**30:.1f} GiB available: serve fewer models, or quantized ones"
        )


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


class ServerState:
    def __init__(self, source: Source, api_key: str | None, limits: Limits) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.source, self.api_key, self.limits = source, api_key, limits
        self.path, self.version = source.resolve()
        self.engine = Engine(Loaded(self.path, limits.max_batch), limits.max_batch, limits.max_queue)
        self._reload_lock = threading.Lock()
        self.metrics = CollectorRegistry()
        self.requests_total = Counter("llmctl_requests", "HTTP requests", ["endpoint", "status"], registry=self.metrics)
        self.tokens_total = Counter("llmctl_tokens", "Tokens processed", ["kind"], registry=self.metrics)
        self.latency = Histogram(
            "llmctl_request_latency_seconds",
            "Request latency",
            ["endpoint"],
            registry=self.metrics,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        Gauge("llmctl_queue_depth", "Requests waiting for the engine", registry=self.metrics).set_function(
            self.engine.queue_depth
        )
        self.cancelled_total = Counter(
            "llmctl_cancelled", "Generations stopped because their client went away", registry=self.metrics
        )
        self.served = Gauge(
            "llmctl_served_version", "1 for the version being served", ["model", "version"], registry=self.metrics
        )
        self.served.labels(source.model_id, self.version).set(1)
        self.reloads_total = Counter("llmctl_reloads", "Registry versions swapped in", registry=self.metrics)

    def authorize(self, path: str, header: str) -> None:
        if self.api_key and path.startswith(
            ("/v1/", "/admin/", "/tokenize", "/detokenize", "/tokenizer_info", "/openapi.json")
        ):
            if not hmac.compare_digest(header, f"Bearer {self.api_key}"):
                raise APIError(401, "missing or wrong API key (send Authorization: Bearer KEY)", code="invalid_api_key")

    def reload(self) -> bool:
        """Load the registry's current version if it changed; True when a new model was swapped in."""
        with self._reload_lock:
            new_path, new_version = self.source.resolve()
            if new_path == self.path:
                return False
            self.engine.swap(Loaded(new_path, self.limits.max_batch))
            self.served.remove(self.source.model_id, self.version)
            self.served.labels(self.source.model_id, new_version).set(1)
            self.reloads_total.inc()
            self.path, self.version = new_path, new_version
            return True

    def prepare(
        self, body: RequestBase, prompts: list[str | list[int]], max_tokens: int, special_tokens: bool
    ) -> list[list[int]]:
        """Refuse what cannot be served; returns each prompt's token ids (an empty prompt becomes the model's
        start token). `special_tokens`: let the tokenizer add its own (a chat template already has them)."""
        source, limits, engine = self.source, self.limits, self.engine
        if body.model not in (None, source.model_id):
            raise APIError(
                404,
                f"model {body.model!r} is not served here; this server serves {source.model_id!r}",
                param="model",
                code="model_not_found",
            )
        if max_tokens > limits.max_tokens:
            raise APIError(
                400, f"max_tokens {max_tokens} is above this server's cap of {limits.max_tokens}", param="max_tokens"
            )
        if body.n > limits.max_n:
            raise APIError(400, f"n {body.n} is above this server's cap of {limits.max_n}", param="n")
        if (sequences := len(prompts) * body.n) > limits.max_queue:  # would be 429 forever: it can never fit
            raise APIError(
                400,
                f"{len(prompts)} prompt(s) × n={body.n} is {sequences} sequences; this server queues at "
                f"most {limits.max_queue} at once (llmctl serve --max-queue)",
                param="n",
            )
        loaded = engine.loaded
        start = loaded.counter.bos_token_id if loaded.counter.bos_token_id is not None else loaded.counter.eos_token_id
        prepared = []
        for prompt in prompts:
            ids = engine.encode(prompt, special_tokens) if isinstance(prompt, str) else list(prompt)
            if not ids and start is None:
                raise APIError(
                    400, "prompt is empty and this model has no start token to generate from", param="prompt"
                )
            ids = ids or [start]
            if (foreign := loaded.foreign_id(ids)) is not None:
                raise APIError(
                    400,
                    f"token id {foreign} is outside this model's vocabulary (0 to {loaded.vocab_size - 1})",
                    param="prompt",
                )
            if loaded.context is not None and len(ids) + max_tokens > loaded.context:
                raise APIError(
                    400,
                    f"this model's context is {loaded.context} tokens; the prompt has {len(ids)} and max_tokens "
                    f"asks for {max_tokens}: shorten the prompt or lower max_tokens",
                    param="prompt",
                    code="context_length_exceeded",
                )
            prepared.append(ids)
        return prepared

    def cancel(self, generations: list[GenRequest]) -> None:
        unfinished = [g for g in generations if not g.finished]
        for generation in unfinished:
            generation.cancelled = True
        self.cancelled_total.inc(len(unfinished))

    def account(self, endpoint: str, status: str, generations: list[GenRequest], started: float) -> None:
        self.requests_total.labels(endpoint, status).inc()
        self.tokens_total.labels("prompt").inc(sum(g.prompt_tokens for g in generations))
        self.tokens_total.labels("completion").inc(sum(len(g.tokens) for g in generations))
        self.latency.labels(endpoint).observe(time.perf_counter() - started)

    def watch(self, every_s: float, log: Any) -> None:
        """Follow the registry's alias (`current`, or the one served) every `every_s` seconds (`follow_once`)."""
        last = ""
        while True:
            time.sleep(every_s)
            last = self.follow_once(log, last)

    def follow_once(self, log: Any, last: str = "") -> str:
        """Swap in the version the alias points at now, logging the swap; a failed load keeps the old model
        serving and is logged once per distinct failure (e.g. a version being pruned mid-read: the next tick
        tries again). Returns the failure seen ("" when none)."""
        try:
            before = self.version
            if self.reload():
                alias = "" if self.source.alias == "current" else f" (@{self.source.alias})"
                log.info("registry: now serving %s %s%s (was %s)", self.source.model_id, self.version, alias, before)
            return ""
        except Exception as err:  # noqa: BLE001 - the server must outlive a bad registry state
            if str(err) != last:
                log.warning(
                    "registry watch: could not load the current version (%s: %s); still serving the previous one",
                    type(err).__name__,
                    err,
                )
            return str(err)
