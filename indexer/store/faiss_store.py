"""Vectors in FAISS files beside the catalog: an immutable base index plus pending vectors.

Layout. The base index is `vectors.<generation>.faiss`, an `IndexIDMap2` over either
`IndexFlatIP` (exact search, while the index holds at most `hnsw_threshold` live vectors) or
`IndexHNSWFlat` with inner product (beyond it; below half the threshold a rebuild goes back
to flat). The choice and its parameters are recorded in the catalog's meta (`faiss.layout`)
and so in the manifest. Vectors added since the base was written live in the catalog table
`faiss_pending` and are searched exactly in memory; deleted base vectors are listed in
`faiss_tombstones` and excluded from base searches through an `IDSelectorNot`.

Why: a commit then writes only SQLite rows (one transaction, milliseconds), whatever the
index size, so updating one file never rewrites the vectors of the others. Compaction, at
commit time once the pending vectors pass `max(pending_limit, pending_ratio * base)` or the
layout must change, folds them into a new base generation: a flat base also drops its
tombstones (`remove_ids`), an HNSW base (which has no real delete) only adds, and is rebuilt
from its live vectors once tombstones pass `tombstone_ratio` of it.

Crash safety. The catalog transaction is the commit point. Compaction first publishes the
new base file (temp file, fsync, rename, directory fsync), then the transaction records its
generation together with the rows, so the committed meta always names a base file that is
complete; older generations are unlinked only after the commit, and stray ones are removed
when a writer opens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

import faiss
import numpy as np

from .base import BackendOptions, Neighbours, VectorBackend
from .durable import publish_file
from .errors import StoreCorrupt
from .faiss_gpu import MAX_GPU_K, GpuMirror, resolve_device

__all__ = ["FaissOptions", "FaissVectors"]

_BASE_FILE = re.compile(r"^vectors\.(\d+)\.faiss$")
_TABLES = """
CREATE TABLE IF NOT EXISTS faiss_pending (id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS faiss_tombstones (id INTEGER PRIMARY KEY);
"""
_LOAD_ATTEMPTS = 5  # a reader retries when a writer replaced the base under it


class FaissOptions(BackendOptions):
    """How the FAISS backend lays out and maintains its base index."""

    hnsw_threshold: int = 50_000  # live vectors above which the base is HNSW, not exact
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    pending_limit: int = 4096  # pending vectors tolerated before compaction, at least
    pending_ratio: float = 0.1  # ... or this share of the base, whichever is larger
    tombstone_ratio: float = 0.2  # an HNSW base is rebuilt past this share of tombstones
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: a GPU when faiss's GPU build sees one


class _Compaction(NamedTuple):
    """What a due compaction builds: the layout, whether from scratch, for how many vectors."""

    kind: str
    rebuild: bool
    live: int


def _base_path(directory: Path, generation: int) -> Path:
    return directory / f"vectors.{generation}.faiss"


def _empty_matrix(dim: int) -> np.ndarray:
    return np.zeros((0, dim), dtype=np.float32)


def _contains(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Boolean mask over `ids`: which are in `sorted_ids`."""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    positions = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[positions] == ids


class _Pending:
    """Vectors added since the base was written: ids ascending, rows in step.

    Appends are kept as a list of blocks and joined when read, so adding many small batches
    stays linear. Ids up to `saved_upto` are in `faiss_pending`; newer ones exist only in
    memory until a commit either saves them there or folds them into a new base.
    """

    def __init__(
        self, dim: int, ids: np.ndarray | None = None, matrix: np.ndarray | None = None
    ) -> None:
        self.dim = dim
        self._ids = [np.zeros(0, dtype=np.int64) if ids is None else ids]
        self._blocks = [_empty_matrix(dim) if matrix is None else matrix]
        self.saved_upto = int(self._ids[0][-1]) if len(self._ids[0]) else 0

    def __len__(self) -> int:
        return sum(len(block) for block in self._ids)

    def append(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        self._ids.append(ids)
        self._blocks.append(matrix)

    def _join(self) -> None:
        if len(self._ids) > 1:
            self._ids = [np.concatenate(self._ids)]
            self._blocks = [np.concatenate(self._blocks)]

    @property
    def ids(self) -> np.ndarray:
        self._join()
        return self._ids[0]

    @property
    def matrix(self) -> np.ndarray:
        self._join()
        return self._blocks[0]

    def drop(self, ids: np.ndarray) -> np.ndarray:
        """Forget `ids`; returns those of them that were saved in `faiss_pending`."""
        gone = _contains(np.sort(ids), self.ids)
        dropped = self.ids[gone]
        self._ids, self._blocks = [self.ids[~gone]], [self.matrix[~gone]]
        return dropped[dropped <= self.saved_upto]

    def unsaved(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rows) not yet in `faiss_pending`."""
        fresh = self.ids > self.saved_upto
        return self.ids[fresh], self.matrix[fresh]


def _top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> Neighbours:
    """The `k` best (highest score) of parallel arrays, best first."""
    if len(ids) > k:
        keep = np.argpartition(-scores, k - 1)[:k]
        ids, scores = ids[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    return ids[order], scores[order].astype(np.float32)


class FaissVectors(VectorBackend):
    """A FAISS base index file plus pending vectors and tombstones kept in the catalog."""

    kind = "faiss"
    Options = FaissOptions
    options: FaissOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._generation = 0
        self._layout: dict[str, Any] = {"kind": "none"}
        self._base: faiss.IndexIDMap2 | None = None
        self._base_ids = np.zeros(0, dtype=np.int64)  # sorted
        self._tombstones = np.zeros(0, dtype=np.int64)  # sorted, subset of _base_ids
        self._selector: Any = None  # excludes tombstones; kept alive with its parts
        self._pending = _Pending(self.dim)
        self._unreferenced: list[Path] = []
        self._device = resolve_device(self.options.device)
        self._mirror: GpuMirror | None = None  # the live base on the GPU, made on first search

    # -- lifecycle -------------------------------------------------------------------------

    def recover(self) -> None:
        """Create the backend's tables, then unlink base files no commit references."""
        conn = self.catalog.connection
        conn.executescript(f"BEGIN IMMEDIATE; {_TABLES} COMMIT;")
        current = int(self.catalog.get_meta("faiss.generation") or 0)
        for path in self.directory.iterdir():
            match = _BASE_FILE.match(path.name)
            if match and int(match.group(1)) != current:
                path.unlink(missing_ok=True)

    def load(self) -> None:
        """Read the committed base, pending vectors and tombstones as of one snapshot."""
        for attempt in range(_LOAD_ATTEMPTS):
            try:
                with self.catalog.snapshot():
                    self._load_snapshot()
                return
            except FileNotFoundError:
                if self.writable or attempt == _LOAD_ATTEMPTS - 1:
                    raise StoreCorrupt(
                        f"the committed vector file of {self.directory} is missing"
                    ) from None

    def _load_snapshot(self) -> None:
        generation = int(self.catalog.get_meta("faiss.generation") or 0)
        self._unreferenced.clear()
        # A writer reloads only after a failed commit, which may have grown the base in place.
        if self.writable or generation != self._generation or self._base is None:
            self._set_base(self._read_base(generation))
            self._generation = generation
        self._layout = json.loads(self.catalog.get_meta("faiss.layout") or '{"kind": "none"}')
        conn = self.catalog.connection
        rows = conn.execute("SELECT id, vector FROM faiss_pending ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        self._pending = _Pending(self.dim, ids, matrix.reshape(-1, self.dim).copy())
        tombs = conn.execute("SELECT id FROM faiss_tombstones ORDER BY id")
        self._set_tombstones(np.fromiter((r[0] for r in tombs), dtype=np.int64))

    def _read_base(self, generation: int) -> faiss.IndexIDMap2 | None:
        if generation == 0:
            return None
        path = _base_path(self.directory, generation)
        if not path.is_file():
            raise FileNotFoundError(path)
        index: faiss.IndexIDMap2 = faiss.read_index(str(path))  # type: ignore[assignment]
        return index

    def _set_base(self, base: faiss.IndexIDMap2 | None) -> None:
        self._base = base
        ids = np.zeros(0, dtype=np.int64) if base is None else faiss.vector_to_array(base.id_map)
        self._base_ids = np.sort(ids.astype(np.int64))
        self._mirror = None

    def _set_tombstones(self, tombstones: np.ndarray) -> None:
        if not np.array_equal(tombstones, self._tombstones):
            self._mirror = None  # a reload that changed neither base nor tombstones keeps it
        self._tombstones = tombstones
        if len(tombstones) == 0:
            self._selector = None
            return
        batch = faiss.IDSelectorBatch(tombstones)
        self._selector = (faiss.IDSelectorNot(batch), batch)

    # -- writes ----------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append to the pending vectors (saved to the catalog at commit)."""
        self._pending.append(ids, vectors)

    def remove(self, ids: np.ndarray) -> None:
        """Drop pending vectors outright; tombstone base vectors."""
        conn = self.catalog.connection
        saved = self._pending.drop(ids)
        conn.executemany("DELETE FROM faiss_pending WHERE id = ?", ((int(i),) for i in saved))
        buried = ids[_contains(self._base_ids, ids) & ~_contains(self._tombstones, ids)]
        if len(buried):
            conn.executemany(
                "INSERT INTO faiss_tombstones (id) VALUES (?)", ((int(i),) for i in buried)
            )
            self._set_tombstones(np.union1d(self._tombstones, buried))

    # -- search ----------------------------------------------------------------------------

    def nearest(self, query: np.ndarray, k: int) -> Neighbours:
        """Best `k` of the base (tombstones excluded) and the pending vectors together."""
        parts_ids, parts_scores = [], []
        if self._device == "cuda" and self._base is not None and k <= MAX_GPU_K:
            ids, scores = self._gpu_mirror().search(query, k)
            parts_ids.append(ids)
            parts_scores.append(scores)
        elif self._base is not None and self._base.ntotal > 0:
            distances, labels = self._base.search(query[None, :], k, params=self._params(k))
            found = labels[0] >= 0
            parts_ids.append(labels[0][found])
            parts_scores.append(distances[0][found])
        if len(self._pending):
            parts_ids.append(self._pending.ids)
            parts_scores.append(self._pending.matrix @ query)  # (n,)
        if not parts_ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return _top_k(np.concatenate(parts_ids), np.concatenate(parts_scores), k)

    def _gpu_mirror(self) -> GpuMirror:
        if self._mirror is None:
            live = np.setdiff1d(self._base_ids, self._tombstones)
            self._mirror = GpuMirror(live, self._reconstruct(live))
        return self._mirror

    def _params(self, k: int) -> faiss.SearchParameters | None:
        selector = None if self._selector is None else self._selector[0]
        if self._layout.get("kind") == "hnsw":
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = max(self.options.hnsw_ef_search, k)
        elif selector is None:
            return None
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        return params

    def nearest_among(self, query: np.ndarray, k: int, ids: np.ndarray) -> Neighbours:
        """Exact scores for `ids`: pending rows from memory, base rows reconstructed."""
        ids = np.sort(ids)
        base_ids = ids[_contains(self._base_ids, ids)]
        pending_rows = _contains(ids, self._pending.ids)
        matrix = np.concatenate([self._reconstruct(base_ids), self._pending.matrix[pending_rows]])
        candidates = np.concatenate([base_ids, self._pending.ids[pending_rows]])
        return _top_k(candidates, matrix @ query, k)

    def _reconstruct(self, ids: np.ndarray) -> np.ndarray:
        if self._base is None or len(ids) == 0:
            return _empty_matrix(self.dim)
        return self._base.reconstruct_batch(ids)

    # -- commit ----------------------------------------------------------------------------

    def prepare_commit(self, force_compaction: bool = False) -> None:
        """Fold pending vectors into a new base file when due, else save them to the catalog."""
        plan = self._compaction_plan(force_compaction)
        if plan is None:  # the new pending vectors join those saved in the catalog
            ids, matrix = self._pending.unsaved()
            self.catalog.connection.executemany(
                "INSERT INTO faiss_pending (id, vector) VALUES (?, ?)",
                ((int(i), row.tobytes()) for i, row in zip(ids, matrix, strict=True)),
            )
            self._pending.saved_upto = max(
                self._pending.saved_upto, int(ids[-1]) if len(ids) else 0
            )
            return
        base = self._build_base(plan.kind) if plan.rebuild else self._grow_base(plan.kind)
        generation = self._generation + 1
        publish_file(
            _base_path(self.directory, generation), lambda p: faiss.write_index(base, str(p))
        )
        layout = self._layout_record(plan)
        conn = self.catalog.connection
        conn.execute("DELETE FROM faiss_pending")
        dropped_tombstones = plan.rebuild or plan.kind == "flat"
        if dropped_tombstones:
            conn.execute("DELETE FROM faiss_tombstones")
        self.catalog.set_meta("faiss.generation", str(generation))
        self.catalog.set_meta("faiss.layout", json.dumps(layout))
        if self._generation:
            self._unreferenced.append(_base_path(self.directory, self._generation))
        self._generation, self._layout = generation, layout
        self._set_base(base)
        self._pending = _Pending(self.dim)
        if dropped_tombstones:
            self._set_tombstones(np.zeros(0, dtype=np.int64))

    def _compaction_plan(self, force: bool) -> _Compaction | None:
        """The compaction to do now, or None when none is due."""
        base_total = 0 if self._base is None else int(self._base.ntotal)
        live_base = base_total - len(self._tombstones)
        live = live_base + len(self._pending)
        current = self._layout.get("kind", "none")
        if current == "none" and live == 0:
            return None
        threshold = self.options.hnsw_threshold
        stays_hnsw = current == "hnsw" and live >= threshold // 2  # hysteresis
        kind = "hnsw" if (live > threshold or stays_hnsw) and self._device == "cpu" else "flat"
        pending_limit = max(self.options.pending_limit, self.options.pending_ratio * live_base)
        tombstones_due = len(self._tombstones) > self.options.tombstone_ratio * base_total
        due = (
            (force and len(self._pending) + len(self._tombstones) > 0)
            or len(self._pending) > pending_limit
            or tombstones_due
            or (current != "none" and kind != current)
        )
        if not due:
            return None
        rebuild = current != kind or (kind == "hnsw" and tombstones_due)
        return _Compaction(kind, rebuild, live)

    def _new_index(self, kind: str) -> faiss.IndexIDMap2:
        inner: faiss.Index
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.options.hnsw_ef_construction
            inner.hnsw.efSearch = self.options.hnsw_ef_search
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)  # faiss's wrapper keeps `inner` alive

    def _build_base(self, kind: str) -> faiss.IndexIDMap2:
        """A new base from every live vector (base minus tombstones, plus pending)."""
        live_base = np.setdiff1d(self._base_ids, self._tombstones)
        index = self._new_index(kind)
        index.add_with_ids(
            np.concatenate([self._reconstruct(live_base), self._pending.matrix]),
            np.concatenate([live_base, self._pending.ids]),
        )
        return index

    def _grow_base(self, kind: str) -> faiss.IndexIDMap2:
        """The current base with pending vectors added (flat: tombstones removed too)."""
        base = self._base
        if base is None:
            return self._build_base(kind)
        if kind == "flat" and len(self._tombstones):
            base.remove_ids(faiss.IDSelectorBatch(self._tombstones))
        if len(self._pending):
            base.add_with_ids(self._pending.matrix, self._pending.ids)
        return base

    def _layout_record(self, plan: _Compaction) -> dict[str, Any]:
        """What the manifest records about the base: the choice, why, and its parameters."""
        record: dict[str, Any] = {
            "kind": plan.kind,
            "metric": "inner_product",
            "chosen_for_live_vectors": plan.live,
            "hnsw_threshold": self.options.hnsw_threshold,
            "device": self._device,
        }
        if plan.kind == "hnsw":
            previous = self._layout if self._layout.get("kind") == "hnsw" else {}
            record["M"] = previous.get("M", self.options.hnsw_m)
            record["ef_construction"] = previous.get(
                "ef_construction", self.options.hnsw_ef_construction
            )
            record["ef_search"] = self.options.hnsw_ef_search
        return record

    def finish_commit(self) -> None:
        """Unlink base files the committed generation replaced."""
        for path in self._unreferenced:
            path.unlink(missing_ok=True)
        self._unreferenced.clear()

    # -- inspection ------------------------------------------------------------------------

    def live_ids(self) -> np.ndarray:
        """Base ids minus tombstones, plus pending ids, sorted."""
        return np.union1d(np.setdiff1d(self._base_ids, self._tombstones), self._pending.ids)

    def describe(self) -> dict[str, Any]:
        """The layout record plus the base file and current counts."""
        return {
            **self._layout,
            "file": _base_path(self.directory, self._generation).name if self._generation else None,
            "base_vectors": 0 if self._base is None else int(self._base.ntotal),
            "tombstones": len(self._tombstones),
            "pending": len(self._pending),
        }
