"""Streaming at the byte level: frames, finish_reason, usage chunk, [DONE], errors."""

from __future__ import annotations

import json

import httpx

from conftest import CHAT_MODEL


def sse_events(http: httpx.Client, path: str, body: dict) -> tuple[bytes, list]:  # type: ignore[type-arg]
    with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read()
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    events = []
    for frame in frames[:-2]:
        assert frame.startswith(b"data: ") and b"\n" not in frame
        events.append(json.loads(frame[6:]))
    return raw, events


def test_chat_stream_frames_and_usage(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    raw, events = sse_events(http, "/v1/chat/completions", body)
    assert raw.endswith(b"data: [DONE]\n\n")
    *chunks, last = events
    assert all(e["object"] == "chat.completion.chunk" and isinstance(e["created"], int) for e in events)
    assert all("usage" in e and e["usage"] is None for e in chunks)
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 6
    reasons = [e["choices"][0]["finish_reason"] for e in chunks]
    assert reasons[-1] == "length" and all(r is None for r in reasons[:-1])
    assert b'"finish_reason":""' not in raw
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"


def test_chat_stream_without_usage_has_no_usage_field(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True}
    _, events = sse_events(http, "/v1/chat/completions", body)
    assert all("usage" not in e for e in events)


def test_tool_call_deltas_carry_index_id_and_name(http: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Look up cats"}], "tools": [tool],
            "tool_choice": "required", "max_tokens": 40, "temperature": 0, "stream": True}
    _, events = sse_events(http, "/v1/chat/completions", body)
    deltas = [d for e in events for d in e["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas and all("index" in d for d in deltas)
    first = deltas[0]
    assert first["id"] and first["type"] == "function" and first["function"]["name"] == "lookup"
    arguments = "".join(d["function"].get("arguments", "") for d in deltas)
    assert json.loads(arguments)["q"]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_completion_stream_frames(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "stream": True}
    _, events = sse_events(http, "/v1/completions", body)
    assert all(e["object"] == "text_completion" for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_request_id_is_echoed(http: httpx.Client) -> None:
    response = http.get("/v1/models", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert http.get("/v1/models").headers["x-request-id"]
