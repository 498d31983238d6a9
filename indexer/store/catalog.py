"""The catalog: one SQLite database holding chunk rows, the FTS5 lexical index, the file
manifest and the meta record, so that all of them change in one atomic transaction.

Row ids are the int64 ids the vector side uses (`INTEGER PRIMARY KEY AUTOINCREMENT`, so an
id is never reused once committed). The FTS5 table indexes the rows as external content and
is kept in step by triggers; chunks are inserted and deleted, never updated. This module
knows nothing about vectors or files other than its own database.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..chunks import Chunk
from .base import Filters
from .errors import StoreReadOnly

__all__ = ["CHUNK_COLUMNS", "Catalog", "chunk_from_row", "filter_sql"]

CONTEXT_SEPARATOR = "\x1f"  # unit separator: joins a chunk's context path in one column
CHUNK_COLUMNS = "c.id, c.path, c.start_line, c.end_line, c.language, c.kind, c.text, c.context"

# Stemmed (porter) over unicode61; an index written with another tokenizer is re-tokenized
# from its chunks table when a writer opens it (`_retokenize_if_outdated`).
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, file_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id TEXT NOT NULL,
    path TEXT NOT NULL,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    language TEXT NOT NULL,
    kind TEXT NOT NULL,
    context TEXT NOT NULL,
    text TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_path ON chunks (path, language, id);
CREATE INDEX IF NOT EXISTS chunks_by_path_lines ON chunks (path, start_line, id, end_line);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (
    text, context, path,
    content = 'chunks', content_rowid = 'id',
    tokenize = '{FTS_TOKENIZER}'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text, context, path)
    VALUES (new.id, new.text, new.context, new.path);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text, context, path)
    VALUES ('delete', old.id, old.text, old.context, old.path);
END;
"""


def chunk_from_row(row: Sequence[Any]) -> tuple[int, Chunk]:
    """(row id, Chunk) from a row selected with `CHUNK_COLUMNS`."""
    row_id, path, start, end, language, kind, text, context = row
    parts = tuple(str(context).split(CONTEXT_SEPARATOR)) if context else ()
    chunk = Chunk(str(path), int(start), int(end), str(language), kind, str(text), parts)
    return int(row_id), chunk


def filter_sql(filters: Filters | None) -> tuple[str, list[object]]:
    """An `AND ...` clause over the `c` alias of `chunks`, and its parameters."""
    if filters is None:
        return "", []
    clauses: list[str] = []
    params: list[object] = []
    if filters.path_glob is not None:
        clauses.append("c.path GLOB ?")
        params.append(filters.path_glob)
    if filters.language is not None:
        clauses.append("c.language = ?")
        params.append(filters.language)
    return "".join(f" AND {clause}" for clause in clauses), params


def _id_list(ids: Iterable[int]) -> str:
    """A JSON array for `json_each(?)`: one parameter however many ids."""
    return json.dumps([int(i) for i in ids])


class Catalog:
    """One connection to the catalog database, for a writer or a reader."""

    FILE_NAME = "catalog.sqlite3"

    def __init__(self, directory: Path, *, writable: bool) -> None:
        self.path = directory / self.FILE_NAME
        self.writable = writable
        if writable:
            self.connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.execute("PRAGMA synchronous = FULL")
            self.connection.executescript(f"BEGIN IMMEDIATE; {self._retokenize_if_outdated()} COMMIT;")
        else:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self.connection = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )

    def _retokenize_if_outdated(self) -> str:
        """The schema script; for a full-text table written with another tokenizer (or an
        index from before stemming), it drops that table and rebuilds it from the chunks."""
        row = self.connection.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'").fetchone()
        if row is None or FTS_TOKENIZER in str(row[0]):
            return SCHEMA
        return ("DROP TABLE IF EXISTS chunks_vocab; DROP TABLE chunks_fts;"
                f"{SCHEMA} INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild');")

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether `directory` holds a catalog."""
        return (directory / Catalog.FILE_NAME).is_file()

    def close(self) -> None:
        """Close the connection; an open write transaction is rolled back."""
        self.connection.close()

    # -- transactions --------------------------------------------------------------------

    def begin_write(self) -> None:
        """Open the write transaction if none is open (single writer, so IMMEDIATE)."""
        if not self.writable:
            raise StoreReadOnly(f"the index at {self.path.parent} was opened for reading")
        if not self.connection.in_transaction:
            self.connection.execute("BEGIN IMMEDIATE")

    @property
    def dirty(self) -> bool:
        """Whether a write transaction is open."""
        return self.connection.in_transaction

    def commit(self) -> None:
        """Commit the open transaction; durable on return (WAL, synchronous=FULL)."""
        if self.connection.in_transaction:
            self.connection.execute("COMMIT")

    def rollback(self) -> None:
        """Discard the open transaction."""
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state (a writer sees its own transaction)."""
        if self.connection.in_transaction:
            yield
            return
        self.connection.execute("BEGIN")
        try:
            yield
        finally:
            self.connection.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever another connection commits."""
        return int(self.connection.execute("PRAGMA data_version").fetchone()[0])

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """One meta value, or None."""
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set one meta value inside the write transaction."""
        self.begin_write()
        self.connection.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def meta(self) -> dict[str, str]:
        """All meta values."""
        return dict(self.connection.execute("SELECT key, value FROM meta").fetchall())

    # -- chunks ----------------------------------------------------------------------------

    def high_water_id(self) -> int:
        """The largest id ever committed or written in this transaction (0 if none)."""
        row = self.connection.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'chunks'"
        ).fetchone()
        return 0 if row is None else int(row[0])

    def chunk_count(self) -> int:
        """How many chunks are stored (kept in meta, in step with the rows)."""
        return int(self.get_meta("chunk_count") or 0)

    def insert_chunks(self, chunks: Sequence[Chunk]) -> np.ndarray:
        """Insert rows; returns their new ids (int64, (n,)), in order."""
        self.begin_write()
        first = self.high_water_id() + 1
        ids = np.arange(first, first + len(chunks), dtype=np.int64)
        self.connection.executemany(
            "INSERT INTO chunks (id, chunk_id, path, start_line, end_line, language, kind,"
            " context, text, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    int(i),
                    c.chunk_id,
                    c.path,
                    c.start_line,
                    c.end_line,
                    c.language,
                    c.kind,
                    CONTEXT_SEPARATOR.join(c.context),
                    c.text,
                    c.hash,
                )
                for i, c in zip(ids, chunks, strict=True)
            ),
        )
        self._bump_count(len(chunks))
        return ids

    def delete_paths(self, paths: Iterable[str]) -> np.ndarray:
        """Delete the rows and manifest entries of `paths`; returns the deleted row ids."""
        self.begin_write()
        plist = json.dumps(sorted(set(paths)))
        ids = np.fromiter(
            (
                r[0]
                for r in self.connection.execute(
                    "SELECT id FROM chunks WHERE path IN (SELECT value FROM json_each(?))", (plist,)
                )
            ),
            dtype=np.int64,
        )
        self.connection.execute(
            "DELETE FROM chunks WHERE path IN (SELECT value FROM json_each(?))", (plist,)
        )
        self.connection.execute(
            "DELETE FROM files WHERE path IN (SELECT value FROM json_each(?))", (plist,)
        )
        self._bump_count(-len(ids))
        return ids

    def _bump_count(self, delta: int) -> None:
        if delta:
            self.set_meta("chunk_count", str(self.chunk_count() + delta))

    def rows(self, ids: Iterable[int], filters: Filters | None = None) -> dict[int, Chunk]:
        """The chunks of `ids` that exist and pass `filters`, by id."""
        where, params = filter_sql(filters)
        cursor = self.connection.execute(
            f"SELECT {CHUNK_COLUMNS} FROM chunks c "
            f"WHERE c.id IN (SELECT value FROM json_each(?)){where}",
            [_id_list(ids), *params],
        )
        return dict(chunk_from_row(row) for row in cursor)

    def all_chunks(self) -> Iterator[tuple[int, Chunk]]:
        """Every (id, chunk), by id."""
        for row in self.connection.execute(f"SELECT {CHUNK_COLUMNS} FROM chunks c ORDER BY c.id"):
            yield chunk_from_row(row)

    def line_ranges(self, paths: Iterable[str]) -> dict[str, list[tuple[int, int, int]]]:
        """path -> (id, start_line, end_line) of each of its chunks, in line order."""
        ranges: dict[str, list[tuple[int, int, int]]] = {}
        cursor = self.connection.execute(
            "SELECT c.path, c.id, c.start_line, c.end_line FROM chunks c "
            "WHERE c.path IN (SELECT value FROM json_each(?)) ORDER BY c.path, c.start_line, c.id",
            [json.dumps(sorted(set(paths)))],
        )
        for path, row_id, start, end in cursor:
            ranges.setdefault(str(path), []).append((int(row_id), int(start), int(end)))
        return ranges

    def matching_ids(self, filters: Filters | None, limit: int | None = None) -> np.ndarray:
        """Ids passing `filters`, sorted (int64); at most `limit` of them (any ones) if given."""
        where, params = filter_sql(filters)
        tail = "" if limit is None else f" LIMIT {int(limit)}"
        cursor = self.connection.execute(f"SELECT c.id FROM chunks c WHERE 1{where}{tail}", params)
        return np.sort(np.fromiter((r[0] for r in cursor), dtype=np.int64))

    def paths(self) -> set[str]:
        """The distinct paths that have rows."""
        return {r[0] for r in self.connection.execute("SELECT DISTINCT path FROM chunks")}

    # -- file manifest ---------------------------------------------------------------------

    def files(self) -> dict[str, str]:
        """path -> file hash, for every file recorded."""
        return dict(self.connection.execute("SELECT path, file_hash FROM files").fetchall())

    def set_file(self, path: str, file_hash: str) -> None:
        """Record `path` as indexed at `file_hash`."""
        self.begin_write()
        self.connection.execute(
            "INSERT INTO files (path, file_hash) VALUES (?, ?) "
            "ON CONFLICT (path) DO UPDATE SET file_hash = excluded.file_hash",
            (path, file_hash),
        )

    def file_count(self) -> int:
        """How many files are recorded."""
        return int(self.connection.execute("SELECT count(*) FROM files").fetchone()[0])
