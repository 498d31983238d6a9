"""Image generation over HTTP: a tiny random-weight Stable Diffusion pipeline saved in the real
diffusers format, served by the `diffusers` plugin, asked through the OpenAI SDK, raw HTTP
and `lampstand imagine`.

Random weights draw noise, so the tests check what does not depend on the picture: PNG
validity and size, the parameters in the PNG's text chunks, byte-identical images for one
seed, different ones for another seed or a style LoRA, progress events, cancellation and
the refusals.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from conftest import SMOLLM_TEXT_ONLY, RunningServer, http_session, sdk_client, start_server, stop_server
from tiny_diffusion import write_not_a_lora, write_tiny_sd, write_tiny_style_lora

URL_TTL = 3.0
MAX_STEPS = 400


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    sd = write_tiny_sd(root / "tiny-sd")
    loras = root / "loras"
    write_tiny_style_lora(sd, loras / "style.safetensors", seed=1)
    write_not_a_lora(loras / "not-a-lora.safetensors")
    (root / "outside.safetensors").write_bytes((loras / "style.safetensors").read_bytes())
    return {"root": root, "sd": sd, "loras": loras}


@pytest.fixture(scope="module")
def server(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = f"""
[images]
lora_dir = "{folders['loras']}"
url_ttl = {URL_TTL}
max_steps = {MAX_STEPS}
max_n = 3

[[models]]
id = "tiny-sd"
plugin = "diffusers"
path = "{folders['sd']}"
default_steps = 2
max_steps = 400
cpu_threads = 2
{SMOLLM_TEXT_ONLY}"""
    running = start_server(tmp_path_factory.mktemp("images-server"), config)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return sdk_client(server)


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    yield from http_session(server)


def generate(http: httpx.Client, **fields: object) -> httpx.Response:
    return http.post("/v1/images/generations", json={"model": "tiny-sd", "prompt": "a red fox", **fields})


def pngs(response: httpx.Response) -> list[bytes]:
    assert response.status_code == 200, response.text
    return [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]


def error_of(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def metric(http: httpx.Client, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f"lampstand:{name}_total{{") and 'model_name="tiny-sd"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sdk_generates_valid_pngs_with_their_parameters(client: openai.OpenAI) -> None:
    result = client.images.generate(model="tiny-sd", prompt="a lighthouse at dusk", n=2, size="64x64",
                                    extra_body={"seed": 7, "steps": 3, "negative_prompt": "blurry"})
    assert len(result.data) == 2 and result.data[0].url is None
    for index, item in enumerate(result.data):
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        image.load()
        assert image.format == "PNG" and image.size == (64, 64)
        parameters = json.loads(image.text["lampstand"]) if "lampstand" in image.text else None
        text = image.text.get("parameters", "")
        assert "a lighthouse at dusk" in text and "blurry" in text and f"Seed: {7 + index}" in text
        if parameters is not None:
            assert parameters["seed"] == 7 + index and parameters["steps"] == 3
        assert item.model_extra["seed"] == 7 + index


def test_same_seed_same_image_other_seed_other_image(http: httpx.Client) -> None:
    first = pngs(generate(http, seed=11, size="64x64"))
    again = pngs(generate(http, seed=11, size="64x64"))
    other = pngs(generate(http, seed=12, size="64x64"))
    assert first == again
    assert first != other
    # image i of n is made with seed + i, so it can be made again on its own
    pair = pngs(generate(http, seed=11, size="64x64", n=2))
    assert pair[0] == first[0] and pair[1] == pngs(generate(http, seed=12, size="64x64"))[0]


def test_default_size_and_seed_drawn(http: httpx.Client) -> None:
    response = generate(http)
    (png,) = pngs(response)
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    assert response.json()["size"] == "64x64" and isinstance(response.json()["data"][0]["seed"], int)


def test_url_response_serves_the_png_until_it_expires(http: httpx.Client, server: RunningServer) -> None:
    outputs = server.log.parent / "data" / "lampstand" / "images"
    response = generate(http, seed=5, response_format="url")
    assert response.status_code == 200, response.text
    url = response.json()["data"][0]["url"]
    assert "b64_json" not in response.json()["data"][0]
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert fetched.content == pngs(generate(http, seed=5))[0]
    assert (outputs / url.rsplit("/", 1)[1]).is_file()
    time.sleep(URL_TTL + 0.5)
    error = error_of(httpx.get(url), 404)
    assert error["code"] == "not_found"
    assert not (outputs / url.rsplit("/", 1)[1]).exists()  # deleted once expired
    for name in ("nope.png", "..%2F..%2Fetc%2Fpasswd", "0" * 32 + ".txt"):
        assert http.get(f"/v1/images/files/{name}").status_code == 404


def test_style_lora_changes_the_image_and_is_removed_after(http: httpx.Client) -> None:
    base = pngs(generate(http, seed=3))[0]
    styled = pngs(generate(http, seed=3, lora=[{"name": "style.safetensors", "scale": 1.0}]))[0]
    assert styled != base
    assert pngs(generate(http, seed=3, lora=["style.safetensors"]))[0] == styled  # cached: same result
    weaker = pngs(generate(http, seed=3, lora=[{"name": "style.safetensors", "scale": 0.3}]))[0]
    assert weaker not in (styled, base)
    assert pngs(generate(http, seed=3))[0] == base
    text = Image.open(io.BytesIO(styled)).text.get("parameters", "")
    assert "style" in text


@pytest.mark.parametrize(("lora", "fragment"), [
    ("../outside.safetensors", ".."),
    ("missing.safetensors", "not found"),
    ("style.bin", ".safetensors"),
    ("not-a-lora.safetensors", "lora"),
    ("", "lora[0]"),
])
def test_bad_lora_is_a_400(http: httpx.Client, lora: str, fragment: str) -> None:
    error = error_of(generate(http, lora=[lora]))
    assert fragment.lower() in error["message"].lower() and error["param"].startswith("lora")


@pytest.mark.parametrize(("fields", "param"), [
    ({"size": "65x64"}, "size"),
    ({"size": "big"}, "size"),
    ({"size": "100000x64"}, "size"),
    ({"n": 4}, "n"),
    ({"n": 0}, "n"),
    ({"steps": MAX_STEPS + 1}, "steps"),
    ({"steps": 0}, "steps"),
    ({"prompt": ""}, "prompt"),
    ({"response_format": "jpeg"}, "response_format"),
    ({"guidance_scale": -1}, "guidance_scale"),
    ({"seed": -5}, "seed"),
    ({"stream": True, "response_format": "url"}, "response_format"),
])
def test_bad_fields_are_400s(http: httpx.Client, fields: dict, param: str) -> None:
    error = error_of(generate(http, **fields))
    assert error["type"] == "invalid_request_error" and param in (error["param"] or "")


def test_wrong_models_and_malformed_bodies(http: httpx.Client) -> None:
    assert error_of(generate(http, model="smollm2"))["code"] == "model_not_capable"
    assert error_of(generate(http, model="dall-e-3"), 404)["code"] == "model_not_found"
    assert http.post("/v1/images/generations", content=b"{not json",
                     headers={"content-type": "application/json"}).status_code == 400
    assert http.post("/v1/images/generations", json=["a list"]).status_code == 400
    assert http.get("/health").status_code == 200


def test_stream_reports_each_step_then_each_image(http: httpx.Client) -> None:
    events = []
    body = {"model": "tiny-sd", "prompt": "x", "n": 2, "steps": 3, "seed": 9, "stream": True}
    with http.stream("POST", "/v1/images/generations", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    progress = [e for e in events if e["type"] == "image_generation.progress"]
    done = [e for e in events if e["type"] == "image_generation.completed"]
    assert [(e["image_index"], e["step"]) for e in progress] == [(i, s) for i in range(2) for s in (1, 2, 3)]
    assert [e["seed"] for e in done] == [9, 10] and all(e["size"] == "64x64" for e in done)
    assert base64.b64decode(done[0]["b64_json"]) == pngs(generate(http, prompt="x", seed=9, steps=3))[0]


def test_disconnect_cancels_the_generation(http: httpx.Client, server: RunningServer) -> None:
    cancelled = metric(http, "image_generations_cancelled")
    body = {"model": "tiny-sd", "prompt": "x", "steps": MAX_STEPS, "seed": 1}
    # streamed: the client hangs up after the first progress event
    with httpx.stream("POST", server.url + "/v1/images/generations", json=body | {"stream": True},
                      timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break
    # whole: the client gives up waiting
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/images/generations", json=body, timeout=httpx.Timeout(60, read=1.0))
    deadline = time.monotonic() + 20
    while metric(http, "image_generations_cancelled") < cancelled + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(http, "image_generations_cancelled") == cancelled + 2
    steps = metric(http, "image_steps")
    time.sleep(1.0)
    assert metric(http, "image_steps") == steps  # nothing is still denoising
    assert steps < 2 * MAX_STEPS  # neither ran to its end
    assert pngs(generate(http, seed=1))  # and the model still serves


def test_imagine_cli_writes_the_same_pngs(http: httpx.Client, server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    result = subprocess.run(
        [sys.executable, "-m", "lampstand.clients", "imagine", "a red fox", "-o", str(out), "--steps", "2",
         "--seed", "21", "--size", "64x64", "-n", "2", "--lora", "style.safetensors:0.5", "--url", server.url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = pngs(generate(http, seed=21, steps=2, size="64x64", n=2,
                             lora=[{"name": "style.safetensors", "scale": 0.5}]))
    assert out.read_bytes() == expected[0] and (tmp_path / "fox-2.png").read_bytes() == expected[1]
    assert "seed 21" in result.stderr and "seed 22" in result.stderr
    bad = subprocess.run([sys.executable, "-m", "lampstand.clients", "imagine", "x", "--size", "7x7", "-o",
                          str(tmp_path / "bad.png"), "--url", server.url], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: 400") and len(bad.stderr.strip().splitlines()) == 1
