"""`ChunkStore`: the one store interface, a catalog plus a vector backend behind it.

The catalog (SQLite) holds the chunk rows, which are also the id map of the vector side,
the FTS5 lexical index, the file manifest and the meta record; the backend (FAISS files or
Qdrant) holds the vectors; the term index (`term_index`, tantivy) is a copy of the rows'
words that ranks lexical searches fast, committed after the catalog and rebuilt from it
whenever it does not match. The meta record is the manifest that ties them together: it names
the embedding model, the dimension, the store kind, the commit generation and the vector
files of that generation, and it commits in the same SQLite transaction as the rows.
`manifest.json` is a copy of it for people and tools, rewritten after each commit (and on a
writer's open, should a crash have left it one commit behind); nothing loads from it.

Writers hold the directory's single-writer lock; readers take no lock and follow commits by
reloading when the catalog's data version moves. Every write since the last `commit()` is
one transaction: `commit()` publishes all of it durably and atomically, `close()` without a
commit discards it, and so does an error in the middle of a write.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np

from ..chunks import Chunk
from .base import Filters, Hit, Neighbours, StoreStats, VectorBackend
from .catalog import Catalog
from .durable import WriterLock, write_file_atomically
from .errors import InvalidVectors, StoreReadOnly
from .lexical import search_bm25
from .term_index import TermIndex

__all__ = ["FORMAT_VERSION", "MANIFEST_FILE", "ChunkStore"]

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
# Filtered dense search: up to this many matching chunks are scored exactly (a few ms);
# broader filters over-fetch these multiples of k, then fall back to exact search.
EXACT_FILTER_LIMIT = 2048
OVERFETCH_FACTORS = (8, 64)
LEXICAL_OVERFETCH = 8  # a filtered lexical search first reads this many times k of the full ranking
# Files whose chunk line ranges are kept between searches (they change only with a commit).
LINE_RANGE_CACHE = 4096


def _unit_rows(vectors: Any, rows: int, dim: int) -> np.ndarray:
    """`vectors` as C-contiguous float32 (rows, dim) with unit rows (zero rows stay zero)."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.shape != (rows, dim):
        raise InvalidVectors(f"expected vectors of shape ({rows}, {dim}), got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InvalidVectors("vectors contain NaN or infinity")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


class ChunkStore:
    """Chunks, their vectors and their lexical index in one directory.

    Open one with `lampstand.indexer.store.open_store`. Methods are safe to call from several
    threads (one lock serialises them); FAISS searches are quick enough that this costs
    little.
    """

    def __init__(
        self,
        directory: Path,
        catalog: Catalog,
        backend: VectorBackend,
        lock: WriterLock | None,
        terms: TermIndex | None = None,
    ) -> None:
        self.directory = directory
        self._catalog = catalog
        self._backend = backend
        self._writer_lock = lock
        self._terms = terms
        self._line_ranges: dict[str, list[tuple[int, int, int]]] = {}
        self._line_ranges_generation = -1
        self._mutex = threading.RLock()
        self._seen_version = catalog.data_version()
        self._generation = int(catalog.get_meta("generation") or 0)
        self._closed = False
        if lock is not None:
            self._write_manifest()  # repairs a copy a crash left one commit behind

    # -- properties ------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """The vector backend's kind ("faiss", "qdrant")."""
        return self._backend.kind

    @property
    def embedding_model(self) -> str:
        """The embedding model id every vector in this store came from."""
        return self._catalog.get_meta("embedding_model") or ""

    @property
    def dim(self) -> int:
        """The vectors' dimension."""
        return self._backend.dim

    @property
    def writable(self) -> bool:
        """Whether this handle holds the writer lock."""
        return self._writer_lock is not None

    @property
    def generation(self) -> int:
        """The number of the last commit this handle sees."""
        return self._generation

    # -- writes ----------------------------------------------------------------------------

    def add(self, chunks: Sequence[Chunk], vectors: Any) -> np.ndarray:
        """Add chunks with their vectors ((len(chunks), dim), cosine: rows are normalised).

        Returns the new row ids (int64). Visible to this handle at once, to others after
        `commit()`.
        """
        matrix = _unit_rows(vectors, len(chunks), self.dim)
        with self._writing():
            if not chunks:
                return np.zeros(0, dtype=np.int64)
            ids = self._catalog.insert_chunks(chunks)
            self._backend.add(ids, matrix)
            if self._terms is not None:
                self._terms.add(ids.tolist(), chunks)
            return ids

    def delete_paths(self, paths: Iterable[str]) -> int:
        """Remove every chunk of `paths` and their manifest entries; returns chunks removed."""
        with self._writing():
            ids = self._catalog.delete_paths(paths)
            if len(ids):
                self._backend.remove(ids)
                if self._terms is not None:
                    self._terms.remove(ids.tolist())
            return len(ids)

    def set_file(self, path: str, file_hash: str) -> None:
        """Record that `path` is indexed as of content hash `file_hash`."""
        with self._writing():
            self._catalog.set_file(path, file_hash)

    def replace_file(
        self, path: str, file_hash: str, chunks: Sequence[Chunk], vectors: Any
    ) -> np.ndarray:
        """Swap everything stored for `path` for `chunks` and record `file_hash`."""
        if any(chunk.path != path for chunk in chunks):
            raise InvalidVectors(f"every chunk given for {path} must have that path")
        matrix = _unit_rows(vectors, len(chunks), self.dim)
        with self._writing():
            self.delete_paths([path])
            ids = self.add(chunks, matrix)
            self.set_file(path, file_hash)
            return ids

    def commit(self, *, compact: bool = False) -> int:
        """Publish every write since the last commit, durably and atomically.

        `compact=True` also folds pending vectors into a new base index now. Returns the
        new generation (unchanged when there was nothing to commit).
        """
        with self._mutex:
            self._require_writer()
            if not self._catalog.dirty and not compact:
                return self._generation
            try:
                self._catalog.begin_write()
                self._backend.prepare_commit(force_compaction=compact)
                self._catalog.set_meta("generation", str(self._generation + 1))
                self._catalog.commit()
            except BaseException:
                self._discard()
                raise
            self._generation += 1
            self._backend.finish_commit()
            if self._terms is not None:
                self._terms.commit(self._generation)  # should this fail, FTS5 answers until a rebuild
            self._write_manifest()
            return self._generation

    def rollback(self) -> None:
        """Discard every write since the last commit."""
        with self._mutex:
            self._require_writer()
            self._discard()

    def _discard(self) -> None:
        self._catalog.rollback()
        self._backend.load()
        if self._terms is not None:
            self._terms.rollback()

    # -- reads -----------------------------------------------------------------------------

    def files(self) -> dict[str, str]:
        """The file manifest: path -> file hash, as last recorded with `set_file`."""
        with self._reading():
            return self._catalog.files()

    def search_dense(self, vector: Any, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """The `k` chunks nearest to `vector` by cosine similarity, best first.

        Candidates are checked against the catalog, which drops what fails the filters and
        what has no committed row. A selective filter (at most `EXACT_FILTER_LIMIT` matching
        chunks) is answered exactly among its matches; a broader one by over-fetching (8k,
        then 64k candidates), and exactly among all its matches if that still finds fewer
        than `k`.
        """
        query = _unit_rows(np.asarray(vector, dtype=np.float32)[None, :], 1, self.dim)[0]
        with self._reading():
            if k <= 0:
                return []
            filters = None if filters is None or filters.empty else filters
            if filters is not None:
                few = self._catalog.matching_ids(filters, limit=EXACT_FILTER_LIMIT + 1)
                if len(few) <= EXACT_FILTER_LIMIT:
                    return self._hits(self._backend.nearest_among(query, k, few), None, k)
            total = self._catalog.chunk_count()
            for factor in OVERFETCH_FACTORS if filters else (1, *OVERFETCH_FACTORS):
                fetch = k * factor
                hits = self._hits(self._backend.nearest(query, fetch), filters, k)
                if len(hits) >= k or fetch >= total:
                    return hits
            allowed = self._catalog.matching_ids(filters)
            return self._hits(self._backend.nearest_among(query, k, allowed), None, k)

    def _hits(self, neighbours: Neighbours, filters: Filters | None, k: int) -> list[Hit]:
        ids, scores = neighbours
        rows = self._catalog.rows(ids.tolist(), filters)
        hits: list[Hit] = []
        for row_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
            chunk = rows.get(row_id)
            if chunk is not None and len(hits) < k:
                hits.append(Hit(chunk, float(score), len(hits) + 1, row_id))
        return hits

    def search_lexical(self, query: str, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """The `k` chunks best matching `query` by BM25, best first.

        The term index answers when it matches this handle's view of the catalog, a filter
        being resolved to row ids by the catalog first (SQLite's GLOB rules); FTS5 answers a
        writer's uncommitted writes and an index being rebuilt.
        """
        with self._reading():
            if self._terms_current():
                found = self._ranked_terms(query, k, None if filters is None or filters.empty else filters)
            else:
                found = search_bm25(self._catalog.connection, query, k, filters)
            return [
                Hit(chunk, score, rank, row_id)
                for rank, (row_id, score, chunk) in enumerate(found, 1)
            ]

    def search_phrases(self, query: str, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """The `k` prose chunks that best match the query's word pairs by BM25, best first
        (see `term_index`); none while FTS5 answers for the term index."""
        with self._reading():
            if not self._terms_current():
                return []
            found = self._ranked_terms(query, k, None if filters is None or filters.empty else filters, phrases=True)
            return [Hit(chunk, score, rank, row_id) for rank, (row_id, score, chunk) in enumerate(found, 1)]

    def _ranked_terms(self, query: str, k: int, filters: Filters | None,
                      phrases: bool = False) -> list[tuple[int, float, Chunk]]:
        """The term index's top `k` that pass `filters`: the full ranking's first `k` that pass.

        A filter is first tried on an over-fetch of the full ranking, which is exact whenever
        `k` of it pass (broad filters); otherwise the catalog lists the rows that pass and the
        term index ranks only those (narrow filters).
        """
        terms = cast(TermIndex, self._terms)
        search = terms.search_phrases if phrases else terms.search
        fetch = k if filters is None else k * LEXICAL_OVERFETCH
        ranked = search(query, fetch)
        rows = self._catalog.rows((row_id for row_id, _ in ranked), filters)
        if filters is not None and len(rows) < k and len(ranked) == fetch:
            allowed = self._catalog.matching_ids(filters).tolist()
            ranked = search(query, k, allowed) if allowed else []
            rows = self._catalog.rows(row_id for row_id, _ in ranked)
        return [(row_id, score, rows[row_id]) for row_id, score in ranked if row_id in rows][:k]

    def _terms_current(self) -> bool:
        return (self._terms is not None and not self._catalog.dirty
                and self._terms.ready(self._generation))

    def line_ranges(self, paths: Iterable[str]) -> dict[str, list[tuple[int, int, int]]]:
        """path -> (row id, start_line, end_line) of each of its chunks, in line order.

        Committed ranges are kept for the most recently asked `LINE_RANGE_CACHE` files until
        the next commit: searches keep landing in the same files.
        """
        with self._reading():
            if self._catalog.dirty:
                return self._catalog.line_ranges(paths)
            cache = self._line_ranges
            if self._line_ranges_generation != self._generation:
                cache.clear()
                self._line_ranges_generation = self._generation
            wanted = set(paths)
            missing = wanted.difference(cache)
            if missing:
                found = self._catalog.line_ranges(missing)
                for path in missing:
                    cache[path] = found.get(path, [])
            for path in wanted:  # most recently asked last, so the oldest go first
                cache[path] = cache.pop(path)
            for stale in list(cache)[: max(len(cache) - LINE_RANGE_CACHE, 0)]:
                del cache[stale]
            return {path: cache[path] for path in wanted if cache[path]}

    def chunks(self, row_ids: Iterable[int]) -> dict[int, Chunk]:
        """The chunks of `row_ids` that exist, by row id."""
        with self._reading():
            return self._catalog.rows(row_ids)

    def refresh(self) -> bool:
        """Follow another process's commits (readers do this before every search)."""
        with self._mutex:
            if self.writable or self._catalog.data_version() == self._seen_version:
                return False
            self._seen_version = self._catalog.data_version()
            generation = int(self._catalog.get_meta("generation") or 0)
            if generation == self._generation:
                return False
            self._backend.load()
            self._generation = generation
            if self._terms is None:
                self._terms = TermIndex.open(self.directory)
            return True

    def stats(self) -> StoreStats:
        """Counts and the vector layout, as this handle sees them."""
        with self._reading():
            return StoreStats(
                kind=self.kind,
                directory=str(self.directory),
                embedding_model=self.embedding_model,
                dim=self.dim,
                generation=self._generation,
                chunks=self._catalog.chunk_count(),
                files=self._catalog.file_count(),
                vectors=self._backend.describe(),
            )

    def verify(self) -> list[str]:
        """Problems found cross-checking vectors, rows, counts and the manifest (none: [])."""
        with self._reading(), self._catalog.snapshot():
            problems = []
            rows = self._catalog.matching_ids(None)
            vectors = self._backend.live_ids()
            if missing := np.setdiff1d(rows, vectors).tolist()[:10]:
                problems.append(f"rows without a vector: {missing}")
            if orphans := np.setdiff1d(vectors, rows).tolist()[:10]:
                problems.append(f"vectors without a row: {orphans}")
            if self._catalog.chunk_count() != len(rows):
                problems.append(f"chunk count {self._catalog.chunk_count()} != {len(rows)} rows")
            if self._terms_current() and self._terms.document_count() != len(rows):  # type: ignore[union-attr]
                problems.append(f"term index holds {self._terms.document_count()} chunks, not {len(rows)}")  # type: ignore[union-attr]
            if unlisted := sorted(self._catalog.paths() - set(self._catalog.files()))[:10]:
                problems.append(f"paths with rows but no manifest entry: {unlisted}")
            return problems

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release everything; uncommitted writes are discarded."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._catalog.rollback()
            self._backend.close()
            if self._terms is not None:
                self._terms.close()
            self._catalog.close()
            if self._writer_lock is not None:
                self._writer_lock.release()

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------

    def _require_writer(self) -> None:
        if not self.writable:
            raise StoreReadOnly(f"the index at {self.directory} was opened for reading")

    def _writing(self) -> _Guard:
        return _Guard(self, write=True)

    def _reading(self) -> _Guard:
        return _Guard(self, write=False)

    def _write_manifest(self) -> None:
        record = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "embedding_model": self.embedding_model,
            "dim": self.dim,
            "generation": self._generation,
            "catalog": Catalog.FILE_NAME,
            "chunks": self._catalog.chunk_count(),
            "files": self._catalog.file_count(),
            "vectors": self._backend.describe(),
            "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        data = json.dumps(record, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        write_file_atomically(self.directory / MANIFEST_FILE, data)


class _Guard:
    """Holds the store's mutex around one call; a failed write discards the transaction;
    a read first follows other processes' commits."""

    def __init__(self, store: ChunkStore, *, write: bool) -> None:
        self.store = store
        self.write = write

    def __enter__(self) -> None:
        self.store._mutex.acquire()
        try:
            if self.write:
                self.store._require_writer()
            else:
                self.store.refresh()
        except BaseException:
            self.store._mutex.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.write and exc is not None and self.store._catalog.dirty:
                self.store._discard()
        finally:
            self.store._mutex.release()
