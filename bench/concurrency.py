"""Continuous batching: aggregate decode speed and time to first token with many streams.

Three ways, in the same run, on the bundled SmolLM2 GGUF (n_threads 2, greedy, EOS banned so
every stream writes exactly `--tokens` tokens):

* raw:      llama-cpp-python in this process, one sequence (`Llama.create_completion`): the
            single-stream ceiling, and what a user's own loop would get;
* engine:   lampstand's llama_cpp plugin in this process with `parallel = N`, the streams
            read from threads: what batching gives before the worker pipe and HTTP;
* parallel=1: `lampstand serve` with one sequence at a time (requests queue);
* parallel=N: `lampstand serve` with continuous batching of N sequences.

For each server, `--streams` clients start together; the figures are the aggregate tokens/s
(all tokens over the wall time of the burst), the median time to first token and the median
of each stream's own tokens/s. Medians of `--repeats` bursts. With `--llama-server PATH`
(llama.cpp's own C++ server, built from the llama.cpp that llama-cpp-python vendors, target
`llama-server`), the same bursts also go to `llama-server --parallel N` in the same run: the
anchor for concurrent decoding.

Run: python bench/batching.py [--streams 4] [--parallel 4] [--tokens 128] [--repeats 3]
                              [--llama-server PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from statistics import median

import httpx
from llama_cpp import Llama

from server_process import SMOLLM, free_port, print_load, running_server, wait_healthy

N_THREADS = 2
NO_EOS = {"0": -100, "1": -100, "2": -100}
PROMPT = "Write a long story about a lighthouse keeper, session {i}."


def config(parallel: int) -> str:
    return (f'[[models]]\nid = "smol"\nplugin = "llama_cpp"\npath = "{SMOLLM}"\nn_ctx = 1024\n'
            f'n_threads = {N_THREADS}\nparallel = {parallel}\npreload = true\n')


def stream_one(url: str, i: int, tokens: int, out: list[tuple[float, float, int]], start: float) -> None:
    """One streaming completion; appends (ttft, seconds, tokens) measured from `start`."""
    body = {"model": "smol", "prompt": PROMPT.format(i=i), "max_tokens": tokens, "temperature": 0,
            "logit_bias": NO_EOS, "stream": True, "stream_options": {"include_usage": True}}
    first, count, pieces = None, 0, 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                pieces += 1
                if first is None:
                    first = time.monotonic() - start
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
    out.append((first or 0.0, time.monotonic() - start, count or pieces))


def burst(url: str, streams: int, tokens: int, round_: int) -> tuple[float, float, float]:
    """(aggregate tok/s, median TTFT, median per-stream tok/s) of `streams` requests started together."""
    results: list[tuple[float, float, int]] = []
    start = time.monotonic()
    threads = [threading.Thread(target=stream_one, args=(url, round_ * 100 + i, tokens, results, start))
               for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = max(r[1] for r in results)
    per_stream = [r[2] / (r[1] - r[0]) if r[1] > r[0] else 0.0 for r in results]
    return sum(r[2] for r in results) / wall, median(r[0] for r in results), median(per_stream)


def raw(tokens: int, repeats: int) -> float:
    llm = Llama(model_path=str(SMOLLM), n_ctx=1024, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False)
    speeds = []
    for i in range(repeats):
        llm.reset()
        start = time.monotonic()
        out = llm.create_completion(PROMPT.format(i=i), max_tokens=tokens, temperature=0,
                                    logit_bias={int(k): v for k, v in NO_EOS.items()})
        speeds.append(out["usage"]["completion_tokens"] / (time.monotonic() - start))
    llm.close()
    return median(speeds)


def engine(parallel: int, streams: int, tokens: int, repeats: int) -> float:
    """Aggregate tok/s of `streams` completions at once on the plugin itself (no worker, no HTTP)."""
    from lampstand.plugins.llama_cpp.plugin import LlamaCppPlugin
    from lampstand.plugins.types import CompletionRequest, SamplingParams

    plugin = LlamaCppPlugin("smol", SMOLLM, LlamaCppPlugin.Options(n_ctx=1024, n_threads=N_THREADS, parallel=parallel))
    plugin.load()
    bias = tuple((int(k), float(v)) for k, v in NO_EOS.items())

    def run(i: int, counts: list[int]) -> None:
        request = CompletionRequest(prompt=PROMPT.format(i=i), sampling=SamplingParams(
            max_tokens=tokens, temperature=0.0, logit_bias=bias))
        counts.append(sum(1 for chunk in plugin.complete(request) if chunk.text))

    speeds = []
    try:
        for r in range(repeats):
            counts: list[int] = []
            start = time.monotonic()
            threads = [threading.Thread(target=run, args=(r * 100 + i, counts)) for i in range(streams)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            speeds.append(sum(counts) / (time.monotonic() - start))
    finally:
        plugin.unload()
    return median(speeds)


@contextmanager
def llama_server(binary: str, parallel: int) -> Iterator[str]:
    """llama.cpp's own server on the same model, `parallel` slots of 1024 tokens each."""
    port = free_port()
    process = subprocess.Popen([binary, "-m", str(SMOLLM), "-c", str(1024 * parallel), "--parallel", str(parallel),
                                "-t", str(N_THREADS), "-tb", str(N_THREADS), "--host", "127.0.0.1",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, None, 60)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def report(name: str, url: str, streams: int, tokens: int, repeats: int) -> None:
    burst(url, 1, 8, 99)  # warm-up
    for count in (1, streams):
        rounds = [burst(url, count, tokens, r) for r in range(repeats)]
        aggregate, ttft, per_stream = (median(r[k] for r in rounds) for k in range(3))
        print(f"{name:<18} {count:>7} {aggregate:>16.1f} {ttft:>14.2f} {per_stream:>17.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--llama-server", help="path of a llama-server binary to measure beside")
    args = parser.parse_args()
    print_load("before")
    print(f"raw llama-cpp-python, one sequence: {raw(args.tokens, args.repeats):.1f} tok/s")
    for streams in (1, args.streams):
        print(f"engine in process, parallel={args.parallel}, {streams} streams: "
              f"{engine(args.parallel, streams, args.tokens, args.repeats):.1f} tok/s aggregate")
    print(f"{'server':<18} {'streams':>7} {'aggregate tok/s':>16} {'median TTFT s':>14} {'per-stream tok/s':>17}")
    for parallel in (1, args.parallel):
        with running_server(config(parallel)) as url:
            report(f"parallel={parallel}", url, args.streams, args.tokens, args.repeats)
    if args.llama_server:
        with llama_server(args.llama_server, args.parallel) as url:
            report(f"llama-server -np {args.parallel}", url, args.streams, args.tokens, args.repeats)
    print_load("after")


if __name__ == "__main__":
    main()
