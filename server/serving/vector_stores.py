"""Serving /v1/vector_stores: OpenAI's vector stores, each an index over uploaded files.

A store `vs_<hex>` is an index of the same name (so `rag:vs_<hex>` and /v1/indexes see it too)
whose one root is `<[vector_stores] dir>/<store id>/files`. Attaching an uploaded file links
its content to `files/<file id>/<filename>` there, records it `in_progress` and queues it;
one worker per store indexes everything queued with the folder indexes' chunkers (Markdown,
code, PDF) and sets each file `completed` or `failed` with the reason. Files still queued when
the server stopped are queued again when it starts. Folder indexes (`lampstand index add`)
are listed as read-only stores under their index name. Searches are hybrid, reranked only
when `[indexes] reranker_model` names a cross-encoder; attribute filters narrow them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lampstand.indexer.chunking import TokenBudget
from lampstand.indexer.library import IndexDefinition
from lampstand.indexer.pipeline import INDEX_BUDGET
from lampstand.indexer.search import hybrid_relevance
from lampstand.indexer.sources import SkipReason, SourceOptions, SourceRules
from lampstand.indexer.store import Hit, StoreNotFound
from lampstand.plugins.errors import InvalidRequest, LampstandError, NotFound

from .. import protocol_vector_stores as v
from ..protocol import FileObject
from ..config import IndexSettings, VectorStoreSettings
from ..fine_tuning import FileStore, paginate
from ..vector_store_registry import FileRow, StoreRow, VectorStoreRegistry
from .attribute_filters import matches
from .indexes import IndexService

__all__ = ["VectorStoreService", "FoundText", "STORE_PREFIX"]

log = logging.getLogger(__name__)
STORE_PREFIX, BATCH_PREFIX = "vs_", "vsfb_"
INVALID_FILE = {SkipReason.TOO_LARGE, SkipReason.NOT_UTF8, SkipReason.ENCRYPTED, SkipReason.UNREADABLE}


def _now() -> int:
    return int(time.time())


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class FoundText:
    """One search result as the vector-stores API and `file_search` name it."""

    store_id: str
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any]
    hit: Hit


class VectorStoreService:
    """Everything the vector-store routes and the `file_search` tool do."""

    def __init__(self, settings: VectorStoreSettings, index_settings: IndexSettings, indexes: IndexService,
                 files: FileStore) -> None:
        self.settings, self.index_settings, self.indexes, self.files = settings, index_settings, indexes, files
        self.registry = VectorStoreRegistry(settings.dir)
        self._queued: dict[str, set[str]] = {}  # store id -> file ids waiting for its worker
        self._workers: dict[str, asyncio.Task[None]] = {}

    # -- start and stop --

    async def start(self) -> None:
        """Queue again the files a stopped server left in progress."""
        for row in await self.registry.files(status="in_progress"):
            self._queue(row.store_id, [row.file_id])

    async def close(self) -> None:
        """Stop the workers (their files stay in progress, and are queued again at start)."""
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self.registry.close()

    # -- stores --

    def _folder(self, store_id: str) -> Path:
        return self.settings.dir / store_id / "files"

    async def _row(self, store_id: str, *, writable: bool = False) -> StoreRow:
        """The store's record; 404 when unknown. A folder index raises `_ReadOnly`, or a 400
        when the caller would change it."""
        if store_id.startswith(STORE_PREFIX) and (row := await self.registry.store(store_id)) is not None:
            return row
        if await self._folder_index(store_id):
            if writable:
                raise InvalidRequest(f"vector store '{store_id}' is a folder index (`lampstand index add`), "
                                     "read-only here: change it with `lampstand index`", param="vector_store_id")
            raise _ReadOnly(store_id)
        raise NotFound(f"No vector store found with id '{store_id[:100]}'", param="vector_store_id")

    async def _folder_index(self, name: str) -> bool:
        if name.startswith(STORE_PREFIX):
            return False
        return any(definition.name == name for definition, _ in await self.indexes.definitions())

    async def create(self, body: v.VectorStoreCreateRequest) -> v.VectorStoreObject:
        """A new store, with `file_ids` attached and queued."""
        if len(await self.registry.stores()) >= self.settings.max_stores:
            raise InvalidRequest(f"there are already {self.settings.max_stores} vector stores "
                                 "([vector_stores] max_stores); delete one first", param="name")
        budget = _budget(body.chunking_strategy, None)
        files = [self._upload(file_id, f"file_ids[{i}]") for i, file_id in enumerate(body.file_ids)]
        store_id, now = _new_id(STORE_PREFIX), _now()
        row = StoreRow(store_id, body.name or "", now, now, body.expires_after.days if body.expires_after else None,
                       body.metadata or {}, budget.max_tokens, budget.overlap_tokens, body.description)
        self._folder(store_id).mkdir(parents=True, exist_ok=True)
        await self.indexes.register(IndexDefinition(name=store_id, roots=(str(self._folder(store_id)),),
                                                    store=self.index_settings.store))
        await self.registry.add_store(row)
        if files:
            await self._attach(row, [(upload, {}) for upload in files], None)
        return await self._object(row)

    async def list(self, *, limit: int, order: str, after: str | None, before: str | None) -> v.VectorStoreList:
        """Uploaded-file stores and folder indexes, by creation time."""
        objects = [await self._object(row) for row in await self.registry.stores()]
        known = {o.id for o in objects}
        for definition, built in await self.indexes.definitions():
            if definition.name not in known:
                objects.append(await self._folder_object(definition, built))
        objects.sort(key=lambda o: (o.created_at, o.id), reverse=order == "desc")
        return v.VectorStoreList(**_page(objects, limit, after, before))

    async def get(self, store_id: str) -> v.VectorStoreObject:
        """One store."""
        try:
            return await self._object(await self._row(store_id))
        except _ReadOnly:
            return await self._folder_object(*await self._definition(store_id))

    async def update(self, store_id: str, body: v.VectorStoreUpdateRequest) -> v.VectorStoreObject:
        """Rename, describe, re-tag or change the expiry of a store (only the fields sent change)."""
        row = await self._row(store_id, writable=True)
        fields: dict[str, Any] = {}
        if "name" in body.model_fields_set:
            fields["name"] = body.name or ""
        if "description" in body.model_fields_set:
            fields["description"] = body.description
        if "metadata" in body.model_fields_set:
            fields["metadata"] = body.metadata or {}
        if "expires_after" in body.model_fields_set:
            fields["expires_days"] = body.expires_after.days if body.expires_after else None
        if fields:
            await self.registry.update_store(row.id, **fields)
        return await self._object(await self._row(store_id))

    async def delete(self, store_id: str) -> v.VectorStoreDeleted:
        """Stop its worker and delete its index, its file copies and its records (never the uploads)."""
        row = await self._row(store_id, writable=True)
        worker = self._workers.pop(row.id, None)
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        self._queued.pop(row.id, None)
        try:
            await self.indexes.remove(row.id)
        except (StoreNotFound, NotFound):
            pass  # a crash between its record and its index
        await asyncio.to_thread(shutil.rmtree, self.settings.dir / row.id, True)
        await self.registry.remove_store(row.id)
        return v.VectorStoreDeleted(id=row.id)

    async def _object(self, row: StoreRow) -> v.VectorStoreObject:
        files = await self.registry.files(row.id)
        counts = _counts(files)
        expires_at = row.expires_at
        status = "expired" if expires_at is not None and expires_at <= _now() else \
            "in_progress" if counts.in_progress else "completed"
        return v.VectorStoreObject(
            id=row.id, created_at=row.created_at, name=row.name, description=row.description,
            usage_bytes=sum(f.usage_bytes for f in files if f.status == "completed"), file_counts=counts,
            status=status, expires_after={"anchor": "last_active_at", "days": row.expires_days}
            if row.expires_days is not None else None, expires_at=expires_at, last_active_at=row.last_active_at,
            metadata=row.metadata)

    async def _definition(self, name: str) -> tuple[IndexDefinition, bool]:
        for definition, built in await self.indexes.definitions():
            if definition.name == name:
                return definition, built
        raise NotFound(f"No vector store found with id '{name[:100]}'", param="vector_store_id")

    async def _folder_object(self, definition: IndexDefinition, built: bool) -> v.VectorStoreObject:
        card = await self.indexes.card(definition.name)
        files = card.files or 0
        indexing = card.status == "indexing"
        return v.VectorStoreObject(
            id=definition.name, created_at=definition.created, name=definition.name,
            file_counts=v.FileCounts(completed=files, total=files), status="in_progress" if indexing or not built
            else "completed", metadata={"paths": ", ".join(definition.roots)[:512]}, read_only=True)

    # -- files --

    async def add_file(self, store_id: str, body: v.VectorStoreFileCreateRequest) -> v.VectorStoreFileObject:
        """Attach an uploaded file and queue it."""
        row = await self._row(store_id, writable=True)
        _budget(body.chunking_strategy, _row_budget(row), param="chunking_strategy")
        upload = self._upload(body.file_id, "file_id")
        [attached] = await self._attach(row, [(upload, body.attributes or {})], None)
        return _file_object(attached, row)

    def _upload(self, file_id: str, param: str) -> FileObject:
        """An uploaded file a store may take: 404 for an unknown id, 400 for another purpose."""
        upload = self.files.get(file_id, param)
        if upload.purpose not in STORE_PURPOSES:
            raise InvalidRequest(f"file '{file_id}' was uploaded with purpose '{upload.purpose}'; a vector store "
                                 f"takes files uploaded with purpose {' or '.join(STORE_PURPOSES)}", param=param)
        return upload

    async def _attach(self, row: StoreRow, uploads: Sequence[tuple[Any, dict[str, Any]]],
                      batch_id: str | None) -> list[FileRow]:
        known = {f.file_id: f for f in await self.registry.files(row.id)}
        if len(set(known) | {u.id for u, _ in uploads}) > self.settings.max_files_per_store:
            raise InvalidRequest(f"a vector store holds at most {self.settings.max_files_per_store} files "
                                 "([vector_stores] max_files_per_store)", param="file_id")
        for upload, _ in uploads:
            if (earlier := known.get(upload.id)) is not None and earlier.status == "in_progress":
                raise InvalidRequest(f"file '{upload.id}' is still being processed in vector store '{row.id}'; "
                                     "wait until its status is completed", param="file_id")
        now = _now()
        rows = []
        for upload, attributes in uploads:
            path = f"{upload.id}/{upload.filename}"
            await asyncio.to_thread(self._link, row.id, upload.id, path)
            rows.append(FileRow(row.id, upload.id, path, now, "in_progress", None, None, 0, attributes, batch_id))
        await self.registry.add_files(rows, (batch_id, now) if batch_id else None)
        self._queue(row.id, [r.file_id for r in rows])
        return rows

    def _link(self, store_id: str, file_id: str, path: str) -> None:
        target = self._folder(store_id) / path
        shutil.rmtree(target.parent, ignore_errors=True)  # attached again: the file's current content
        target.parent.mkdir(parents=True)
        self.files.link_into(file_id, target, "file_id")

    async def list_files(self, store_id: str, *, limit: int, order: str, after: str | None, before: str | None,
                         status: str | None, batch_id: str | None = None) -> v.VectorStoreFileList:
        """A page of a store's (or one batch's) files."""
        row = await self._writable_or_empty(store_id)
        if row is None:
            return v.VectorStoreFileList(data=[])
        found = [_file_object(f, row) for f in await self.registry.files(row.id, batch_id=batch_id, status=status)]
        if order == "desc":
            found.reverse()
        return v.VectorStoreFileList(**_page(found, limit, after, before))

    async def _writable_or_empty(self, store_id: str) -> StoreRow | None:
        try:
            return await self._row(store_id)
        except _ReadOnly:
            return None  # a folder index has files, but no uploaded ones

    async def _file_row(self, store_id: str, file_id: str) -> tuple[StoreRow, FileRow]:
        row = await self._row(store_id, writable=True)
        found = await self.registry.file(row.id, file_id)
        if found is None:
            raise NotFound(f"No file '{file_id[:100]}' in vector store '{row.id}'", param="file_id")
        return row, found

    async def get_file(self, store_id: str, file_id: str) -> v.VectorStoreFileObject:
        """One attached file and its status."""
        row, found = await self._file_row(store_id, file_id)
        return _file_object(found, row)

    async def update_file(self, store_id: str, file_id: str,
                          body: v.VectorStoreFileUpdateRequest) -> v.VectorStoreFileObject:
        """Replace a file's attributes (searches filter on them at once, no re-indexing)."""
        row, found = await self._file_row(store_id, file_id)
        await self.registry.set_attributes(row.id, found.file_id, body.attributes or {})
        return await self.get_file(store_id, file_id)

    async def delete_file(self, store_id: str, file_id: str) -> v.VectorStoreFileDeleted:
        """Take a file out of the store (the upload itself stays in /v1/files)."""
        row, found = await self._file_row(store_id, file_id)
        await self.registry.remove_file(row.id, found.file_id)
        self._queued.get(row.id, set()).discard(found.file_id)
        await asyncio.to_thread(shutil.rmtree, self._folder(row.id) / found.file_id, True)
        self._queue(row.id, [found.file_id])  # the worker drops its chunks from the index
        return v.VectorStoreFileDeleted(id=found.file_id)

    async def file_content(self, store_id: str, file_id: str) -> v.VectorStoreFileContent:
        """The file's text as it was indexed (a PDF's extracted text)."""
        row, found = await self._file_row(store_id, file_id)
        loaded = await asyncio.to_thread(self._load, row.id, found.path)
        if isinstance(loaded, SkipReason):
            raise InvalidRequest(f"file '{file_id}' has no indexed text ({loaded.value})", param="file_id")
        return v.VectorStoreFileContent(data=[v.FileContentPart(text=loaded.text)])

    def _load(self, store_id: str, path: str) -> Any:
        folder = self._folder(store_id)
        return SourceRules(folder, SourceOptions(max_bytes=self.index_settings.max_file_bytes)).load(folder / path)

    # -- batches --

    async def create_batch(self, store_id: str, body: v.FileBatchCreateRequest) -> v.FileBatchObject:
        """Attach several files at once; the batch completes when all of them have."""
        row = await self._row(store_id, writable=True)
        budget = _row_budget(row)
        _budget(body.chunking_strategy, budget, param="chunking_strategy")
        given = [(file_id, body.attributes or {}) for file_id in body.file_ids] or \
            [(f.file_id, f.attributes or body.attributes or {}) for f in body.files]
        for index, entry in enumerate(body.files):
            _budget(entry.chunking_strategy, budget, param=f"files[{index}].chunking_strategy")
        uploads = [(self._upload(file_id, f"file_ids[{i}]"), attributes)
                   for i, (file_id, attributes) in enumerate(given)]
        batch_id = _new_id(BATCH_PREFIX)
        await self._attach(row, uploads, batch_id)
        return await self.get_batch(row.id, batch_id)

    async def get_batch(self, store_id: str, batch_id: str) -> v.FileBatchObject:
        """A batch and its files' counts."""
        row = await self._row(store_id, writable=True)
        found = await self.registry.batch(batch_id)
        if found is None or found[0] != row.id:
            raise NotFound(f"No file batch '{batch_id[:100]}' in vector store '{row.id}'", param="batch_id")
        counts = _counts(await self.registry.files(row.id, batch_id=batch_id))
        status = "in_progress" if counts.in_progress else "cancelled" if counts.cancelled else \
            "failed" if counts.failed == counts.total and counts.total else "completed"
        return v.FileBatchObject(id=batch_id, created_at=found[1], vector_store_id=row.id, status=status,
                                 file_counts=counts)

    async def cancel_batch(self, store_id: str, batch_id: str) -> v.FileBatchObject:
        """Cancel the batch's files not yet indexed (those indexed stay)."""
        await self.get_batch(store_id, batch_id)
        waiting = [f.file_id for f in await self.registry.files(store_id, batch_id=batch_id, status="in_progress")]
        queued = self._queued.get(store_id, set())
        queued.difference_update(waiting)
        await self.registry.set_status(store_id, waiting, "cancelled", only_from="in_progress")
        return await self.get_batch(store_id, batch_id)

    # -- processing --

    def _queue(self, store_id: str, file_ids: Sequence[str]) -> None:
        self._queued.setdefault(store_id, set()).update(file_ids)
        worker = self._workers.get(store_id)
        if worker is None or worker.done():
            self._workers[store_id] = asyncio.create_task(self._work(store_id), name=f"vector store {store_id}")

    async def _work(self, store_id: str) -> None:
        """Index what is queued, in rounds, until nothing is."""
        while self._queued.get(store_id):
            file_ids, self._queued[store_id] = sorted(self._queued[store_id]), set()
            try:
                await self._process(store_id, file_ids)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed round fails its files, with the reason
                log.exception("vector store indexing failed", extra={"vector_store": store_id})
                message = exc.message if isinstance(exc, LampstandError) else f"{type(exc).__name__}: {exc}"
                await self.registry.set_status(store_id, file_ids, "failed", error=("server_error", message),
                                               only_from="in_progress")

    async def _process(self, store_id: str, file_ids: list[str]) -> None:
        row = await self.registry.store(store_id)
        if row is None:
            return
        attached = {f.file_id: f for f in await self.registry.files(store_id) if f.file_id in file_ids}
        paths, failed = [], {}
        for file_id in file_ids:
            found = attached.get(file_id)
            if found is None:  # detached: its chunks leave the index
                paths.append(f"{file_id}/")
                continue
            if found.status != "in_progress":
                continue
            loaded = await asyncio.to_thread(self._load, store_id, found.path)
            if isinstance(loaded, SkipReason):
                failed[file_id] = _skip_error(loaded, found.path)
            paths.append(found.path)
        if not paths:
            return
        job = await self.indexes.index_paths(store_id, paths, _row_budget(row))
        if job.status != "succeeded":
            error = ("server_error", job.error or f"indexing {job.status}")
            await self.registry.set_status(store_id, [f for f in attached if f not in failed], "failed",
                                           error=error, only_from="in_progress")
        indexed = set((await self.indexes.reader(store_id)).files()) if job.status == "succeeded" else set()
        for file_id, found in attached.items():
            if file_id in failed:
                await self.registry.set_status(store_id, [file_id], "failed", error=failed[file_id],
                                               only_from="in_progress")
            elif found.path in indexed:
                size = (self._folder(store_id) / found.path).stat().st_size
                await self.registry.set_status(store_id, [file_id], "completed", only_from="in_progress",
                                               usage_bytes={file_id: size})
            elif job.status == "succeeded":
                await self.registry.set_status(store_id, [file_id], "failed", only_from="in_progress", error=(
                    "invalid_file", "the file has no text to index"))

    # -- search --

    async def search(self, store_id: str, body: v.VectorStoreSearchRequest,
                     rewritten: str | None = None) -> v.VectorStoreSearchPage:
        """The passages of one store that best answer the query (`rewritten`, when a model
        rewrote it: it is the `search_query` reported)."""
        queries = [rewritten] if rewritten else [body.query] if isinstance(body.query, str) else body.query
        found = await self.search_stores([store_id], " ".join(queries), max_num_results=body.max_num_results,
                                         filters=body.filters, ranking=body.ranking_options)
        return v.VectorStoreSearchPage(search_query=queries, data=[
            v.VectorStoreSearchResult(file_id=f.file_id, filename=f.filename, score=round(f.score, 6),
                                      attributes=f.attributes, content=[v.SearchContent(text=f.hit.chunk.text)])
            for f in found])

    async def search_stores(self, store_ids: Sequence[str], query: str, *, max_num_results: int,
                            filters: v.AttributeFilter | None, ranking: v.RankingOptionsIn | None,
                            require_ready: bool = False) -> list[FoundText]:
        """The best `max_num_results` passages across `store_ids`, best first; with
        `require_ready`, a store with files still in progress is a 400 (file_search)."""
        if not query.strip():
            raise InvalidRequest("the search query is empty", param="query")
        if max_num_results > self.settings.max_num_results:
            raise InvalidRequest(f"max_num_results must be at most {self.settings.max_num_results}",
                                 param="max_num_results")
        ranking = ranking or v.RankingOptionsIn()
        rerank = ranking.ranker != "none" and self.index_settings.reranker_model is not None
        found: list[FoundText] = []
        for store_id in dict.fromkeys(store_ids):
            found += await self._search_one(store_id, query, max_num_results, filters, rerank, require_ready)
        found = [f for f in found if f.score >= ranking.score_threshold]
        return sorted(found, key=lambda f: -f.score)[:max_num_results]

    async def _search_one(self, store_id: str, query: str, wanted: int, filters: v.AttributeFilter | None,
                          rerank: bool, require_ready: bool) -> list[FoundText]:
        try:
            row: StoreRow | None = await self._row(store_id)
        except _ReadOnly:
            row = None
        attributes: dict[str, dict[str, Any]] = {}
        if row is not None:
            if row.expires_at is not None and row.expires_at <= _now():
                raise InvalidRequest(f"vector store '{row.id}' has expired", param="vector_store_id")
            files = await self.registry.files(row.id)
            if require_ready and (busy := [f.file_id for f in files if f.status == "in_progress"]):
                raise InvalidRequest(f"vector store '{row.id}' is still processing {len(busy)} file(s) "
                                     f"({busy[0]}, ...); wait until its status is completed", param="vector_store_id")
            attributes = {f.path: f.attributes for f in files if f.status == "completed"}
            await self.registry.update_store(row.id, last_active_at=_now())
            if not attributes:
                return []
        most = self.index_settings.max_top_k
        # over-fetch when some hits may be dropped: by the filter, or in files not (yet) attached
        top_k = most if filters is not None else min(wanted * 2, most) if row is not None else wanted
        hits = await self.indexes.retrieve(store_id, query, top_k=min(max(top_k, wanted), most),
                                           mode="hybrid", rerank=rerank, filters=None)
        found = []
        for hit in hits:
            path = hit.chunk.path
            if row is not None:
                if path not in attributes:  # indexed, but detached or not yet completed
                    continue
                file_id, _, filename = path.partition("/")
                tags = attributes[path]
            else:
                file_id, filename = path, path.rsplit("/", 1)[-1]
                tags = {"path": path, "language": hit.chunk.language}
            if filters is not None and not matches(filters, tags):
                continue
            score = 1 / (1 + math.exp(-hit.score)) if rerank else hybrid_relevance(hit.score)
            found.append(FoundText(store_id, file_id, filename, score, tags, hit))
        return found[:wanted]


class _ReadOnly(Exception):
    """Internal: the id names a folder index, not an uploaded-file store."""


STORE_PURPOSES = ("assistants", "user_data")


def _budget(strategy: v.ChunkingStrategyIn | None, store: TokenBudget | None, param: str = "chunking_strategy"
            ) -> TokenBudget:
    """The chunk sizes a strategy asks for. `store`: the sizes of the store a file joins, which
    it must keep (other static sizes are a 400); None for a new store."""
    if strategy is None or strategy.type == "auto" or strategy.static is None:
        return store or INDEX_BUDGET
    asked = TokenBudget(max_tokens=strategy.static.max_chunk_size_tokens,
                        overlap_tokens=strategy.static.chunk_overlap_tokens)
    if store is not None and (asked.max_tokens, asked.overlap_tokens) != (store.max_tokens, store.overlap_tokens):
        raise InvalidRequest("a vector store chunks all its files alike: this one uses "
                             f"{store.max_tokens} tokens with {store.overlap_tokens} overlap", param=param)
    return asked


def _row_budget(row: StoreRow) -> TokenBudget:
    if (row.chunk_tokens, row.overlap_tokens) == (INDEX_BUDGET.max_tokens, INDEX_BUDGET.overlap_tokens):
        return INDEX_BUDGET
    return TokenBudget(max_tokens=row.chunk_tokens, overlap_tokens=row.overlap_tokens)


def _skip_error(reason: SkipReason, path: str) -> tuple[str, str]:
    name = path.partition("/")[2]
    if reason in INVALID_FILE:
        return "invalid_file", f"{name}: {reason.value.replace('_', ' ')}"
    return "unsupported_file", (f"{name}: not a kind of file this server indexes ({reason.value.replace('_', ' ')}); "
                                "it reads text, Markdown, code and PDF files by their extension")


def _counts(files: Sequence[FileRow]) -> v.FileCounts:
    counts = {status: sum(f.status == status for f in files) for status in
              ("in_progress", "completed", "failed", "cancelled")}
    return v.FileCounts(**counts, total=len(files))


def _file_object(found: FileRow, row: StoreRow) -> v.VectorStoreFileObject:
    error = v.FileLastError(code=found.error_code, message=found.error_message or "") if found.error_code else None
    return v.VectorStoreFileObject(
        id=found.file_id, usage_bytes=found.usage_bytes, created_at=found.created_at, vector_store_id=row.id,
        status=found.status, last_error=error, attributes=found.attributes,  # type: ignore[arg-type]
        chunking_strategy=v.ChunkingStrategyOut(static={"max_chunk_size_tokens": row.chunk_tokens,
                                                        "chunk_overlap_tokens": row.overlap_tokens}))


def _page(items: list[Any], limit: int, after: str | None, before: str | None) -> dict[str, Any]:
    """OpenAI's cursor page: `limit` items after `after` (or before `before`)."""
    if before is not None:
        ids = [item.id for item in items]
        if before not in ids:
            raise NotFound(f"No object with id {before[:100]!r} to list before", param="before")
        items = items[:ids.index(before)][-limit:]
        page, more = items, False
    else:
        page, more = paginate(items, after, limit)
    return {"data": page, "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": more}
