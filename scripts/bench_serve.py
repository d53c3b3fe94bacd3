"""Throughput and latency of `llmctl serve` on loopback: N concurrent streaming clients for a bounded time.

Run: .venv/bin/python scripts/bench_serve.py [--model DIR] [--clients 1 8] [--seconds 20] [--max-tokens 32]
Without --model it builds a GPT-2-124M-sized model (random weights, local tokenizer; no download) and, with
--openvino, also serves its OpenVINO int8 export. For each client count prints requests/s, output tokens/s,
p50/p99 request latency and p50 time to first token, and the aggregate speed-up over one client.
Targets (issue 8): 8 clients >= 3x the single-client tokens/s (batching).

The server runs as `llmctl serve` in a subprocess. --peer instead runs the same clients against OpenVINO GenAI's
ContinuousBatchingPipeline on the same int8 folder (what a CPU user would pick instead): its add_request/step
loop in-process, with no HTTP in between, so the ratio printed is a lower bound for llmctl. Runs alternate
(llmctl, GenAI, llmctl, ... --pairs times) and the median ratio is printed. GenAI keeps its default KV cache
(u8 on CPU; llmctl asks for fp32, which measured the same speed in GenAI: 209.7 vs 202.9 tok/s at 8 clients).
Target (issue 20): llmctl >= GenAI at 8 clients.

--gguf also serves the built model's GGUF Q8_0 (llama.cpp underneath). --peer-llama-cpp compares llmctl serving
that GGUF folder with llama.cpp's OpenAI server from llama-cpp-python (`python -m llama_cpp.server`, same file,
same threads; needs `pip install sse-starlette starlette-context pydantic-settings`), --peer-url URL with any
OpenAI-compatible server already running on the same model (llama-server -m model.gguf). Runs alternate --pairs
times; ratios min/median/max. Target (issue 32): llmctl >= 1.0x llama.cpp at 1 and 8 clients.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

PROMPTS = [
    "The history of the city begins",
    "In a quiet village there lived",
    "Scientists have discovered that",
    "The best way to learn a language is",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(command: list[str], port: int, ready_path: str) -> tuple[str, subprocess.Popen]:
    """Start a server process and wait until GET `ready_path` answers; (base URL, process)."""
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            httpx.get(f"{base}{ready_path}", timeout=1).raise_for_status()
            return base, server
        except httpx.HTTPError:
            if server.poll() is not None:
                raise SystemExit(f"{command[0]} exited with {server.returncode}: {' '.join(command)}") from None
            time.sleep(0.2)


def start(model: str, max_batch: int) -> tuple[str, subprocess.Popen]:
    """`llmctl serve` in its own process, as users run it (in a thread of this process it shared the GIL with
    the clients, which cost it 15% of its tokens/s at 8 clients)."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("llmctl")), "serve", model, "--port", str(port)]
    command += ["--max-batch", str(max_batch), "--max-queue", "256"]
    return launch(command, port, "/health")


def client(base: str, until: float, max_tokens: int, index: int) -> list[tuple[float, float, int]]:
    """(latency s, time to first token s, tokens) per request until the deadline."""
    done = []
    with httpx.Client(timeout=120) as http:
        while time.perf_counter() < until:
            started, first, chunks, finish = time.perf_counter(), None, 0, None
            body = {"prompt": PROMPTS[index % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0, "stream": True}
            with http.stream("POST", f"{base}/v1/completions", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        choice = json.loads(line[6:])["choices"][0]
                        chunks += bool(choice["text"])
                        finish = choice["finish_reason"] or finish
                        if choice["text"]:
                            first = first or time.perf_counter()
            tokens = max_tokens if finish == "length" else chunks  # a chunk is about a token
            done.append((time.perf_counter() - started, (first or time.perf_counter()) - started, tokens))
    return done


def measure(base: str, clients: int, seconds: float, max_tokens: int) -> dict[str, float]:
    until = time.perf_counter() + seconds
    with ThreadPoolExecutor(clients) as pool:
        results = [r for batch in pool.map(lambda i: client(base, until, max_tokens, i), range(clients)) for r in batch]
    return summary(results, clients, seconds)


def genai_folder(ov_folder: str, out: Path) -> str:
    """A copy of an OpenVINO folder with the OpenVINO tokenizer/detokenizer models GenAI needs."""
    import shutil

    import openvino
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    shutil.copytree(ov_folder, out)
    tokenizer, detokenizer = convert_tokenizer(AutoTokenizer.from_pretrained(ov_folder), with_detokenizer=True)
    openvino.save_model(tokenizer, out / "openvino_tokenizer.xml")
    openvino.save_model(detokenizer, out / "openvino_detokenizer.xml")
    return str(out)


def measure_peer(
    folder: str, clients: int, seconds: float, max_tokens: int, properties: dict[str, str]
) -> dict[str, float]:
    """The clients of `measure`, against GenAI's continuous batching: one thread steps the pipeline, each client
    adds a request and reads its tokens as they come (time to first token = first non-empty read)."""
    import itertools

    import openvino_genai as genai

    scheduler = genai.SchedulerConfig()
    scheduler.cache_size, scheduler.max_num_seqs = 1, max(clients, 1)
    pipe = genai.ContinuousBatchingPipeline(folder, scheduler, "CPU", properties)
    config = genai.GenerationConfig()
    config.max_new_tokens = max_tokens
    ids, stop = itertools.count(), threading.Event()

    def step() -> None:
        while not stop.is_set():
            if pipe.has_non_finished_requests():
                pipe.step()
            else:
                time.sleep(0.0005)

    def client(index: int, until: float) -> list[tuple[float, float, int]]:
        done = []
        while time.perf_counter() < until:
            started, first, tokens = time.perf_counter(), None, 0
            handle = pipe.add_request(next(ids), PROMPTS[index % len(PROMPTS)], config)
            while True:
                running = handle.get_status() == genai.GenerationStatus.RUNNING
                if handle.can_read():
                    new = sum(len(o.generated_ids) for o in handle.read().values())
                    tokens += new
                    first = first or (time.perf_counter() if new else None)
                elif not running:
                    break
                else:
                    time.sleep(0.0005)
            done.append((time.perf_counter() - started, (first or time.perf_counter()) - started, tokens))
        return done

    stepper = threading.Thread(target=step, daemon=True)
    stepper.start()
    until = time.perf_counter() + seconds
    with ThreadPoolExecutor(clients) as pool:
        results = [r for batch in pool.map(lambda i: client(i, until), range(clients)) for r in batch]
    stop.set()
    return summary(results, clients, seconds)


def summary(results: list[tuple[float, float, int]], clients: int, seconds: float) -> dict[str, float]:
    elapsed = seconds + max((r[0] for r in results), default=0) / 2
    latencies = sorted(r[0] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "requests_per_s": round(len(results) / elapsed, 2),
        "tokens_per_s": round(sum(r[2] for r in results) / elapsed, 1),
        "p50_latency_s": round(statistics.median(latencies), 3),
        "p99_latency_s": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
        "p50_ttft_s": round(statistics.median(sorted(r[1] for r in results)), 3),
    }


def show(name: str, rows: list[dict[str, float]]) -> None:
    for row in rows:
        ratio = row["tokens_per_s"] / rows[0]["tokens_per_s"]
        print(
            f"{name:14s} {row['clients']:2d} clients: {row['requests_per_s']:6.2f} req/s  {row['tokens_per_s']:7.1f} tok/s "
            f"({ratio:.2f}x)  p50 {row['p50_latency_s']:.2f}s  p99 {row['p99_latency_s']:.2f}s  ttft p50 {row['p50_ttft_s']:.3f}s",
            flush=True,
        )
    print(json.dumps({name: rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument(
        "--openvino", action="store_true", help="also serve the OpenVINO int8 export of the built model"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--peer", action="store_true", help="llmctl on the OpenVINO int8 model against OpenVINO GenAI, paired runs"
    )
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs per client count with --peer")
    parser.add_argument("--gguf", action="store_true", help="also serve the GGUF Q8_0 of the built model")
    parser.add_argument("--peer-llama-cpp", action="store_true", help="llmctl vs llama_cpp.server on GGUF Q8_0")
    parser.add_argument("--peer-url", help="llmctl on the GGUF Q8_0 (or --model) vs this running server")
    args = parser.parse_args()
    args.openvino = args.openvino or args.peer
    args.gguf = args.gguf or args.peer_llama_cpp or (args.peer_url and not args.model)
    if args.peer and args.model:
        parser.error("--peer compares on the model it builds; drop --model")

    from llmctl.render import quiet_libraries

    quiet_libraries()
    models = {"given": args.model} if args.model else {}
    if not args.model:
        from bench_quantize import build  # (scripts/ is on sys.path when this file runs)

        work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
        models["pytorch fp32"] = str(build(work / "fp32"))
        if args.openvino:
            from llmctl.models import openvino

            openvino.export(models["pytorch fp32"], {"bits": 8, "sym": False}, work / "ov8")
            models["openvino int8"] = str(work / "ov8")
        if args.gguf:
            from llmctl.models import gguf

            gguf.export(models["pytorch fp32"], "q8_0", work / "gguf-q8_0")
            models["gguf q8_0"] = str(work / "gguf-q8_0")
    if args.peer:
        compare_with_peer(models["openvino int8"], work / "genai", args)
        return
    if args.peer_llama_cpp or args.peer_url:
        compare_with_server(models.get("gguf q8_0") or models["given"], args)
        return
    for name, path in models.items():
        base, server = start(path, max(args.clients))
        rows = [measure(base, n, args.seconds, args.max_tokens) for n in args.clients]
        server.terminate()
        server.wait()
        show(name, rows)


def start_llama_cpp_server(gguf_folder: str) -> tuple[str, subprocess.Popen]:
    """llama-cpp-python's OpenAI server on the folder's model.gguf, with llmctl's thread count and context."""
    import os

    from llmctl.models.gguf import FILE

    port = free_port()
    threads = str(len(os.sched_getaffinity(0)))
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(Path(gguf_folder) / FILE), "--port", str(port)]
    command += ["--n_threads", threads, "--n_threads_batch", threads, "--n_ctx", "1024"]
    command += ["--interrupt_requests", "False"]  # its default: a new request cuts the running one short
    return launch(command, port, "/v1/models")


def compare_with_server(folder: str, args: argparse.Namespace) -> None:
    """llmctl serving `folder` and a llama.cpp server on the same GGUF file, alternately (--pairs per client
    count), each the only process serving while it is measured; tokens/s ratio min/median/max."""
    for clients in args.clients:
        pairs = []
        for _ in range(args.pairs):
            base, server = start(folder, max(args.clients))
            ours = measure(base, clients, args.seconds, args.max_tokens)
            server.terminate()
            server.wait()
            if args.peer_url:
                theirs = measure(args.peer_url, clients, args.seconds, args.max_tokens)
            else:
                peer, peer_server = start_llama_cpp_server(folder)
                theirs = measure(peer, clients, args.seconds, args.max_tokens)
                peer_server.terminate()
                peer_server.wait()
            pairs.append((ours, theirs))
        show("llmctl gguf", [ours for ours, _ in pairs])
        show("llama.cpp", [theirs for _, theirs in pairs])
        ratios = sorted(o["tokens_per_s"] / t["tokens_per_s"] for o, t in pairs)
        print(
            f"llmctl / llama.cpp at {clients} clients: tokens/s min {ratios[0]:.2f} median "
            f"{statistics.median(ratios):.2f} max {ratios[-1]:.2f}",
            flush=True,
        )


def compare_with_peer(ov_folder: str, work: Path, args: argparse.Namespace) -> None:
    """llmctl and GenAI alternately (A/B, --pairs times per client count), then the median ratio: on a 2-core
    machine one 20 s run of either swings by 10-20%, so unpaired single runs cannot tell them apart."""
    folder = genai_folder(ov_folder, work)
    base, server = start(ov_folder, max(args.clients))
    try:
        for clients in args.clients:
            pairs = [
                (
                    measure(base, clients, args.seconds, args.max_tokens),
                    measure_peer(folder, clients, args.seconds, args.max_tokens, {}),
                )
                for _ in range(args.pairs)
            ]
            show("openvino int8", [ours for ours, _ in pairs])
            show("ov genai int8", [theirs for _, theirs in pairs])
            ratios = [ours["tokens_per_s"] / theirs["tokens_per_s"] for ours, theirs in pairs]
            median = {
                key: (statistics.median(o[key] for o, _ in pairs), statistics.median(t[key] for _, t in pairs))
                for key in ("p99_latency_s", "p50_ttft_s")
            }
            print(
                f"llmctl / OpenVINO GenAI at {clients} clients: median {statistics.median(ratios):.2f}x tokens/s "
                f"(pairs: {', '.join(f'{r:.2f}' for r in ratios)}); median p99 {median['p99_latency_s'][0]:.2f}s vs "
                f"{median['p99_latency_s'][1]:.2f}s, ttft p50 {median['p50_ttft_s'][0]:.3f}s vs {median['p50_ttft_s'][1]:.3f}s",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
