"""The vector-stores API's request and response models, with OpenAI's names and wire order.

A vector store is an index over files uploaded to /v1/files (folder indexes are listed too,
read-only). Attribute filters (`ComparisonFilter`, `CompoundFilter`) are shared with the
`file_search` tool of /v1/responses. This module never touches a store or a model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from .protocol import Request, Response

__all__ = [
    "AttributeValue", "Attributes", "ComparisonFilter", "CompoundFilter", "AttributeFilter", "ChunkingStrategyIn",
    "ExpiresAfter", "VectorStoreCreateRequest", "VectorStoreUpdateRequest", "VectorStoreFileCreateRequest",
    "VectorStoreFileUpdateRequest", "FileBatchCreateRequest", "RankingOptionsIn", "VectorStoreSearchRequest",
    "FileCounts", "VectorStoreObject", "VectorStoreList", "VectorStoreDeleted", "FileLastError",
    "ChunkingStrategyOut", "VectorStoreFileObject", "VectorStoreFileList", "VectorStoreFileDeleted",
    "FileBatchObject", "SearchContent", "VectorStoreSearchResult", "VectorStoreSearchPage", "FileContentPart",
    "VectorStoreFileContent", "StaticChunking",
]

Key = Annotated[str, Field(min_length=1, max_length=64)]
AttributeValue = Union[Annotated[str, Field(max_length=512)], bool, int, float]
Attributes = Annotated[dict[Key, AttributeValue], Field(max_length=16)]
Metadata = Annotated[dict[Key, Annotated[str, Field(max_length=512)]], Field(max_length=16)]


# -- attribute filters -------------------------------------------------------------------

class ComparisonFilter(Request):
    """`attributes[key] <type> value`; `in` / `nin` take a list."""

    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: Key
    value: AttributeValue | Annotated[list[Union[Annotated[str, Field(max_length=512)], int, float]],
                                      Field(max_length=256)]

    @model_validator(mode="after")
    def _list_for_in(self) -> ComparisonFilter:
        if (self.type in ("in", "nin")) != isinstance(self.value, list):
            raise ValueError(f"'{self.type}' takes {'a list' if self.type in ('in', 'nin') else 'one value'}")
        return self


class CompoundFilter(Request):
    """Every (`and`) or any (`or`) of its filters."""

    type: Literal["and", "or"]
    filters: Annotated[list[ComparisonFilter | CompoundFilter], Field(min_length=1, max_length=32)]


AttributeFilter = ComparisonFilter | CompoundFilter


# -- requests ----------------------------------------------------------------------------

class StaticChunking(Request):
    max_chunk_size_tokens: int = Field(ge=100, le=4096)
    chunk_overlap_tokens: int = Field(ge=0)

    @model_validator(mode="after")
    def _overlap_at_most_half(self) -> StaticChunking:
        if self.chunk_overlap_tokens * 2 > self.max_chunk_size_tokens:  # OpenAI's default is 800 and 400
            raise ValueError("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens")
        return self


class ChunkingStrategyIn(Request):
    """`auto` (the folder indexes' sizes), or `static` sizes: the chunkers still cut at
    Markdown sections and code definitions, within these token counts."""

    type: Literal["auto", "static"]
    static: StaticChunking | None = None

    @model_validator(mode="after")
    def _static_sizes(self) -> ChunkingStrategyIn:
        if (self.type == "static") != (self.static is not None):
            raise ValueError("'static' chunking takes a 'static' object with its sizes; 'auto' takes none")
        return self


class ExpiresAfter(Request):
    anchor: Literal["last_active_at"]
    days: int = Field(ge=1, le=365)


class VectorStoreCreateRequest(Request):
    """POST /v1/vector_stores."""

    name: str | None = Field(None, max_length=256)
    description: str | None = Field(None, max_length=512)
    file_ids: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=500)] = []
    chunking_strategy: ChunkingStrategyIn | None = None
    expires_after: ExpiresAfter | None = None
    metadata: Metadata | None = None


class VectorStoreUpdateRequest(Request):
    """POST /v1/vector_stores/{id}: only the fields sent change (`expires_after: null` removes it)."""

    name: str | None = Field(None, max_length=256)
    description: str | None = Field(None, max_length=512)
    expires_after: ExpiresAfter | None = None
    metadata: Metadata | None = None


class VectorStoreFileCreateRequest(Request):
    """POST /v1/vector_stores/{id}/files."""

    file_id: str = Field(min_length=1, max_length=128)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategyIn | None = None


class VectorStoreFileUpdateRequest(Request):
    """POST /v1/vector_stores/{id}/files/{file_id}: new attributes."""

    attributes: Attributes | None


class BatchFileIn(Request):
    file_id: str = Field(min_length=1, max_length=128)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategyIn | None = None


class FileBatchCreateRequest(Request):
    """POST /v1/vector_stores/{id}/file_batches: `file_ids` (sharing `attributes`) or `files`."""

    file_ids: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=500)] = []
    files: Annotated[list[BatchFileIn], Field(max_length=500)] = []
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategyIn | None = None

    @model_validator(mode="after")
    def _some_files(self) -> FileBatchCreateRequest:
        if bool(self.file_ids) == bool(self.files):
            raise ValueError("send either file_ids or files (one of them, not empty)")
        return self


class RankingOptionsIn(Request):
    ranker: Literal["none", "auto", "default-2024-11-15"] = "auto"
    score_threshold: float = Field(0.0, ge=0.0, le=1.0)


class VectorStoreSearchRequest(Request):
    """POST /v1/vector_stores/{id}/search."""

    query: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]],
                                                           Field(min_length=1, max_length=8)]
    max_num_results: int = Field(10, ge=1, le=50)
    filters: AttributeFilter | None = None
    ranking_options: RankingOptionsIn | None = None
    rewrite_query: bool = False


# -- responses ---------------------------------------------------------------------------

class FileCounts(Response):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class VectorStoreObject(Response):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    description: str | None = None  # lampstand: kept as given (the SDK's VectorStore type has no field for it)
    usage_bytes: int = 0
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    expires_after: dict[str, Any] | None = None
    expires_at: int | None = None
    last_active_at: int | None = None
    metadata: dict[str, str] = {}
    read_only: bool = False  # lampstand: a folder index (`lampstand index add`), searched but not changed here


class VectorStoreList(Response):
    object: Literal["list"] = "list"
    data: list[VectorStoreObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VectorStoreDeleted(Response):
    id: str
    object: Literal["vector_store.deleted"] = "vector_store.deleted"
    deleted: bool = True


class FileLastError(Response):
    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


class ChunkingStrategyOut(Response):
    type: Literal["static"] = "static"
    static: dict[str, int]


class VectorStoreFileObject(Response):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    usage_bytes: int = 0
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    last_error: FileLastError | None = None
    chunking_strategy: ChunkingStrategyOut
    attributes: dict[str, Any] = {}


class VectorStoreFileList(Response):
    object: Literal["list"] = "list"
    data: list[VectorStoreFileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VectorStoreFileDeleted(Response):
    id: str
    object: Literal["vector_store.file.deleted"] = "vector_store.file.deleted"
    deleted: bool = True


class FileBatchObject(Response):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    file_counts: FileCounts


class SearchContent(Response):
    type: Literal["text"] = "text"
    text: str


class VectorStoreSearchResult(Response):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any] = {}
    content: list[SearchContent]


class VectorStoreSearchPage(Response):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[VectorStoreSearchResult]
    has_more: bool = False
    next_page: str | None = None


class FileContentPart(Response):
    type: Literal["text"] = "text"
    text: str


class VectorStoreFileContent(Response):
    """GET .../files/{file_id}/content: the file's text as it was indexed."""

    object: Literal["vector_store.file_content.page"] = "vector_store.file_content.page"
    data: list[FileContentPart]
    has_more: bool = False
    next_page: str | None = None
