"""Plain typed data that crosses the plugin boundary: requests in, chunks and results out.

Everything here is a frozen dataclass of builtins, so it pickles: these are the values that
cross the pipes between the API process and each model's worker process (`server/workers/`).
This module never touches an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ImageInput",
    "ChatMessage",
    "ToolCall",
    "FunctionTool",
    "ToolChoice",
    "ResponseFormat",
    "SamplingParams",
    "AdapterRef",
    "AdapterLoad",
    "AdapterInfo",
    "ChatRequest",
    "CompletionRequest",
    "TopLogprob",
    "TokenLogprob",
    "ToolCallDelta",
    "Usage",
    "GenerationChunk",
    "EmbeddingResult",
    "RerankRequest",
    "RerankResult",
    "FinishReason",
    "TranscriptionRequest",
    "TranscriptionInfo",
    "TranscriptWord",
    "TranscriptSegment",
    "StyleLora",
    "ImageGenerationRequest",
    "ImageProgress",
    "GeneratedImage",
]

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the assistant made earlier in the conversation."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ImageInput:
    """An image a chat message carries: its encoded file (PNG, JPEG, WebP, GIF, BMP), which the
    server has already decoded once within its limits, and what that decoding found."""

    data: bytes
    mime: str  # "image/png", ...
    width: int
    height: int
    detail: Literal["auto", "low", "high"] = "auto"


@dataclass(frozen=True)
class ChatMessage:
    """One conversation turn; `content` is already flattened to text.

    `images` are the message's `image_url` parts in order; a vision model reads them before
    the message's text (LLaVA's convention). Only a model with the vision capability ever
    receives a message with images.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    images: tuple[ImageInput, ...] = ()


@dataclass(frozen=True)
class FunctionTool:
    """A function the model may call; `parameters` is a JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolChoice:
    """`auto`, `none`, `required`, or `function` with the name it must call."""

    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True)
class ResponseFormat:
    """`text`, `json_object` (any JSON object) or `json_schema` (valid against `schema`)."""

    kind: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop. `max_tokens` is always set by the server."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    max_tokens_explicit: bool = True
    # Sampler knobs OpenAI does not have; None means the model's configured default.
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)


@dataclass(frozen=True)
class AdapterRef:
    """Which loaded LoRA adapter a generation runs with, and at what scale."""

    name: str
    scale: float = 1.0


@dataclass(frozen=True)
class AdapterLoad:
    """Load the LoRA adapter file `path` into a running model under `name`."""

    name: str
    path: str


@dataclass(frozen=True)
class AdapterInfo:
    """What a model reports about an adapter it loaded."""

    name: str
    bytes: int
    seconds: float


@dataclass(frozen=True)
class ChatRequest:
    """A chat generation: messages plus optional tools and output format."""

    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    response_format: ResponseFormat = ResponseFormat()
    adapter: AdapterRef | None = None
    parallel_tool_calls: bool = True  # false: at most one tool call in the answer


@dataclass(frozen=True)
class CompletionRequest:
    """A raw text completion; `prompt` is text or token ids."""

    prompt: str | tuple[int, ...]
    sampling: SamplingParams
    suffix: str | None = None
    echo: bool = False
    adapter: AdapterRef | None = None


@dataclass(frozen=True)
class TopLogprob:
    """One alternative token and its log probability."""

    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True)
class TokenLogprob:
    """The sampled token's log probability and the most likely alternatives."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call; the first piece of a call carries id and name."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None  # prompt tokens found in a KV cache, not read again (None: not told)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class GenerationChunk:
    """One step of a generation stream. The last chunk has `finish_reason` and `usage`."""

    text: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class EmbeddingResult:
    """One vector per input, in input order, and the tokens each input took."""

    vectors: list[list[float]]
    token_counts: list[int]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass(frozen=True)
class RerankRequest:
    """Score each document's relevance to the query (a cross-encoder reads each pair whole)."""

    query: str
    documents: tuple[str, ...]


@dataclass
class RerankResult:
    """One relevance score per document, in input order (higher is more relevant), and the
    tokens each (query, document) pair took."""

    scores: list[float]
    token_counts: list[int]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass(frozen=True)
class TranscriptionRequest:
    """Speech to text: the uploaded file's bytes and how to decode them.

    `task` is "transcribe" (text in the spoken language) or "translate" (English text).
    `language` is an ISO-639-1 code or None to detect it. `vad_filter` and
    `min_silence_ms` are None to use the model's configured defaults.
    """

    audio: bytes
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    vad_filter: bool | None = None
    min_silence_ms: int | None = None


@dataclass(frozen=True)
class TranscriptionInfo:
    """First item of a transcription stream: what the audio is."""

    language: str
    language_probability: float
    duration: float  # seconds of audio
    duration_after_vad: float  # seconds left to decode once silence is dropped


@dataclass(frozen=True)
class TranscriptWord:
    """One word with its time span in seconds."""

    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class TranscriptSegment:
    """One decoded segment, with every field OpenAI's verbose_json carries."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: tuple[TranscriptWord, ...] = ()


@dataclass(frozen=True)
class StyleLora:
    """A style LoRA (`.safetensors`) applied to one image generation: its resolved path and scale."""

    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class ImageGenerationRequest:
    """Text to images: `n` images of `width` x `height`, image i made with seed `seed + i`.

    `width`/`height`, `steps` and `guidance_scale` are None for the model's configured
    defaults; `seed` is always set (the server draws one when the request names none), so
    every image can be made again.
    """

    prompt: str
    seed: int
    width: int | None = None
    height: int | None = None
    n: int = 1
    negative_prompt: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    loras: tuple[StyleLora, ...] = ()


@dataclass(frozen=True)
class ImageProgress:
    """Image `index` of a request has finished denoising step `step` of `steps`."""

    index: int
    step: int
    steps: int


@dataclass(frozen=True)
class GeneratedImage:
    """One finished image: a PNG file whose text chunks record how it was made."""

    index: int
    png: bytes
    seed: int
    width: int
    height: int
    steps: int
    guidance_scale: float
