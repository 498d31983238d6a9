"""Vectors in a Qdrant collection: a server (`url`) or embedded local mode (a folder).

Point ids are the catalog's row ids, with the id repeated in the payload (`row`) so that a
range filter can find points above the committed high-water id. Qdrant writes cannot join
the catalog's SQLite transaction, so the catalog stays the commit point and Qdrant is kept
no further ahead than a search can tolerate:

* adds are upserted at once (`wait=True`); until the catalog commits, their ids have no
  committed row and searches drop them. A killed writer leaves points above the high-water
  id, which the next writer deletes when it opens;
* deletes are recorded in the catalog table `qdrant_outbox` in the same transaction as the
  row deletes and applied to Qdrant after the commit; a killed writer leaves them in the
  outbox, which the next writer replays. Until then searches drop them (no row).

So every hit a search returns has a committed row. Local mode allows one process at a time
(Qdrant's own lock); concurrent readers need a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from .base import BackendOptions, Neighbours, VectorBackend
from .errors import EmbeddingModelMismatch, StoreLocked

__all__ = ["QdrantOptions", "QdrantVectors"]

_UPSERT_BATCH = 256
_SCROLL_PAGE = 2048
_LOCAL_FOLDER = "qdrant"


class QdrantOptions(BackendOptions):
    """Where the collection lives: `url` for a server, else local mode beside the catalog."""

    url: str | None = None
    api_key: str | None = None
    collection: str | None = None  # default: "lampstand-<index directory name>"
    prefer_grpc: bool = False
    timeout: int | None = None


class QdrantVectors(VectorBackend):
    """One Qdrant collection of cosine vectors, kept in step with the catalog."""

    kind = "qdrant"
    Options = QdrantOptions
    options: QdrantOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.collection = self.options.collection or f"lampstand-{self.directory.name}"
        self.client = self._connect()

    def _connect(self) -> QdrantClient:
        if self.options.url is not None:
            return QdrantClient(
                url=self.options.url,
                api_key=self.options.api_key,
                prefer_grpc=self.options.prefer_grpc,
                timeout=self.options.timeout,
            )
        try:
            return QdrantClient(
                path=str(self.directory / _LOCAL_FOLDER), force_disable_check_same_thread=True
            )
        except RuntimeError as exc:  # Qdrant's local lock: another process has the folder
            raise StoreLocked(
                f"the local Qdrant storage of {self.directory} is open in another process; "
                f"local mode allows one process at a time (use a Qdrant server with `url =` "
                f"for concurrent readers)"
            ) from exc

    # -- lifecycle -------------------------------------------------------------------------

    def recover(self) -> None:
        """Ensure the collection and outbox exist; replay the outbox; drop orphan points."""
        self.catalog.connection.executescript(
            "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS qdrant_outbox "
            "(id INTEGER PRIMARY KEY); COMMIT;"
        )
        self._ensure_collection()
        self._apply_outbox()

    def _ensure_collection(self) -> None:
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
            )
            return
        params = self.client.get_collection(self.collection).config.params.vectors
        size = getattr(params, "size", None)
        if size != self.dim:
            raise EmbeddingModelMismatch(
                f"Qdrant collection {self.collection!r} holds vectors of size {size}, "
                f"this index records dim {self.dim}; use another collection or rebuild the index"
            )

    def load(self) -> None:
        """A writer deletes points above the committed high-water id (adds that a killed
        writer or a rollback left behind); a reader has nothing to read."""
        if not self.writable:
            return
        above = models.Range(gt=self.catalog.high_water_id())
        orphans = models.Filter(must=[models.FieldCondition(key="row", range=above)])
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=orphans))

    def close(self) -> None:
        """Close the client (and release local mode's folder lock)."""
        self.client.close()

    # -- writes ----------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Upsert now; the points count once the catalog commits their rows."""
        for start in range(0, len(ids), _UPSERT_BATCH):
            batch = slice(start, start + _UPSERT_BATCH)
            points = [
                models.PointStruct(id=int(i), vector=row.tolist(), payload={"row": int(i)})
                for i, row in zip(ids[batch], vectors[batch], strict=True)
            ]
            self.client.upsert(self.collection, points=points, wait=True)

    def remove(self, ids: np.ndarray) -> None:
        """Record the deletes in the outbox, inside the catalog transaction."""
        self.catalog.connection.executemany(
            "INSERT OR IGNORE INTO qdrant_outbox (id) VALUES (?)", ((int(i),) for i in ids)
        )

    def prepare_commit(self, force_compaction: bool = False) -> None:
        """Nothing to publish: upserts were acknowledged as they were made."""

    def finish_commit(self) -> None:
        """Apply the committed deletes to Qdrant, then empty the outbox."""
        self._apply_outbox()

    def _apply_outbox(self) -> None:
        conn = self.catalog.connection
        ids = [r[0] for r in conn.execute("SELECT id FROM qdrant_outbox")]
        if not ids:
            return
        self.client.delete(
            self.collection, points_selector=models.PointIdsList(points=ids), wait=True
        )
        self.catalog.begin_write()
        conn.execute("DELETE FROM qdrant_outbox")
        self.catalog.commit()

    # -- search ----------------------------------------------------------------------------

    def nearest(self, query: np.ndarray, k: int) -> Neighbours:
        """Qdrant's top `k` (the store drops points without a committed row)."""
        return self._query(query, k, None)

    def nearest_among(self, query: np.ndarray, k: int, ids: np.ndarray) -> Neighbours:
        """Top `k` restricted to `ids` with a `HasIdCondition` filter."""
        if len(ids) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        only = models.Filter(must=[models.HasIdCondition(has_id=ids.tolist())])
        return self._query(query, k, only)

    def _query(self, query: np.ndarray, k: int, where: models.Filter | None) -> Neighbours:
        points = self.client.query_points(
            self.collection, query=query.tolist(), limit=k, query_filter=where, with_payload=False
        ).points
        ids = np.array([int(p.id) for p in points], dtype=np.int64)
        return ids, np.array([p.score for p in points], dtype=np.float32)

    # -- inspection ------------------------------------------------------------------------

    def live_ids(self) -> np.ndarray:
        """Point ids a search can return: not in the outbox, not above the high-water id."""
        found: list[int] = []
        offset: Any = None
        while True:
            records, offset = self.client.scroll(
                self.collection, limit=_SCROLL_PAGE, offset=offset, with_payload=False
            )
            found.extend(int(r.id) for r in records)
            if offset is None:
                break
        pending = [r[0] for r in self.catalog.connection.execute("SELECT id FROM qdrant_outbox")]
        ids = np.setdiff1d(np.array(found, dtype=np.int64), np.array(pending, dtype=np.int64))
        return ids[ids <= self.catalog.high_water_id()]

    def describe(self) -> dict[str, Any]:
        """Where the collection is and how many points it holds."""
        return {
            "kind": "qdrant",
            "metric": "cosine",
            "mode": "server" if self.options.url else "local",
            "url": self.options.url,
            "path": None if self.options.url else str(Path(self.directory, _LOCAL_FOLDER)),
            "collection": self.collection,
            "points": int(self.client.count(self.collection, exact=True).count),
        }
