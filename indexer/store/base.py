"""The shapes a store speaks in, and the one contract a vector backend fulfils.

A store is a catalog (SQLite: chunk rows, the lexical index, the file manifest and the meta
record that ties them together) plus a vector backend (FAISS files or a Qdrant collection).
`VectorBackend` is everything the store needs from the vector side; backends never touch
chunk rows and never decide about filters, which the store resolves through the catalog.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..chunks import Chunk

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = ["BackendOptions", "Filters", "Hit", "Neighbours", "StoreStats", "VectorBackend"]

# (ids int64 (n,), scores float32 (n,)), best first.
Neighbours = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Filters:
    """Which chunks a search may return.

    `path_glob` uses SQLite GLOB rules on the indexed-root-relative path: case-sensitive,
    `*` and `?` also match `/`, `[abc]` and `[^abc]` are character classes (so `docs/*`
    matches everything under `docs/`, `*.py` every Python file at any depth).
    """

    path_glob: str | None = None
    language: str | None = None

    @property
    def empty(self) -> bool:
        """True when nothing is filtered out."""
        return self.path_glob is None and self.language is None


@dataclass(frozen=True)
class Hit:
    """One search result: the chunk, its score (higher is better) and its 1-based rank.

    Dense scores are cosine similarities; lexical scores are BM25 (sign flipped so that
    higher is better). `row_id` is the chunk's id in this store, stable until it is deleted.
    """

    chunk: Chunk
    score: float
    rank: int
    row_id: int


@dataclass(frozen=True)
class StoreStats:
    """What `ChunkStore.stats()` reports; `vectors` is the backend's own description."""

    kind: str
    directory: str
    embedding_model: str
    dim: int
    generation: int
    chunks: int
    files: int
    vectors: dict[str, Any] = field(default_factory=dict)


class BackendOptions(BaseModel):
    """Base of a backend's options; unknown keys are rejected with their name."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class VectorBackend(ABC):
    """The vector side of a store, addressed by the catalog's int64 row ids.

    Writes happen while the catalog has a write transaction open; `prepare_commit` runs just
    before that transaction commits and must leave durable everything the transaction will
    reference; `finish_commit` runs after it. A backend may keep its own tables in the
    catalog's database (they then commit atomically with the rows).
    """

    kind: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions

    def __init__(
        self, directory: Path, catalog: Catalog, dim: int, options: BackendOptions, writable: bool
    ) -> None:
        self.directory = directory
        self.catalog = catalog
        self.dim = dim
        self.options = options
        self.writable = writable

    @abstractmethod
    def recover(self) -> None:
        """On a writer's open: clear whatever a killed writer left behind."""

    @abstractmethod
    def load(self) -> None:
        """Read the committed state; called on open, after another process committed, and
        after a failed commit."""

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add unit vectors (float32, (n, dim)) under new ids (int64, (n,))."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Forget the vectors of `ids` (int64, (n,)); unknown ids are ignored."""

    @abstractmethod
    def nearest(self, query: np.ndarray, k: int) -> Neighbours:
        """Up to `k` nearest live vectors to the unit `query` (float32, (dim,))."""

    @abstractmethod
    def nearest_among(self, query: np.ndarray, k: int, ids: np.ndarray) -> Neighbours:
        """The exact `k` nearest among `ids` (all live), for selective filters."""

    @abstractmethod
    def prepare_commit(self, force_compaction: bool = False) -> None:
        """Inside the open transaction: make durable what it will reference."""

    @abstractmethod
    def finish_commit(self) -> None:
        """After the transaction committed: drop what is no longer referenced."""

    @abstractmethod
    def live_ids(self) -> np.ndarray:
        """Every id a search can return, sorted (int64); for checks and stats."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the manifest records about the vector side (layout, parameters, counts)."""

    def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release files and connections (default: nothing to do)."""
