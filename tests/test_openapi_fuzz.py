"""Schemathesis against the document `/openapi.json` serves: no 5xx, and every answer as documented.

A real server with every feature turned on: the bundled chat, embedding and speech models, a
reranker and a tiny Stable Diffusion built from real components, an index over a few notes,
files, fine-tuning and hot-loaded adapters. Each operation gets schemathesis' coverage cases
(boundaries, missing and wrongly typed fields, other HTTP methods) and twenty generated
requests, valid and invalid; every response is checked against the document for its status
code, content type, headers and body. A short table of known-good requests, streams included,
goes through the same checks, since generated requests reach a model's answer only now and then.

Schemathesis' lazy `from_fixture` loader does not run on pytest 9.2 (it writes `Function._nodeid`,
which pytest no longer has), so the operations are collected from the document the app builds in
process, and `test_fuzzed_document_is_the_served_one` pins that document to the served one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from lampstand.server.app import create_app
from lampstand.server.config import Settings

from conftest import MINILM, SMOLLM, RunningServer, start_server, stop_server
from cross_encoder import build_cross_encoder
from lampstand.plugins.sources import BUNDLED_MODELS, bundled_path
from speech_audio import speak
from tiny_diffusion import write_tiny_sd

CHAT_ID, EMBED_ID, SPEECH_ID, IMAGE_ID, RERANK_ID, INDEX = "smollm2", "minilm", "whisper", "tiny-sd", "reranker", "notes"
EXAMPLES_PER_OPERATION = 20
WHISPER = bundled_path(BUNDLED_MODELS[2])
NOTES = {
    "garden.md": "# Garden\n\nTomatoes need full sun and deep watering twice a week.\n",
    "bikes.md": "# Bikes\n\nA chain wants oil every few hundred kilometres.\n",
    "tools.py": "def sharpen(blade: str) -> str:\n    \"\"\"Hone a blade on a whetstone.\"\"\"\n    return blade\n",
}


def config(tmp: Path, reranker: Path, sd: Path) -> str:
    """Small limits keep every generated completion and image short. The embedder is pinned
    because a fuzzed `keep_alive` or unload would otherwise have it reload (a torch import)
    again and again."""
    return f"""
[server]
default_max_tokens = 8
max_tokens_limit = 16
max_queue = 64
model_roots = ["{SMOLLM.parent}"]

[indexes]
dir = "{tmp}/indexes"
source_roots = ["{tmp}/sources"]

[images]
lora_dir = "{tmp}/loras"
max_steps = 2
max_n = 2

[adapters]
dir = "{tmp}/adapters"
hot_load = true

[fine_tuning]
enabled = true
dir = "{tmp}/ft"

[[models]]
id = "smollm2-135m-instruct"
plugin = "llama_cpp"
path = "{SMOLLM}"
aliases = ["{CHAT_ID}"]
preload = true
n_ctx = 512
n_threads = 2

[[models]]
id = "all-minilm-l6-v2"
plugin = "sentence_transformers"
path = "{MINILM}"
aliases = ["{EMBED_ID}"]
preload = true
pinned = true

[[models]]
id = "whisper-tiny"
plugin = "faster_whisper"
path = "{WHISPER}"
aliases = ["{SPEECH_ID}"]
cpu_threads = 2

[[models]]
id = "{IMAGE_ID}"
plugin = "diffusers"
path = "{sd}"
default_steps = 1
max_steps = 2
cpu_threads = 2

[[models]]
id = "{RERANK_ID}"
plugin = "sentence_transformers"
path = "{reranker}"
"""

# Generated strings almost never name a served model or file, so nearly every request would end
# in a 404 or 400 before reaching an engine: most of the time, name one that exists.
GENERATION = {
    "seed": 20240601,  # the same requests every run, so a failure here is reproducible
    "generation": {"mode": "all", "database": "none"},
    "phases": {"stateful": {"enabled": False}},  # the document declares no links between operations
    "request-timeout": 60,
    "dictionaries": {"chat": {"values": [CHAT_ID]}, "embedding": {"values": [EMBED_ID]},
                     "speech": {"values": [SPEECH_ID]}, "image": {"values": [IMAGE_ID]},
                     "rerank": {"values": [RERANK_ID]}, "index": {"values": [INDEX]},
                     "model-file": {"values": [SMOLLM.name]}},
    # Only the chat model is unloaded by name: it reloads in about a second.
    "parameters": {"path.model_id": {"dictionary": "chat", "probability": 0.5},
                   "path.name": {"dictionary": "index", "probability": 0.5}},
    "operations": [
        {"include-path-regex": "^/v1/((chat/)?completions|responses)$",
         "parameters": {"body.model": {"dictionary": "chat", "probability": 0.75}}},
        {"include-path": "/v1/embeddings",
         "parameters": {"body.model": {"dictionary": "embedding", "probability": 0.75}}},
        {"include-path-regex": "^/v1/audio/",
         "parameters": {"body.model": {"dictionary": "speech", "probability": 0.75}}},
        {"include-path": "/v1/images/generations",
         "parameters": {"body.model": {"dictionary": "image", "probability": 0.75}}},
        {"include-path": "/v1/rerank",
         "parameters": {"body.model": {"dictionary": "rerank", "probability": 0.75}}},
        {"include-path": "/v1/rag/query",
         "parameters": {"body.index": {"dictionary": "index", "probability": 0.75},
                        "body.model": {"dictionary": "chat", "probability": 0.5}}},
        {"include-path-regex": "^/v1/(fine_tuning/jobs|load_lora_adapter)$",
         "parameters": {"body.model": {"dictionary": "chat", "probability": 0.5},
                        "body.base_model": {"dictionary": "chat", "probability": 0.5}}},
        {"include-path": "/v1/models/{model_id}/load",
         "parameters": {"body.path": {"dictionary": "model-file", "probability": 0.25}}},
    ],
}

# `positive_data_acceptance` is left out: the server rightly answers some schema-valid requests
# with 400 for rules JSON Schema does not carry (a model's capabilities, its context length,
# a tool message's `tool_call_id`), and a 400 still has to pass every check below.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,  # a method the document does not list gets 405 with `Allow`
    allow_header_conformance,
]


def _served_document() -> dict[str, Any]:
    """The document `/openapi.json` serves; it depends on the code, not on the configured models."""
    return create_app(Settings(models=[])).openapi()


schema = schemathesis.openapi.from_dict(_served_document(), config=schemathesis.Config.from_dict(GENERATION))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    for folder in ("sources", "loras", "adapters"):
        (tmp / folder).mkdir()
    for name, text in NOTES.items():
        (tmp / "sources" / name).write_text(text)
    running = start_server(tmp, config(tmp, build_cross_encoder(tmp / "reranker"), write_tiny_sd(tmp / "tiny-sd")))
    create_notes_index(running)
    yield running
    stop_server(running)


def create_notes_index(server: RunningServer) -> None:
    """The index over NOTES, made again if the fuzzing deleted it."""
    if httpx.get(f"{server.url}/v1/indexes/{INDEX}").status_code == 200:
        return
    sources = server.log.parent / "sources"
    created = httpx.post(f"{server.url}/v1/indexes", timeout=300,
                         json={"name": INDEX, "paths": [str(sources)], "wait": True})
    assert created.status_code == 200, created.text


def test_fuzzed_document_is_the_served_one(fuzz_server: RunningServer) -> None:
    assert httpx.get(fuzz_server.url + "/openapi.json").json() == _served_document()


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_generated_requests_get_documented_answers(case: schemathesis.Case, fuzz_server: RunningServer) -> None:
    case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS)


HI = [{"role": "user", "content": "hi"}]
KNOWN_GOOD = [
    # (id, path, body)
    ("chat", "/v1/chat/completions", {"model": CHAT_ID, "messages": HI, "logprobs": True, "top_logprobs": 2}),
    ("chat-stream", "/v1/chat/completions", {"model": CHAT_ID, "messages": HI, "stream": True, "logprobs": True,
                                             "top_logprobs": 2, "stream_options": {"include_usage": True}}),
    ("response", "/v1/responses", {"model": CHAT_ID, "input": HI, "instructions": "Be brief."}),
    ("response-stream", "/v1/responses", {"model": CHAT_ID, "input": "hi", "stream": True}),
    ("response-tool", "/v1/responses", {"model": CHAT_ID, "input": "weather in Oslo?", "tool_choice": "required",
                                        "tools": [{"type": "function", "name": "weather", "parameters": {
                                            "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}}}]}),
    ("completion", "/v1/completions", {"model": CHAT_ID, "prompt": "hi", "logprobs": 2}),
    ("completion-stream", "/v1/completions",
     {"model": CHAT_ID, "prompt": "hi", "stream": True, "stream_options": {"include_usage": True}}),
    ("embedding", "/v1/embeddings", {"model": EMBED_ID, "input": "a"}),
    ("embedding-base64", "/v1/embeddings", {"model": EMBED_ID, "input": ["a", "b"], "encoding_format": "base64"}),
    ("rerank", "/v1/rerank", {"model": RERANK_ID, "query": "sun", "documents": ["tomatoes", "chains"], "top_n": 1}),
    ("index-search", f"/v1/indexes/{INDEX}/search", {"query": "watering tomatoes", "mode": "hybrid", "top_k": 2}),
    ("rag", "/v1/rag/query", {"index": INDEX, "query": "How often to water?", "model": CHAT_ID}),
    ("rag-stream", "/v1/rag/query", {"index": INDEX, "query": "How often to water?", "model": CHAT_ID, "stream": True}),
    ("image", "/v1/images/generations", {"model": IMAGE_ID, "prompt": "a red cat", "size": "64x64", "seed": 1}),
    ("image-stream", "/v1/images/generations", {"model": IMAGE_ID, "prompt": "a red cat", "size": "64x64",
                                                "stream": True}),
]


def _path_template(path: str) -> str:
    return path.replace(f"/{INDEX}/", "/{name}/")


@pytest.mark.parametrize(("path", "body"), [case[1:] for case in KNOWN_GOOD], ids=[case[0] for case in KNOWN_GOOD])
def test_known_good_requests_get_documented_answers(path: str, body: dict[str, Any],
                                                    fuzz_server: RunningServer) -> None:
    create_notes_index(fuzz_server)
    operation = schema[_path_template(path)]["POST"]
    path_parameters = {"name": INDEX} if "{name}" in _path_template(path) else None
    response = operation.Case(body=body, path_parameters=path_parameters).call_and_validate(
        base_url=fuzz_server.url, checks=CHECKS)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("response_format", ["json", "verbose_json", "text", "srt", "vtt"])
def test_known_good_transcriptions_get_documented_answers(response_format: str, fuzz_server: RunningServer,
                                                          tmp_path: Path) -> None:
    speech = speak("The garden needs water.", tmp_path / "speech.wav").read_bytes()
    case = schema["/v1/audio/transcriptions"]["POST"].Case(
        body={"file": speech, "model": SPEECH_ID, "response_format": response_format},
        media_type="multipart/form-data")
    response = case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS)
    assert response.status_code == 200, response.text
