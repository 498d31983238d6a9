"""Vision chat over HTTP, on both backends, with tiny real-format models:
- llama.cpp: the bundled SmolLM2 GGUF plus a tiny random CLIP projector GGUF (tiny_vision.py);
- transformers: a tiny random LlavaForConditionalGeneration folder (tiny_llava.py).

Random vision weights make odd text, so the tests check what does not depend on it: the
image reaches the model (prompt tokens grow by the image's tokens, other images give other
answers), the sampling settings hold, and every way an image can be bad or out of bounds
gets a 400 while the server keeps serving.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from conftest import SMOLLM, SMOLLM_TEXT_ONLY, RunningServer, http_session, sdk_client, start_server, stop_server
from tiny_llava import IMAGE_TOKENS as LLAVA_IMAGE_TOKENS
from tiny_llava import write_tiny_llava
from tiny_vision import IMAGE_TOKENS as MTMD_IMAGE_TOKENS
from tiny_vision import write_tiny_mmproj

MAX_PIXELS = 1_000_000
MAX_BYTES = 256 * 1024
ALLOWED_HOST = "127.0.0.2"  # loopback, but listed in allowed_networks: stands for a LAN server
VISION_MODELS = {"smol-vision": MTMD_IMAGE_TOKENS, "smol-vision-batched": MTMD_IMAGE_TOKENS,
                 "tiny-llava": LLAVA_IMAGE_TOKENS}


def png(color: tuple[int, int, int], size: tuple[int, int] = (48, 48), pattern: bool = False) -> bytes:
    image = Image.new("RGB", size, color)
    if pattern:
        for x in range(0, size[0], 4):
            for y in range(size[1]):
                image.putpixel((x, y), (255 - color[0], 255 - color[1], 255 - color[2]))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


RED, BLUE = png((220, 20, 20)), png((20, 20, 220), pattern=True)


def image_message(url: str, text: str = "What is in this picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


class _Files(BaseHTTPRequestHandler):
    """Serves /red.png, /redirect (302 to /red.png), /huge.png (larger than the cap) and /held.png
    (red.png once `release` is set); records each path asked."""

    asked: list[str] = []
    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.asked.append(self.path)
        if self.path.split("?")[0] == "/held.png":
            self.release.wait(60)
            self.path = "/red.png"
        if self.path.split("?")[0] == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/red.png")
            self.end_headers()
            return
        path = self.path.split("?")[0]
        body = RED if path == "/red.png" else b"\x89PNG" + b"\0" * (MAX_BYTES + 10)
        self.send_response(200 if path in ("/red.png", "/huge.png") else 404)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def files_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer((ALLOWED_HOST, 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://{ALLOWED_HOST}:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vision")
    pictures = root / "pictures"
    pictures.mkdir()
    (pictures / "red.png").write_bytes(RED)
    (root / "secret.png").write_bytes(RED)
    os.symlink(root / "secret.png", pictures / "link.png")
    os.mkfifo(pictures / "fifo.png")
    return {"root": root, "pictures": pictures,
            "mmproj": write_tiny_mmproj(root / "mmproj.gguf", SMOLLM),
            "llava": write_tiny_llava(root / "tiny-llava")}


@pytest.fixture(scope="module")
def server(roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = f"""
[server]
default_max_tokens = 16

[images]
input_roots = ["{roots['pictures']}"]
allow_remote = true
allowed_networks = ["{ALLOWED_HOST}/32"]
max_input_pixels = {MAX_PIXELS}
max_input_bytes = {MAX_BYTES}
max_images_per_request = 3
fetch_timeout = 5

[[models]]
id = "smol-vision"
plugin = "llama_cpp"
path = "{SMOLLM}"
mmproj = "{roots['mmproj']}"
n_ctx = 1024
n_threads = 2

[[models]]
id = "smol-vision-batched"
plugin = "llama_cpp"
path = "{SMOLLM}"
mmproj = "{roots['mmproj']}"
n_ctx = 1024
n_threads = 2
parallel = 4

[[models]]
id = "smol-vision-tight"
plugin = "llama_cpp"
path = "{SMOLLM}"
mmproj = "{roots['mmproj']}"
n_ctx = 1024
n_threads = 2
max_concurrency = 1
max_queue = 0

[[models]]
id = "tiny-llava"
plugin = "transformers_vision"
path = "{roots['llava']}"
cpu_threads = 2
{SMOLLM_TEXT_ONLY}"""
    running = start_server(tmp_path_factory.mktemp("vision-server"), config)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return sdk_client(server)


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    yield from http_session(server)


def chat(http: httpx.Client, messages: list[dict], model: str = "smol-vision", **fields: object) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": messages, "max_tokens": 8,
                                                   "temperature": 0, **fields})


def error_of(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.parametrize("model", sorted(VISION_MODELS))
def test_sdk_vision_chat_reads_the_image(client: openai.OpenAI, model: str) -> None:
    with_image = client.chat.completions.create(model=model, messages=image_message(data_url(RED)),
                                                max_tokens=6, temperature=0)
    text_only = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is in this picture?"}], max_tokens=6, temperature=0)
    assert with_image.choices[0].message.content is not None
    assert with_image.usage.completion_tokens <= 6
    grown = with_image.usage.prompt_tokens - text_only.usage.prompt_tokens
    assert VISION_MODELS[model] <= grown <= VISION_MODELS[model] + 8  # the image's tokens, plus its markers


def test_responses_input_image_is_the_chat_image(client: openai.OpenAI) -> None:
    """An `input_image` part through /v1/responses reaches the model as chat's `image_url` does."""
    reply = client.responses.create(model="smol-vision", max_output_tokens=6, temperature=0, input=[
        {"role": "user", "content": [{"type": "input_image", "image_url": data_url(RED)},
                                     {"type": "input_text", "text": "What is in this picture?"}]}])
    chat = client.chat.completions.create(model="smol-vision", messages=image_message(data_url(RED)),
                                          max_tokens=6, temperature=0)
    assert reply.usage.input_tokens == chat.usage.prompt_tokens
    assert reply.output_text == chat.choices[0].message.content


def test_responses_input_image_by_file_id(client: openai.OpenAI) -> None:
    """An uploaded image named by `file_id` is the same image as its data URL; an unknown id is a 404."""
    uploaded = client.files.create(file=("red.png", io.BytesIO(RED)), purpose="user_data")

    def ask(image: dict[str, str]) -> Any:
        return client.responses.create(model="smol-vision", max_output_tokens=6, temperature=0, input=[
            {"role": "user", "content": [{"type": "input_image", **image},  # type: ignore[list-item]
                                         {"type": "input_text", "text": "What is in this picture?"}]}])

    by_id, by_url = ask({"file_id": uploaded.id}), ask({"image_url": data_url(RED)})
    assert by_id.usage.input_tokens == by_url.usage.input_tokens and by_id.output_text == by_url.output_text
    items = client.responses.input_items.list(by_id.id)
    assert items.data[0].content[0].file_id == uploaded.id  # the record keeps the id, not the bytes
    with pytest.raises(openai.NotFoundError):
        ask({"file_id": "file-0123456789abcdef01234567"})


@pytest.mark.parametrize("model", sorted(VISION_MODELS))
def test_other_image_other_answer(http: httpx.Client, model: str) -> None:
    def answer(image: bytes) -> str:
        response = chat(http, image_message(data_url(image)), model=model, max_tokens=12)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    red = answer(RED)
    assert answer(RED) == red
    assert answer(BLUE) != red


@pytest.mark.parametrize("model", sorted(VISION_MODELS))
def test_stream_max_tokens_stop_and_seed(client: openai.OpenAI, model: str) -> None:
    messages = image_message(data_url(BLUE))
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=5, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"] and chunks[-1].usage.completion_tokens == 5
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=5, temperature=0)
    assert whole.choices[0].message.content == text
    sampled = [client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=1.0,
                                              seed=42).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1]
    if len(text) > 2:
        stop = text[1:3]
        stopped = client.chat.completions.create(model=model, messages=messages, max_tokens=5, temperature=0,
                                                 stop=[stop])
        assert stop not in (stopped.choices[0].message.content or "")
        assert stopped.choices[0].finish_reason == "stop"


def test_text_only_model_refuses_images(http: httpx.Client) -> None:
    error = error_of(chat(http, image_message(data_url(RED)), model="smollm2"))
    assert error["code"] == "model_not_capable" and "vision" in error["message"]


def test_local_files_under_the_input_roots(http: httpx.Client, roots: dict[str, Path]) -> None:
    pictures = roots["pictures"]
    ok = chat(http, image_message(f"file://{pictures / 'red.png'}"))
    assert ok.status_code == 200, ok.text
    assert chat(http, image_message(str(pictures / "red.png"))).status_code == 200
    refused = {
        "outside": f"file://{roots['root'] / 'secret.png'}",
        "symlink out": f"file://{pictures / 'link.png'}",
        "traversal": f"file://{pictures}/../secret.png",
        "fifo": f"file://{pictures / 'fifo.png'}",
        "directory": f"file://{pictures}",
        "missing": f"file://{pictures / 'nope.png'}",
        "etc": "file:///etc/passwd",
        "remote host": "file://example.com/red.png",
        "relative": "pictures/red.png",
    }
    for why, url in refused.items():
        error = error_of(chat(http, image_message(url)))
        assert error["param"] == "messages[0].content[0].image_url", why


def test_remote_urls_public_only_without_redirects(http: httpx.Client, files_server: str) -> None:
    ok = chat(http, image_message(f"{files_server}/red.png"))
    assert ok.status_code == 200, ok.text
    port = files_server.rsplit(":", 1)[1]
    refused = {
        f"{files_server}/redirect": "redirect",
        f"{files_server}/huge.png": "larger",
        f"{files_server}/missing.png": "404",
        f"http://127.0.0.1:{port}/red.png": "non-public",
        f"http://localhost:{port}/red.png": "non-public",
        "http://169.254.169.254/latest/meta-data": "non-public",
        "http://10.0.0.1/x.png": "non-public",
        "http://192.168.1.1/x.png": "non-public",
        "http://[::1]/x.png": "non-public",
        "http://[::ffff:127.0.0.1]/x.png": "non-public",
        "http://[64:ff9b::7f00:1]/x.png": "non-public",  # NAT64 of 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data": "non-public",  # NAT64 of 169.254.169.254
        "http://[64:ff9b:1::1]/x.png": "non-public",  # a site's own NAT64
        "http://[2002:7f00:1::1]/x.png": "non-public",  # 6to4 of 127.0.0.1
        "http://[2002:c0a8:101::1]/x.png": "non-public",  # 6to4 of 192.168.1.1
        "http://[::7f00:1]/x.png": "non-public",  # IPv4-compatible 127.0.0.1
        "http://0.0.0.0/x.png": "non-public",
        "http://no-such-host.invalid/x.png": "resolve",
        "ftp://example.com/x.png": "image_url must be",
    }
    for url, fragment in refused.items():
        error = error_of(chat(http, image_message(url)))
        assert fragment in error["message"], (url, error)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a size its data does not hold."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    data = zlib.compress(b"\0" * 100)
    idat = struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(">I", zlib.crc32(b"IDAT" + data))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + b"\0\0\0\0IEND\xaeB`\x82"


def _bomb() -> bytes:
    """A small PNG (zeros compress well) that decodes to more pixels than the limit."""
    out = io.BytesIO()
    Image.new("L", (1200, 1000)).save(out, format="PNG", optimize=True)
    return out.getvalue()


@pytest.mark.parametrize(("url", "fragment"), [
    (data_url(b"not an image at all"), "is not a"),
    (data_url(RED[: len(RED) // 2]), "damaged"),
    (data_url(_png_claiming(100_000, 100_000)), "pixels"),
    (data_url(_bomb()), "pixels"),
    (data_url(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"), "is not a"),
    ("data:text/plain;base64,aGVsbG8=", "data URL"),
    ("data:image/png;base64,***", "base64"),
    ("data:image/png,rawbytes", "data URL"),
    (data_url(b"\0" * (MAX_BYTES + 100)), "larger"),
    ("", "image_url must be"),
])
def test_bad_images_are_400s(http: httpx.Client, url: str, fragment: str) -> None:
    for model in VISION_MODELS:
        error = error_of(chat(http, image_message(url), model=model))
        assert fragment in error["message"] and error["type"] == "invalid_request_error", error


def test_limits_on_count_and_the_server_keeps_serving(http: httpx.Client) -> None:
    parts = [{"type": "image_url", "image_url": {"url": data_url(RED)}}] * 4 + [{"type": "text", "text": "hi"}]
    error = error_of(chat(http, [{"role": "user", "content": parts}]))
    assert "at most 3 images" in error["message"]
    bad_part = [{"role": "user", "content": [{"type": "image_url", "image_url": "not an object"}]}]
    assert chat(http, bad_part).status_code == 400
    assert chat(http, image_message(data_url(RED))).status_code == 200
    assert http.get("/health").status_code == 200


def test_a_full_queue_refuses_before_the_images_are_read(server: RunningServer, http: httpx.Client,
                                                        files_server: str) -> None:
    """429 comes first: the image of a request the queue cannot take is never fetched.

    The model's one place is held by a request whose image the files server answers only when
    told, so the queue is full for as long as the test needs, however slow the machine."""
    held: dict[str, httpx.Response] = {}

    def hold() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as holder:
            held["answer"] = chat(holder, image_message(f"{files_server}/held.png"), model="smol-vision-tight")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while "/held.png" not in _Files.asked and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "/held.png" in _Files.asked, "the holding request never fetched its image"
        refused = chat(http, image_message(f"{files_server}/red.png?refused"), model="smol-vision-tight")
        assert error_of(refused, 429)["code"] == "queue_full"
    finally:
        _Files.release.set()
        holder.join(120)
    assert held["answer"].status_code == 200, held["answer"].text
    assert "/red.png?refused" not in _Files.asked
    assert chat(http, image_message(f"{files_server}/red.png?taken"), model="smol-vision-tight").status_code == 200
    assert "/red.png?taken" in _Files.asked


def test_images_join_the_batch_beside_text_streams(server: RunningServer, http: httpx.Client) -> None:
    """With `parallel`, a request with an image is one more sequence of the batch: it and the
    text requests beside it answer as they do alone."""
    calls = [image_message(data_url(RED)), [{"role": "user", "content": "Tell me about cats."}],
             image_message(data_url(BLUE)), [{"role": "user", "content": "Tell me about ships."}]]

    def answer(i: int) -> str:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            response = chat(client, calls[i], model="smol-vision-batched", max_tokens=12)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    alone = [answer(i) for i in range(len(calls))]
    results: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, answer(i))) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results.get(i) for i in range(len(calls))] == alone
    assert alone[0] != alone[2]  # each image reached its own sequence


def test_remote_urls_are_refused_when_not_enabled() -> None:
    import asyncio

    from lampstand.plugins.errors import InvalidRequest
    from lampstand.server.config import ImageSettings
    from lampstand.server.serving.image_inputs import ImageReader

    reader = ImageReader(ImageSettings())
    with pytest.raises(InvalidRequest, match="disabled"):
        asyncio.run(reader.read_bytes("https://example.com/cat.png", "image_url"))
    with pytest.raises(InvalidRequest, match="input roots"):
        asyncio.run(reader.read_bytes("file:///etc/hosts", "image_url"))


def test_chat_cli_sends_images(http: httpx.Client, server: RunningServer, roots: dict[str, Path]) -> None:
    picture = roots["pictures"] / "red.png"
    result = subprocess.run(
        [sys.executable, "-m", "lampstand.clients", "chat", "What is in this picture?", "-m", "smol-vision",
         "--image", str(picture), "--max-tokens", "6", "--temperature", "0", "--json", "--url", server.url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = chat(http, image_message(data_url(RED)), max_tokens=6).json()["choices"][0]["message"]["content"]
    assert json.loads(result.stdout)["content"] == expected
