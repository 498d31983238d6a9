"""Killing an index writer at any moment leaves an index that loads and answers consistently.

A writer process replaces and deletes files and commits in a loop, compacting now and then,
with FAISS thresholds small enough that flat and HNSW bases, pending vectors, tombstones and
rebuilds all occur. It is killed with SIGKILL at random moments, many times; after each kill
the test checks the directory on its own terms (raw SQLite and FAISS reads) and through a
reader, then opens a writer (the kernel released the dead one's lock) before the next round.
Qdrant (local mode) gets fewer rounds: its recovery replays deletes and drops orphan points.

Run as a script (`python test_indexer_crash.py KIND DIR SEED`) this file is the writer.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lampstand.indexer.chunks import Chunk
from lampstand.indexer.store import ChunkStore, open_store

DIM = 16
MODEL = "crash-test-embedder"
FILES = 40
KILLS = {"faiss": 30, "qdrant": 8}
# Even rounds keep HNSW above 60 live vectors, odd rounds want flat: layouts flip back and forth.
THRESHOLDS = (60, 10_000)


def writer_options(kind: str, seed: int) -> dict[str, object]:
    if kind == "qdrant":
        return {}
    return {"pending_limit": 16, "pending_ratio": 0.1, "hnsw_threshold": THRESHOLDS[seed % 2]}


def file_chunks(path: str, version: int, count: int) -> list[Chunk]:
    """A file's chunks at one version; each text has a token unique to (version, part)."""
    return [
        Chunk(path, part + 1, part + 1, "text", "text", f"{path} v{version} token{version}x{part}")
        for part in range(count)
    ]


def file_vectors(version: int, count: int) -> np.ndarray:
    """The vectors of one file version, recomputable from the version alone."""
    matrix = np.random.default_rng(version).standard_normal((count, DIM)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def run_writer(kind: str, directory: Path, seed: int) -> None:
    """Write forever: replace or delete a few files, commit, sometimes compact."""
    rng = random.Random(seed)
    store = open_store(
        directory,
        kind=kind,
        embedding_model=MODEL,
        dim=DIM,
        writable=True,
        options=writer_options(kind, seed),
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    version = seed * 1_000_000
    while True:
        for _ in range(rng.randint(1, 4)):
            path = f"f{rng.randrange(FILES)}.txt"
            if rng.random() < 0.75:
                version += 1
                count = rng.randint(1, 6)
                store.replace_file(
                    path,
                    f"{version}:{count}",
                    file_chunks(path, version, count),
                    file_vectors(version, count),
                )
            else:
                store.delete_paths([path])
        store.commit(compact=rng.random() < 0.1)


def check_raw(directory: Path) -> str:
    """Cross-check the catalog (and FAISS's base file) directly; returns the layout kind."""
    conn = sqlite3.connect(f"{(directory / 'catalog.sqlite3').as_uri()}?mode=ro", uri=True)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        rows = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, path, text FROM chunks")}
        files = dict(conn.execute("SELECT path, file_hash FROM files").fetchall())
        fts_rows = conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
        if meta["kind"] == "faiss":
            pending = {r[0] for r in conn.execute("SELECT id FROM faiss_pending")}
            tombstones = {r[0] for r in conn.execute("SELECT id FROM faiss_tombstones")}
    finally:
        conn.close()
    assert int(meta.get("chunk_count", 0)) == len(rows) == fts_rows
    if meta["kind"] == "faiss":
        check_faiss_ids(directory, meta, set(rows), pending, tombstones)
    # Each file is whole at one version: as many rows as its hash says, all of that version.
    assert {path for path, _ in rows.values()} == set(files)
    for path, file_hash in files.items():
        version, count = file_hash.split(":")
        texts = [text for p, text in rows.values() if p == path]
        assert len(texts) == int(count) and all(f" v{version} " in text for text in texts)
    return str(json.loads(meta.get("faiss.layout", '{"kind": "none"}'))["kind"])


def check_faiss_ids(
    directory: Path, meta: dict[str, str], rows: set[int], pending: set[int], tombstones: set[int]
) -> None:
    """Base ids minus tombstones, plus pending ids, are exactly the row ids."""
    import faiss

    generation = int(meta.get("faiss.generation", 0))
    base: set[int] = set()
    if generation:
        index = faiss.read_index(str(directory / f"vectors.{generation}.faiss"))
        base = set(faiss.vector_to_array(index.id_map).tolist())
    assert tombstones <= base and not (pending & base)
    assert (base - tombstones) | pending == rows, "vector ids and rows differ"


def check_reader(store: ChunkStore, rng: random.Random) -> None:
    """The store verifies and answers: a chunk's own vector and token find it first."""
    assert store.verify() == []
    files = store.files()
    if not files:
        return
    path = rng.choice(sorted(files))
    version, count = (int(x) for x in files[path].split(":"))
    part = rng.randrange(count)
    expected = file_chunks(path, version, count)[part]
    dense = store.search_dense(file_vectors(version, count)[part], k=5)
    assert expected in [hit.chunk for hit in dense]
    lexical = store.search_lexical(f"token{version}x{part}", k=1)
    assert lexical[0].chunk == expected


def spawn_writer(kind: str, directory: Path, seed: int) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, __file__, kind, str(directory), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def kill_at_random(writer: subprocess.Popen[str], rng: random.Random) -> None:
    """SIGKILL the writer: mostly while it writes, sometimes while it is still opening."""
    if rng.random() < 0.2:
        time.sleep(rng.uniform(0.0, 0.6))
    else:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.25))
    if writer.poll() is not None:
        pytest.fail(f"the writer died on its own:\n{writer.stderr.read() if writer.stderr else ''}")
    writer.send_signal(signal.SIGKILL)
    writer.wait()


@pytest.mark.parametrize("kind", sorted(KILLS))
def test_killed_writers_leave_a_consistent_index(tmp_path: Path, kind: str) -> None:
    directory = tmp_path / "index"
    rng = random.Random(1234)
    layouts: set[str] = set()
    generations = []
    for seed in range(1, KILLS[kind] + 1):
        kill_at_random(spawn_writer(kind, directory, seed), rng)
        if not (directory / "catalog.sqlite3").exists():
            continue  # killed before it created anything
        reader = open_store(directory)
        try:
            layouts.add(check_raw(directory))
            check_reader(reader, rng)
            generations.append(reader.generation)
        finally:
            reader.close()
        writer = open_store(directory, writable=True, options=writer_options(kind, seed))
        try:
            files = {p.name for p in directory.iterdir()}
            assert not [name for name in files if name.endswith(".tmp")]
            faiss_files = [name for name in files if name.startswith("vectors.")]
            assert len(faiss_files) <= 1  # stale generations removed on open
            check_reader(writer, rng)
            stats = writer.stats()
            if kind == "qdrant":  # outbox replayed, orphan points above the high water gone
                assert stats.vectors["points"] == stats.chunks
        finally:
            writer.close()
    assert generations and generations[-1] > KILLS[kind]  # writers made real progress
    if kind == "faiss":
        assert {"flat", "hnsw"} <= layouts


if __name__ == "__main__":
    run_writer(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
