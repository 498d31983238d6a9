"""What routes receive from the app: the state its lifespan built. No engine here."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from lampstand.plugins.registry import PluginRegistry

from ..config import Settings
from ..model_pool import ModelPool
from ..response_store import ResponseStore
from ..serving.background_responses import BackgroundResponses
from ..serving.embeddings import EmbeddingBatcher
from ..serving.fine_tuning import FineTuningService
from ..serving.image_inputs import ImageReader
from ..serving.images import ImageService
from ..serving.indexes import IndexService
from ..serving.vector_stores import VectorStoreService

__all__ = ["ServerState", "enabled_fine_tuning", "get_state", "state_of"]


@dataclass
class ServerState:
    """Everything a request may need, owned by the app's lifespan."""

    settings: Settings
    registry: PluginRegistry
    pool: ModelPool
    batchers: dict[str, EmbeddingBatcher] = field(default_factory=dict)  # by model id
    indexes: IndexService = field(init=False)
    fine_tuning: FineTuningService = field(init=False)
    images: ImageReader = field(init=False)  # the images chat requests send
    image_generation: ImageService = field(init=False)
    responses: ResponseStore = field(init=False)  # stored /v1/responses
    background_responses: BackgroundResponses = field(init=False)
    vector_stores: VectorStoreService = field(init=False)
    ready: bool = False

    def __post_init__(self) -> None:
        self.indexes = IndexService(self.settings.indexes, self.pool, self.batchers)
        self.fine_tuning = FineTuningService(self.settings.fine_tuning, self.settings.adapters, self.pool)
        self.images = ImageReader(self.settings.images)
        self.image_generation = ImageService(self.settings.images, self.pool)
        self.responses = ResponseStore(self.settings.responses)
        self.background_responses = BackgroundResponses(self.responses)
        self.vector_stores = VectorStoreService(self.settings.vector_stores, self.settings.indexes, self.indexes,
                                                self.fine_tuning.files)


# The dependencies below are coroutines: FastAPI runs a plain function dependency in its thread
# pool, a thread hop on every request (measured: about a sixth of the event loop's time per
# small embeddings request).


def state_of(request: Request) -> ServerState:
    """The running server's state."""
    return request.app.state.lampstand


async def get_state(request: Request) -> ServerState:
    """FastAPI dependency: the running server's state."""
    return state_of(request)


async def enabled_fine_tuning(request: Request) -> FineTuningService:
    """FastAPI dependency: the files and fine-tuning service; 403 when it is off."""
    return state_of(request).fine_tuning.require_enabled()
