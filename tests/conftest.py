"""Fixtures: a real lampstand server on a free loopback port, with the bundled models."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from lampstand.plugins.sources import BUNDLED_MODELS, bundled_path

SMOLLM = bundled_path(BUNDLED_MODELS[0])
MINILM = bundled_path(BUNDLED_MODELS[1])
CHAT_MODEL = "smollm2"
EMBED_MODEL = "minilm"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_config() -> str:
    return f"""
[server]
max_body_bytes = 1048576
default_max_tokens = 64

[[models]]
id = "smollm2-135m-instruct"
plugin = "llama_cpp"
path = "{SMOLLM}"
aliases = ["smollm2"]
n_ctx = 2048
n_threads = 2

[[models]]
id = "all-minilm-l6-v2"
plugin = "sentence_transformers"
path = "{MINILM}"
aliases = ["minilm"]

[[models]]
id = "smollm2-embed"
plugin = "llama_cpp"
path = "{SMOLLM}"
embedding = true
n_ctx = 512
n_threads = 2

[[models]]
id = "missing-file"
plugin = "llama_cpp"
path = "/nonexistent/model.gguf"

[[models]]
id = "offline-hub"
plugin = "llama_cpp"
hf = "lampstand-tests/not-a-real-repo-GGUF"
file = "model-Q4_K_M.gguf"
"""


@dataclass
class RunningServer:
    """A lampstand server process and where to reach it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def alive(self) -> bool:
        return self.process.poll() is None


LAMPSTAND = (sys.executable, "-m", "lampstand.clients")


def start_server(
    tmp: Path, config: str | None, env: dict[str, str] | None = None, command: Sequence[str] = LAMPSTAND,
) -> RunningServer:
    """Start `command serve` with `config` (None: the built-in default) and wait for /health's 200.

    The server runs in `tmp`, so it imports lampstand from wherever `command` finds it.
    """
    config_args: list[str] = []
    if config is not None:
        config_path = tmp / "lampstand.toml"
        config_path.write_text(config)
        config_args = ["--config", str(config_path)]
    port = free_port()
    log = tmp / "server.log"
    process = subprocess.Popen(
        [*command, "serve", *config_args, "--port", str(port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "XDG_DATA_HOME": str(tmp / "data"), **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return RunningServer(url, process, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start: {log.read_text()}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("server"), default_config())
    yield running
    stop_server(running)


def sdk_client(server: RunningServer) -> openai.OpenAI:
    """The OpenAI SDK pointed at `server`, without retries."""
    return openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0, timeout=120)


def http_session(server: RunningServer) -> Iterator[httpx.Client]:
    """An httpx client on `server`'s root URL, for a fixture to yield from."""
    with httpx.Client(base_url=server.url, timeout=120) as session:
        yield session


SMOLLM_TEXT_ONLY = f"""
[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = 512
n_threads = 2
"""


@pytest.fixture(scope="session")
def client(server: RunningServer) -> openai.OpenAI:
    return sdk_client(server)


@pytest.fixture(scope="session")
def async_client(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    yield from http_session(server)
