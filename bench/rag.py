"""Indexes and retrieval: build throughput, query latency at 100k chunks, one-file updates, quality.

Four measurements against one `lampstand serve` (all-MiniLM-L6-v2 embeds, a cross-encoder
built from MiniLM reranks), each printed as it finishes:

1. Build throughput: chunks/s of `POST /v1/indexes {"wait": true}` over a slice of the
   standard library (scan, chunk, embed in the worker, store), against raw
   `SentenceTransformer.encode` of exactly the same passages in this process (batch 64,
   normalised), alternating sides for `--pairs` pairs. Goal: at least 0.9 of raw.
2. Retrieval quality: `lampstand eval retrieval` on the questions derived from that slice's
   docstrings (recall@k, MRR, nDCG@10 for dense, lexical, hybrid, hybrid+rerank). The
   reranker's head is fine-tuned here on (docstring summary, definition) pairs from standard
   library modules outside the slice: no pretrained cross-encoder is reachable offline.
3. Query latency over HTTP (query embedding included) on a `--chunks` index: the real chunks
   plus synthetic ones (word salad from the real text, vectors perturbed from the real ones),
   written straight into the store. Goal: hybrid without rerank under 30 ms p50.
4. Incremental update: one file changed in a `--files` corpus, timed as a full update (scan
   and hash every file) and as a targeted update of that path (what `index watch` sends).
   Goal: under 2 s.

Run: python bench/rag.py [--modules 14] [--pairs 2] [--chunks 100000] [--files 10000]
                         [--queries 60] [--skip build,quality,latency,update]
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median, quantiles

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cross_encoder import build_cross_encoder  # noqa: E402
from server_process import MINILM, SMOLLM, print_load, running_server  # noqa: E402

from lampstand.indexer.chunking import chunk_file  # noqa: E402
from lampstand.indexer.chunks import Chunk  # noqa: E402
from lampstand.indexer.evaluation import DEFAULT_MODULES, build_stdlib_corpus  # noqa: E402
from lampstand.indexer.evaluation.stdlib_corpus import stdlib_dir  # noqa: E402
from lampstand.indexer.library import IndexDefinition, IndexLibrary  # noqa: E402
from lampstand.indexer.pipeline import INDEX_BUDGET, chunk_passage  # noqa: E402
from lampstand.indexer.sources import iter_sources  # noqa: E402
from lampstand.indexer.store import open_store  # noqa: E402

EMBEDDER = "all-minilm-l6-v2"
TRAIN_MODULES = ("difflib", "fractions", "heapq", "statistics", "pprint", "calendar", "string", "glob",
                 "fnmatch", "getopt", "locale", "mimetypes", "netrc", "quopri", "sched", "shlex")


def config(tmp: Path, reranker: Path) -> str:
    return f"""
[server]
max_embedding_inputs = 4096

[indexes]
dir = "{tmp}/indexes"
source_roots = ["{tmp}"]
max_top_k = 100

[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_threads = 2

[[models]]
id = "{EMBEDDER}"
plugin = "sentence_transformers"
path = "{MINILM}"

[[models]]
id = "reranker"
plugin = "sentence_transformers"
path = "{reranker}"
"""


def passages_of(folder: Path) -> list[str]:
    """What the pipeline embeds for `folder`, chunked by the same code."""
    return [chunk_passage(chunk) for source in iter_sources([folder])
            for chunk in chunk_file(source.rel_path, source.text, source.language, source.kind, INDEX_BUDGET)]


def training_rows(count: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """(summary, definition, 1.0) and (summary, another definition, 0.0) from modules outside the slice."""
    pairs = []
    for module in TRAIN_MODULES:
        path = stdlib_dir() / f"{module}.py"
        if not path.exists():
            continue
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node):
                summary = ast.get_docstring(node).strip().split("\n")[0]
                if len(summary.split()) >= 4:
                    pairs.append((summary, ast.get_source_segment(source, node)[:400]))
    rng = random.Random(seed)
    rows = []
    for summary, body in pairs:
        rows.append((summary, body, 1.0))
        rows.append((summary, rng.choice(pairs)[1], 0.0))
    rng.shuffle(rows)
    return rows[:count]


def post(client: httpx.Client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    response.raise_for_status()
    return response.json()


def measure_build(client: httpx.Client, corpus: Path, pairs: int) -> None:
    from sentence_transformers import SentenceTransformer

    passages = passages_of(corpus)
    model = SentenceTransformer(str(MINILM), device="cpu")
    model.encode(passages[:64], batch_size=64)
    post(client, "/v1/embeddings", {"model": EMBEDDER, "input": ["warm up"]})
    raw_rates, ours = [], []
    for pair in range(pairs):
        started = time.perf_counter()
        model.encode(passages, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        raw_rates.append(len(passages) / (time.perf_counter() - started))
        name = f"stdlib{pair}"
        started = time.perf_counter()
        card = post(client, "/v1/indexes", {"name": name, "paths": [str(corpus)], "wait": True})
        ours.append(card["job"]["chunks_added"] / (time.perf_counter() - started))
        print(f"  pair {pair + 1}: raw {raw_rates[-1]:.1f} chunks/s, index build {ours[-1]:.1f} chunks/s "
              f"({card['chunks']} chunks, {card['files']} files)", flush=True)
        if pair + 1 < pairs:
            client.delete(f"/v1/indexes/{name}")
    print(f"build throughput: {median(ours):.1f} chunks/s vs raw encode {median(raw_rates):.1f} "
          f"-> {median(ours) / median(raw_rates):.3f} of raw ({len(passages)} chunks, {pairs} pairs)")


def measure_quality(url: str, corpus: Path, index: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lampstand.clients", "eval", "retrieval", index,
                           "--qa", str(corpus / "qa_retrieval.jsonl"), "--k", "10", "--url", url],
                          capture_output=True, text=True, timeout=3600)
    print(done.stdout or done.stderr)


def _salad(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def build_large(tmp: Path, corpus: Path, total: int, seed: int = 0) -> str:
    """An index of `total` chunks: the real ones plus synthetic ones, written straight to the store."""
    from sentence_transformers import SentenceTransformer

    name = "large"
    real = [chunk for source in iter_sources([corpus])
            for chunk in chunk_file(source.rel_path, source.text, source.language, source.kind, INDEX_BUDGET)]
    model = SentenceTransformer(str(MINILM), device="cpu")
    vectors = model.encode([chunk_passage(c) for c in real], batch_size=64, normalize_embeddings=True)
    library = IndexLibrary(tmp / "indexes")
    library.create(IndexDefinition(name=name, roots=(str(corpus),)))
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    words = " ".join(c.text for c in real).split()
    started = time.perf_counter()
    with open_store(library.store_dir(name), embedding_model=EMBEDDER, dim=vectors.shape[1], writable=True) as store:
        for path in sorted({c.path for c in real}):
            mine = [i for i, c in enumerate(real) if c.path == path]
            store.replace_file(path, "real", [real[i] for i in mine], vectors[mine])
        for first in range(0, total - len(real), 1000):
            count = min(1000, total - len(real) - first)
            chunks = [Chunk(path=f"synthetic/s{(first + i) // 10:05}.md", start_line=1, end_line=8,
                            language="markdown", kind="markdown", text=_salad(rng, words, 120))
                      for i in range(count)]
            base = vectors[noise.integers(0, len(real), count)]
            store.add(chunks, base + noise.normal(0, 0.05, base.shape).astype(np.float32))
            for path in sorted({c.path for c in chunks}):
                store.set_file(path, "synthetic")
        store.commit(compact=True)
        print(f"  {total} chunks written in {time.perf_counter() - started:.0f} s: {store.stats().vectors}")
    return name


def measure_latency(client: httpx.Client, name: str, questions: list[str]) -> None:
    for mode, rerank, count in (("dense", False, len(questions)), ("lexical", False, len(questions)),
                                ("hybrid", False, len(questions)), ("hybrid", True, min(20, len(questions)))):
        post(client, f"/v1/indexes/{name}/search", {"query": questions[0], "mode": mode, "rerank": rerank})
        times = []
        for question in questions[:count]:
            started = time.perf_counter()
            post(client, f"/v1/indexes/{name}/search", {"query": question, "mode": mode, "rerank": rerank,
                                                        "top_k": 10})
            times.append((time.perf_counter() - started) * 1000)
        p95 = quantiles(times, n=20)[18] if len(times) >= 20 else max(times)
        label = mode + ("+rerank" if rerank else "")
        print(f"query latency {label:15} p50 {median(times):7.1f} ms  p95 {p95:7.1f} ms  ({count} queries)")


def measure_update(client: httpx.Client, tmp: Path, files: int) -> None:
    folder = tmp / "many"
    rng = random.Random(1)
    words = ("lamp river stone bridge bread honey apple market rain hill garden window letter "
             "table music winter summer harbour train station clock").split()
    for i in range(files):
        path = folder / f"d{i // 500:02}" / f"note{i:05}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Note {i}\n\n{_salad(rng, words, 30)}\n")
    started = time.perf_counter()
    card = post(client, "/v1/indexes", {"name": "many", "paths": [str(folder)], "wait": True})
    print(f"  built {card['files']} files / {card['chunks']} chunks in {time.perf_counter() - started:.0f} s")
    middle = files // 2
    rel = f"d{middle // 500:02}/note{middle:05}.md"
    target = folder / rel
    for label, body in (("full update", {"wait": True}), ("targeted update", {"wait": True,
                                                                              "paths": [rel]})):
        times = []
        for round_ in range(3):
            target.write_text(f"# Note changed {label} {round_}\n\nzeppelin airship {round_}\n")
            started = time.perf_counter()
            job = post(client, "/v1/indexes/many/update", body)["job"]
            times.append(time.perf_counter() - started)
            assert job["files_done"] == 1, job
        print(f"one changed file in {files}: {label:16} median {median(times):.2f} s (3 runs: "
              + ", ".join(f"{t:.2f}" for t in times) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", type=int, default=14, help="standard-library modules in the slice")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--train-rows", type=int, default=256, help="pairs that fine-tune the reranker's head")
    parser.add_argument("--skip", default="", help="comma-separated: build,quality,latency,update")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print_load("start")
    with tempfile.TemporaryDirectory(prefix="lampstand-rag-bench-") as tmp_name:
        tmp = Path(tmp_name)
        info = build_stdlib_corpus(tmp / "stdlib", modules=DEFAULT_MODULES[:args.modules], docs=False)
        questions = [json.loads(line)["question"] for line in (tmp / "stdlib" / "qa_retrieval.jsonl").open()]
        print(f"corpus: {len(info.modules)} stdlib modules ({' '.join(info.modules)}), {len(info.files)} files, "
              f"{len(questions)} questions")
        started = time.perf_counter()
        reranker = build_cross_encoder(tmp / "reranker", train=training_rows(args.train_rows))
        print(f"reranker head fine-tuned on disjoint modules in {time.perf_counter() - started:.0f} s")
        with running_server(config(tmp, reranker), timeout_s=180) as url, httpx.Client(base_url=url,
                                                                                        timeout=3600) as client:
            if "build" not in skip:
                measure_build(client, tmp / "stdlib", args.pairs)
            if "quality" not in skip:
                if "build" in skip:
                    post(client, "/v1/indexes", {"name": "stdlib0", "paths": [str(tmp / "stdlib")], "wait": True})
                measure_quality(url, tmp / "stdlib", f"stdlib{max(args.pairs - 1, 0) if 'build' not in skip else 0}")
            if "latency" not in skip:
                name = build_large(tmp, tmp / "stdlib", args.chunks)
                measure_latency(client, name, questions[:args.queries])
            if "update" not in skip:
                measure_update(client, tmp, args.files)
    print_load("end")


if __name__ == "__main__":
    main()
