"""Lexical search: a free-text query to an FTS5 MATCH expression, ranked by BM25 over every term.

The index stems its words (FTS5's porter tokenizer over unicode61: letters and digits, so
`search_dense` is `search` and `dense`, and `searching` is `search`). A query is split into the
same tokens, English stop words are dropped (they are in most chunks, cost the most to score
and weigh almost nothing; a query of stop words alone keeps them), and every other term is
quoted, so that no user text is read as FTS5 syntax, and OR-ed: BM25 ranks chunks that match
more and rarer terms first, and every term counts. FTS5 stems the quoted terms with the
index's own tokenizer. This module reads the catalog's tables and never writes.
"""

from __future__ import annotations

import re
import sqlite3

from ..chunks import Chunk
from .base import Filters
from .catalog import CHUNK_COLUMNS, chunk_from_row, filter_sql

__all__ = ["STOP_WORDS", "match_expression", "query_terms", "search_bm25"]

MAX_TERMS = 32
# bm25() weights for the FTS columns (text, context, path): headings and symbol names
# are short and telling, the path a weaker hint.
COLUMN_WEIGHTS = (1.0, 1.5, 0.5)
# Lucene's English stop words and the words a question is phrased with.
STOP_WORDS = frozenset("""
a an and are as at be but by for if in into is it no not of on or such that the their then there
these they this to was will with what which who whom whose when where why how does do did can
i you we my your our its from has have had should would could""".split())
_TOKEN = re.compile(r"[^\W_]+")


def query_terms(query: str) -> list[str]:
    """The distinct index tokens of `query` less stop words, in order, case-folded, at most `MAX_TERMS`."""
    seen: dict[str, None] = {}
    for token in _TOKEN.findall(query.casefold()):
        seen.setdefault(token, None)
    terms = [term for term in seen if term not in STOP_WORDS] or list(seen)
    return terms[:MAX_TERMS]


def match_expression(query: str) -> str | None:
    """The MATCH expression for `query`, or None if it has no terms."""
    return " OR ".join(f'"{term}"' for term in query_terms(query)) or None


def search_bm25(
    conn: sqlite3.Connection, query: str, k: int, filters: Filters | None
) -> list[tuple[int, float, Chunk]]:
    """Up to `k` (row id, score, chunk), best first; score is -bm25 (higher is better).

    The ranking query reads only the FTS index (and, with filters, the columns it filters
    on); chunk text is fetched for the `k` winners alone.
    """
    expression = match_expression(query)
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
