"""lampstand.indexer.store: where indexed chunks live, and how they are searched.

`open_store` opens (or, for a writer, creates) the store in a directory: a SQLite catalog
(chunk rows, FTS5 lexical index, file manifest, meta) plus the vector backend named by
`kind`, looked up in `STORE_KINDS`. Importing this package imports neither FAISS nor
qdrant-client; a backend's module is imported when a store of its kind is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lampstand.plugins.errors import ConfigError

from .base import BackendOptions, Filters, Hit, StoreStats, VectorBackend
from .errors import (
    EmbeddingModelMismatch,
    InvalidVectors,
    StoreConflict,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreNotFound,
    StoreReadOnly,
)
from .opening import open_directory
from .store import MANIFEST_FILE, ChunkStore

__all__ = [
    "MANIFEST_FILE",
    "STORE_KINDS",
    "BackendOptions",
    "ChunkStore",
    "EmbeddingModelMismatch",
    "Filters",
    "Hit",
    "InvalidVectors",
    "StoreConflict",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreNotFound",
    "StoreReadOnly",
    "StoreStats",
    "VectorBackend",
    "open_store",
]


def _faiss() -> type[VectorBackend]:
    from .faiss_store import FaissVectors

    return FaissVectors


def _qdrant() -> type[VectorBackend]:
    from .qdrant_store import QdrantVectors

    return QdrantVectors


# kind -> loader of its backend class; a new backend is one entry here.
STORE_KINDS: dict[str, Callable[[], type[VectorBackend]]] = {
    "faiss": _faiss,
    "qdrant": _qdrant,
}


def _backend_class(kind: str) -> type[VectorBackend]:
    try:
        loader = STORE_KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(STORE_KINDS))
        raise ConfigError(f"unknown index store kind {kind!r} (known: {known})") from None
    return loader()


def open_store(
    directory: str | Path,
    *,
    kind: str | None = None,
    embedding_model: str | None = None,
    dim: int | None = None,
    writable: bool = False,
    options: Mapping[str, Any] | None = None,
) -> ChunkStore:
    """Open the store in `directory`.

    A writer (`writable=True`) takes the single-writer lock (`StoreLocked` if another process
    holds it) and creates the store when missing, which needs `embedding_model` and `dim`;
    `kind` then defaults to "faiss". A reader takes no lock and raises `StoreNotFound` when
    there is no store. Whenever `kind`, `embedding_model` or `dim` is given it must match what
    the store recorded (`StoreConflict`, `EmbeddingModelMismatch`). `options` are the
    backend's own (`FaissOptions`, `QdrantOptions`); unknown keys, like unknown kinds,
    raise `ConfigError`.
    """
    if kind is not None:
        _backend_class(kind)  # an unknown kind fails before anything touches the disk
    return open_directory(
        Path(directory),
        kind=kind,
        resolve=_backend_class,
        embedding_model=embedding_model,
        dim=dim,
        writable=writable,
        options=options,
    )
