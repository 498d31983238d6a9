"""Spans: chunks grouped by line for results, on a real FAISS store with seeded vectors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from lampstand.indexer.chunks import Chunk
from lampstand.indexer.search import SearchQuery, search_index
from lampstand.indexer.spans import Span, partition, span_chunk
from lampstand.indexer.store import ChunkStore, open_store

DIM = 16


@pytest.mark.parametrize(("ranges", "groups"), [
    ([], []),
    ([(1, 1, 20), (2, 21, 40), (3, 41, 60), (4, 61, 70)], [(1, 2, 3), (4,)]),
    ([(1, 1, 100), (2, 101, 110)], [(1,), (2,)]),  # a chunk longer than a span is a span alone
    ([(1, 1, 30), (2, 25, 50), (3, 45, 61)], [(1, 2), (3,)]),  # overlapping chunks
])
def test_partition_groups_consecutive_chunks_within_60_lines(
        ranges: list[tuple[int, int, int]], groups: list[tuple[int, ...]]) -> None:
    spans = partition("f.md", ranges)
    assert [span.row_ids for span in spans] == groups
    assert all(span.end_line - span.start_line < 60 or len(span.row_ids) == 1 for span in spans)


def chunk(start: int, end: int, text: str | None = None) -> Chunk:
    body = text if text is not None else "\n".join(f"line {n}" for n in range(start, end + 1))
    return Chunk("f.md", start, end, "markdown", "markdown", body, ("Title",))


def test_span_text_reads_as_the_file_across_overlaps_and_gaps() -> None:
    members = {1: chunk(1, 10), 2: chunk(8, 20), 3: chunk(23, 30)}  # 8-10 repeated, 21-22 blank
    merged = span_chunk(Span("f.md", (1, 2, 3), 1, 30), members, members[2])
    lines = merged.text.split("\n")
    assert (merged.start_line, merged.end_line, len(lines)) == (1, 30, 30)
    assert lines[:20] == [f"line {n}" for n in range(1, 21)] and lines[20:22] == ["", ""]
    assert merged.context == ("Title",)


@pytest.fixture()
def store(tmp_path: Path) -> ChunkStore:
    opened = open_store(tmp_path / "index", kind="faiss", embedding_model="m", dim=DIM, writable=True)
    chunks = [chunk(1 + 10 * i, 10 * (i + 1), f"part {i} " + ("lamp wick oil" if i in (1, 2) else "table"))
              for i in range(9)]
    vectors = np.random.default_rng(0).standard_normal((9, DIM)).astype(np.float32)
    opened.replace_file("f.md", "h", chunks, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    opened.commit()
    return opened


def test_expanded_search_returns_each_span_once(store: ChunkStore) -> None:
    async def embed(text: str) -> np.ndarray:
        return np.ones(DIM, dtype=np.float32)

    plain = asyncio.run(search_index(store, SearchQuery("lamp wick", top_k=5, mode="lexical"), embed))
    assert sorted(hit.chunk.start_line for hit in plain) == [11, 21]  # the two chunks that match
    spans = asyncio.run(search_index(store, SearchQuery("lamp wick", top_k=5, mode="lexical", expand=True), embed))
    assert [(hit.chunk.start_line, hit.chunk.end_line) for hit in spans] == [(1, 60)]  # both matches, one span
    assert spans[0].chunk.text.split("\n") == [f"part {i} " + ("lamp wick oil" if i in (1, 2) else "table")
                                               for i in range(6)]
    hybrid = asyncio.run(search_index(store, SearchQuery("lamp wick", top_k=5, mode="hybrid", expand=True), embed))
    assert [(hit.chunk.start_line, hit.chunk.end_line) for hit in hybrid] == [(1, 60), (61, 90)]
    assert [hit.rank for hit in hybrid] == [1, 2]
