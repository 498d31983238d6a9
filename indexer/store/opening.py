"""Opening a store directory: the writer lock, the catalog, the recorded model and kind, the
backend's options, and (for a writer) recovery from a killed predecessor.

A writer creates the store when the directory has none; the meta record is committed last,
so a creation cut short is simply redone by the next writer, and readers see no store until
it is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lampstand.plugins.errors import ConfigError

from .base import VectorBackend
from .catalog import Catalog
from .durable import TEMP_SUFFIX, WriterLock
from .errors import EmbeddingModelMismatch, StoreConflict, StoreNotFound
from .store import FORMAT_VERSION, ChunkStore
from .term_index import TermIndex, available

__all__ = ["DEFAULT_KIND", "open_directory"]

DEFAULT_KIND = "faiss"


def open_directory(
    directory: Path,
    *,
    kind: str | None,
    resolve: Callable[[str], type[VectorBackend]],
    embedding_model: str | None,
    dim: int | None,
    writable: bool,
    options: Mapping[str, Any] | None,
) -> ChunkStore:
    """Open (a writer creates if missing) the store in `directory`; see `open_store`."""
    if not writable and not Catalog.exists(directory):
        raise StoreNotFound(f"no index at {directory}")
    lock = None
    if writable:
        directory.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(directory)
        lock.acquire()
    catalog: Catalog | None = None
    try:
        catalog = Catalog(directory, writable=writable)
        return _attach(directory, catalog, lock, kind, resolve, embedding_model, dim, options)
    except BaseException:
        if catalog is not None:
            catalog.close()
        if lock is not None:
            lock.release()
        raise


def _attach(
    directory: Path,
    catalog: Catalog,
    lock: WriterLock | None,
    kind: str | None,
    resolve: Callable[[str], type[VectorBackend]],
    embedding_model: str | None,
    dim: int | None,
    options: Mapping[str, Any] | None,
) -> ChunkStore:
    """Check what the catalog recorded, then bring up its backend (creating if new)."""
    meta = catalog.meta()
    created = "format_version" not in meta
    if created:
        meta = _new_meta(directory, lock is not None, kind, embedding_model, dim)
    _check_recorded(directory, meta, kind, embedding_model, dim)
    backend_class = resolve(meta["kind"])
    try:
        backend_options = backend_class.Options.model_validate(dict(options or {}))
    except ValidationError as exc:
        raise ConfigError(f"options of the {meta['kind']} index store: {exc}") from None
    backend = backend_class(directory, catalog, int(meta["dim"]), backend_options, lock is not None)
    try:
        if lock is not None:
            backend.recover()
            for temp in directory.glob(f"*{TEMP_SUFFIX}"):
                temp.unlink(missing_ok=True)
        if created:
            for key, value in meta.items():
                catalog.set_meta(key, value)
            catalog.commit()
        backend.load()
        terms = _term_index(directory, catalog, writable=lock is not None)
        return ChunkStore(directory, catalog, backend, lock, terms)
    except BaseException:
        backend.close()
        raise


def _term_index(directory: Path, catalog: Catalog, *, writable: bool) -> TermIndex | None:
    """The store's term index; a writer rebuilds one that does not match the catalog."""
    terms = TermIndex.open(directory)
    generation = int(catalog.get_meta("generation") or 0)
    if writable and available() and (terms is None or not terms.matches(generation)):
        if terms is not None:
            terms.close()
        terms = TermIndex.rebuilt(directory, catalog.all_chunks(), generation)
    return terms


def _new_meta(
    directory: Path, writer: bool, kind: str | None, embedding_model: str | None, dim: int | None
) -> dict[str, str]:
    """The meta record of a store about to be created."""
    if not writer:
        raise StoreNotFound(f"the index at {directory} is still being created")
    if not embedding_model or not dim:
        raise StoreNotFound(f"no index at {directory}; creating one needs embedding_model and dim")
    return {
        "format_version": str(FORMAT_VERSION),
        "kind": kind or DEFAULT_KIND,
        "embedding_model": embedding_model,
        "dim": str(dim),
        "generation": "0",
        "chunk_count": "0",
    }


def _rebuild_hint(directory: Path) -> str:
    return (
        f"Vectors of two models are never mixed: rebuild it with `lampstand index rm "
        f"{directory.name}` and add it again, or index with `--rebuild`."
    )


def _check_recorded(
    directory: Path,
    meta: Mapping[str, str],
    kind: str | None,
    embedding_model: str | None,
    dim: int | None,
) -> None:
    """Refuse an index built with another kind, model or dimension than the one asked for,
    or written in a newer format than this version reads."""
    if int(meta["format_version"]) > FORMAT_VERSION:
        raise StoreConflict(
            f"the index at {directory} has format {meta['format_version']}, newer than this "
            f"lampstand reads ({FORMAT_VERSION}); upgrade lampstand or rebuild the index"
        )
    recorded_kind = meta["kind"]
    if kind is not None and kind != recorded_kind:
        raise StoreConflict(
            f"the index at {directory} is a {recorded_kind} index, not {kind}. "
            + _rebuild_hint(directory)
        )
    recorded_model, recorded_dim = meta["embedding_model"], int(meta["dim"])
    model_differs = embedding_model is not None and embedding_model != recorded_model
    dim_differs = dim is not None and dim != recorded_dim
    if model_differs or dim_differs:
        raise EmbeddingModelMismatch(
            f"the index at {directory} was built with embedding model {recorded_model!r} "
            f"(dim {recorded_dim}), not {embedding_model or recorded_model!r} "
            f"(dim {dim or recorded_dim}). " + _rebuild_hint(directory),
            recorded=(recorded_model, recorded_dim), wanted=(embedding_model or recorded_model, dim or recorded_dim),
        )
