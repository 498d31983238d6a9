"""One SQLite file a server component keeps its records in: opened on first use, WAL with
`synchronous = FULL` (a committed write survives a crash), used from worker threads one at a
time so the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

__all__ = ["SqliteFile", "transaction"]

T = TypeVar("T")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back when the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class SqliteFile:
    """The database at `path`, created with `schema` (idempotent DDL) when first opened; then
    `upgrade`, when given, brings a file an older version wrote up to date (it must be idempotent)."""

    def __init__(self, path: Path, schema: str,
                 upgrade: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self.path, self.schema, self.upgrade = path, schema, upgrade
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.executescript(self.schema)
            if self.upgrade is not None:
                self.upgrade(connection)
            self._connection = connection
        return self._connection

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` in a worker thread, alone on the connection."""
        def locked() -> T:
            with self._lock:
                return work(self._connect())

        return await asyncio.to_thread(locked)

    def close(self) -> None:
        """Close the database (its WAL is checkpointed by SQLite)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
