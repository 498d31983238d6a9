"""Lexical search: a free-text query to an FTS5 MATCH expression, ranked by BM25.

The query is split into the same tokens the index uses (unicode61: letters and digits, so
`search_dense` is `search` and `dense`), each quoted so that no user text is read as FTS5
syntax, and OR-ed: BM25 ranks chunks that match more and rarer terms first. Terms that
appear in most chunks cost the most (FTS5 scores every match) and weigh almost nothing
(their IDF is near zero), so the rarest terms are kept until their posting lists reach a
budget, and any term in more than half the chunks is dropped unless nothing rarer is left.
This module reads the catalog's tables and never writes.
"""

from __future__ import annotations

import re
import sqlite3

from ..chunks import Chunk
from .base import Filters
from .catalog import CHUNK_COLUMNS, chunk_from_row, filter_sql

__all__ = ["POSTING_BUDGET", "FrequencyCache", "match_expression", "query_terms", "search_bm25"]

# About 1.5 us of BM25 work per matching posting on one core: ~15 ms at the budget.
POSTING_BUDGET = 10_000
MAX_TERMS = 32
# bm25() weights for the FTS columns (text, context, path): headings and symbol names
# are short and telling, the path a weaker hint.
COLUMN_WEIGHTS = (1.0, 1.5, 0.5)
_TOKEN = re.compile(r"[^\W_]+")


def query_terms(query: str) -> list[str]:
    """The distinct index tokens of `query`, in order, case-folded, at most `MAX_TERMS`."""
    seen: dict[str, None] = {}
    for token in _TOKEN.findall(query.casefold()):
        seen.setdefault(token, None)
    return list(seen)[:MAX_TERMS]


class FrequencyCache:
    """Document frequencies of recently queried terms, dropped whenever the catalog changes.

    Counting a common term's chunks reads its whole posting list, so caching the counts of
    popular terms between writes saves most of the lookup cost.
    """

    MAX_TERMS = 50_000

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._version: tuple[int, int] = (-1, -1)

    def lookup(self, conn: sqlite3.Connection, terms: list[str]) -> dict[str, int]:
        """How many chunks contain each term (0 for absent terms)."""
        version = (int(conn.execute("PRAGMA data_version").fetchone()[0]), conn.total_changes)
        if version != self._version or len(self._counts) > self.MAX_TERMS:
            self._counts, self._version = {}, version
        missing = [term for term in terms if term not in self._counts]
        if missing:
            marks = ", ".join("?" * len(missing))
            rows = conn.execute(
                f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", missing
            )
            found = {str(term): int(doc) for term, doc in rows}
            self._counts.update({term: found.get(term, 0) for term in missing})
        return {term: self._counts[term] for term in terms}


def match_expression(
    conn: sqlite3.Connection,
    query: str,
    total: int,
    frequencies: FrequencyCache,
    budget: int = POSTING_BUDGET,
) -> str | None:
    """The MATCH expression for `query` over `total` chunks, or None if nothing can match."""
    counts = frequencies.lookup(conn, query_terms(query))
    kept: list[str] = []
    postings = 0
    for term, doc in sorted(counts.items(), key=lambda kv: kv[1]):
        if doc == 0:
            continue
        common = doc * 2 > total or postings + doc > budget
        if kept and common:
            break
        kept.append(term)
        postings += doc
    return " OR ".join(f'"{term}"' for term in kept) or None


def search_bm25(
    conn: sqlite3.Connection,
    query: str,
    k: int,
    filters: Filters | None,
    total: int,
    frequencies: FrequencyCache,
    budget: int = POSTING_BUDGET,
) -> list[tuple[int, float, Chunk]]:
    """Up to `k` (row id, score, chunk), best first; score is -bm25 (higher is better).

    The ranking query reads only the FTS index (and, with filters, the columns it filters
    on); chunk text is fetched for the `k` winners alone.
    """
    expression = match_expression(conn, query, total, frequencies, budget)
    if expression is None or k <= 0:
        return []
    where, params = filter_sql(filters)
    join = " JOIN chunks c ON c.id = chunks_fts.rowid" if where else ""
    weights = ", ".join(str(w) for w in COLUMN_WEIGHTS)
    cursor = conn.execute(
        f"WITH top AS (SELECT chunks_fts.rowid AS id, bm25(chunks_fts, {weights}) AS bm "
        f"FROM chunks_fts{join} WHERE chunks_fts MATCH ?{where} ORDER BY bm LIMIT ?) "
        f"SELECT {CHUNK_COLUMNS}, top.bm FROM top JOIN chunks c ON c.id = top.id "
        f"ORDER BY top.bm",
        [expression, *params, k],
    )
    results = []
    for row in cursor:
        row_id, chunk = chunk_from_row(row[:-1])
        results.append((row_id, -float(row[-1]), chunk))
    return results
