"""Spans: search matches small chunks and returns the stretch of file around them.

A file's chunks are cut, in line order, into consecutive groups of at most `SPAN_LINES` lines
(a longer chunk is a group alone). A span is one such group: the section or function a chunk
sits in plus its neighbours, which is what a person reading the answer wants to see, and what
held-out questions measured best on (`bench/retrieval_quality.py`: matching 224-token chunks and
returning 60-line spans beat both on their own). Every chunk in a span scores for it; a ranking of
chunks becomes a ranking of spans by each span's best chunk.

The grouping is derived from the chunks' line ranges at query time, so it needs nothing stored
and follows every update. This module reads the store through `line_ranges` and `chunks` and
never embeds or ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from .chunks import Chunk
from .store import ChunkStore, Hit

__all__ = ["SPAN_LINES", "Span", "collapse_to_spans", "partition", "span_chunk", "spans_of"]

SPAN_LINES = 60


@dataclass(frozen=True)
class Span:
    """Consecutive chunks of one file; `anchor` (its first chunk's row id) names it."""

    path: str
    row_ids: tuple[int, ...]  # in line order
    start_line: int
    end_line: int

    @property
    def anchor(self) -> int:
        return self.row_ids[0]


def partition(path: str, ranges: Sequence[tuple[int, int, int]], max_lines: int = SPAN_LINES) -> list[Span]:
    """Greedy groups of `(row id, start, end)` ranges (in line order) spanning at most `max_lines`."""
    spans: list[Span] = []
    group: list[int] = []
    first = last = 0
    for row_id, start, end in ranges:
        if group and max(last, end) - first + 1 > max_lines:
            spans.append(Span(path, tuple(group), first, last))
            group = []
        if not group:
            first, last = start, end
        group.append(row_id)
        last = max(last, end)
    if group:
        spans.append(Span(path, tuple(group), first, last))
    return spans


def spans_of(store: ChunkStore, rankings: Iterable[Sequence[Hit]]) -> dict[int, Span]:
    """row id -> its span, for every hit in `rankings` (one catalog read for all their files)."""
    hits = [hit for ranking in rankings for hit in ranking]
    found: dict[int, Span] = {}
    for path, ranges in store.line_ranges({hit.chunk.path for hit in hits}).items():
        for span in partition(path, ranges):
            found.update(dict.fromkeys(span.row_ids, span))
    for hit in hits:  # committed after the search read: a span of its own
        found.setdefault(hit.row_id, Span(hit.chunk.path, (hit.row_id,), hit.chunk.start_line, hit.chunk.end_line))
    return found


def collapse_to_spans(ranking: Sequence[Hit], spans: dict[int, Span]) -> list[Hit]:
    """The ranking with each span once, at its best chunk's place; `row_id` is the span's anchor."""
    seen: set[int] = set()
    collapsed: list[Hit] = []
    for hit in ranking:
        anchor = spans[hit.row_id].anchor
        if anchor not in seen:
            seen.add(anchor)
            collapsed.append(replace(hit, row_id=anchor, rank=len(collapsed) + 1))
    return collapsed


def span_chunk(span: Span, chunks: dict[int, Chunk], best: Chunk) -> Chunk:
    """One chunk for the whole span: its lines, its chunks' texts merged, `best`'s context.

    Consecutive chunks may overlap (the chunker repeats a few lines for context) or leave blank
    lines between them: an overlap is dropped from the later chunk when its text is exactly its
    lines, and a gap is filled with blank lines, so Markdown spans read as the file does.
    """
    members = [chunks[row_id] for row_id in span.row_ids if row_id in chunks]
    if len(members) <= 1:
        return best
    lines: list[str] = []
    covered = members[0].start_line - 1
    for chunk in members:
        text = chunk.text.split("\n")
        verbatim = len(text) == chunk.end_line - chunk.start_line + 1
        if verbatim and chunk.start_line <= covered:
            text = text[covered - chunk.start_line + 1:]
        elif chunk.start_line > covered + 1:
            lines.extend([""] * (chunk.start_line - covered - 1))
        lines.extend(text)
        covered = max(covered, chunk.end_line)
    return replace(best, start_line=span.start_line, end_line=span.end_line, text="\n".join(lines))
