"""Stored responses (`store: true` on /v1/responses): one SQLite file, crash-safe, bounded.

Each row holds a response object and the input items it was given, both as the JSON the API
returns, and the id of the response it continued. Writes are one transaction each in WAL
mode with `synchronous = FULL`, so a stored response survives a crash once `put` returns.
Rows expire after `[responses] ttl`; when the rows together pass `[responses] max_bytes`,
the oldest go first (never the one just written). This module knows nothing of models, only of rows.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from lampstand.plugins.errors import NotFound

from .config import ResponseStoreSettings
from .sqlite_file import SqliteFile, transaction

__all__ = ["ResponseStore", "StoredResponse"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id          TEXT PRIMARY KEY,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    previous_id TEXT,
    body        TEXT NOT NULL,
    input_items TEXT NOT NULL,
    bytes       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created_at);
"""


@dataclass(frozen=True)
class StoredResponse:
    """One row: the response object's JSON and its input items' JSON (a list)."""

    id: str
    previous_id: str | None
    body: str
    input_items: str


class ResponseStore:
    """The stored responses; every method runs its SQLite work off the event loop."""

    FILE_NAME = "responses.sqlite3"

    def __init__(self, settings: ResponseStoreSettings) -> None:
        self.settings = settings
        self._db = SqliteFile(settings.dir / self.FILE_NAME, SCHEMA)
        self._run = self._db.run

    async def put(self, row: StoredResponse) -> None:
        """Store `row` (replacing one with its id), then drop expired and over-budget rows."""
        now = time.time()
        size = len(row.body) + len(row.input_items)

        def write(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (row.id, now, now + self.settings.ttl, row.previous_id, row.body, row.input_items, size))
                db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
                self._drop_oldest_beyond_budget(db, keep=row.id)

        await self._run(write)

    def _drop_oldest_beyond_budget(self, db: sqlite3.Connection, keep: str) -> None:
        """Drop the oldest rows until the rest fit `max_bytes`; never `keep`, the row just
        written (its client was told it is stored), even when it alone is larger."""
        total = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM responses").fetchone()[0]
        if total <= self.settings.max_bytes:
            return
        excess = total - self.settings.max_bytes
        doomed, freed = [], 0
        for ident, size in db.execute("SELECT id, bytes FROM responses WHERE id != ? ORDER BY created_at", (keep,)):
            doomed.append((ident,))
            freed += size
            if freed >= excess:
                break
        db.executemany("DELETE FROM responses WHERE id = ?", doomed)

    async def get(self, ident: str) -> StoredResponse | None:
        """The row with this id, unless it has expired."""
        def read(db: sqlite3.Connection) -> StoredResponse | None:
            found = db.execute("SELECT id, previous_id, body, input_items FROM responses "
                               "WHERE id = ? AND expires_at > ?", (ident, time.time())).fetchone()
            return StoredResponse(*found) if found else None

        return await self._run(read)

    async def require(self, ident: str, param: str | None = None) -> StoredResponse:
        """The row with this id, or a 404 naming it."""
        found = await self.get(ident)
        if found is None:
            raise NotFound(f"No response found with id '{ident}'", param=param)
        return found

    async def chain(self, ident: str) -> list[StoredResponse]:
        """The response `ident` and those it continued, oldest first (404 for a missing link)."""
        rows: list[StoredResponse] = []
        following: str | None = ident
        while following is not None:
            if len(rows) >= self.settings.max_chain:
                raise NotFound(f"the conversation before '{ident}' links more than "
                               f"{self.settings.max_chain} responses", param="previous_response_id")
            row = await self.require(following, param="previous_response_id")
            rows.append(row)
            following = row.previous_id
        return rows[::-1]

    async def delete(self, ident: str) -> bool:
        """Remove the row; whether there was one."""
        def remove(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM responses WHERE id = ?", (ident,)).rowcount > 0

        return await self._run(remove)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    async def fail_unfinished(self) -> int:
        """Mark `failed` every stored response still `queued` or `in_progress` (a background
        response a crashed server never finished); how many there were."""
        def mark(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE responses SET body = json_set(body, '$.status', 'failed', '$.error', json_object("
                "'code', 'server_error', 'message', 'the server stopped before this response finished')) "
                "WHERE json_extract(body, '$.status') IN ('queued', 'in_progress')").rowcount

        return await self._run(mark)
