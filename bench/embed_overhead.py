"""Embedding overhead: what the HTTP server costs over sentence-transformers in process.

Measures sentences/s for the bundled all-MiniLM-L6-v2 six ways, in the same run with the
order rotated every repeat:

* raw:        `SentenceTransformer(path, device="cpu").encode(batch_size=32, normalize_embeddings=True)`;
* raw-split:  the same, one `encode` call per `--batch` sentences: what the server gets from
              batched requests (encode sorts by length only within a call, so more padding);
* raw-inflight: one `encode` call per `--concurrency` sentences in arrival order: the most a
              server can batch when that many single-sentence requests are in flight;
* batched:    POST /v1/embeddings with `--batch` sentences per request, one request at a time;
* concurrent: one sentence per request, `--concurrency` requests in flight (httpx.AsyncClient);
* concurrent-minimal: the same over bare asyncio streams (one keep-alive HTTP/1.1 connection
              per request in flight): the cheapest client, so that the client's share of the
              cores the server and the model also use is smallest.

The server runs the same model on the CPU with batch_size 32; vectors come back as base64
(as the OpenAI SDK asks for them) and are checked against the raw ones. The sentences are
generated from a word list with a seeded random, so every run embeds the same text. Only
one way runs at a time (they share the cores). Figures are the median and the best repeat.

Run: python bench/embed_overhead.py [--sentences 256] [--batch 32] [--concurrency 16]
                                    [--repeats 6] [--port PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import time
from collections.abc import Awaitable, Callable
from statistics import median

import httpx
import numpy as np
from sentence_transformers import SentenceTransformer
from transformers.utils import logging as transformers_logging

from server_process import MINILM, print_load, running_server

BATCH_SIZE = 32
WORDS = ("the quiet river carries old boats past a stone bridge while children watch from the bank "
         "and a baker opens his shop early every morning to sell warm bread with honey cheese and "
         "apples merchants argue about prices as rain falls softly on green hills near the ancient "
         "library where scholars study maps stars engines music and forgotten languages").split()
MODES = ("raw", "raw-split", "raw-inflight", "batched", "concurrent", "concurrent-minimal")


def make_sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(5, 30))).capitalize() + "." for _ in range(count)]


def config(concurrency: int) -> str:
    """The server's config; its queue holds every request in flight, so none is refused with 429."""
    return f"""
[[models]]
id = "minilm"
plugin = "sentence_transformers"
path = "{MINILM}"
device = "cpu"
batch_size = {BATCH_SIZE}
max_queue = {max(16, concurrency)}
"""


def decode(data: list[dict[str, object]]) -> list[np.ndarray]:
    return [np.frombuffer(base64.b64decode(str(item["embedding"])), dtype="<f4") for item in data]


async def embed(client: httpx.AsyncClient, inputs: list[str]) -> list[np.ndarray]:
    body = {"model": "minilm", "input": inputs, "encoding_format": "base64"}
    response = await client.post("/v1/embeddings", json=body)
    response.raise_for_status()
    return decode(sorted(response.json()["data"], key=lambda item: item["index"]))


async def embed_one(client: httpx.AsyncClient, sentence: str) -> np.ndarray:
    return (await embed(client, [sentence]))[0]


def run_raw(model: SentenceTransformer, sentences: list[str]) -> np.ndarray:
    return model.encode(sentences, batch_size=BATCH_SIZE, normalize_embeddings=True)


def run_raw_split(model: SentenceTransformer, sentences: list[str], batch: int) -> np.ndarray:
    return np.concatenate([run_raw(model, sentences[start:start + batch])
                           for start in range(0, len(sentences), batch)])


async def run_batched(client: httpx.AsyncClient, sentences: list[str], batch: int) -> np.ndarray:
    vectors: list[np.ndarray] = []
    for start in range(0, len(sentences), batch):
        vectors += await embed(client, sentences[start:start + batch])
    return np.stack(vectors)


async def run_in_flight(embed_one: Callable[[str], Awaitable[np.ndarray]], sentences: list[str],
                        concurrency: int) -> np.ndarray:
    """One request per sentence, `concurrency` of them in flight at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(sentence: str) -> np.ndarray:
        async with gate:
            return await embed_one(sentence)

    return np.stack(await asyncio.gather(*(one(s) for s in sentences)))


class MinimalClient:
    """Single-sentence embedding requests over bare keep-alive connections, one per request in flight."""

    def __init__(self, url: str, connections: int) -> None:
        self.host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        self.port, self.size = int(port), connections
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()
            await writer.wait_closed()

    async def embed(self, sentence: str) -> np.ndarray:
        body = json.dumps({"model": "minilm", "input": [sentence], "encoding_format": "base64"}).encode()
        request = (f"POST /v1/embeddings HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        reader, writer = await self.idle.get()
        answer = await self._exchange(reader, writer, request)
        if answer is None:  # the server closed the idle connection (its keep-alive or header timeout)
            writer.close()
            reader, writer = await asyncio.open_connection(self.host, self.port)
            answer = await self._exchange(reader, writer, request)
        if answer is None:
            raise RuntimeError("the server closed a fresh connection")
        self.idle.put_nowait((reader, writer))
        return decode(json.loads(answer)["data"])[0]

    @staticmethod
    async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes | None:
        """The body of a 200 answer to `request`; None when the connection was closed before it."""
        try:
            writer.write(request)
            status, *headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            return None
        length = next(int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:"))
        body = await reader.readexactly(length)
        if " 408 " in status:
            return None
        if " 200 " not in status:
            raise RuntimeError(f"embedding request failed: {status} {body[:200]!r}")
        return body


async def measure(mode: str, model: SentenceTransformer, client: httpx.AsyncClient, minimal: MinimalClient,
                  sentences: list[str], args: argparse.Namespace) -> tuple[float, np.ndarray]:
    """Sentences/s of one pass of `mode` over all sentences, and the vectors it produced."""
    start = time.perf_counter()
    if mode == "raw":
        vectors = run_raw(model, sentences)
    elif mode == "raw-split":
        vectors = run_raw_split(model, sentences, args.batch)
    elif mode == "raw-inflight":
        vectors = run_raw_split(model, sentences, args.concurrency)
    elif mode == "batched":
        vectors = await run_batched(client, sentences, args.batch)
    elif mode == "concurrent":
        vectors = await run_in_flight(lambda s: embed_one(client, s), sentences, args.concurrency)
    else:
        vectors = await run_in_flight(minimal.embed, sentences, args.concurrency)
    return len(sentences) / (time.perf_counter() - start), vectors


def report(rates: dict[str, list[float]], deviation: float, args: argparse.Namespace) -> None:
    labels = {"raw": "raw sentence-transformers", "raw-split": f"raw, {args.batch} per encode call",
              "raw-inflight": f"raw, {args.concurrency} per encode call",
              "batched": f"server, {args.batch} per request",
              "concurrent": f"server, 1 per request x {args.concurrency} in flight",
              "concurrent-minimal": "the same, minimal client"}
    raw_mid, raw_best = median(rates["raw"]), max(rates["raw"])
    width = max(map(len, labels.values()))
    print(f"\n{args.sentences} sentences, {len(rates['raw'])} repeats; "
          f"max |server - raw| vector element: {deviation:.2e}")
    print(f"  {'sentences/s':<{width}}  {'median':>8}  {'best':>8}  {'/raw med':>8}  {'/raw best':>9}")
    for mode in MODES:
        mid, best = median(rates[mode]), max(rates[mode])
        print(f"  {labels[mode]:<{width}}  {mid:8.1f}  {best:8.1f}  {mid / raw_mid:8.3f}  {best / raw_best:9.3f}")
    mid = median(rates["batched"]) / median(rates["raw-split"])
    best = max(rates["batched"]) / max(rates["raw-split"])
    print(f"  server batched / raw with the same {args.batch} per call: {mid:.3f} median, {best:.3f} best")
    for mode, client in (("concurrent", "httpx"), ("concurrent-minimal", "minimal client")):
        mid = median(rates[mode]) / median(rates["raw-inflight"])
        best = max(rates[mode]) / max(rates["raw-inflight"])
        print(f"  server {args.concurrency} in flight ({client}) / raw with {args.concurrency} per call: "
              f"{mid:.3f} median, {best:.3f} best")


async def bench(args: argparse.Namespace) -> None:
    print_load("at the start")
    transformers_logging.disable_progress_bar()
    sentences = make_sentences(args.sentences)
    model = SentenceTransformer(str(MINILM), device="cpu")
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    with running_server(config(args.concurrency), args.port) as url:
        minimal = MinimalClient(url, args.concurrency)
        await minimal.open()
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            for mode in MODES:  # warm-up, untimed: loads the server's model, opens connections
                await measure(mode, model, client, minimal, sentences[:64], args)
            rates: dict[str, list[float]] = {mode: [] for mode in MODES}
            deviation = 0.0
            print(f"{'repeat':>6} {'mode':>18} {'sentences/s':>11}")
            for i in range(args.repeats):
                vectors: dict[str, np.ndarray] = {}
                for mode in MODES[i % len(MODES):] + MODES[:i % len(MODES)]:
                    rate, vectors[mode] = await measure(mode, model, client, minimal, sentences, args)
                    rates[mode].append(rate)
                    print(f"{i + 1:>6} {mode:>18} {rate:11.1f}")
                for mode in ("batched", "concurrent", "concurrent-minimal"):
                    deviation = max(deviation, float(np.abs(vectors[mode] - vectors["raw"]).max()))
        await minimal.close()
    report(rates, deviation, args)
    print_load("at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32, help="sentences per batched request")
    parser.add_argument("--concurrency", type=int, default=16, help="single-sentence requests in flight")
    parser.add_argument("--repeats", type=int, default=6, help="one full rotation of the six ways")
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
