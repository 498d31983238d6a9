"""The FastAPI app factory and its lifespan; nothing else happens here.

`create_app(settings)` wires middleware, error handlers and one router per API family.
The lifespan discovers plugins, builds the model pool, preloads what is asked, and
unloads everything on shutdown. Routes get this state through `routes.deps.get_state`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI

from lampstand.plugins.registry import PluginRegistry, discover_plugins

from .config import Settings
from .error_handlers import install_error_handlers
from .middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestIdMiddleware
from .model_pool import ModelPool
from .routes import chat, completions, embeddings, health, models
from .routes.deps import ServerState

__all__ = ["create_app", "build_state"]


def build_state(settings: Settings, registry: PluginRegistry | None = None) -> ServerState:
    """Validate every model against its plugin; a bad entry raises `ConfigError`."""
    registry = registry or discover_plugins()
    return ServerState(settings=settings, registry=registry, pool=ModelPool(settings.models, registry))


def create_app(settings: Settings, state: ServerState | None = None) -> FastAPI:
    """The lampstand ASGI app for `settings`."""
    state = state or build_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.lampstand = state
        preloading = asyncio.create_task(state.pool.preload())
        preloading.add_done_callback(lambda _: setattr(state, "ready", True))
        try:
            yield
        finally:
            preloading.cancel()
            await state.pool.close()

    app = FastAPI(title="lampstand", version=version("lampstand"), lifespan=lifespan)
    for module in (models, chat, completions, embeddings, health):
        app.include_router(module.router)
    install_error_handlers(app)
    server = settings.server
    app.add_middleware(ApiKeyMiddleware, keys=[k.get_secret_value() for k in server.api_keys])
    app.add_middleware(BodyLimitMiddleware, max_bytes=server.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
