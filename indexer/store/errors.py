"""The store's errors, as a branch of lampstand's one exception tree.

LampstandError (lampstand.plugins.errors)
├── InvalidRequest
│   └── InvalidVectors          400 code=invalid_vectors (wrong shape, dtype or dim)
└── StoreError                  500 code=index_error
    ├── StoreNotFound           404 code=index_not_found
    ├── StoreConflict           409 (the index on disk disagrees with the request)
    │   ├── StoreLocked         409 code=index_locked (another process is writing)
    │   └── EmbeddingModelMismatch  400 code=embedding_model_mismatch (repeats: not for retrying)
    ├── StoreReadOnly           500 code=index_read_only (a write on a reader)
    └── StoreCorrupt            500 code=index_corrupt (a committed file is missing)
"""

from __future__ import annotations

from lampstand.plugins.errors import InvalidRequest, LampstandError

__all__ = [
    "EmbeddingModelMismatch",
    "InvalidVectors",
    "StoreConflict",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreNotFound",
    "StoreReadOnly",
]


class StoreError(LampstandError):
    """Base of every error an index store raises."""

    code = "index_error"


class StoreNotFound(StoreError):
    """No index exists at the directory, and the caller did not ask to create one."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "index_not_found"


class StoreConflict(StoreError):
    """The index on disk cannot serve this request as it stands."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "index_conflict"


class StoreLocked(StoreConflict):
    """Another process holds the index's single-writer lock."""

    code = "index_locked"


class EmbeddingModelMismatch(StoreConflict):
    """The index was built with another embedding model (or dimension, or store kind).

    Vectors of two models are never mixed: the message tells the user how to rebuild.
    `recorded` and `wanted` are the (model, dimension) pairs of the index and of the request.
    """

    status_code = 400  # clients retry 409; a rebuild, not a retry, fixes this
    code = "embedding_model_mismatch"

    def __init__(self, message: str, *, recorded: tuple[str, int] | None = None,
                 wanted: tuple[str, int] | None = None) -> None:
        super().__init__(message)
        self.recorded, self.wanted = recorded, wanted


class StoreReadOnly(StoreError):
    """A write was attempted through a store opened for reading."""

    code = "index_read_only"


class StoreCorrupt(StoreError):
    """A file the committed manifest names is missing or unreadable."""

    code = "index_corrupt"


class InvalidVectors(InvalidRequest):
    """Vectors of the wrong shape, dtype or dimension for this index."""

    code = "invalid_vectors"
