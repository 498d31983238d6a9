"""The FastAPI app factory and its lifespan; nothing else happens here.

`create_app(settings)` wires middleware, error handlers and one router per API family.
The lifespan discovers plugins, builds the model pool, starts keep-alive expiry and the
preloads, and stops every worker on shutdown. Routes get this state through
`routes.deps.get_state`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from lampstand.plugins.registry import PluginRegistry, discover_plugins
from starlette.middleware.cors import CORSMiddleware

from .config import Settings
from .error_handlers import install_error_handlers
from .middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    BodyTimeoutMiddleware,
    DrainMiddleware,
    HeaderLimitMiddleware,
    HostCheckMiddleware,
    JsonCheckMiddleware,
    OriginCheckMiddleware,
    RequestIdMiddleware,
    allowed_host_names,
)
from .model_pool import ModelPool
from .openapi import install_openapi
from .routes import (
    adapters,
    audio,
    chat,
    completions,
    embeddings,
    files,
    fine_tuning,
    health,
    images,
    indexes,
    metrics,
    models,
    rag,
    rerank,
    responses_api,
    vector_stores,
)
from .routes.deps import ServerState
from .serving.files import FORM_OVERHEAD

__all__ = ["create_app", "build_state"]


def build_state(settings: Settings, registry: PluginRegistry | None = None) -> ServerState:
    """Validate every model against its plugin; a bad entry raises `ConfigError`."""
    registry = registry or discover_plugins()
    pool = ModelPool(settings.models, registry, settings.server, settings.memory)
    return ServerState(settings=settings, registry=registry, pool=pool)


def create_app(settings: Settings, state: ServerState | None = None) -> FastAPI:
    """The lampstand ASGI app for `settings`."""
    state = state or build_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.lampstand = state
        await state.fine_tuning.start()  # before the preloads: trained adapters load with their base
        await state.vector_stores.start()
        await state.responses.fail_unfinished()
        starting = asyncio.create_task(state.pool.start())
        starting.add_done_callback(lambda _: setattr(state, "ready", True))
        try:
            yield
        finally:
            starting.cancel()
            await state.fine_tuning.close()
            await state.background_responses.close()
            await state.vector_stores.close()
            await state.indexes.close()
            await state.pool.close()
            state.responses.close()

    app = FastAPI(title="lampstand", version=version("lampstand"), lifespan=lifespan)
    for module in (models, chat, responses_api, completions, embeddings, rerank, audio, images, indexes, rag,
                   vector_stores, adapters, files, fine_tuning, health, metrics):
        app.include_router(module.router)
    install_error_handlers(app)
    install_openapi(app)
    server = settings.server
    # Added innermost first: a request meets them in the reverse order.
    app.add_middleware(JsonCheckMiddleware)  # after the key check, inside the body limit
    app.add_middleware(ApiKeyMiddleware, keys=[k.get_secret_value() for k in server.api_keys],
                       admin_keys=[k.get_secret_value() for k in server.admin_keys])
    app.add_middleware(BodyLimitMiddleware, max_bytes=server.max_body_bytes,
                       limits_by_prefix={"/v1/audio/": server.max_audio_bytes,
                                         "/v1/files": max(settings.fine_tuning.max_file_bytes,
                                                          settings.vector_stores.max_upload_bytes) + FORM_OVERHEAD})
    app.add_middleware(BodyTimeoutMiddleware, timeout=server.body_timeout)
    app.add_middleware(DrainMiddleware, is_draining=lambda: state.pool.draining)
    if server.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=server.cors_origins,
                           allow_credentials=server.cors_allow_credentials,
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["authorization", "content-type", "x-request-id"])
    app.add_middleware(OriginCheckMiddleware, allowed_origins=server.cors_origins)
    app.add_middleware(HostCheckMiddleware, allowed=allowed_host_names(server.host, server.allowed_hosts))
    app.add_middleware(HeaderLimitMiddleware, max_count=server.max_header_count, max_bytes=server.max_header_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
