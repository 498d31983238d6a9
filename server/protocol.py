"""OpenAI request and response models, with OpenAI's names and field order.

Requests ignore unknown fields (clients send many). Responses are dumped with
`exclude_unset`, so a field appears exactly when the server set it, `null` included.
Our extensions are in the marked section at the end of each model.
This module never touches a plugin or an engine.
"""

from __future__ import annotations

import functools
import types
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticUndefined

__all__ = [
    "ChatCompletionRequest", "HostedToolIn", "CompletionRequest", "EmbeddingRequest",
    "ChatCompletion", "ChatCompletionChunk", "Completion", "CompletionChunk",
    "EmbeddingResponse", "RerankRequest", "RerankResponse", "RerankResultOut", "ModelCard", "ModelList", "UsageInfo", "ErrorResponse",
    "AudioForm", "AudioFormat", "Transcription", "TranscriptionVerbose", "TranscriptionSegmentOut",
    "TranscriptionWordOut", "TranscriptTextDelta", "TranscriptTextDone", "AudioUsage",
    "IndexFilters", "IndexCreateRequest", "IndexUpdateRequest", "IndexJob", "IndexCard", "IndexList",
    "IndexDeleted", "IndexSearchRequest", "SearchResult", "SearchResponse",
    "RagQueryRequest", "RagSource", "RagAnswer", "RagAnswerChunk",
    "ModelLoadRequest", "StyleLoraIn", "ImageGenerationRequest", "ImageOut", "ImagesResponse", "ImageGenerationCompleted",
    "ImageGenerationProgress",
]


_JSON_KINDS: dict[type, str] = {bool: "boolean", int: "number", float: "number", str: "string", type(None): "null"}


def _json_kind(value: Any) -> str | None:
    return _JSON_KINDS.get(type(value))


@functools.cache
def _scalar_kinds(annotation: Any) -> frozenset[str] | None:
    """The JSON kinds a field of only scalars takes ("number", "string", ...); None for any other field."""
    if annotation in _JSON_KINDS:
        return frozenset({_JSON_KINDS[annotation]})
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return frozenset(kind for kind in map(_json_kind, args) if kind is not None)
    if origin is Annotated:
        return _scalar_kinds(args[0])
    if origin in (Union, types.UnionType):
        kinds = [_scalar_kinds(arg) for arg in args]
        return None if any(kind is None for kind in kinds) else frozenset().union(*kinds)  # type: ignore[arg-type]
    return None


class Request(BaseModel):
    """Base of request bodies: unknown fields are ignored, not rejected.

    A scalar field takes only the JSON kind its schema names: `true` is not a number and
    `"5"` is not a number or a boolean here, though Pydantic's lax mode would convert them
    (forms, whose fields are all text, set `json_kinds = False`).
    """

    model_config = ConfigDict(extra="ignore")
    json_kinds: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _json_kinds_as_declared(cls, data: Any) -> Any:
        if not cls.json_kinds or not isinstance(data, dict):
            return data
        for name, kinds in _declared_kinds(cls):
            kind = _json_kind(data.get(name))
            if kind is not None and kind != "null" and kind not in kinds:
                wanted = " or ".join(sorted(kinds - {"null"}))
                raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                    type=PydanticCustomError("json_kind", "Input should be a {wanted}, not a {kind}",
                                             {"wanted": wanted, "kind": kind}),
                    loc=(name,), input=data[name])])
        return data


@functools.cache
def _declared_kinds(model: type[BaseModel]) -> tuple[tuple[str, frozenset[str]], ...]:
    """(JSON name, the JSON kinds it takes) for each scalar field of `model`."""
    return tuple((field.alias or name, kinds) for name, field in model.model_fields.items()
                 if (kinds := _scalar_kinds(field.annotation)) is not None)


class Response(BaseModel):
    """Base of response bodies.

    On the wire, a field with a non-None default is always present; a field whose default
    is None is present only when the server set it (to a value or to an explicit `null`).
    """

    model_config = ConfigDict(extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        for name, field in type(self).model_fields.items():
            if field.default is not None and field.default is not PydanticUndefined:
                self.__pydantic_fields_set__.add(name)

    def to_json(self) -> str:
        """The wire form described above."""
        return self.model_dump_json(exclude_unset=True)


# -- chat request -----------------------------------------------------------------------

class ImageURL(Request):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(Request):
    type: Literal["text"]
    text: str


class ImagePart(Request):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(Request):
    name: str
    arguments: str


class ToolCallIn(Request):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageIn(Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(Request):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(Request):
    type: Literal["function"]
    function: FunctionDefinition


class HostedToolIn(Request):
    """A tool the server itself would run (`file_search`, `web_search`, ...), in chat or
    Responses; kept whole so the serving layer can name it, and serve it once it has a runner
    for it (serving/file_search.py runs `file_search`)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _not_a_function(self) -> HostedToolIn:
        if self.type == "function":
            raise ValueError("a function tool needs a valid name")
        return self


class NamedFunction(Request):
    name: str


class NamedToolChoice(Request):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(Request):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(Request):
    include_usage: bool = False


class SamplingFields(Request):
    """Fields chat and completions share."""

    model: str
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    user: str | None = None
    # -- lampstand extensions (llama.cpp server names) --
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0)
    keep_alive: str | float | None = Field(None, description='how long the model stays loaded after this request ("5m", seconds, 0, -1)')
    lora_scale: float | None = Field(None, ge=-16.0, le=16.0,
                                     description="scale of the LoRA adapter `model` names (default: its load scale)")


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessageIn] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormatIn | None = None
    tools: list[ToolDefinition | HostedToolIn] | None = None  # hosted: lampstand runs file_search
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    best_of: int | None = Field(None, ge=1)


class EmbeddingRequest(Request):
    """POST /v1/embeddings."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None
    keep_alive: str | float | None = Field(None, description='how long the model stays loaded after this request')


# -- responses ----------------------------------------------------------------------------

class PromptTokensDetails(Response):
    cached_tokens: int


class UsageInfo(Response):
    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None  # when the model tells what its KV cache held


class TopLogprobOut(Response):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(Response):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprobOut]


class ChoiceLogprobs(Response):
    content: list[TokenLogprobOut] | None


class FunctionCallOut(Response):
    name: str | None = None
    arguments: str = ""


class ToolCallOut(Response):
    index: int | None = None
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallOut


class AssistantMessage(Response):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    # -- set with the file_search tool: a `file_citation` for each source the text cites --
    annotations: list[dict[str, Any]] | None = None


class ChatChoice(Response):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls"] | None


class ChatCompletion(Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: UsageInfo
    # -- lampstand extensions: what a rag: model answered from, the file_search tool's search --
    sources: list[RagSource] | None = None
    file_search_call: dict[str, Any] | None = None


class ChatDelta(Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    annotations: list[dict[str, Any]] | None = None  # on a choice's finishing chunk (file_search)


class ChatChunkChoice(Response):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None
    # -- lampstand extensions: what a rag: model answers from, the file_search tool's search (first chunk) --
    sources: list[RagSource] | None = None
    file_search_call: dict[str, Any] | None = None


class CompletionLogprobs(Response):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(Response):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class Completion(Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


CompletionChunk = Completion  # OpenAI streams completions with the same object shape


class RerankRequest(Request):
    """POST /v1/rerank (the shape llama.cpp, vLLM and Jina use)."""

    model: str
    query: str = Field(min_length=1)
    documents: list[str] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = True
    keep_alive: str | float | None = Field(None, description='how long the model stays loaded after this request')


class RerankDocument(Response):
    text: str


class RerankResultOut(Response):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(Response):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(Response):
    id: str
    model: str
    results: list[RerankResultOut]
    usage: RerankUsage


class EmbeddingData(Response):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingResponse(Response):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: UsageInfo


# -- audio ----------------------------------------------------------------------------------
# Requests arrive as multipart forms; `AudioForm` validates their fields once parsed.

AudioFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]


class AudioForm(Request):
    json_kinds: ClassVar[bool] = False  # a multipart form's fields are text, converted by their declared types
    model: str = Field(min_length=1)
    language: str | None = Field(None, min_length=2, max_length=8)
    prompt: str | None = Field(None, max_length=4096)
    response_format: AudioFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["segment", "word"]] = Field(
        ["segment"], alias="timestamp_granularities[]", max_length=2)
    stream: bool = False
    # -- lampstand extensions --
    vad_filter: bool | None = None
    min_silence_ms: int | None = Field(None, ge=0, le=60_000)
    postprocess: Literal["none", "llm"] = "none"


class AudioUsage(Response):
    type: Literal["duration"] = "duration"
    seconds: int


class Transcription(Response):
    text: str
    usage: AudioUsage | None = None


class TranscriptionWordOut(Response):
    word: str
    start: float
    end: float


class TranscriptionSegmentOut(Response):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TranscriptionVerbose(Response):
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegmentOut]
    words: list[TranscriptionWordOut] | None = None
    usage: AudioUsage | None = None


class TranscriptTextDelta(Response):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str
    # -- lampstand extensions: where the segment lies, for progress --
    start: float | None = None
    end: float | None = None
    duration: float | None = None


class TranscriptTextDone(Response):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
    usage: AudioUsage | None = None


# -- images: OpenAI's generations API --------------------------------------------------------

class StyleLoraIn(Request):
    name: str = Field(min_length=1, max_length=512, description="a .safetensors file under [images] lora_dir")
    scale: float = Field(1.0, ge=-4.0, le=4.0)


class ImageGenerationRequest(Request):
    prompt: str = Field(min_length=1)
    model: str | None = Field(None, description="default: the first image_generation model")
    n: int = Field(1, ge=1, le=10)
    size: str | None = Field(None, description='"WIDTHxHEIGHT" (multiples of 8) or "auto" for the model\'s own')
    response_format: Literal["b64_json", "url"] | None = None
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None  # accepted, not used
    style: Literal["vivid", "natural"] | None = None  # accepted, not used
    output_format: Literal["png"] | None = None
    background: Literal["auto", "opaque"] | None = None
    user: str | None = None
    stream: bool = Field(False, description="server-sent events: progress per step, then each image")
    # -- lampstand extensions --
    negative_prompt: str | None = None
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0.0, le=50.0)
    seed: int | None = Field(None, ge=0, lt=2**63, description="image i uses seed + i; same seed, same image")
    lora: list[StyleLoraIn | Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        [], max_length=8, description='style LoRAs: names or {"name", "scale"}')


class ImageOut(Response):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    # -- lampstand extensions --
    seed: int | None = None


class ImagesResponse(Response):
    created: int
    data: list[ImageOut]
    size: str | None = None
    output_format: str | None = None


class ImageGenerationCompleted(Response):
    """A streamed image (OpenAI's `image_generation.completed` event)."""

    type: Literal["image_generation.completed"] = "image_generation.completed"
    b64_json: str
    created_at: int
    size: str
    output_format: str = "png"
    # -- lampstand extensions --
    image_index: int
    seed: int


class ImageGenerationProgress(Response):
    """lampstand's event after each denoising step of a streamed generation."""

    type: Literal["image_generation.progress"] = "image_generation.progress"
    image_index: int
    step: int
    steps: int


# -- indexes, search and rag: lampstand's own API --------------------------------------------

IndexName = Annotated[str, Field(min_length=1, max_length=64)]
SearchModeName = Literal["dense", "lexical", "hybrid"]


class IndexFilters(Request):
    """Which chunks may match: a glob on the indexed path (SQLite GLOB rules) and a language."""

    path_glob: str | None = Field(None, max_length=1024)
    language: str | None = Field(None, max_length=64)


class IndexCreateRequest(Request):
    """POST /v1/indexes."""

    name: IndexName
    paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(min_length=1, max_length=64)
    include: list[Annotated[str, Field(max_length=1024)]] = Field([], max_length=256)
    exclude: list[Annotated[str, Field(max_length=1024)]] = Field([], max_length=256)
    store: Literal["faiss", "qdrant"] | None = None
    wait: bool = Field(False, description="answer when indexing has finished, not when it starts")


class IndexUpdateRequest(Request):
    """POST /v1/indexes/{name}/update."""

    rebuild: bool = Field(False, description="drop the vectors and embed everything again")
    paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        None, max_length=100_000, description="look at these indexed paths only ('dir/' for a folder)")
    wait: bool = False


class IndexJob(Response):
    """The last indexing run of an index, running or finished."""

    status: Literal["running", "succeeded", "failed", "cancelled"]
    phase: str
    files_seen: int
    files_total: int
    files_done: int
    files_unchanged: int
    files_deleted: int
    chunks_added: int
    chunks_removed: int
    embeddings_per_second: float
    seconds: float
    started_at: int
    finished_at: int | None = None
    error: str | None = None
    skipped: dict[str, dict[str, int]] = {}


class IndexCard(Response):
    id: str
    object: Literal["index"] = "index"
    created: int
    paths: list[str]
    include: list[str]
    exclude: list[str]
    store: str
    status: Literal["empty", "indexing", "ready", "failed"]
    embedding_model: str | None = None
    chunks: int = 0
    files: int = 0
    generation: int = 0
    job: IndexJob | None = None


class IndexList(Response):
    object: Literal["list"] = "list"
    data: list[IndexCard]


class IndexDeleted(Response):
    id: str
    object: Literal["index.deleted"] = "index.deleted"
    deleted: bool = True


class IndexSearchRequest(Request):
    """POST /v1/indexes/{name}/search."""

    query: str = Field(min_length=1)
    top_k: int | None = Field(None, ge=1)
    mode: SearchModeName = "hybrid"
    rerank: bool = False
    filters: IndexFilters | None = None
    # Each result is the span of up to 60 lines around its matching chunks; false: the chunk alone.
    expand: bool = True


class SearchResult(Response):
    object: Literal["search.result"] = "search.result"
    rank: int
    score: float
    path: str
    start_line: int
    end_line: int
    language: str
    kind: str
    context: list[str]
    text: str
    chunk_id: str


class SearchResponse(Response):
    object: Literal["list"] = "list"
    index: str
    mode: SearchModeName
    reranked: bool
    data: list[SearchResult]


class RagQueryRequest(Request):
    """POST /v1/rag/query."""

    index: IndexName
    query: str = Field(min_length=1)
    model: str | None = None
    top_k: int | None = Field(None, ge=1)
    mode: SearchModeName = "hybrid"
    rerank: bool = False
    filters: IndexFilters | None = None
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)


class RagSource(Response):
    """One retrieved chunk an answer may cite as `[id]`."""

    id: int
    path: str
    start_line: int
    end_line: int
    score: float
    text: str | None = None


class RagAnswer(Response):
    id: str
    object: Literal["rag.answer"] = "rag.answer"
    created: int
    model: str
    index: str
    answer: str
    sources: list[RagSource]
    citations: list[int]
    usage: UsageInfo


class RagAnswerChunk(Response):
    """A streamed piece of an answer: `sources` come first, `citations` and `usage` last."""

    id: str
    object: Literal["rag.answer.chunk"] = "rag.answer.chunk"
    created: int
    model: str
    index: str
    delta: str = ""
    sources: list[RagSource] | None = None
    citations: list[int] | None = None
    finish_reason: str | None = None
    usage: UsageInfo | None = None


class FootprintBytes(Response):
    ram: int
    vram: int


class Footprint(Response):
    """Bytes a model takes: `estimated` before loading, `measured` once loaded (RSS growth of its worker and the processes it started)."""

    estimated: FootprintBytes | None = None
    measured: FootprintBytes | None = None
    worker_rss: int | None = None  # now, with the processes the worker started


class ModelLoadRequest(Request):
    """POST /v1/models/{id}/load. With `path`, registers a new model from a file under `model_roots`."""

    path: str | None = Field(None, max_length=4096, description="file (or folder) relative to a model root")
    plugin: str | None = Field(None, max_length=100, description="default: [server] load_plugin")
    options: dict[str, Any] = Field({}, description="plugin options, as in [[models]]")
    keep_alive: str | float | None = None


class ModelCard(Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # -- lampstand extensions --
    parent: str | None = None
    root: str | None = Field(None, description="for a LoRA adapter: the lora_path it was loaded from")
    capabilities: list[str] = []
    status: Literal["unloaded", "loading", "loaded", "failed"] = "unloaded"
    plugin: str | None = None
    aliases: list[str] = []
    context_length: int | None = None
    error: str | None = None
    footprint: Footprint | None = None
    device: str | None = None
    pinned: bool = False
    keep_alive: float | None = None
    last_used: int | None = None
    expires_at: int | None = None
    running: int = 0
    waiting: int = 0
    worker_pid: int | None = None



# -- LoRA adapters: vLLM's routes ------------------------------------------------------------

class LoadLoraAdapterRequest(Request):
    """POST /v1/load_lora_adapter."""

    lora_name: str = Field(min_length=1, max_length=128, description="the model name requests will use")
    lora_path: str = Field(min_length=1, max_length=4096,
                           description="an adapter folder or .gguf file inside [adapters] dir (relative or absolute)")
    base_model: str | None = Field(None, max_length=256,
                                   description="the model it runs on (default: its manifest's base, or the only one)")
    scale: float = Field(1.0, ge=-16.0, le=16.0, description="scale when a request gives no lora_scale")


class UnloadLoraAdapterRequest(Request):
    """POST /v1/unload_lora_adapter."""

    lora_name: str = Field(min_length=1, max_length=128)
    lora_int_id: int | None = Field(None, description="accepted for vLLM clients; unused")


class LoraAdapterCard(Response):
    """A loaded adapter."""

    object: Literal["lora_adapter"] = "lora_adapter"
    id: str
    parent: str
    root: str = Field(description="the lora_path it was loaded from")
    scale: float
    created: int
    bytes: int | None = None
    load_seconds: float | None = None

class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(Response):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(Response):
    error: ErrorDetail


# -- files and fine-tuning jobs: OpenAI's API ------------------------------------------------

__all__ += [
    "FileObject", "FileList", "FileDeleted", "FineTuningHyperparametersIn", "FineTuningMethodIn",
    "FineTuningJobCreateRequest", "FineTuningHyperparameters", "FineTuningMethod", "FineTuningJobError",
    "FineTuningJob", "FineTuningJobList", "FineTuningJobEvent", "FineTuningJobEventList",
    "FineTuningCheckpointMetrics", "FineTuningJobCheckpoint", "FineTuningJobCheckpointList",
]


class FileObject(Response):
    """An uploaded file (`POST /v1/files`): `fine-tune`, `assistants` or `user_data`."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileList(Response):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(Response):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class FineTuningHyperparametersIn(Request):
    """Each value may be "auto": the trainer's default."""

    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] | None = None
    learning_rate_multiplier: Literal["auto"] | Annotated[float, Field(gt=0, le=10)] | None = None
    n_epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=50)] | None = None


class SupervisedMethodIn(Request):
    hyperparameters: FineTuningHyperparametersIn | None = None


class FineTuningMethodIn(Request):
    """Only supervised fine-tuning is offered."""

    type: Literal["supervised"]
    supervised: SupervisedMethodIn | None = None


MetadataValue = Annotated[str, Field(max_length=512)]


class FineTuningJobCreateRequest(Request):
    """POST /v1/fine_tuning/jobs."""

    model: str = Field(min_length=1, max_length=256, description="a served model that takes LoRA adapters")
    training_file: str = Field(min_length=1, max_length=128)
    hyperparameters: FineTuningHyperparametersIn | None = Field(None, description="deprecated: use method")
    integrations: list[dict[str, Any]] | None = Field(None, max_length=0, description="not supported")
    metadata: dict[Annotated[str, Field(max_length=64)], MetadataValue] | None = Field(None, max_length=16)
    method: FineTuningMethodIn | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    suffix: str | None = Field(None, max_length=64, description="added to the fine-tuned model's name")
    validation_file: str | None = Field(None, min_length=1, max_length=128)


class FineTuningHyperparameters(Response):
    batch_size: Literal["auto"] | int
    learning_rate_multiplier: Literal["auto"] | float
    n_epochs: Literal["auto"] | int


class SupervisedMethod(Response):
    hyperparameters: FineTuningHyperparameters


class FineTuningMethod(Response):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod


class FineTuningJobError(Response):
    code: str
    message: str
    param: str | None


FineTuningStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class FineTuningJob(Response):
    """A fine-tuning job; the optional fields are always sent, `null` until known."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: FineTuningJobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: FineTuningHyperparameters
    model: str
    organization_id: str = "lampstand"
    result_files: list[str] = []
    seed: int
    status: FineTuningStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    integrations: list[dict[str, Any]] = []
    method: FineTuningMethod
    metadata: dict[str, str] | None = None
    estimated_finish: int | None = None


class FineTuningJobList(Response):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool = False


class FineTuningJobEvent(Response):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"] = "info"
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class FineTuningJobEventList(Response):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool = False


class FineTuningCheckpointMetrics(Response):
    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None


class FineTuningJobCheckpoint(Response):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: FineTuningCheckpointMetrics
    step_number: int


class FineTuningJobCheckpointList(Response):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
