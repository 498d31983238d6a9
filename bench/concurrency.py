"""Many streams at once: lampstand's continuous batching beside llama.cpp's own server.

In one run, on the bundled SmolLM2 GGUF (2 threads, greedy, end tokens banned so every stream
writes exactly `--tokens` tokens):

* raw llama-cpp-python in this process, one sequence: the single-stream ceiling, and what a
  user's own loop gets (tok/s, and time to first token of a lone prompt);
* lampstand with `parallel = N` (`lampstand serve`, streaming /v1/completions over HTTP);
* llama.cpp's `llama-server --parallel N` (C++, built once from the llama.cpp that the locked
  llama-cpp-python vendors; see bench/llama_server.py), the anchor: same GGUF, same threads,
  same requests;
* optionally (`--serial`) lampstand with `parallel = 1`: the queue a user had before batching.

At 1, 2, 4 and 8 streams each server gets:

* aggregate tok/s: `streams` requests started together, all tokens over the burst's wall time;
* complete: whether every stream of every burst got all its tokens;
* inter-token latency p95 over every stream of the bursts;
* time to first token (p50, p95) of a request that arrives while `streams - 1` others are
  streaming (at 1 stream: a lone request).

Then the ratios the goals name, and the batched worker's memory during the 8-stream bursts
beside its estimate. Medians over `--repeats` bursts. These machines change speed by a third
within minutes, so every server runs at once (idle but for its turn) and they take turns
burst by burst, the in-process baseline between the 1-stream bursts.

Run: python bench/concurrency.py [--parallel 4] [--tokens 128] [--repeats 3] [--probes 4]
                                 [--llama-server PATH | --no-llama-server] [--serial]
                                 [--flash-attn default|on|off]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from statistics import median, quantiles

import httpx
from llama_cpp import Llama

from server_process import SMOLLM, free_port, print_load, running_server, stop_process, wait_healthy

N_THREADS = 2
N_CTX = 1024
STREAM_COUNTS = (1, 2, 4, 8)
NO_EOS = {"0": -100, "1": -100, "2": -100}
PROMPT = "Write a long story about a lighthouse keeper, session {i}."
PROBE = "In one sentence, what does a harbour pilot do? Question {i}."
BACKGROUND_TOKENS = N_CTX - 64  # streams that run on while the late requests arrive (stopped after them)


def config(parallel: int, flash_attn: str = "default") -> str:
    """lampstand's config for the model; `flash_attn` "on"/"off" overrides its default (off)."""
    forced = "" if flash_attn == "default" else f"flash_attn = {'true' if flash_attn == 'on' else 'false'}\n"
    return (f'[[models]]\nid = "smol"\nplugin = "llama_cpp"\npath = "{SMOLLM}"\nn_ctx = {N_CTX}\n'
            f'n_threads = {N_THREADS}\nparallel = {parallel}\npreload = true\n{forced}')


@dataclass
class Stream:
    """What one streamed completion saw: times from its own start."""

    ttft: float | None = None
    stamps: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str | None = None


def stream(url: str, prompt: str, tokens: int, stop: threading.Event | None = None,
           started: threading.Event | None = None) -> Stream:
    """One streaming /v1/completions request; ends early (closing the connection) once `stop` is set."""
    body = {"model": "smol", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "logit_bias": NO_EOS,
            "stream": True, "stream_options": {"include_usage": True}}
    seen = Stream()
    begin = time.monotonic()
    pieces, usage = 0, None
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as response:
            if response.status_code != 200:
                seen.error = f"HTTP {response.status_code}"
                return seen
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    now = time.monotonic() - begin
                    pieces += 1
                    seen.stamps.append(now)
                    if seen.ttft is None:
                        seen.ttft = now
                        if started is not None:
                            started.set()
                if stop is not None and stop.is_set():
                    break
    except httpx.HTTPError as error:
        seen.error = type(error).__name__
    seen.tokens = usage if usage is not None else pieces
    return seen


def at_once(jobs: list[tuple]) -> list[Stream]:
    """Run `stream(*job)` for each job, each in its own thread, all started together."""
    results: list[Stream | None] = [None] * len(jobs)

    def run(i: int) -> None:
        results[i] = stream(*jobs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


def p(values: list[float], q: int) -> float:
    """The q-th percentile (nearest rank on a 100-quantile split); the value itself for one sample."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Row:
    aggregate: float
    complete: bool
    itl_p95: float
    ttft_p50: float
    ttft_p95: float


def burst(url: str, streams: int, tokens: int, round_: int) -> tuple[float, bool, list[float]]:
    """One burst of `streams` requests started together: aggregate tok/s, whether every stream
    completed, and every inter-token gap."""
    start = time.monotonic()
    results = at_once([(url, PROMPT.format(i=round_ * 10 + i), tokens) for i in range(streams)])
    wall = time.monotonic() - start
    complete = all(s.error is None and s.tokens == tokens for s in results)
    return sum(s.tokens for s in results) / wall, complete, [b - a for s in results for a, b in zip(s.stamps, s.stamps[1:])]


def arrival_ttfts(url: str, streams: int, tokens: int, probes: int, round_: int) -> list[float]:
    """Time to first token of `probes` requests, one after another, each arriving while
    `streams - 1` long streams are generating."""
    stop = threading.Event()
    started = [threading.Event() for _ in range(streams - 1)]
    failed: list[str] = []

    def generate(i: int) -> None:
        seen = stream(url, PROMPT.format(i=round_ * 1000 + 500 + i), BACKGROUND_TOKENS, stop, started[i])
        if seen.error:
            failed.append(seen.error)
            started[i].set()

    background = [threading.Thread(target=generate, args=(i,)) for i in range(streams - 1)]
    for thread in background:
        thread.start()
    try:
        for event in started:
            event.wait(300)
        if failed or not all(event.is_set() for event in started):
            raise SystemExit(f"a background stream failed: {failed or 'no first token in 300 s'}")
        time.sleep(0.2)  # arrive mid-stream, not on the heels of the last prefill
        ttfts = []
        for i in range(probes):
            probe = stream(url, PROBE.format(i=round_ * 100 + i), 4)
            ttfts.append(probe.ttft if probe.ttft is not None else float("nan"))
            time.sleep(0.1)
        return ttfts
    finally:
        stop.set()
        for thread in background:
            thread.join()


def measure(servers: dict[str, str], llm: Llama, tokens: int, repeats: int, probes: int) -> tuple[
        dict[str, dict[int, Row]], float, float]:
    """Every figure at 1, 2, 4 and 8 streams for every server, and the in-process baseline
    (decode tok/s, lone time to first token). The servers take turns burst by burst, in an
    order that rotates, and the baseline runs between the 1-stream bursts: these machines
    change speed by a third within minutes, and interleaving keeps that out of the ratios."""
    for url in servers.values():
        stream(url, PROBE.format(i=-1), 8)  # warm-up
    rows: dict[str, dict[int, Row]] = {name: {} for name in servers}
    raw_speeds, raw_ttfts = [], []
    names = list(servers)
    for n, streams in enumerate(STREAM_COUNTS):
        speeds: dict[str, list[float]] = {name: [] for name in names}
        complete = dict.fromkeys(names, True)
        gaps: dict[str, list[float]] = {name: [] for name in names}
        ttfts: dict[str, list[float]] = {name: [] for name in names}
        for r in range(repeats):
            turn = (n + r) % len(names)
            for name in names[turn:] + names[:turn]:
                speed, ok, seen = burst(servers[name], streams, tokens, n * 1000 + r * 100)
                speeds[name].append(speed)
                complete[name] &= ok
                gaps[name].extend(seen)
                ttfts[name].extend(arrival_ttfts(servers[name], streams, tokens, probes, n * 10 + r))
            if streams == 1:
                speed, ttft = raw_once(llm, tokens, r)
                raw_speeds.append(speed)
                raw_ttfts.append(ttft)
        for name in names:
            row = rows[name][streams] = Row(median(speeds[name]), complete[name], p(gaps[name], 95),
                                            p(ttfts[name], 50), p(ttfts[name], 95))
            print(f"{name:<22} {streams:>7} {row.aggregate:>10.1f} {'yes' if row.complete else 'NO':>8} "
                  f"{row.itl_p95 * 1000:>10.1f} {row.ttft_p50:>10.3f} {row.ttft_p95:>10.3f}", flush=True)
        if streams == 1:
            print(f"{'raw llama-cpp-python':<22} {1:>7} {median(raw_speeds):>10.1f} {'yes':>8} {'':>10} "
                  f"{median(raw_ttfts):>10.3f}", flush=True)
    return rows, median(raw_speeds), median(raw_ttfts)


def raw_once(llm: Llama, tokens: int, i: int) -> tuple[float, float]:
    """In-process llama-cpp-python, one sequence: (decode tok/s, time to first token of a lone prompt)."""
    bias = {int(k): v for k, v in NO_EOS.items()}
    llm.reset()
    start = time.monotonic()
    out = llm.create_completion(PROMPT.format(i=i), max_tokens=tokens, temperature=0, logit_bias=bias)
    speed = out["usage"]["completion_tokens"] / (time.monotonic() - start)
    llm.reset()
    start = time.monotonic()
    for _ in llm.create_completion(PROBE.format(i=i), max_tokens=1, temperature=0, stream=True):
        break
    return speed, time.monotonic() - start


@contextmanager
def llama_server(binary: str, parallel: int, flash_attn: str = "default") -> Iterator[str]:
    """llama.cpp's own server on the same model: `parallel` slots of N_CTX tokens each;
    `flash_attn` "on"/"off" overrides its default ("auto", on for this model on CPU)."""
    port = free_port()
    forced = [] if flash_attn == "default" else ["-fa", flash_attn]
    process = subprocess.Popen([binary, "-m", str(SMOLLM), "-c", str(N_CTX * parallel), "--parallel", str(parallel),
                                "-t", str(N_THREADS), "-tb", str(N_THREADS), "--host", "127.0.0.1",
                                "--port", str(port), *forced], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, None, 60)
        yield url
    finally:
        stop_process(process, 10)


class MemoryWatch:
    """The worker's resident memory, from the model card, sampled while a block runs."""

    def __init__(self, url: str) -> None:
        self.url, self.peak, self._done = url, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def card(self) -> dict:
        return httpx.get(f"{self.url}/v1/models/smol", timeout=10).json()

    def _watch(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.card()["footprint"].get("worker_rss") or 0)
            time.sleep(0.1)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probes", type=int, default=4, help="late arrivals timed per burst")
    parser.add_argument("--llama-server", help="a llama-server binary (default: build and cache one)")
    parser.add_argument("--no-llama-server", action="store_true", help="leave llama.cpp's server out")
    parser.add_argument("--serial", action="store_true", help="also measure lampstand with parallel = 1")
    parser.add_argument("--flash-attn", choices=("default", "on", "off"), default="default",
                        help="flash attention for both servers (default: each its own, lampstand off, llama-server auto)")
    args = parser.parse_args()
    binary = None
    if not args.no_llama_server:
        from llama_server import llama_server_binary

        binary = args.llama_server or str(llama_server_binary())
    print_load("before")
    print(f"{'server':<22} {'streams':>7} {'agg tok/s':>10} {'complete':>8} {'ITL p95 ms':>10} "
          f"{'TTFT p50 s':>10} {'TTFT p95 s':>10}")
    ours, anchor = f"lampstand parallel={args.parallel}", f"llama-server -np {args.parallel}"
    llm = Llama(model_path=str(SMOLLM), n_ctx=N_CTX, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False)
    with ExitStack() as stack:
        servers = {ours: stack.enter_context(running_server(config(args.parallel, args.flash_attn)))}
        if args.serial:
            servers["lampstand parallel=1"] = stack.enter_context(running_server(config(1, args.flash_attn)))
        if binary:
            servers[anchor] = stack.enter_context(llama_server(binary, args.parallel, args.flash_attn))
        idle = MemoryWatch(servers[ours]).card()["footprint"]
        with MemoryWatch(servers[ours]) as watch:
            results, raw_speed, raw_ttft = measure(servers, llm, args.tokens, args.repeats, args.probes)
    llm.close()
    print_load("after")

    mine = results[ours]
    print(f"\nlampstand single stream / raw llama-cpp-python: {mine[1].aggregate / raw_speed:.2f} (goal >= 0.95)")
    print(f"lampstand 4 streams / its own single stream: {mine[4].aggregate / mine[1].aggregate:.2f} (goal >= 1.5)")
    print(f"lampstand TTFT p50 of a request arriving beside 3 streams: {mine[4].ttft_p50:.3f} s (goal < 0.3)")
    if anchor in results:
        theirs = results[anchor]
        for streams in STREAM_COUNTS:
            print(f"lampstand / llama-server aggregate at {streams} streams: "
                  f"{mine[streams].aggregate / theirs[streams].aggregate:.2f}" + (" (goal >= 1.0)" if streams == 4 else ""))
        print(f"lone request TTFT, lampstand - llama-server: {(mine[1].ttft_p50 - theirs[1].ttft_p50) * 1000:+.0f} ms "
              "(goal <= +20)")
    estimated, loaded = idle["estimated"]["ram"], idle["measured"]["ram"]
    before_load = idle["worker_rss"] - loaded  # the worker's own RSS before it loaded the model
    print(f"memory: estimate {mib(estimated)}; the load added {mib(loaded)}; at the peak of every burst (8 streams "
          f"included) the model held {mib(watch.peak - before_load)} "
          f"({'within' if watch.peak - before_load <= estimated else 'OVER'} the estimate); "
          f"every 8-stream burst complete: {'yes' if mine[8].complete else 'NO'}")


if __name__ == "__main__":
    main()
