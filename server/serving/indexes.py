"""Serving /v1/indexes: create, list, update, remove and search the named indexes.

`IndexService` owns the index library (definitions on disk), the indexing jobs and one
read-only store handle per index for searches (readers follow the writer's commits). Paths
an index may read are confined to `[indexes] source_roots`. Building and querying use the
served embeddings model; reranking the served cross-encoder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Callable
from typing import Any

from pathspec import GitIgnoreSpec

from lampstand.indexer.chunking import TokenBudget
from lampstand.indexer.library import IndexDefinition, IndexLibrary, check_index_name
from lampstand.indexer.pipeline import INDEX_BUDGET, IndexProgress, document_paths, update_index
from lampstand.indexer.search import SearchQuery, search_index
from lampstand.indexer.sources import SourceOptions
from lampstand.indexer.store import (
    ChunkStore,
    EmbeddingModelMismatch,
    Filters,
    Hit,
    StoreConflict,
    StoreLocked,
    StoreNotFound,
    open_store,
)
from lampstand.indexer.store.catalog import Catalog
from lampstand.plugins.contract import Capability
from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.paths import confine_absolute

from .. import protocol as p
from ..config import IndexSettings
from ..model_pool import ModelPool
from .embeddings import EmbeddingBatcher
from .index_jobs import IndexJob, IndexJobs
from .index_models import PoolEmbedder, PoolReranker

__all__ = ["IndexService"]


class IndexService:
    """Everything the index routes do, over one library folder."""

    def __init__(self, settings: IndexSettings, pool: ModelPool, batchers: dict[str, EmbeddingBatcher]) -> None:
        self.settings, self.pool, self.batchers = settings, pool, batchers
        self.library = IndexLibrary(settings.dir)
        self.jobs = IndexJobs()
        self._readers: dict[str, tuple[ChunkStore, int]] = {}  # with the catalog file's inode
        if settings.faiss_device == "cuda":  # refused at start-up when faiss sees no GPU
            from lampstand.indexer.store.faiss_gpu import resolve_device

            resolve_device("cuda")

    # -- models --

    def embedder(self) -> PoolEmbedder:
        """The configured (or first) embeddings model."""
        hosted = self.pool.pick(self.settings.embedding_model, Capability.EMBEDDINGS, "indexing")
        return PoolEmbedder(self.pool, self.batchers, hosted)

    def reranker(self) -> PoolReranker:
        """The configured (or first) cross-encoder; 400 when there is none."""
        return PoolReranker.configured(self.pool, self.settings.reranker_model)

    # -- definitions and jobs --

    async def create(self, body: p.IndexCreateRequest) -> p.IndexCard:
        """Record a new index and start building it."""
        name = check_index_name(body.name)
        roots = tuple(str(confine_absolute(path, self.settings.source_roots)) for path in body.paths)
        document_paths(roots)  # distinct root names, or 400 now
        self._check_globs(body.include, body.exclude)
        definition = IndexDefinition(name=name, roots=roots, include=tuple(body.include),
                                     exclude=tuple(body.exclude), store=body.store or self.settings.store)
        await asyncio.to_thread(self.library.create, definition)
        return await self._start(definition, rebuild=False, wait=body.wait)

    async def update(self, name: str, body: p.IndexUpdateRequest) -> p.IndexCard:
        """Bring `name` up to date (re-embedding everything with `rebuild`)."""
        definition = await asyncio.to_thread(self.library.get, name)
        if body.rebuild and body.paths is not None:
            raise InvalidRequest("rebuild re-embeds every file; it takes no paths", param="paths")
        for path in body.paths or ():
            _check_index_path(path)
        return await self._start(definition, rebuild=body.rebuild, wait=body.wait, only=body.paths)

    async def register(self, definition: IndexDefinition) -> None:
        """Record an index over a folder the server itself owns (a vector store's files), so
        its roots are not confined to `source_roots`."""
        await asyncio.to_thread(self.library.create, definition)

    async def index_paths(self, name: str, paths: list[str], budget: TokenBudget) -> IndexJob:
        """Bring the named index paths of `name` up to date, chunked within `budget`, and
        return the finished run (after any run already going on it)."""
        definition = await asyncio.to_thread(self.library.get, name)
        await self._start(definition, rebuild=False, wait=True, only=paths, budget=budget)
        return self.jobs.latest[name]

    async def _start(self, definition: IndexDefinition, *, rebuild: bool, wait: bool,
                     only: list[str] | None = None, budget: TokenBudget = INDEX_BUDGET) -> p.IndexCard:
        embedder = self.embedder()  # 404/400 now, not inside the job
        if (running := self.jobs.running(definition.name)) is not None:
            if not wait and (rebuild or only is not None):
                raise StoreConflict(f"index {definition.name!r} is being updated; ask again when its run ends, "
                                    "or pass wait: true")
            await running.wait()  # a run that started earlier may not cover what this caller changed
        job = self.jobs.start(definition.name,
                              lambda observe: self._build(definition, embedder, rebuild, observe, only, budget))
        if wait:
            await job.wait()
        return await self.card(definition.name)

    async def _build(self, definition: IndexDefinition, embedder: PoolEmbedder, rebuild: bool,
                     observe: Callable[[IndexProgress], None], only: list[str] | None,
                     budget: TokenBudget = INDEX_BUDGET) -> IndexProgress:
        dim = int((await embedder.embed(["dimension probe"])).shape[1])
        directory = self.library.store_dir(definition.name)
        if rebuild or (definition.store == "qdrant" and not self.settings.qdrant_url):
            self._close_reader(definition.name)  # local Qdrant storage admits one client at a time
        if rebuild:
            await asyncio.to_thread(shutil.rmtree, directory, True)
        try:
            store = await asyncio.to_thread(
                open_store, directory, kind=definition.store, embedding_model=embedder.model_id, dim=dim,
                writable=True, options=self._store_options(definition.store))
        except EmbeddingModelMismatch as exc:
            if exc.recorded is None or exc.wanted is None:
                raise
            (model, dim), (wanted_model, wanted_dim) = exc.recorded, exc.wanted
            raise EmbeddingModelMismatch(
                f"index {definition.name!r} was built with embedding model {model!r} (dim {dim}), not "
                f"{wanted_model!r} (dim {wanted_dim}); rebuild it: `lampstand index update {definition.name} "
                "--rebuild`", recorded=exc.recorded, wanted=exc.wanted) from None
        try:
            options = SourceOptions(include=definition.include, exclude=definition.exclude,
                                    max_bytes=self.settings.max_file_bytes)
            return await update_index(definition, store, embedder, options=options, on_progress=observe,
                                      commit_every=self.settings.commit_every, only=only, budget=budget)
        finally:
            await asyncio.to_thread(store.close)

    def _store_options(self, kind: str) -> dict[str, Any]:
        if kind == "faiss":
            return {"device": self.settings.faiss_device}
        return {"url": self.settings.qdrant_url} if kind == "qdrant" and self.settings.qdrant_url else {}

    @staticmethod
    def _check_globs(include: list[str], exclude: list[str]) -> None:
        for param, globs in (("include", include), ("exclude", exclude)):
            try:
                GitIgnoreSpec.from_lines(globs)
            except (ValueError, TypeError) as exc:
                raise InvalidRequest(f"invalid {param} glob: {exc}", param=param) from None

    async def remove(self, name: str) -> p.IndexDeleted:
        """Stop its job, close its reader, delete its files."""
        check_index_name(name)
        await self.jobs.cancel(name)
        self._close_reader(name)
        await asyncio.to_thread(self.library.remove, name)
        self.jobs.forget(name)
        return p.IndexDeleted(id=name)

    # -- reading --

    def _reader(self, name: str) -> ChunkStore:
        """The cached reader, reopened when the store was replaced (a rebuild by another process)."""
        directory = self.library.store_dir(name)
        try:
            inode = os.stat(directory / Catalog.FILE_NAME).st_ino
        except FileNotFoundError:
            self._close_reader(name)
            raise StoreNotFound(f"no index data at {directory}") from None
        cached = self._readers.get(name)
        if cached is not None and cached[1] == inode:
            return cached[0]
        self._close_reader(name)
        definition = self.library.get(name)
        if definition.store == "qdrant" and not self.settings.qdrant_url and self.jobs.running(name):
            raise StoreLocked(f"index {name!r} is being updated, and its embedded Qdrant storage admits one "
                              "client at a time; search again when the run ends (or use a Qdrant server)")
        try:
            reader = open_store(directory, options=self._store_options(definition.store))
        except sqlite3.OperationalError:  # a writer is creating the catalog right now
            raise StoreNotFound(f"index {name!r} is being created") from None
        self._readers[name] = (reader, inode)
        return reader

    def _close_reader(self, name: str) -> None:
        cached = self._readers.pop(name, None)
        if cached is not None:
            cached[0].close()

    async def reader(self, name: str) -> ChunkStore:
        """A read-only handle on `name`'s store; 404 when it has no committed data yet."""
        check_index_name(name)
        try:
            return await asyncio.to_thread(self._reader, name)
        except StoreNotFound:
            await asyncio.to_thread(self.library.get, name)  # 404 for an unknown index
            raise StoreNotFound(f"index {name!r} has no indexed data yet; wait for its first run") from None

    async def card(self, name: str) -> p.IndexCard:
        """What the API shows of one index."""
        definition = await asyncio.to_thread(self.library.get, name)
        job = self.jobs.latest.get(name)
        fields: dict[str, Any] = {}
        try:
            stats = (await self.reader(name)).stats()
            fields = {"embedding_model": stats.embedding_model, "chunks": stats.chunks, "files": stats.files,
                      "generation": stats.generation}
        except (StoreNotFound, StoreLocked):  # no data yet, or embedded Qdrant busy with the run
            pass
        return p.IndexCard(
            id=name, created=definition.created, paths=list(definition.roots), include=list(definition.include),
            exclude=list(definition.exclude), store=definition.store, status=_status(job, fields),
            job=job.card() if job else None, **fields)

    async def definitions(self) -> list[tuple[IndexDefinition, bool]]:
        """Every index's definition and whether it has committed data, without opening stores."""
        def read() -> list[tuple[IndexDefinition, bool]]:
            return [(self.library.get(name), (self.library.store_dir(name) / Catalog.FILE_NAME).exists())
                    for name in self.library.names()]

        return await asyncio.to_thread(read)

    async def list(self) -> p.IndexList:
        """Every index, by name."""
        names = await asyncio.to_thread(self.library.names)
        return p.IndexList(data=[await self.card(name) for name in names])

    async def search(self, name: str, body: p.IndexSearchRequest) -> p.SearchResponse:
        """The chunks of `name` that best answer the query."""
        hits = await self.retrieve(name, body.query, top_k=body.top_k, mode=body.mode, rerank=body.rerank,
                                   filters=body.filters, expand=body.expand)
        return p.SearchResponse(index=name, mode=body.mode, reranked=body.rerank,
                                data=[_result(hit) for hit in hits])

    async def retrieve(self, name: str, text: str, *, top_k: int | None, mode: str, rerank: bool,
                       filters: p.IndexFilters | None, expand: bool = False) -> list[Hit]:
        """Ranked hits (shared by search and rag)."""
        settings = self.settings
        if len(text) > settings.max_query_chars:
            raise InvalidRequest(f"query is longer than {settings.max_query_chars} characters", param="query")
        top_k = top_k or settings.top_k
        if top_k > settings.max_top_k:
            raise InvalidRequest(f"top_k must be at most {settings.max_top_k}", param="top_k")
        reranker = self.reranker() if rerank else None
        store = await self.reader(name)
        embedder = self.embedder()
        if embedder.model_id != store.embedding_model:
            raise InvalidRequest(
                f"index {name!r} was built with embedding model {store.embedding_model!r}, but queries would "
                f"use {embedder.model_id!r}; rebuild it (`lampstand index update {name} --rebuild`)", param="index")
        query = SearchQuery(text=text, top_k=top_k, mode=mode,  # type: ignore[arg-type]
                            filters=_filters(filters), rerank_candidates=settings.rerank_candidates, expand=expand)
        return await search_index(store, query, embedder.embed_query, reranker.rerank if reranker else None)

    async def close(self) -> None:
        """Stop jobs and close readers (shutdown)."""
        await self.jobs.close()
        for name in list(self._readers):
            self._close_reader(name)


def _check_index_path(path: str) -> None:
    """An indexed path as the index names it: relative, `/`-separated, no `.`, `..` or empty parts."""
    parts = path.rstrip("/").split("/")
    if "\0" in path or "\\" in path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InvalidRequest(f"invalid indexed path {path[:200]!r}: name it relative to the index, "
                             "without '.', '..' or empty parts", param="paths")


def _status(job: Any, fields: dict[str, Any]) -> str:
    if job is not None and job.status == "running":
        return "indexing"
    if job is not None and job.status == "failed" and not fields:
        return "failed"
    return "ready" if fields else "empty"


def _filters(filters: p.IndexFilters | None) -> Filters | None:
    if filters is None:
        return None
    return Filters(path_glob=filters.path_glob, language=filters.language)


def _result(hit: Hit) -> p.SearchResult:
    chunk = hit.chunk
    return p.SearchResult(rank=hit.rank, score=hit.score, path=chunk.path, start_line=chunk.start_line,
                          end_line=chunk.end_line, language=chunk.language, kind=chunk.kind,
                          context=list(chunk.context), text=chunk.text, chunk_id=chunk.chunk_id)
