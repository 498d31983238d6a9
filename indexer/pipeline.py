"""Bringing an index up to date with its sources: scan, diff, chunk, embed, store.

`update_index` scans the definition's roots, compares each file's content hash with the
store's manifest, removes what was deleted, and re-chunks and re-embeds only what changed.
Work is committed every `commit_every` chunks (and at the end), so a run that is killed or
cancelled resumes where it stopped: committed files match the manifest and are skipped.

Chunking for the next batch runs in a thread while the current batch is being embedded, so
the embedder (in its own worker process) is kept busy. The embedder is anything with an
async `embed`; this module never imports an engine and never touches HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from lampstand.plugins.errors import InvalidRequest

from .chunking import TokenBudget, chunk_file
from .chunks import Chunk
from .library import IndexDefinition
from .sources import SkipCounts, SkipReason, SourceFile, SourceOptions, SourceRules, iter_sources
from .store import ChunkStore

__all__ = ["Embedder", "IndexProgress", "chunk_passage", "document_paths", "index_path", "update_index", "EMBED_BATCH",
           "INDEX_BUDGET"]

EMBED_BATCH = 64  # chunks per embedding call: a query waits behind at most one of these
# Chunks grouped (whole files) and sorted by length before embedding; at 512, padding cost 3.5%
# against one sort of everything.
CHUNK_BATCH = 1024
COMPACT_AFTER = 2048  # chunks added in one run that make the final commit fold the vectors
# Chunk text plus the passage header must fit the embedder's 256 tokens (all-MiniLM-L6-v2).
INDEX_BUDGET = TokenBudget(max_tokens=224, overlap_tokens=32)


class Embedder(Protocol):
    """Turns passages into vectors; `model_id` is recorded in the store."""

    model_id: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, one row per text in order."""


@dataclass
class IndexProgress:
    """Where a run stands; the same object is the final report."""

    phase: str = "scanning"  # scanning, indexing, committing, done
    files_seen: int = 0
    files_total: int = 0  # files to (re)index
    files_done: int = 0
    files_unchanged: int = 0
    files_deleted: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    embedded: int = 0
    embed_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def embeddings_per_second(self) -> float:
        """Chunks embedded per second of waiting for the embedder."""
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0

    @property
    def seconds(self) -> float:
        """Time since the run started."""
        return time.monotonic() - self.started


def chunk_passage(chunk: Chunk) -> str:
    """What is embedded for a chunk: its path and heading or symbol path, then its text."""
    where = " > ".join(chunk.context)
    return f"{chunk.path}{': ' + where if where else ''}\n{chunk.text}"


def document_paths(roots: Sequence[str]) -> Callable[[SourceFile], str]:
    """How a file is named in the index: root-relative for one root, `<root name>/...` for several."""
    if len(roots) == 1:
        return lambda source: source.rel_path
    names = [Path(root).name for root in roots]
    if len(set(names)) != len(names):
        raise InvalidRequest("the roots of one index need distinct folder names", param="paths")
    by_root = {str(Path(root)): name for root, name in zip(roots, names, strict=True)}
    return lambda source: f"{by_root[str(source.root)]}/{source.rel_path}"


def index_path(roots: Sequence[str], root: str, rel_path: str) -> str:
    """The index's name for `rel_path` under `root` (see `document_paths`)."""
    return rel_path if len(roots) == 1 else f"{Path(root).name}/{rel_path}"


def _locate(roots: Sequence[str], path: str) -> tuple[str, str] | None:
    """(root, root-relative path) of an index path; None when no root can hold it."""
    if len(roots) == 1:
        return roots[0], path
    head, _, rest = path.partition("/")
    matches = [root for root in roots if Path(root).name == head]
    return (matches[0], rest) if matches and rest else None


def _file_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Plan:
    changed: list[tuple[str, SourceFile, str]]  # (index path, file, hash)
    deleted: list[str]


def _plan(definition: IndexDefinition, options: SourceOptions, manifest: dict[str, str],
          progress: IndexProgress) -> _Plan:
    """Scan the roots once; keep the text of changed files only."""
    for root in definition.roots:
        if not Path(root).exists():  # an unmounted drive must not delete its files from the index
            raise InvalidRequest(f"{root} does not exist (not mounted?); nothing was changed", param="paths")
    name_of = document_paths(definition.roots)
    skipped = SkipCounts()
    changed, seen = [], set()
    for source in iter_sources(definition.roots, options, skipped):
        path = name_of(source)
        seen.add(path)
        progress.files_seen += 1
        digest = _file_hash(source.text)
        if manifest.get(path) == digest:
            progress.files_unchanged += 1
        else:
            changed.append((path, source, digest))
    progress.skipped = skipped.as_dict()
    return _Plan(changed, sorted(set(manifest) - seen))


def _plan_paths(definition: IndexDefinition, options: SourceOptions, manifest: dict[str, str],
                only: Sequence[str], progress: IndexProgress) -> _Plan:
    """Look at the named index paths only (a watcher's batch); a path ending in `/` stands for
    everything indexed below it. A path that is gone, or no longer picked, leaves the index."""
    wanted = {path for path in only if not path.endswith("/")}
    for folder in (path for path in only if path.endswith("/")):
        wanted.update(known for known in manifest if known.startswith(folder))
    rules = {root: SourceRules(root, options) for root in definition.roots if Path(root).is_dir()}
    changed, deleted = [], []
    for path in sorted(wanted):
        place = _locate(definition.roots, path)
        loaded = rules[place[0]].load(Path(place[0]) / place[1]) if place and place[0] in rules else None
        progress.files_seen += 1
        if loaded is None or isinstance(loaded, SkipReason):
            if path in manifest:
                deleted.append(path)
        elif manifest.get(path) == (digest := _file_hash(loaded.text)):
            progress.files_unchanged += 1
        else:
            changed.append((path, loaded, digest))
    return _Plan(changed, deleted)


@dataclass
class _Batch:
    files: list[tuple[str, str, list[Chunk]]]  # (index path, hash, chunks)

    @property
    def chunks(self) -> list[Chunk]:
        return [chunk for _, _, chunks in self.files for chunk in chunks]


def _batches(changed: list[tuple[str, SourceFile, str]], budget: TokenBudget, size_limit: int) -> Iterator[_Batch]:
    """Whole files grouped until a batch holds at least `size_limit` chunks."""
    batch = _Batch([])
    size = 0
    for path, source, digest in changed:
        chunks = chunk_file(path, source.text, source.language, source.kind, budget)
        batch.files.append((path, digest, chunks))
        size += len(chunks)
        if size >= size_limit:
            yield batch
            batch, size = _Batch([]), 0
    if batch.files:
        yield batch


async def _embed(embedder: Embedder, chunks: list[Chunk], progress: IndexProgress) -> np.ndarray:
    """Vectors in chunk order; calls go out sorted by length, so each call pads little."""
    passages = [chunk_passage(c) for c in chunks]
    order = sorted(range(len(passages)), key=lambda i: len(passages[i]))
    started = time.monotonic()
    parts = [await embedder.embed([passages[i] for i in order[at:at + EMBED_BATCH]])
             for at in range(0, len(order), EMBED_BATCH)]
    progress.embed_seconds += time.monotonic() - started
    progress.embedded += len(chunks)
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = np.empty((len(chunks), parts[0].shape[1]), dtype=np.float32)
    vectors[order] = np.concatenate(parts)
    return vectors


def _write(store: ChunkStore, batch: _Batch, vectors: np.ndarray, progress: IndexProgress) -> None:
    start = 0
    for path, digest, chunks in batch.files:
        progress.chunks_removed += store.delete_paths([path])
        store.replace_file(path, digest, chunks, vectors[start:start + len(chunks)].reshape(len(chunks), store.dim))
        start += len(chunks)
        progress.chunks_added += len(chunks)
        progress.files_done += 1


async def update_index(
    definition: IndexDefinition,
    store: ChunkStore,
    embedder: Embedder,
    *,
    options: SourceOptions | None = None,
    budget: TokenBudget = INDEX_BUDGET,
    commit_every: int = 1024,
    only: Sequence[str] | None = None,
    on_progress: Callable[[IndexProgress], None] = lambda progress: None,
) -> IndexProgress:
    """Make `store` (opened for writing) match the definition's sources; returns the report.

    With `only` (index paths, `folder/` for a whole folder), just those are looked at.
    """
    progress = IndexProgress()
    options = options or SourceOptions(include=definition.include, exclude=definition.exclude)
    manifest = await asyncio.to_thread(store.files)
    if only is None:
        plan = await asyncio.to_thread(_plan, definition, options, manifest, progress)
    else:
        plan = await asyncio.to_thread(_plan_paths, definition, options, manifest, only, progress)
    progress.phase, progress.files_total = "indexing", len(plan.changed)
    on_progress(progress)
    for path in plan.deleted:
        progress.chunks_removed += await asyncio.to_thread(store.delete_paths, [path])
    progress.files_deleted = len(plan.deleted)
    pending_chunks = 0
    batches = _batches(plan.changed, budget, min(CHUNK_BATCH, commit_every))
    upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    while (batch := await upcoming) is not None:
        upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))  # chunk ahead
        vectors = await _embed(embedder, batch.chunks, progress)
        await asyncio.to_thread(_write, store, batch, vectors, progress)
        pending_chunks += len(batch.chunks)
        if pending_chunks >= commit_every:
            await asyncio.to_thread(store.commit)
            pending_chunks = 0
        on_progress(progress)
    progress.phase = "committing"
    on_progress(progress)
    await asyncio.to_thread(lambda: store.commit(compact=progress.chunks_added >= COMPACT_AFTER))
    progress.phase = "done"
    on_progress(progress)
    return progress
