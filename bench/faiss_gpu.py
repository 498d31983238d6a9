"""FAISS on a GPU against faiss-cpu: building and searching an index of many vectors.

In one run, on the same vectors (unit vectors drawn around random centres, so that neighbours
exist, as with real embeddings) and the same queries (held-out vectors of the same kind;
HNSW's recall on such clusters is higher than on real embeddings, so read it as an upper
bound):

* cpu-flat:  faiss-cpu `IndexFlatIP`, exact (lampstand's CPU layout up to 50,000 vectors);
* cpu-hnsw:  faiss-cpu `IndexHNSWFlat` with lampstand's parameters (M 32, efConstruction 80,
             efSearch 64; its CPU layout beyond 50,000), with its recall@k against exact;
* gpu-flat:  faiss's `GpuIndexFlatIP`, exact (raw faiss on the GPU);
* lampstand: the store's FAISS backend with `device = "cuda"`: a commit that writes the base
             file, then searches through `FaissVectors.nearest` (the GPU copy of the base,
             made by the first search, is timed as part of the build).

Build is the time to add every vector (HNSW: the graph; lampstand: commit plus GPU copy).
Search is one query at a time, as the server searches (p50 and p95 over `--queries`), and a
batch of all queries at once for the raw indexes. The GPU rows need faiss's GPU build
(`pip install 'lampstand[index-gpu]'` in place of faiss-cpu) and a CUDA GPU; without them they
are skipped and the CPU rows run alone.

Run: python bench/faiss_gpu.py [--vectors N] [--dim 384] [--queries 200] [--k 10]
     (default N: 1,000,000 with a GPU, 100,000 without)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from lampstand.indexer.store.catalog import Catalog
from lampstand.indexer.store.faiss_gpu import gpu_count
from lampstand.indexer.store.faiss_store import FaissOptions, FaissVectors

HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 64
Search = Callable[[np.ndarray, int], np.ndarray]  # (query, k) -> ids, best first


def clustered_unit_vectors(count: int, centres: np.ndarray, seed: int) -> np.ndarray:
    """`count` unit vectors, each around one of `centres` (float32)."""
    rng = np.random.default_rng(seed)
    dim = centres.shape[1]
    out = np.empty((count, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, count, step):
        rows = min(step, count - start)
        picked = centres[rng.integers(0, len(centres), rows)]
        block = picked + 1.0 * rng.standard_normal((rows, dim)).astype(np.float32)
        out[start:start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def one_at_a_time(search: Search, queries: np.ndarray, k: int) -> tuple[list[float], list[np.ndarray]]:
    """Per-query seconds and result ids, one query per call (the first call is a warm-up)."""
    search(queries[0], k)
    seconds, found = [], []
    for query in queries:
        took, ids = timed(lambda q=query: search(q, k))
        seconds.append(took)
        found.append(ids)  # type: ignore[arg-type]
    return seconds, found


def recall(found: list[np.ndarray], exact: list[np.ndarray], k: int) -> float:
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(found, exact)]))


def raw_search(index: faiss.Index) -> Search:
    return lambda query, k: index.search(query[None, :], k)[1][0]


def measure(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray,
            k: int) -> tuple[float, list[float], list[np.ndarray], float]:
    """Build seconds, per-query seconds and ids, and seconds for all queries in one call."""
    build, _ = timed(lambda: index.add(vectors))
    seconds, found = one_at_a_time(raw_search(index), queries, k)
    batch, _ = timed(lambda: index.search(queries, k))
    return build, seconds, found, batch


def lampstand_backend(directory: Path, vectors: np.ndarray) -> tuple[float, FaissVectors]:
    """Build a store's FAISS backend on the GPU: commit every vector, then its first search."""
    catalog = Catalog(directory, writable=True)
    backend = FaissVectors(directory, catalog, vectors.shape[1], FaissOptions(device="cuda"), True)
    backend.recover()
    backend.load()
    started = time.perf_counter()
    catalog.begin_write()
    backend.add(np.arange(1, len(vectors) + 1, dtype=np.int64), vectors)
    backend.prepare_commit(force_compaction=True)
    catalog.commit()
    backend.finish_commit()
    backend.nearest(vectors[0], 1)  # uploads the base to the GPU
    return time.perf_counter() - started, backend


def row(name: str, build: float | None, seconds: list[float], batch: float | None,
        hits: float | None, baseline: list[float]) -> str:
    p50, p95 = np.percentile(seconds, 50) * 1e3, np.percentile(seconds, 95) * 1e3
    speedup = np.median(baseline) / np.median(seconds)
    return (f"| {name} | {'-' if build is None else f'{build:.1f} s'} | {p50:.2f} ms | {p95:.2f} ms | "
            f"{'-' if batch is None else f'{batch * 1e3:.0f} ms'} | {speedup:.1f}x | "
            f"{'exact' if hits is None else f'{hits:.3f}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=None)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    gpus = gpu_count()
    count = args.vectors or (1_000_000 if gpus else 100_000)
    k = args.k
    print(f"faiss {faiss.__version__}, GPUs seen: {gpus}, {faiss.omp_get_max_threads()} CPU threads; "
          f"{count:,} vectors of {args.dim}, {args.queries} queries, k = {k}")
    centres = np.random.default_rng(0).standard_normal((1000, args.dim)).astype(np.float32)
    vectors = clustered_unit_vectors(count, centres, seed=1)
    queries = clustered_unit_vectors(args.queries, centres, seed=2)
    rows = []

    build, flat_seconds, exact, batch = measure(faiss.IndexFlatIP(args.dim), vectors, queries, k)
    rows.append(row("faiss-cpu flat (exact)", build, flat_seconds, batch, None, flat_seconds))
    hnsw = faiss.IndexHNSWFlat(args.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.hnsw.efSearch = HNSW_EF_SEARCH
    build, seconds, found, batch = measure(hnsw, vectors, queries, k)
    rows.append(row("faiss-cpu HNSW", build, seconds, batch, recall(found, exact, k), flat_seconds))
    del hnsw

    if gpus:
        resources = faiss.StandardGpuResources()  # type: ignore[attr-defined]
        gpu = faiss.GpuIndexFlatIP(resources, args.dim)  # type: ignore[attr-defined]
        build, seconds, found, batch = measure(gpu, vectors, queries, k)
        rows.append(row("faiss GPU flat (exact)", build, seconds, batch, recall(found, exact, k), flat_seconds))
        del gpu
        with tempfile.TemporaryDirectory() as folder:
            build, backend = lampstand_backend(Path(folder), vectors)
            nearest = backend.nearest  # ids are row ids, 1-based
            seconds, found = one_at_a_time(lambda query, k: nearest(query, k)[0] - 1, queries, k)
            rows.append(row("lampstand FAISS backend, device cuda", build, seconds, None,
                            recall(found, exact, k), flat_seconds))
            backend.close()
    else:
        print("GPU rows skipped: faiss's GPU build and a CUDA GPU are needed (lampstand[index-gpu])")

    print("\n| index | build | search p50 (1 query) | p95 | all queries in one call | p50 speed-up vs cpu flat | recall@k vs exact |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
