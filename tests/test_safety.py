"""Safe by default: Host checks, CORS, header limits, confined paths, hostile model files."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import SMOLLM, RunningServer, start_server, stop_server
from crafted_gguf import write_crafted_ggufs

ORIGIN = "http://localhost:3000"


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "crafted").mkdir()
    write_crafted_ggufs(root / "crafted")
    try:
        os.link(SMOLLM, root / "smollm2.gguf")
    except OSError:
        shutil.copy(SMOLLM, root / "smollm2.gguf")
    (root / "weights.bin").write_bytes(b"\x80\x04not a model")
    (root / "escape.gguf").symlink_to(SMOLLM)
    os.mkfifo(root / "pipe.gguf")
    (root / "zero.gguf").symlink_to("/dev/zero")
    return root


@pytest.fixture(scope="module")
def safe(tmp_path_factory: pytest.TempPathFactory, roots: Path) -> Iterator[RunningServer]:
    config = f"""
[server]
cors_origins = ["{ORIGIN}"]
allowed_hosts = ["lampstand.internal"]
model_roots = ["{roots}"]
max_header_count = 40
header_timeout = 2
body_timeout = 2
max_connections = 12

[[models]]
id = "smollm2"
plugin = "llama_cpp"
path = "{SMOLLM}"
n_ctx = 512
"""
    running = start_server(tmp_path_factory.mktemp("safety"), config)
    yield running
    stop_server(running)


def load(safe: RunningServer, model_id: str, path: str, **fields: object) -> httpx.Response:
    return httpx.post(f"{safe.url}/v1/models/{model_id}/load", json={"path": path} | fields, timeout=120)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "[::2]:80"])
def test_foreign_host_is_refused(safe: RunningServer, host: str) -> None:
    response = httpx.get(f"{safe.url}/v1/models", headers={"Host": host})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "lampstand.internal"])
def test_allowed_hosts_pass(safe: RunningServer, host: str) -> None:
    assert httpx.get(f"{safe.url}/v1/models", headers={"Host": host}).status_code == 200


def test_cors_only_for_configured_origins(safe: RunningServer) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    good = httpx.options(f"{safe.url}/v1/chat/completions", headers={"Origin": ORIGIN, **preflight})
    assert good.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in good.headers
    bad = httpx.options(f"{safe.url}/v1/chat/completions", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in bad.headers
    plain = httpx.get(f"{safe.url}/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_is_off_by_default(http: httpx.Client) -> None:
    response = http.get("/v1/models", headers={"Origin": str(http.base_url).rstrip("/")})  # the /docs page
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("origin", [ORIGIN, "null", "http://evil.example", "file://", "http://127.0.0.1:1"])
def test_a_foreign_web_page_is_refused(http: httpx.Client, origin: str) -> None:
    """A form's multipart POST needs no preflight: the Origin header alone decides (403)."""
    form = http.post("/v1/audio/transcriptions", headers={"Origin": origin},
                     files={"file": ("a.wav", b"RIFF")}, data={"model": "whisper"})
    assert form.status_code == 403 and form.json()["error"]["code"] == "origin_not_allowed"
    assert http.get("/v1/models", headers={"Origin": origin}).status_code == 403
    assert http.get("/v1/models").status_code == 200  # no Origin: not a browser


def test_listed_origin_passes_and_others_are_refused(safe: RunningServer) -> None:
    assert httpx.get(f"{safe.url}/v1/models", headers={"Origin": ORIGIN}).status_code == 200
    refused = httpx.post(f"{safe.url}/v1/chat/completions", headers={"Origin": "http://evil.example"},
                         json={"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"


def _read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and how long that took."""
    started, data = time.monotonic(), b""
    sock.settimeout(within)
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


def test_trickled_headers_get_408_and_the_connection_closes(safe: RunningServer) -> None:
    host, port = safe.url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        sock.settimeout(0.4)
        while not answer and time.monotonic() - started < 10:
            try:
                sock.sendall(b"X-Slow: a\r\n")  # a header line every 0.4 s: never finished
                answer = sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") and b"client_too_slow" in answer, answer
    assert 1.5 < elapsed < 5, elapsed


def test_a_paused_body_gets_408(safe: RunningServer) -> None:
    host, port = safe.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"content-length: 100\r\n\r\n{\"model\": ")
        data, elapsed = _read_until_closed(sock, 10)
    assert data.startswith(b"HTTP/1.1 408") and b"client_too_slow" in data and 1.5 < elapsed < 6, (data, elapsed)


def test_connections_past_the_cap_get_503(safe: RunningServer) -> None:
    host, port = safe.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(12)]
    try:
        time.sleep(0.3)
        with socket.create_connection((host, int(port))) as extra:
            data, _ = _read_until_closed(extra, 5)
        assert data.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in data.lower() and b"overloaded" in data
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{safe.url}/v1/models").status_code == 200


def test_too_many_headers_is_431(safe: RunningServer) -> None:
    headers = {f"x-filler-{i}": "1" for i in range(60)}
    response = httpx.get(f"{safe.url}/v1/models", headers=headers)
    assert response.status_code == 431 and response.json()["error"]["code"] == "headers_too_large"


def test_huge_header_is_431(safe: RunningServer) -> None:
    response = httpx.get(f"{safe.url}/v1/models", headers={"x-big": "a" * 40_000})
    assert response.status_code == 431
    assert httpx.get(f"{safe.url}/health").status_code == 200


@pytest.mark.parametrize("option", ["pinned", "max_queue", "max_concurrency", "aliases", "request_timeout"])
def test_a_load_request_cannot_set_operator_limits(safe: RunningServer, option: str) -> None:
    value = {"pinned": True, "max_queue": 10_000, "max_concurrency": 64, "aliases": ["gpt-4o"],
             "request_timeout": 1e9}[option]
    response = load(safe, f"limits-{option}", "smollm2.gguf", options={option: value})
    assert response.status_code == 400 and option in response.json()["error"]["message"]


@pytest.mark.parametrize("path, code", [
    ("../etc/passwd", "path_not_allowed"),
    ("/etc/passwd", "path_not_allowed"),
    ("crafted/../../x.gguf", "path_not_allowed"),
    ("escape.gguf", "path_not_allowed"),      # a symlink out of the root
    ("pipe.gguf", "path_not_allowed"),        # a FIFO
    ("zero.gguf", "path_not_allowed"),        # a device
    ("missing.gguf", "path_not_allowed"),
    ("weights.bin", "invalid_model_file"),    # pickles are never opened
])
def test_paths_are_confined(safe: RunningServer, roots: Path, path: str, code: str) -> None:
    response = load(safe, "attempt", path)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert str(roots) not in error["message"] and str(roots.resolve()) not in error["message"]
    assert str(SMOLLM.parent) not in error["message"]


def test_crafted_gguf_files_get_400_and_the_server_keeps_serving(safe: RunningServer, roots: Path) -> None:
    names = sorted(p.name for p in (roots / "crafted").iterdir() if p.name != "valid.gguf")
    assert len(names) >= 10
    for name in names:
        response = load(safe, f"crafted-{name}", f"crafted/{name}")
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"]["code"] == "invalid_model_file", name
        assert str(roots) not in response.json()["error"]["message"]
    models = httpx.get(f"{safe.url}/v1/models").json()["data"]
    assert not any(m["id"].startswith("crafted-") for m in models)  # refused files are not registered
    chat = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.post(f"{safe.url}/v1/chat/completions", json=chat, timeout=60).status_code == 200


def test_a_confined_model_file_loads_and_serves(safe: RunningServer) -> None:
    response = load(safe, "mine", "smollm2.gguf", options={"n_ctx": 256})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "loaded"
    chat = {"model": "mine", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.post(f"{safe.url}/v1/chat/completions", json=chat, timeout=60).status_code == 200
    again = load(safe, "mine", "smollm2.gguf")
    assert again.status_code == 400  # ids are not replaced
    reserved = load(safe, "other", "smollm2.gguf", options={"trust_remote_code": True})
    assert reserved.status_code == 400 and reserved.json()["error"]["param"] == "options"
