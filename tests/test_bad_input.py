"""Bad input, table-driven: each case gets the OpenAI envelope and a 4xx, and the server keeps serving."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from conftest import CHAT_MODEL, EMBED_MODEL, RunningServer

USER = [{"role": "user", "content": "hi"}]


def chat(**fields) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return {"model": CHAT_MODEL, "messages": USER, "max_tokens": 4} | fields


LONG_PROMPT = [{"role": "user", "content": "word " * 2500}]
def raw(body: dict) -> bytes:  # type: ignore[type-arg]
    """`body` as ASCII JSON, so that a lone surrogate travels as its escape."""
    return json.dumps(body, ensure_ascii=True).encode("ascii")


def nested(depth: int) -> dict:  # type: ignore[type-arg]
    schema: dict = {"type": "string"}  # type: ignore[type-arg]
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


IMAGE = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]

CASES = [
    # (id, method, path, body (dict, bytes or None), status, code or None, words in the message)
    ("malformed-json", "POST", "/v1/chat/completions", b'{"model": "x", "messages": [', 400, None, "JSON"),
    ("messages-not-a-list", "POST", "/v1/chat/completions", chat(messages="hi"), 400, None, "messages"),
    ("empty-messages", "POST", "/v1/chat/completions", chat(messages=[]), 400, None, "messages"),
    ("unknown-role", "POST", "/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "x"}]), 400, None, "role"),
    ("max-tokens-string", "POST", "/v1/chat/completions", chat(max_tokens="many"), 400, None, "max_tokens"),
    ("max-tokens-zero", "POST", "/v1/chat/completions", chat(max_tokens=0), 400, None, "max_tokens"),
    ("seed-a-boolean", "POST", "/v1/chat/completions", chat(seed=False), 400, None, "not a boolean"),
    ("stream-a-number", "POST", "/v1/chat/completions", chat(stream=1), 400, None, "not a number"),
    ("max-tokens-a-numeric-string", "POST", "/v1/chat/completions", chat(max_tokens="5"), 400, None, "not a string"),
    ("temperature-high", "POST", "/v1/chat/completions", chat(temperature=5), 400, None, "temperature"),
    ("top-p-zero", "POST", "/v1/chat/completions", chat(top_p=0), 400, None, "top_p"),
    ("penalty-high", "POST", "/v1/chat/completions", chat(presence_penalty=3), 400, None, "presence_penalty"),
    ("top-logprobs-high", "POST", "/v1/chat/completions", chat(logprobs=True, top_logprobs=50), 400, None, "top_logprobs"),
    ("n-too-many", "POST", "/v1/chat/completions", chat(n=50), 400, None, "n must be"),
    ("too-many-stops", "POST", "/v1/chat/completions", chat(stop=list("abcdef")), 400, None, "stop"),
    ("unknown-model", "POST", "/v1/chat/completions", chat(model="gpt-17"), 404, "model_not_found", "gpt-17"),
    ("prompt-too-long", "POST", "/v1/chat/completions", chat(messages=LONG_PROMPT), 400,
     "context_length_exceeded", "2048"),
    ("completion-too-long", "POST", "/v1/chat/completions", chat(max_tokens=5000), 400,
     "context_length_exceeded", "5000"),
    ("image-to-text-model", "POST", "/v1/chat/completions", chat(messages=IMAGE), 400, "model_not_capable", "vision"),
    ("chat-with-embedder", "POST", "/v1/chat/completions", chat(model=EMBED_MODEL), 400, "model_not_capable", "chat"),
    ("unknown-tool-choice", "POST", "/v1/chat/completions",
     chat(tools=[{"type": "function", "function": {"name": "f"}}],
          tool_choice={"type": "function", "function": {"name": "g"}}), 400, None, "tool_choice"),
    ("schema-missing", "POST", "/v1/chat/completions",
     chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}), 400, None, "schema"),
    ("logit-bias-key", "POST", "/v1/chat/completions", chat(logit_bias={"abc": 5}), 400, None, "logit_bias"),
    ("logit-bias-range", "POST", "/v1/chat/completions", chat(logit_bias={"50": 500}), 400, None, "logit_bias"),
    ("logit-bias-vocab", "POST", "/v1/chat/completions", chat(logit_bias={"999999": 5}), 400, None, "logit_bias"),
    ("tool-message-without-id", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "tool", "content": "x"}]), 400, None, "tool_call_id"),
    ("missing-model-file", "POST", "/v1/chat/completions", chat(model="missing-file"), 424, "model_unavailable",
     "file not found"),
    ("offline-hub-file", "POST", "/v1/chat/completions", chat(model="offline-hub"), 424, "model_unavailable",
     "model-Q4_K_M.gguf"),
    ("completion-bad-token-id", "POST", "/v1/completions", {"model": CHAT_MODEL, "prompt": [10**9]}, 400, None, "token ids"),
    ("completion-empty-prompt-list", "POST", "/v1/completions", {"model": CHAT_MODEL, "prompt": []}, 400, None, "prompt"),
    ("embed-empty-string", "POST", "/v1/embeddings", {"model": EMBED_MODEL, "input": ""}, 400, None, "empty"),
    ("embed-empty-list", "POST", "/v1/embeddings", {"model": EMBED_MODEL, "input": []}, 400, None, "empty"),
    ("embed-with-chat-model", "POST", "/v1/embeddings", {"model": CHAT_MODEL, "input": "x"}, 400, "model_not_capable", "embeddings"),
    ("embed-bad-format", "POST", "/v1/embeddings", {"model": EMBED_MODEL, "input": "x", "encoding_format": "hex"}, 400, None, "encoding_format"),
    ("embed-bad-token-id", "POST", "/v1/embeddings", {"model": EMBED_MODEL, "input": [[-5, 3]]}, 400, None, "token ids"),
    ("lone-surrogate-content", "POST", "/v1/chat/completions", raw(chat(messages=[{"role": "user", "content": "hi \ud800"}])),
     400, "invalid_json", "surrogate"),
    ("lone-surrogate-prompt", "POST", "/v1/completions", raw({"model": CHAT_MODEL, "prompt": "\udfff"}), 400,
     "invalid_json", "surrogate"),
    ("lone-surrogate-model", "POST", "/v1/embeddings", raw({"model": "\udc00x", "input": "x"}), 400, "invalid_json",
     "surrogate"),
    ("deep-tool-parameters", "POST", "/v1/chat/completions",
     raw(chat(tools=[{"type": "function", "function": {"name": "f", "parameters": nested(400)}}])), 400,
     "invalid_json", "nested deeper"),
    ("deep-json-schema", "POST", "/v1/chat/completions",
     raw(chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": nested(300)}})), 400,
     "invalid_json", "nested deeper"),
    ("schema-huge-max-length", "POST", "/v1/chat/completions",
     chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
         "type": "string", "maxLength": 100000000}}}), 400, None, "maxLength 100000000"),
    ("schema-huge-min-items", "POST", "/v1/chat/completions",
     chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
         "type": "array", "minItems": 100000000}}}), 400, None, "minItems"),
    ("schema-pattern-repeat", "POST", "/v1/chat/completions",
     chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
         "type": "string", "pattern": "^a{2000}$"}}}), 400, None, "pattern 2000"),
    ("tool-parameters-max-length", "POST", "/v1/chat/completions",
     chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
         "type": "object", "properties": {"a": {"type": "string", "maxLength": 2000}}}}}], tool_choice="required"),
     400, None, "maxLength 2000"),
    ("keep-alive-nan", "POST", "/v1/chat/completions", chat(keep_alive="nan"), 400, None, "keep_alive"),
    ("keep-alive-nan-number", "POST", "/v1/embeddings", raw({"model": EMBED_MODEL, "input": "x"})[:-1]
     + b', "keep_alive": NaN}', 400, None, "keep_alive"),
    ("index-name-newline", "POST", "/v1/indexes", {"name": "abc\n", "paths": ["/tmp"]}, 400, None, "name"),
    ("response-malformed-json", "POST", "/v1/responses", b'{"model": "x", "input": [', 400, None, "JSON"),
    ("response-deep-tool-parameters", "POST", "/v1/responses", raw({"model": CHAT_MODEL, "input": "hi", "tools": [
        {"type": "function", "name": "f", "parameters": nested(400)}]}), 400, "invalid_json", "nested deeper"),
    ("response-lone-surrogate", "POST", "/v1/responses", raw({"model": CHAT_MODEL, "input": "hi \ud800"}), 400,
     "invalid_json", "surrogate"),
    ("response-prompt-too-long", "POST", "/v1/responses", {"model": CHAT_MODEL, "input": "word " * 2500}, 400,
     "context_length_exceeded", "tokens"),
    ("response-wrong-method", "PUT", "/v1/responses", None, 405, None, "Method Not Allowed"),
    ("unknown-route", "GET", "/v1/nothing-here", None, 404, None, "Not Found"),
    ("wrong-method", "GET", "/v1/chat/completions", None, 405, None, "Method Not Allowed"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_envelope(http: httpx.Client, case: tuple) -> None:  # type: ignore[type-arg]
    _, method, path, body, status, code, words = case
    if isinstance(body, bytes):
        response = http.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        response = http.request(method, path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and isinstance(error["type"], str)
    if code:
        assert error["code"] == code
    assert words.lower() in error["message"].lower()


def test_oversized_body_is_413(http: httpx.Client) -> None:
    huge = chat(messages=[{"role": "user", "content": "x" * 2_000_000}])
    response = http.post("/v1/chat/completions", json=huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_oversized_chunked_body_is_413(http: httpx.Client) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"model": "smollm2", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 1_000_000
        yield b'"}]}'

    response = http.post("/v1/chat/completions", content=body(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert http.get("/health").status_code == 200


def test_a_surrogate_pair_is_text(http: httpx.Client) -> None:
    body = raw(chat(messages=[{"role": "user", "content": "smile \ud83d\ude00"}]))
    response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def test_an_abandoned_embedding_batch_stops_in_the_worker(server: RunningServer, http: httpx.Client) -> None:
    """The client of a large batch goes away: the worker stops within a slice, and the next request is served."""
    assert http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": "warm"}).status_code == 200
    texts = [f"passage {i}: " + "a fairly long sentence about nothing in particular " * 12 for i in range(1024)]  # 650 kB: under the 1 MiB body limit
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server.url}/v1/embeddings", json={"model": EMBED_MODEL, "input": texts}, timeout=1.5)
    # Counted as running until the worker has stopped: once the count is 0, the worker is idle.
    card = f"/v1/models/{EMBED_MODEL}"
    deadline = time.monotonic() + 60
    while http.get(card).json()["running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    worker = psutil.Process(http.get(card).json()["worker_pid"])
    before = sum(worker.cpu_times()[:2])
    time.sleep(0.5)
    assert sum(worker.cpu_times()[:2]) - before < 0.1, "the worker was still embedding after running reached 0"
    small = http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": "one word"}, timeout=120)
    assert small.status_code == 200
    cancelled = [line for line in server.log.read_text().splitlines() if "call embed cancelled after" in line]
    assert cancelled and "of 1024" in cancelled[-1], cancelled


def test_unknown_fields_are_ignored(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=chat(frobnicate=True, metadata={"a": 1}))
    assert response.status_code == 200


def test_failed_model_shows_in_models_list(http: httpx.Client) -> None:
    http.post("/v1/chat/completions", json=chat(model="missing-file"))
    card = http.get("/v1/models/missing-file").json()
    assert card["status"] == "failed" and "file not found" in card["error"]


def test_server_still_serves_after_the_table(server: RunningServer, http: httpx.Client) -> None:
    assert server.alive()
    assert http.get("/health").json() == {"status": "ok"}
    reply = http.post("/v1/chat/completions", json=chat())
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
