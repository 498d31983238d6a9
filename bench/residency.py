"""Residency: what loading, unloading, evicting and sharing a model cost through the server.

Runs `lampstand serve` with its own TOML config and measures, over HTTP:

* load / unload: `POST /v1/models/{id}/load` then `/unload`, `--repeats` times, for the
  bundled SmolLM2 GGUF (llama_cpp, n_ctx 512, n_threads 2) and all-MiniLM-L6-v2
  (sentence_transformers, CPU); each call timed on its own. The worker's RSS after load and
  the footprint the server counts (measured and estimated RAM) come from `GET /v1/models/{id}`.
* eviction: a second server with `[memory] cpu = "350MiB"`, which holds one SmolLM2 at a time,
  and models "a" and "b" on the same GGUF. Chat requests (max_tokens 8) alternate a, a, b, b,
  a, a, ...; each is classed by the residency seen just before it (already loaded, load into
  free room, or evict + load) and timed end to end.
* concurrent decode: 1, 2 and 4 streaming chat requests at once on one model (max_tokens
  `--tokens`, temperature 0, SmolLM2's end tokens 0-2 banned through `logit_bias` so every
  stream runs to max_tokens), against a model with the default `max_concurrency = 1` and one
  with `max_concurrency = 2`. Tokens come from `usage`; wall time runs from the first request
  sent to the last stream finished, so it includes prompt processing and queueing.
* raw: llama_cpp.Llama in this process on the same GGUF (n_ctx 512, n_threads 2, greedy,
  `chat_overhead.run_raw`), for reference: decode tokens/s and end-to-end tokens/s.

Only one thing runs at a time (they share the cores). Figures are printed, not checked.

Run: python bench/residency.py [--repeats 3] [--tokens 128] [--decode-repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median
from typing import Any

import httpx
from llama_cpp import Llama

from chat_overhead import messages, run_raw
from server_process import MINILM, SMOLLM, print_load, running_server

N_CTX, N_THREADS = 512, 2
END_TOKENS_BANNED = {"0": -100, "1": -100, "2": -100}  # SmolLM2: <|endoftext|>, <|im_start|>, <|im_end|>
STREAM_COUNTS = (1, 2, 4)
MIB = 1024**2
SMOLLM_OPTIONS = {"n_ctx": N_CTX, "n_threads": N_THREADS}


def toml_model(model_id: str, plugin: str, path: Path, **options: Any) -> str:
    """One `[[models]]` entry; values are written as JSON, which TOML reads the same."""
    lines = ["[[models]]", f"id = {json.dumps(model_id)}", f"plugin = {json.dumps(plugin)}",
             f"path = {json.dumps(str(path))}"]
    return "\n".join(lines + [f"{key} = {json.dumps(value)}" for key, value in options.items()]) + "\n"


def main_config() -> str:
    return "\n".join([
        toml_model("smollm2", "llama_cpp", SMOLLM, **SMOLLM_OPTIONS),
        toml_model("smollm2-x2", "llama_cpp", SMOLLM, **SMOLLM_OPTIONS, max_concurrency=2),
        toml_model("minilm", "sentence_transformers", MINILM, device="cpu"),
    ])


def eviction_config() -> str:
    return '[memory]\ncpu = "350MiB"\n\n' + "\n".join(
        toml_model(name, "llama_cpp", SMOLLM, **SMOLLM_OPTIONS) for name in ("a", "b"))


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f}"


def timed_post(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> tuple[float, Any]:
    start = time.perf_counter()
    response = client.post(path, json=body)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response.json()


# -- load / unload --

@dataclass
class LoadFigures:
    model: str
    loads: list[float]
    unloads: list[float]
    card: dict[str, Any]  # GET /v1/models/{id} after the last load


def load_unload(client: httpx.Client, model: str, repeats: int) -> LoadFigures:
    figures = LoadFigures(model, [], [], {})
    for _ in range(repeats):
        seconds, card = timed_post(client, f"/v1/models/{model}/load")
        figures.loads.append(seconds)
        figures.card = client.get(f"/v1/models/{model}").json()
        seconds, unloaded = timed_post(client, f"/v1/models/{model}/unload")
        figures.unloads.append(seconds)
        if card["status"] != "loaded" or unloaded["status"] != "unloaded":
            print(f"  note: {model} status after load {card['status']!r}, after unload {unloaded['status']!r}")
    return figures


def report_loads(rows: list[LoadFigures]) -> None:
    print(f"\n{'model':<10} {'load ms: first':>14} {'median':>7} {'min':>7}  {'unload ms: median':>17} "
          f"{'min':>6}  {'worker RSS':>10} {'measured':>8} {'estimated':>9} (MiB)")
    for row in rows:
        footprint = row.card.get("footprint") or {}
        measured, estimated = footprint.get("measured") or {}, footprint.get("estimated") or {}
        print(f"{row.model:<10} {ms(row.loads[0]):>14} {ms(median(row.loads)):>7} {ms(min(row.loads)):>7}  "
              f"{ms(median(row.unloads)):>17} {ms(min(row.unloads)):>6}  {mib(footprint.get('worker_rss')):>10} "
              f"{mib(measured.get('ram')):>8} {mib(estimated.get('ram')):>9}")
    print("load and unload are each one HTTP call; a load spawns the worker process and waits for the engine;"
          "\n'measured' is what loading added to the worker's RSS, 'estimated' the plugin's figure before load")


# -- eviction --

def statuses(client: httpx.Client) -> dict[str, str]:
    return {card["id"]: card["status"] for card in client.get("/v1/models").json()["data"]}


def classify(before: dict[str, str], model: str) -> str:
    if before[model] == "loaded":
        return "already loaded"
    others = [m for m, status in before.items() if m != model and status == "loaded"]
    return "evict + load" if others else "load (room free)"


def eviction_round_trips(client: httpx.Client, rounds: int) -> dict[str, list[float]]:
    order = ["a", "a"] + ["b", "b", "a", "a"] * rounds
    timings: dict[str, list[float]] = {}
    print(f"\n{'step':>4} {'model':>5} {'before (a, b)':>20} {'kind':>17} {'ms':>7} {'after (a, b)':>20}")
    for step, model in enumerate(order, 1):
        before = statuses(client)
        body = {"model": model, "messages": messages(step), "max_tokens": 8, "temperature": 0}
        seconds, _ = timed_post(client, "/v1/chat/completions", body)
        kind = classify(before, model)
        timings.setdefault(kind, []).append(seconds)
        after = statuses(client)
        print(f"{step:>4} {model:>5} {before['a'] + ', ' + before['b']:>20} {kind:>17} {ms(seconds):>7} "
              f"{after['a'] + ', ' + after['b']:>20}")
    return timings


def report_evictions(timings: dict[str, list[float]]) -> None:
    print(f"\n{'request (max_tokens 8)':<24} {'count':>5} {'median ms':>9} {'min ms':>7}")
    for kind in ("already loaded", "load (room free)", "evict + load"):
        if kind in timings:
            values = timings[kind]
            print(f"{kind:<24} {len(values):>5} {ms(median(values)):>9} {ms(min(values)):>7}")


# -- concurrent decode --

@dataclass
class Stream:
    sent: float
    first: float
    done: float
    tokens: int

    @property
    def tps(self) -> float:
        return self.tokens / (self.done - self.sent)


@dataclass
class Batch:
    model: str
    streams: list[Stream]

    @property
    def wall(self) -> float:
        return max(s.done for s in self.streams) - min(s.sent for s in self.streams)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams)

    @property
    def aggregate_tps(self) -> float:
        return self.tokens / self.wall

    @property
    def last_ttft(self) -> float:
        return max(s.first - s.sent for s in self.streams)


async def stream_chat(client: httpx.AsyncClient, model: str, session: int, max_tokens: int) -> Stream:
    body = {"model": model, "messages": messages(session), "max_tokens": max_tokens, "temperature": 0,
            "stop": [], "logit_bias": END_TOKENS_BANNED, "stream": True,
            "stream_options": {"include_usage": True}}
    sent, first, tokens = time.perf_counter(), 0.0, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if not first and any(c["delta"].get("content") for c in event.get("choices", [])):
                first = time.perf_counter()
            tokens = (event.get("usage") or {}).get("completion_tokens", tokens)
    return Stream(sent, first or time.perf_counter(), time.perf_counter(), tokens)


async def run_batch(url: str, model: str, count: int, first_session: int, max_tokens: int) -> Batch:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        streams = await asyncio.gather(*(stream_chat(client, model, first_session + i, max_tokens)
                                         for i in range(count)))
    return Batch(model, list(streams))


def concurrent_decode(url: str, models: tuple[str, ...], repeats: int, max_tokens: int) -> list[Batch]:
    batches: list[Batch] = []
    session = 1000
    print(f"\n{'model':<11} {'streams':>7} {'tokens':>6} {'wall s':>7} {'aggregate tok/s':>15} "
          f"{'stream tok/s (mean)':>19} {'slowest TTFT ms':>15}")
    for _ in range(repeats):
        for model in models:
            for count in STREAM_COUNTS:
                batch = asyncio.run(run_batch(url, model, count, session, max_tokens))
                session += count  # a new system prompt per stream: no prompt KV reused
                batches.append(batch)
                print(f"{model:<11} {count:>7} {batch.tokens:>6} {batch.wall:>7.2f} {batch.aggregate_tps:>15.1f} "
                      f"{mean(s.tps for s in batch.streams):>19.1f} {ms(batch.last_ttft):>15}")
    return batches


def report_decode(batches: list[Batch], models: tuple[str, ...], raw_e2e: float) -> None:
    print(f"\n{'model':<11} {'streams':>7} {'aggregate tok/s: median':>23} {'best':>6} "
          f"{'/ streams':>9} {'aggregate / raw end-to-end':>26}")
    for model in models:
        for count in STREAM_COUNTS:
            rates = [b.aggregate_tps for b in batches if b.model == model and len(b.streams) == count]
            print(f"{model:<11} {count:>7} {median(rates):>23.1f} {max(rates):>6.1f} "
                  f"{median(rates) / count:>9.1f} {median(rates) / raw_e2e:>26.2f}")
    print("Requests to one model run one at a time unless its max_concurrency says otherwise (default 1);\n"
          "smollm2-x2 has max_concurrency = 2, but the llama_cpp worker holds one engine lock for a whole\n"
          "stream, so its requests still decode one after another. Aggregate tok/s includes prompt\n"
          "processing and queueing. 'stream tok/s' is each stream's tokens over its own time from\n"
          "sent to finished (queueing included), averaged; '/ streams' is the aggregate's share per stream.")


# -- raw reference --

def raw_reference(repeats: int, max_tokens: int) -> tuple[float, float, int]:
    """Median decode tok/s, end-to-end tok/s and tokens of llama_cpp.Llama in this process."""
    llm = Llama(model_path=str(SMOLLM), n_ctx=N_CTX, n_threads=N_THREADS, verbose=False)
    run_raw(llm, 0, max_tokens)  # warm-up, untimed
    runs = [run_raw(llm, 2000 + i, max_tokens) for i in range(repeats)]
    del llm
    return (median(r.decode_tps for r in runs), median(r.tokens / r.total_s for r in runs),
            min(r.tokens for r in runs))


def section(title: str, action: Callable[[], None]) -> None:
    print(f"\n== {title} ==")
    started = time.perf_counter()
    action()
    print(f"({time.perf_counter() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="load/unload pairs per model; eviction rounds")
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens per decode stream")
    parser.add_argument("--decode-repeats", type=int, default=2, help="runs of each concurrent-decode case")
    args = parser.parse_args()
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so running_server still stops its server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    decode_models = ("smollm2", "smollm2-x2")

    print_load("at the start")
    raw: dict[str, float] = {}

    def measure_raw() -> None:
        decode_tps, e2e_tps, tokens = raw_reference(max(3, args.decode_repeats), args.tokens)
        raw.update(decode=decode_tps, e2e=e2e_tps)
        print(f"llama_cpp.Llama in process: {decode_tps:.1f} tok/s decode (after the first token), "
              f"{e2e_tps:.1f} tok/s end to end (prompt included), at least {tokens} of {args.tokens} tokens per run")

    with running_server(main_config()) as url, httpx.Client(base_url=url, timeout=300) as client:
        section("load / unload over HTTP", lambda: report_loads(
            [load_unload(client, model, args.repeats) for model in ("smollm2", "minilm")]))
        section("raw reference, same GGUF, n_threads 2", measure_raw)

        def decode() -> None:
            for model in decode_models:  # load outside the timed runs
                timed_post(client, f"/v1/models/{model}/load")
            report_decode(concurrent_decode(url, decode_models, args.decode_repeats, args.tokens),
                          decode_models, raw["e2e"])

        section(f"concurrent streaming decode, max_tokens {args.tokens}", decode)

    with running_server(eviction_config()) as url, httpx.Client(base_url=url, timeout=300) as client:
        section('eviction round trip, [memory] cpu = "350MiB", models a and b on one GGUF',
                lambda: report_evictions(eviction_round_trips(client, args.repeats)))
    print_load("at the end")


if __name__ == "__main__":
    main()
