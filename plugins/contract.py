"""The plugin contract: one small typed interface per capability, one base for every backend.

A backend is a `Plugin` subclass registered under the `lampstand.plugins` entry-point group.
It declares what it can do (`capabilities`), loads and unloads its weights, estimates and
measures its memory footprint and reports health. For each capability it declares it also
implements the matching interface below (`ChatModel.chat`, `Embedder.embed`, ...).

`CONTRACT` is the one table linking them: each capability's interface and the methods the
server calls for it (whether they stream, whether they may run beside the engine's current
call). The server checks every configured model's class against it when the configuration
is read (`contract_errors`), and its workers call only the methods it lists.

Requests and results are the plain dataclasses of `lampstand.plugins.types`; a generation
is an iterator of `GenerationChunk`s. Engines (llama_cpp, torch, ...) are imported only
inside the methods that need them, so importing a plugin class is cheap.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from .types import (
    AdapterInfo,
    AdapterLoad,
    ChatRequest,
    CompletionRequest,
    EmbeddingResult,
    GeneratedImage,
    GenerationChunk,
    ImageGenerationRequest,
    ImageProgress,
    RerankRequest,
    RerankResult,
    TranscriptionInfo,
    TranscriptionRequest,
    TranscriptSegment,
)

__all__ = [
    "CONTRACT",
    "Operation",
    "Interface",
    "contract_errors",
    "operations_for",
    "Capability",
    "Footprint",
    "Health",
    "EngineStats",
    "PluginOptions",
    "Plugin",
    "ChatModel",
    "CompletionModel",
    "Embedder",
    "Reranker",
    "Transcriber",
    "ImageGenerator",
    "AdapterHost",
    "CHAT",
    "COMPLETE",
    "EMBED",
    "RERANK",
    "TRANSCRIBE",
    "GENERATE_IMAGES",
    "LOAD_ADAPTER",
    "UNLOAD_ADAPTER",
    "HEALTH",
]


class Capability(str, enum.Enum):
    """What a loaded model can serve."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RERANK = "rerank"
    TRANSCRIPTION = "transcription"
    TRANSLATION = "translation"
    IMAGE_GENERATION = "image_generation"
    VISION = "vision"
    ADAPTERS = "adapters"  # LoRA adapters loaded at run time, one applied per request


@dataclass(frozen=True)
class Footprint:
    """Memory a model takes, in bytes, on the host and on the GPU."""

    ram_bytes: int
    vram_bytes: int = 0


@dataclass(frozen=True)
class Health:
    """Whether a loaded model can serve, and why not."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class EngineStats:
    """What a batching engine did since its last report: sequences decoded in each step."""

    batch_sizes: tuple[int, ...] = ()


class PluginOptions(BaseModel):
    """Base for a plugin's own options; unknown keys are rejected with their name."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Plugin(ABC):
    """One backend for one configured model.

    Construction is cheap and touches no engine; `load` brings the weights in and `unload`
    lets them go. Subclasses set `name` (the entry-point name users write as `plugin = ...`)
    and `Options` (their pydantic options model).
    """

    name: ClassVar[str]
    Options: ClassVar[type[PluginOptions]] = PluginOptions
    # The files of an HF repo the plugin loads (glob patterns), when a model names a whole
    # repo; None fetches every file.
    hub_files: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, model_id: str, path: Path, options: PluginOptions) -> None:
        self.model_id = model_id
        self.path = path
        self.options = options

    @abstractmethod
    def capabilities(self) -> frozenset[Capability]:
        """What this model serves, declared from its configuration (not by trying)."""

    @abstractmethod
    def estimate_footprint(self) -> Footprint:
        """Memory the model will need once loaded, computed without loading it."""

    @abstractmethod
    def load(self) -> None:
        """Load the weights; raise `ModelUnavailable` with a reason when they cannot load."""

    @abstractmethod
    def unload(self) -> None:
        """Release the weights and every engine resource."""

    def measured_footprint(self) -> Footprint | None:
        """Memory the loaded model actually holds, when the engine can tell."""
        return None

    def health(self) -> Health:
        """Whether the loaded model can serve."""
        return Health(ok=True)

    def context_length(self) -> int | None:
        """Tokens of context the loaded model accepts, when it has one."""
        return None

    def slots(self) -> int:
        """Requests this model serves at once, decided by configuration.

        Above 1 the plugin schedules concurrent calls itself: its worker runs them side by
        side, and the server lets that many requests run (unless `max_concurrency` says otherwise).
        """
        return 1

    def engine_stats(self) -> EngineStats | None:
        """Steps run since the last call (the worker asks about once a second); None: nothing to tell."""
        return None


class ChatModel(ABC):
    """Capability `chat`: generate an assistant turn from a conversation.

    A model that also declares `vision` reads the `images` of its messages; the server sends
    images to no other model.
    """

    @abstractmethod
    def chat(self, request: ChatRequest) -> Iterator[GenerationChunk]:
        """Stream the answer; the last chunk carries `finish_reason` and `usage`."""


class CompletionModel(ABC):
    """Capability `completions`: continue a raw prompt."""

    @abstractmethod
    def complete(self, request: CompletionRequest) -> Iterator[GenerationChunk]:
        """Stream the continuation; the last chunk carries `finish_reason` and `usage`."""


class Embedder(ABC):
    """Capability `embeddings`: one vector per input, text or token ids."""

    @abstractmethod
    def embed(self, inputs: Sequence[str | Sequence[int]]) -> EmbeddingResult:
        """Embed a batch in one call."""


class Reranker(ABC):
    """Capability `rerank`: how relevant each document is to a query (a cross-encoder)."""

    @abstractmethod
    def rerank(self, request: RerankRequest) -> RerankResult:
        """Score every document of the request in one call, in input order."""


class Transcriber(ABC):
    """Capabilities `transcription` and `translation`: speech to text."""

    @abstractmethod
    def transcribe(self, request: TranscriptionRequest) -> Iterator[TranscriptionInfo | TranscriptSegment]:
        """Yield one `TranscriptionInfo`, then the segments as they are decoded.

        Audio that cannot be decoded, and an unknown language, raise `InvalidRequest`.
        """


class ImageGenerator(ABC):
    """Capability `image_generation`: text to images (a diffusion pipeline)."""

    @abstractmethod
    def generate_images(self, request: ImageGenerationRequest) -> Iterator[ImageProgress | GeneratedImage]:
        """Yield an `ImageProgress` after each denoising step and a `GeneratedImage` per image.

        Closing the iterator early stops the generation within one step and frees its work.
        A size, step count, LoRA file or scheduler setting the model cannot take raises
        `InvalidRequest`.
        """


class AdapterHost(ABC):
    """A generation model that loads LoRA adapters at run time and applies one per request.

    Requests name their adapter in `ChatRequest.adapter` / `CompletionRequest.adapter`; each
    gets exactly its adapter's weights (or none), whatever ran before it. `adapter_files` says
    which file of a trained adapter folder `load_adapter` is given: its GGUF LoRA, or the folder
    itself holding peft's files.
    """

    adapter_files: ClassVar[Literal["gguf", "peft"]] = "gguf"

    @abstractmethod
    def load_adapter(self, request: AdapterLoad) -> AdapterInfo:
        """Load the adapter file; `InvalidRequest` when it does not fit this model.

        May run while a generation is in progress (it must not touch that generation's state).
        """

    @abstractmethod
    def unload_adapter(self, name: str) -> None:
        """Free the adapter; requests that name it afterwards get a 404."""


# -- the table --

A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class Operation(Generic[A, R]):
    """A plugin method the server calls: its name, argument and answer types, and how it runs.

    `streams`: the method returns an iterator whose items are sent as they come (`R` is the
    item type). `concurrent`: it may run beside the call holding the engine (loading an
    adapter reads only the model).
    """

    method: str
    streams: bool = False
    concurrent: bool = False


CHAT: Operation[ChatRequest, GenerationChunk] = Operation("chat", streams=True)
COMPLETE: Operation[CompletionRequest, GenerationChunk] = Operation("complete", streams=True)
EMBED: Operation[Sequence[str | Sequence[int]], EmbeddingResult] = Operation("embed")
RERANK: Operation[RerankRequest, RerankResult] = Operation("rerank")
TRANSCRIBE: Operation[TranscriptionRequest, TranscriptionInfo | TranscriptSegment] = Operation(
    "transcribe", streams=True)
GENERATE_IMAGES: Operation[ImageGenerationRequest, ImageProgress | GeneratedImage] = Operation(
    "generate_images", streams=True)
LOAD_ADAPTER: Operation[AdapterLoad, AdapterInfo] = Operation("load_adapter", concurrent=True)
UNLOAD_ADAPTER: Operation[str, None] = Operation("unload_adapter")
HEALTH: Operation[None, Health] = Operation("health")  # every plugin has it (`Plugin.health`)


@dataclass(frozen=True)
class Interface:
    """What declaring a capability promises: a subclass of `cls` implementing `operations`."""

    cls: type
    operations: tuple[Operation, ...]  # type: ignore[type-arg]


CONTRACT: dict[Capability, Interface] = {
    Capability.CHAT: Interface(ChatModel, (CHAT,)),
    Capability.COMPLETIONS: Interface(CompletionModel, (COMPLETE,)),
    Capability.EMBEDDINGS: Interface(Embedder, (EMBED,)),
    Capability.RERANK: Interface(Reranker, (RERANK,)),
    Capability.TRANSCRIPTION: Interface(Transcriber, (TRANSCRIBE,)),
    Capability.TRANSLATION: Interface(Transcriber, (TRANSCRIBE,)),
    Capability.IMAGE_GENERATION: Interface(ImageGenerator, (GENERATE_IMAGES,)),
    Capability.VISION: Interface(ChatModel, (CHAT,)),  # images arrive in chat messages
    Capability.ADAPTERS: Interface(AdapterHost, (LOAD_ADAPTER, UNLOAD_ADAPTER)),
}


def operations_for(capabilities: frozenset[Capability]) -> dict[str, Operation]:  # type: ignore[type-arg]
    """The operations a model with `capabilities` answers, by method name (health included)."""
    found = {HEALTH.method: HEALTH}
    for capability in capabilities:
        found.update((op.method, op) for op in CONTRACT[capability].operations)
    return found


def contract_errors(plugin_cls: type[Plugin], capabilities: frozenset[Capability]) -> list[str]:
    """What `plugin_cls` lacks for the capabilities it declares (empty when it keeps the contract)."""
    errors = []
    for capability in sorted(capabilities, key=lambda c: c.value):
        interface = CONTRACT[capability]
        if not issubclass(plugin_cls, interface.cls):
            errors.append(f"declares {capability.value} but is not a {interface.cls.__name__}")
            continue
        abstract = getattr(plugin_cls, "__abstractmethods__", frozenset())
        errors += [f"declares {capability.value} but does not implement {op.method}"
                   for op in interface.operations if op.method in abstract]
    return errors
