"""The vector stores' records: one SQLite file with each store, its files and their status.

A store's searchable content is an index (`IndexService`); this module keeps only what the
vector-stores API adds to it: names, descriptions, metadata, expiry, which uploaded file is where in the
index, each file's attributes and processing status, and file batches. No models, no HTTP.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sqlite_file import SqliteFile, transaction

__all__ = ["VectorStoreRegistry", "StoreRow", "FileRow", "FILE_STATUSES"]

FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")
SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_active_at INTEGER NOT NULL,
    expires_days   INTEGER,
    metadata       TEXT NOT NULL,
    chunk_tokens   INTEGER NOT NULL,
    overlap_tokens INTEGER NOT NULL,
    description    TEXT
);
CREATE TABLE IF NOT EXISTS files (
    store_id      TEXT NOT NULL,
    file_id       TEXT NOT NULL,
    path          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    status        TEXT NOT NULL,
    error_code    TEXT,
    error_message TEXT,
    usage_bytes   INTEGER NOT NULL,
    attributes    TEXT NOT NULL,
    batch_id      TEXT,
    PRIMARY KEY (store_id, file_id)
);
CREATE INDEX IF NOT EXISTS files_by_batch ON files (batch_id);
CREATE TABLE IF NOT EXISTS batches (
    id         TEXT PRIMARY KEY,
    store_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""


def _upgrade(db: sqlite3.Connection) -> None:
    """Add what later versions keep to a file an earlier one wrote: `stores.description`."""
    if "description" not in {row[1] for row in db.execute("PRAGMA table_info(stores)")}:
        db.execute("ALTER TABLE stores ADD COLUMN description TEXT")


@dataclass(frozen=True)
class StoreRow:
    """One vector store: `chunk_tokens` / `overlap_tokens` are its chunking sizes."""

    id: str
    name: str
    created_at: int
    last_active_at: int
    expires_days: int | None
    metadata: dict[str, str]
    chunk_tokens: int
    overlap_tokens: int
    description: str | None = None

    @property
    def expires_at(self) -> int | None:
        """When it expires, counted from its last use; None when it never does."""
        return None if self.expires_days is None else self.last_active_at + self.expires_days * 86400


@dataclass(frozen=True)
class FileRow:
    """One file of one store: `path` is its name in the store's index."""

    store_id: str
    file_id: str
    path: str
    created_at: int
    status: str
    error_code: str | None
    error_message: str | None
    usage_bytes: int
    attributes: dict[str, Any]
    batch_id: str | None


def _store(row: tuple[Any, ...]) -> StoreRow:
    return StoreRow(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], row[8])


def _file(row: tuple[Any, ...]) -> FileRow:
    return FileRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], json.loads(row[8]), row[9])


FILE_COLUMNS = ("store_id, file_id, path, created_at, status, error_code, error_message, usage_bytes, "
                "attributes, batch_id")


class VectorStoreRegistry:
    """The records in `<dir>/vector_stores.sqlite3`; every method runs off the event loop."""

    FILE_NAME = "vector_stores.sqlite3"

    def __init__(self, directory: Path) -> None:
        self._db = SqliteFile(directory / self.FILE_NAME, SCHEMA, _upgrade)

    # -- stores --

    async def add_store(self, store: StoreRow) -> None:
        """Record a new store."""
        await self._db.run(lambda db: db.execute(
            "INSERT INTO stores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (store.id, store.name, store.created_at, store.last_active_at, store.expires_days,
             json.dumps(store.metadata), store.chunk_tokens, store.overlap_tokens, store.description)))

    async def store(self, store_id: str) -> StoreRow | None:
        """The store with this id, if any."""
        found = await self._db.run(lambda db: db.execute("SELECT * FROM stores WHERE id = ?", (store_id,)).fetchone())
        return _store(found) if found else None

    async def stores(self) -> list[StoreRow]:
        """Every store, oldest first."""
        rows = await self._db.run(lambda db: db.execute("SELECT * FROM stores ORDER BY created_at, id").fetchall())
        return [_store(row) for row in rows]

    async def update_store(self, store_id: str, **fields: Any) -> None:
        """Set `name`, `description`, `metadata`, `expires_days` or `last_active_at`."""
        if "metadata" in fields:
            fields["metadata"] = json.dumps(fields["metadata"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._db.run(lambda db: db.execute(f"UPDATE stores SET {assignments} WHERE id = ?",
                                                 (*fields.values(), store_id)))

    async def remove_store(self, store_id: str) -> None:
        """Forget the store, its files and its batches."""
        def remove(db: sqlite3.Connection) -> None:
            with transaction(db):
                for table, column in (("files", "store_id"), ("batches", "store_id"), ("stores", "id")):
                    db.execute(f"DELETE FROM {table} WHERE {column} = ?", (store_id,))

        await self._db.run(remove)

    # -- files and batches --

    async def add_files(self, files: Sequence[FileRow], batch: tuple[str, int] | None = None) -> None:
        """Record files (replacing earlier rows of the same file in the same store), and their
        batch `(id, created_at)` when they came in one."""
        def add(db: sqlite3.Connection) -> None:
            with transaction(db):
                if batch is not None:
                    db.execute("INSERT INTO batches VALUES (?, ?, ?)", (batch[0], files[0].store_id, batch[1]))
                db.executemany(f"INSERT OR REPLACE INTO files ({FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               [(f.store_id, f.file_id, f.path, f.created_at, f.status, f.error_code,
                                 f.error_message, f.usage_bytes, json.dumps(f.attributes), f.batch_id)
                                for f in files])

        await self._db.run(add)

    async def file(self, store_id: str, file_id: str) -> FileRow | None:
        """One file of one store, if it is there."""
        found = await self._db.run(lambda db: db.execute(
            f"SELECT {FILE_COLUMNS} FROM files WHERE store_id = ? AND file_id = ?", (store_id, file_id)).fetchone())
        return _file(found) if found else None

    async def files(self, store_id: str | None = None, *, batch_id: str | None = None,
                    status: str | None = None) -> list[FileRow]:
        """Files, oldest first: of one store, one batch, and/or one status."""
        where, args = [], []
        for column, value in (("store_id", store_id), ("batch_id", batch_id), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.run(lambda db: db.execute(
            f"SELECT {FILE_COLUMNS} FROM files {clause} ORDER BY created_at, rowid", args).fetchall())
        return [_file(row) for row in rows]

    async def set_status(self, store_id: str, file_ids: Iterable[str], status: str, *,
                         error: tuple[str, str] | None = None, only_from: str | None = None,
                         usage_bytes: dict[str, int] | None = None) -> None:
        """Set the files' status (and `(code, message)` error); with `only_from`, only files
        whose status is that now (a cancelled file stays cancelled)."""
        code, message = error or (None, None)
        guard = " AND status = ?" if only_from else ""

        def update(db: sqlite3.Connection) -> None:
            with transaction(db):
                for file_id in file_ids:
                    size = (usage_bytes or {}).get(file_id)
                    db.execute(f"UPDATE files SET status = ?, error_code = ?, error_message = ?, "
                               f"usage_bytes = COALESCE(?, usage_bytes) WHERE store_id = ? AND file_id = ?{guard}",
                               (status, code, message, size, store_id, file_id, *([only_from] if only_from else [])))

        await self._db.run(update)

    async def set_attributes(self, store_id: str, file_id: str, attributes: dict[str, Any]) -> None:
        """Replace one file's attributes."""
        await self._db.run(lambda db: db.execute(
            "UPDATE files SET attributes = ? WHERE store_id = ? AND file_id = ?",
            (json.dumps(attributes), store_id, file_id)))

    async def remove_file(self, store_id: str, file_id: str) -> None:
        """Forget one file of one store."""
        await self._db.run(lambda db: db.execute("DELETE FROM files WHERE store_id = ? AND file_id = ?",
                                                 (store_id, file_id)))

    async def batch(self, batch_id: str) -> tuple[str, int] | None:
        """A batch's `(store id, created_at)`, if it exists."""
        found = await self._db.run(lambda db: db.execute(
            "SELECT store_id, created_at FROM batches WHERE id = ?", (batch_id,)).fetchone())
        return (found[0], found[1]) if found else None

    def close(self) -> None:
        """Close the database."""
        self._db.close()
