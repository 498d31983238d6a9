"""file_search latency: a /v1/responses answer over a vector store of about `--chunks` chunks,
against the naive route a user could write with the same server: search the store, paste the
passages into a chat request.

One `lampstand serve` with the bundled SmolLM2 GGUF and MiniLM. The store is filled with
generated Markdown notes (one section per chunk; each note names a made-up plant, a place and a
care rule), uploaded in batches and indexed by the server; the indexing throughput is printed
too. Then, alternating which goes first in each repeat, for a question about one note:

* file_search: one streamed POST /v1/responses with the `file_search` tool (the server searches,
               quotes the passages, the model answers);
* naive:       POST /v1/vector_stores/{id}/search, then one streamed POST /v1/chat/completions
               whose user message holds the passages and the question.

Both answer greedily with the same `--tokens`. Figures: the median time to the first text
delta and to the end of the answer, the search alone (p50 of /search), and whether the top
result is the asked note (retrieval hit@1 over the repeats' questions). Timings never go into
the tests.

Run: python bench/file_search.py [--chunks 10000] [--repeats 10] [--tokens 32]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from statistics import median
from typing import Any

import httpx

from server_process import MINILM, SMOLLM, print_load, running_server

PLANTS = ["basil", "tomato", "fern", "orchid", "cactus", "ivy", "mint", "sage", "thyme", "lavender", "rosemary",
          "begonia", "dahlia", "peony", "tulip", "lily", "violet", "aloe", "jasmine", "clematis"]
PLACES = ["north window", "greenhouse", "balcony", "raised bed", "shade house", "kitchen sill", "cold frame",
          "porch", "attic", "cellar"]
RULES = ["water every {n} days", "feed with {n} grams of compost", "turn the pot every {n} weeks",
         "mist {n} times a week", "prune after {n} flowers", "repot every {n} years"]
SECTIONS_PER_FILE = 50
SYLLABLES = ["ka", "lo", "mi", "ru", "ten", "vo", "zal", "pe", "dor", "qui", "sen", "bra", "fol", "gri", "nu", "xe"]


def config(data: str) -> str:
    return f"""
[vector_stores]
dir = "{data}/vector_stores"

[indexes]
dir = "{data}/indexes"

[responses]
dir = "{data}/responses"

[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = 2048
n_threads = 2

[[models]]
id = "minilm"
plugin = "sentence_transformers"
path = "{MINILM}"
"""


def note(file_index: int, section: int) -> tuple[str, str, str]:
    """A section's heading, its text, and a question about it (worded unlike the text)."""
    rng = random.Random(file_index * 1000 + section)
    plant, place, n = rng.choice(PLANTS), rng.choice(PLACES), rng.randint(2, 9)
    rule = rng.choice(RULES).format(n=n)
    code = "".join(rng.choice(SYLLABLES) for _ in range(4))  # a made-up name, (almost surely) unique
    heading = f"## Care card {code}"
    text = (f"The {plant} labelled {code} lives in the {place}. Its keeper says: {rule}. "
            f"Visitors often ask about the label {code}; it was written by hand.")
    return heading, text, f"How should the plant with label {code} be looked after?"


def build_store(client: httpx.Client, chunks: int) -> tuple[str, list[tuple[str, str]], float]:
    """A store of about `chunks` chunks; (store id, [(question, file id)], chunks/s)."""
    files = max(1, chunks // SECTIONS_PER_FILE)
    questions, ids = [], []
    for f in range(files):
        sections = [note(f, s) for s in range(SECTIONS_PER_FILE)]
        body = "\n\n".join(f"{heading}\n\n{text}" for heading, text, _ in sections)
        upload = client.post("/v1/files", data={"purpose": "assistants"},
                             files={"file": (f"cards-{f:04}.md", io.BytesIO(f"# Cards {f}\n\n{body}\n".encode()))})
        upload.raise_for_status()
        ids.append(upload.json()["id"])
        questions += [(question, upload.json()["id"]) for _, _, question in sections[:2]]
    store = client.post("/v1/vector_stores", json={"name": "bench"}).json()["id"]
    started = time.perf_counter()
    for at in range(0, len(ids), 100):
        client.post(f"/v1/vector_stores/{store}/file_batches", json={"file_ids": ids[at:at + 100]}).raise_for_status()
    while True:
        card = client.get(f"/v1/vector_stores/{store}").json()
        if card["file_counts"]["in_progress"] == 0:
            break
        time.sleep(1)
    seconds = time.perf_counter() - started
    indexed = client.get(f"/v1/indexes/{store}").json()["chunks"]
    print(f"store: {files} files, {indexed} chunks indexed in {seconds:.0f} s ({indexed / seconds:.1f} chunks/s), "
          f"{card['file_counts']['failed']} failed")
    return store, questions, indexed / seconds


def stream_text(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[float, float, int]:
    """Time to the first text delta, to the end, and the prompt's tokens, of one streamed request."""
    start, first, text, prompt = time.perf_counter(), 0.0, [], 0
    with client.stream("POST", path, json=body | {"stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            piece = event.get("delta", "") if event.get("type") == "response.output_text.delta" else \
                "".join(c["delta"].get("content") or "" for c in event.get("choices", []))
            if event.get("type") in ("error", "response.failed"):
                raise RuntimeError(f"{path} failed: {event}")
            if piece:
                first = first or time.perf_counter() - start
                text.append(piece)
            usage = event.get("usage") or (event.get("response") or {}).get("usage") or {}
            prompt = usage.get("prompt_tokens") or usage.get("input_tokens") or prompt
    return first, time.perf_counter() - start, prompt


def file_search_answer(client: httpx.Client, store: str, question: str, tokens: int) -> tuple[float, float, int]:
    return stream_text(client, "/v1/responses", {
        "model": "smollm2", "input": question, "max_output_tokens": tokens, "temperature": 0,
        "tools": [{"type": "file_search", "vector_store_ids": [store], "max_num_results": 5}]})


def naive_answer(client: httpx.Client, store: str, question: str, tokens: int
                 ) -> tuple[float, float, int, float, str]:
    start = time.perf_counter()
    found = client.post(f"/v1/vector_stores/{store}/search", json={"query": question, "max_num_results": 5}).json()
    searched = time.perf_counter() - start
    passages = "\n\n".join(f"[{i}] {hit['content'][0]['text']}" for i, hit in enumerate(found["data"], 1))
    ttft, total, prompt = stream_text(client, "/v1/chat/completions", {
        "model": "smollm2", "max_tokens": tokens, "temperature": 0, "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Answer from the numbered passages and cite them like [1]."},
            {"role": "user", "content": f"{passages}\n\nQuestion: {question}"}]})
    return searched + ttft, searched + total, prompt, searched, found["data"][0]["file_id"] if found["data"] else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10000, help="about this many chunks in the store")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    print_load("before")
    with tempfile.TemporaryDirectory() as data, running_server(config(data), timeout_s=120) as url, \
            httpx.Client(base_url=url, timeout=600) as client:
        store, questions, _ = build_store(client, args.chunks)
        asked = random.Random(0).sample(questions, min(args.repeats, len(questions)))
        fs: list[tuple[float, float, int]] = []
        naive: list[tuple[float, float, int]] = []
        searches, hits = [], 0
        file_search_answer(client, store, asked[0][0], 4)  # warm both paths: models loaded, caches filled
        naive_answer(client, store, asked[0][0], 4)
        for repeat, (question, file_id) in enumerate(asked):
            runs = [lambda: file_search_answer(client, store, question, args.tokens),
                    lambda: naive_answer(client, store, question, args.tokens)]
            for run in runs if repeat % 2 == 0 else runs[::-1]:
                result = run()
                if len(result) == 3:
                    fs.append(result)
                else:
                    naive.append(result[:3])
                    searches.append(result[3])
                    hits += result[4] == file_id
        print(f"{len(asked)} questions, {args.tokens} tokens each (medians)")
        print(f"{'':28}{'file_search':>14}{'naive':>14}{'naive/ours':>12}")
        for name, at, scale in (("time to first token (ms)", 0, 1e3), ("answer (ms)", 1, 1e3), ("prompt tokens", 2, 1)):
            a, b = median(r[at] for r in fs) * scale, median(r[at] for r in naive) * scale
            print(f"{name:28}{a:14.1f}{b:14.1f}{b / a:12.3f}")
        print(f"search alone p50 {median(searches) * 1e3:.1f} ms; top result is the asked note: {hits}/{len(asked)}")
    print_load("after")


if __name__ == "__main__":
    main()
