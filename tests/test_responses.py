"""The Responses API through the official openai SDK and raw SSE, against the real server and SmolLM2."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent
from pydantic import TypeAdapter

from conftest import CHAT_MODEL, SMOLLM_TEXT_ONLY, RunningServer, sdk_client, start_server, stop_server
from lampstand.server.config import ResponseStoreSettings
from lampstand.server.response_store import ResponseStore, StoredResponse

QUESTION = "Name three colours."
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                          "required": ["city"]}}
PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}}}
SDK_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
LIFECYCLE = ("response.created", "response.in_progress")
ENDINGS = ("response.completed", "response.incomplete")


def create(client: openai.OpenAI, **kwargs: Any) -> Any:
    params = {"model": CHAT_MODEL, "input": QUESTION, "max_output_tokens": 24, "temperature": 0}
    return client.responses.create(**(params | kwargs))


def sse_events(http: httpx.Client, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(`event:` name, parsed `data:`) of each frame of a streamed response."""
    with http.stream("POST", "/v1/responses", json=body | {"stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = []
    for frame in raw.split("\n\n"):
        if frame:
            name, data = frame.split("\n")
            assert name.startswith("event: ") and data.startswith("data: ")
            events.append((name[7:], json.loads(data[6:])))
            SDK_EVENT.validate_python(events[-1][1])  # every field the SDK's type requires, of its type
    return events


def test_text_answer_has_openai_shape(client: openai.OpenAI) -> None:
    reply = create(client, instructions="Answer briefly.", metadata={"topic": "colours"})
    assert reply.object == "response" and reply.id.startswith("resp_")
    assert reply.status in ("completed", "incomplete") and reply.error is None
    assert reply.instructions == "Answer briefly." and reply.metadata == {"topic": "colours"}
    assert reply.model == CHAT_MODEL and reply.store is True and reply.max_output_tokens == 24
    [message] = reply.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert reply.output_text.strip()
    usage = reply.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens >= 0 and usage.output_tokens_details.reasoning_tokens == 0


def test_wire_objects_validate_against_the_sdk_types(http: httpx.Client) -> None:
    created = http.post("/v1/responses", json={"model": CHAT_MODEL, "input": QUESTION, "max_output_tokens": 8,
                                               "tools": [WEATHER], "text": {"format": {"type": "json_object"}}})
    assert created.status_code == 200, created.text
    ident = created.json()["id"]
    assert isinstance(created.json()["created_at"], int)
    Response.model_validate(created.json())
    Response.model_validate(http.get(f"/v1/responses/{ident}").json())
    items = http.get(f"/v1/responses/{ident}/input_items").json()
    ResponseItemList.model_validate(items)
    assert items["data"][0]["content"] == [{"type": "input_text", "text": QUESTION}]


def test_same_answer_as_chat_completions(client: openai.OpenAI) -> None:
    """Built on the chat path: the same prompt and sampling give the same text and token counts."""
    reply = create(client, instructions="Answer briefly.")
    chat = client.chat.completions.create(
        model=CHAT_MODEL, max_tokens=24, temperature=0,
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}])
    assert reply.output_text == chat.choices[0].message.content
    assert reply.usage.input_tokens == chat.usage.prompt_tokens
    assert reply.status == ("incomplete" if chat.choices[0].finish_reason == "length" else "completed")


def test_cut_short_answer_is_incomplete(client: openai.OpenAI) -> None:
    reply = create(client, input="Write a long story about a lighthouse.", max_output_tokens=5)
    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output[0].status == "incomplete" and reply.usage.output_tokens == 5


def test_stream_cut_short_ends_in_response_incomplete(http: httpx.Client) -> None:
    events = sse_events(http, {"model": CHAT_MODEL, "input": "Write a long story about a lighthouse.",
                               "max_output_tokens": 5})
    name, last = events[-1]
    assert name == last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["usage"]["output_tokens"] == 5
    assert [event["sequence_number"] for _, event in events] == list(range(len(events)))


def test_top_p_reaches_the_sampler(client: openai.OpenAI) -> None:
    """At a high temperature, a nucleus of one token is greedy decoding; ignored, it would wander."""
    greedy = create(client, temperature=0)
    hot = [create(client, temperature=1.8, top_p=0.01).output_text for _ in range(2)]
    assert hot == [greedy.output_text] * 2


def test_stream_events_come_in_order_and_numbered(http: httpx.Client, client: openai.OpenAI) -> None:
    body = {"model": CHAT_MODEL, "input": QUESTION, "max_output_tokens": 24, "temperature": 0}
    events = sse_events(http, body)
    assert [name for name, _ in events] == [data["type"] for _, data in events]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    names = [name for name, _ in events]
    deltas = names.count("response.output_text.delta")
    assert deltas > 0
    assert names == [*LIFECYCLE, "response.output_item.added", "response.content_part.added",
                     *["response.output_text.delta"] * deltas, "response.output_text.done",
                     "response.content_part.done", "response.output_item.done", names[-1]]
    assert names[-1] in ENDINGS
    data = [d for _, d in events]
    ident = data[0]["response"]["id"]
    assert all(d["response"]["id"] == ident for d in data if "response" in d)
    assert data[0]["response"]["status"] == "in_progress" and data[0]["response"]["output"] == []
    text = "".join(d["delta"] for d in data if d["type"] == "response.output_text.delta")
    done = next(d for d in data if d["type"] == "response.output_text.done")
    final = data[-1]["response"]
    assert text == done["text"] == final["output"][0]["content"][0]["text"]
    assert final["usage"]["output_tokens"] > 0
    assert text == create(client).output_text  # streamed or whole, the same answer
    assert client.responses.retrieve(ident).output_text == text


def test_logprobs_are_included_when_asked(client: openai.OpenAI, http: httpx.Client) -> None:
    """`include: ["message.output_text.logprobs"]` with `top_logprobs`: the tokens and logprobs
    chat completions gives for the same prompt, on the output text and on each streamed delta."""
    reply = create(client, include=["message.output_text.logprobs"], top_logprobs=2)
    part = reply.output[0].content[0]
    chat = client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": QUESTION}],
                                          max_tokens=24, temperature=0, logprobs=True, top_logprobs=2)
    expected = [(t.token, round(t.logprob, 4), [a.token for a in t.top_logprobs])
                for t in chat.choices[0].logprobs.content or []]
    assert expected and [(t.token, round(t.logprob, 4), [a.token for a in t.top_logprobs])
                         for t in part.logprobs or []] == expected
    assert "".join(t.token for t in part.logprobs or []) == part.text == chat.choices[0].message.content
    assert create(client).output[0].content[0].logprobs in (None, [])
    events = [data for _, data in sse_events(http, {"model": CHAT_MODEL, "input": QUESTION, "max_output_tokens": 24,
                                                    "temperature": 0, "top_logprobs": 2,
                                                    "include": ["message.output_text.logprobs"]})]
    for event in events:
        SDK_EVENT.validate_python(event)
    streamed = [t for e in events if e["type"] == "response.output_text.delta" for t in e["logprobs"]]
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert streamed == done["logprobs"] == [t.model_dump() for t in part.logprobs or []]


def test_sdk_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(model=CHAT_MODEL, input="Say hello.", max_output_tokens=200,
                                 temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == list(LIFECYCLE) and kinds[-1] == "response.completed"
    assert final.status == "completed" and final.output_text.strip()


def test_sdk_stream_helper_with_a_schema_and_a_function_tool(client: openai.OpenAI) -> None:
    """`responses.stream` carries JSON schema output and a function call round trip too; each
    streamed answer is the one `create` gives."""
    schema = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    with client.responses.stream(model=CHAT_MODEL, input="Invent a person.", max_output_tokens=120,
                                 temperature=0, text=schema) as stream:  # type: ignore[arg-type]
        person = stream.get_final_response()
    parsed = json.loads(person.output_text)
    assert set(parsed) == {"name", "age"} and person.output_text == create(
        client, input="Invent a person.", max_output_tokens=120, text=schema).output_text
    with client.responses.stream(model=CHAT_MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                                 tool_choice="required", max_output_tokens=60) as stream:
        kinds = [event.type for event in stream]
        asked = stream.get_final_response()
    [call] = asked.output
    assert call.type == "function_call" and call.name == "get_weather" and "city" in json.loads(call.arguments)
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    with client.responses.stream(model=CHAT_MODEL, previous_response_id=asked.id, max_output_tokens=24,
                                 input=[{"type": "function_call_output", "call_id": call.call_id,
                                         "output": "Sunny, 21 C"}], temperature=0) as stream:
        answer = stream.get_final_response()
    assert answer.status in ("completed", "incomplete") and answer.output_text.strip()


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    reply = create(client, input="Invent a person.", max_output_tokens=120,
                   text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}})
    assert reply.status == "completed"
    person = json.loads(reply.output_text)
    assert set(person) == {"name", "age"} and isinstance(person["name"], str) and isinstance(person["age"], int)
    assert reply.text.format.type == "json_schema" and reply.text.format.name == "person"


def test_json_object_mode_parses(client: openai.OpenAI) -> None:
    reply = create(client, input="Give a JSON object with a cat's name and colour.", max_output_tokens=200,
                   text={"format": {"type": "json_object"}})
    assert reply.status == "completed" and isinstance(json.loads(reply.output_text), dict)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_weather"}])
def test_function_tool_round_trip(client: openai.OpenAI, choice: Any) -> None:
    first = create(client, input="What is the weather in Paris?", tools=[WEATHER], tool_choice=choice,
                   max_output_tokens=60)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id
    assert isinstance(json.loads(call.arguments)["city"], str)
    second = create(client, previous_response_id=first.id, tools=[WEATHER], max_output_tokens=30,
                    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}])
    assert second.output[0].type in ("message", "function_call") and second.previous_response_id == first.id
    # The same conversation sent whole, without previous_response_id, is the same prompt.
    whole = create(client, tools=[WEATHER], max_output_tokens=30, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}])
    assert whole.usage.input_tokens == second.usage.input_tokens
    assert whole.output_text == second.output_text


def test_streamed_function_call_events(http: httpx.Client) -> None:
    events = sse_events(http, {"model": CHAT_MODEL, "input": "What is the weather in Paris?", "tools": [WEATHER],
                               "tool_choice": {"type": "function", "name": "get_weather"}, "temperature": 0,
                               "max_output_tokens": 60})
    names = [name for name, _ in events]
    assert names[:3] == [*LIFECYCLE, "response.output_item.added"] and names[-1] == "response.completed"
    added = events[2][1]["item"]
    assert added["type"] == "function_call" and added["name"] == "get_weather" and added["status"] == "in_progress"
    arguments = "".join(d["delta"] for n, d in events if n == "response.function_call_arguments.delta")
    done = next(d for n, d in events if n == "response.function_call_arguments.done")
    assert done["arguments"] == arguments and done["item_id"] == added["id"]
    assert names[-3:-1] == ["response.function_call_arguments.done", "response.output_item.done"]
    assert events[-1][1]["response"]["output"][0]["arguments"] == arguments


def test_three_turns_through_previous_response_id(client: openai.OpenAI) -> None:
    turns = ["My name is Ada and I keep bees.", "What do my bees make?", "What is my name?"]
    replies: list[Any] = []
    for text in turns:
        previous = replies[-1].id if replies else None
        replies.append(create(client, input=text, previous_response_id=previous, max_output_tokens=16,
                              instructions="You are brief."))
    # The server rebuilt the conversation: the third prompt is the chat of all three turns.
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are brief."}]
    for text, reply in zip(turns, replies, strict=True):
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": reply.output_text}]
    chat = client.chat.completions.create(model=CHAT_MODEL, messages=messages[:-1], max_tokens=16, temperature=0)
    assert replies[2].usage.input_tokens == chat.usage.prompt_tokens
    assert replies[2].output_text == chat.choices[0].message.content
    assert replies[2].usage.input_tokens > replies[1].usage.input_tokens > replies[0].usage.input_tokens


def test_stored_response_get_input_items_and_delete(client: openai.OpenAI) -> None:
    given = [{"role": "developer", "content": "Be brief."},
             {"role": "user", "content": [{"type": "input_text", "text": "Name a "},
                                          {"type": "input_text", "text": "fruit."}]}]
    reply = create(client, input=given, max_output_tokens=8)
    fetched = client.responses.retrieve(reply.id)
    assert fetched.model_dump() == reply.model_dump()
    newest_first = client.responses.input_items.list(reply.id).data
    assert [item.role for item in newest_first] == ["user", "developer"]
    assert [part.text for part in newest_first[0].content] == ["Name a ", "fruit."]
    page = client.responses.input_items.list(reply.id, order="asc", limit=1)
    assert [item.role for item in page.data] == ["developer"] and page.has_more
    rest = client.responses.input_items.list(reply.id, order="asc", after=page.data[0].id)
    assert [item.role for item in rest.data] == ["user"] and not rest.has_more
    client.responses.delete(reply.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(reply.id)


def test_store_false_is_not_retrievable(client: openai.OpenAI) -> None:
    reply = create(client, store=False, max_output_tokens=4)
    assert reply.store is False and reply.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError) as raised:
        create(client, previous_response_id=reply.id, max_output_tokens=4)
    assert raised.value.body["param"] == "previous_response_id"


def test_truncation_auto_drops_the_oldest_turns(client: openai.OpenAI) -> None:
    conversation = [{"role": "user", "content": "word " * 2500}, {"role": "assistant", "content": "Noted."},
                    {"role": "user", "content": "Say hi."}]
    with pytest.raises(openai.BadRequestError) as raised:
        create(client, input=conversation, max_output_tokens=4)
    assert raised.value.code == "context_length_exceeded"
    reply = create(client, input=conversation, max_output_tokens=4, truncation="auto")
    assert reply.truncation == "auto" and reply.output_text and reply.usage.input_tokens < 100


def test_async_client_and_concurrent_responses(server: RunningServer) -> None:
    async def run() -> list[Any]:  # a client of its own: the shared one is bound to another test's event loop
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="none", max_retries=0) as client:
            return await asyncio.gather(*(client.responses.create(
                model=CHAT_MODEL, input=f"Count to {n}.", max_output_tokens=12, temperature=0) for n in (3, 4, 5)))

    replies = asyncio.run(run())
    assert len({reply.id for reply in replies}) == 3 and all(reply.output_text for reply in replies)


ERRORS = [
    # (id, body fields, status, code or None, words in the message, param)
    ("unknown-previous-response", {"previous_response_id": "resp_nothing"}, 404, "not_found", "resp_nothing",
     "previous_response_id"),
    ("web-search-tool", {"tools": [{"type": "web_search"}]}, 400, "unsupported_parameter", "web_search",
     "tools[0].type"),
    ("computer-use-tool", {"tools": [WEATHER, {"type": "computer_use_preview", "display_width": 1}]}, 400,
     "unsupported_parameter", "computer_use_preview", "tools[1].type"),
    ("file-search-unknown-store", {"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, 404,
     "not_found", "vs_1", "vector_store_id"),
    ("file-search-no-store", {"tools": [{"type": "file_search", "vector_store_ids": []}]}, 400, None,
     "vector_store_ids", "tools[0]"),
    ("file-search-twice", {"tools": [{"type": "file_search", "vector_store_ids": ["a"]},
                                     {"type": "file_search", "vector_store_ids": ["b"]}]}, 400, None,
     "one file_search", "tools"),
    ("include-unknown", {"include": ["everything"]}, 400, None, "include", None),
    ("forced-hosted-tool", {"tool_choice": {"type": "file_search"}}, 400, "unsupported_parameter", "file_search",
     "tool_choice"),
    ("input-a-number", {"input": 5}, 400, None, "input", None),
    ("unknown-item-type", {"input": [{"type": "hologram", "content": "x"}]}, 400, None, "input", None),
    ("unknown-role", {"input": [{"role": "wizard", "content": "x"}]}, 400, None, "role", None),
    ("empty-input", {"input": []}, 400, None, "input is empty", "input"),
    ("bad-function-name", {"tools": [{"type": "function", "name": "no spaces allowed"}]}, 400, None, "tools",
     None),
    ("schema-missing", {"text": {"format": {"type": "json_schema", "name": "x"}}}, 400, None, "schema",
     "text.format.schema"),
    ("unknown-forced-function", {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, 400,
     None, "nope", "tool_choice"),
    ("image-unknown-file-id", {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     404, "not_found", "file_1", "file_id"),
    ("image-url-and-file-id", {"input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file_1", "image_url": "data:image/png;base64,AAAA"}]}]},
     400, None, "one of image_url", "input[0].content[0].image_url"),
    ("image-to-text-model", {"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]}, 400, "model_not_capable", "vision",
     None),
    ("unknown-model", {"model": "gpt-17"}, 404, "model_not_found", "gpt-17", None),
    ("temperature-high", {"temperature": 5}, 400, None, "temperature", "temperature"),
    ("background-not-stored", {"background": True, "store": False}, 400, None, "store: true", "store"),
    ("background-streamed", {"background": True, "stream": True}, 400, "unsupported_parameter", "poll", "stream"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[case[0] for case in ERRORS])
def test_bad_requests_get_the_envelope(http: httpx.Client, case: tuple[Any, ...]) -> None:
    _, fields, status, code, words, param = case
    response = http.post("/v1/responses", json={"model": CHAT_MODEL, "input": "hi", "max_output_tokens": 4} | fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words.lower() in error["message"].lower()
    if code:
        assert error["code"] == code
    if param:
        assert error["param"] == param


@pytest.mark.parametrize("method,path", [("GET", "/v1/responses/resp_none"), ("DELETE", "/v1/responses/resp_none"),
                                         ("GET", "/v1/responses/resp_none/input_items")])
def test_unknown_stored_response_is_404(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# -- the store: crash-safe, bounded ----------------------------------------------------------

@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RunningServer]:
    config = f'[responses]\ndir = "{tmp_path}/responses"\n' + SMOLLM_TEXT_ONLY
    running = start_server(tmp_path, config)
    yield running
    if running.alive():
        stop_server(running)


def test_stored_response_survives_a_killed_server(own_server: RunningServer, tmp_path: Path) -> None:
    reply = sdk_client(own_server).responses.create(model=CHAT_MODEL, input="Say hi.", max_output_tokens=6)
    # within the 512-token context, so that it is still generating when the server dies
    unfinished = sdk_client(own_server).responses.create(model=CHAT_MODEL, input="Write a long story.",
                                                         max_output_tokens=450, background=True)
    os.kill(own_server.process.pid, signal.SIGKILL)  # no shutdown: only what was committed remains
    own_server.process.wait(timeout=30)
    again = start_server(tmp_path, (tmp_path / "lampstand.toml").read_text())
    try:
        client = sdk_client(again)
        assert client.responses.retrieve(reply.id).output_text == reply.output_text
        lost = client.responses.retrieve(unfinished.id)  # never left queued or in progress forever
        assert lost.status == "failed" and lost.error and "stopped" in lost.error.message
        follow = client.responses.create(model=CHAT_MODEL, input="Again.", previous_response_id=reply.id,
                                         max_output_tokens=4)
        assert follow.usage.input_tokens > reply.usage.input_tokens
    finally:
        stop_server(again)


def test_a_worker_dying_mid_stream_ends_in_response_failed(own_server: RunningServer) -> None:
    """An `error` event, then `response.failed`; what was said before stays in the stored response."""
    with httpx.Client(base_url=own_server.url, timeout=60) as http:
        warm = {"model": CHAT_MODEL, "input": "Say hi.", "max_output_tokens": 2}
        assert http.post("/v1/responses", json=warm).status_code == 200
        pid = next(card["worker_pid"] for card in http.get("/v1/models").json()["data"] if card.get("worker_pid"))
        body = {"model": CHAT_MODEL, "input": "Write a long story about a lighthouse.", "max_output_tokens": 400,
                "stream": True}
        events: list[dict[str, Any]] = []
        with http.stream("POST", "/v1/responses", json=body) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    SDK_EVENT.validate_python(events[-1])
                    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
                    if len(deltas) == 3 and events[-1]["type"] == "response.output_text.delta":
                        os.kill(pid, signal.SIGKILL)
        kinds = [event["type"] for event in events]
        assert kinds[-2:] == ["error", "response.failed"], kinds[-4:]
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
        failed = events[-1]["response"]
        assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
        said = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
        stored = http.get(f"/v1/responses/{failed['id']}").json()
        assert stored["status"] == "failed" and stored["output"][0]["content"][0]["text"] == said
        assert http.post("/v1/responses", json=warm).status_code == 200  # a new worker serves the next one


def test_configured_limits_drop_the_oldest_and_expire(tmp_path: Path) -> None:
    """Through a running server: `[responses] max_bytes` drops the oldest stored responses
    (never the newest), a chain that lost a link is a 404, and `ttl` expires what is left."""
    config = f'[responses]\ndir = "{tmp_path}/responses"\nmax_bytes = 6000\nttl = 4\n' + SMOLLM_TEXT_ONLY
    running = start_server(tmp_path, config)
    try:
        client = sdk_client(running)
        first = client.responses.create(model="smollm2", input="Say one word.", max_output_tokens=4,
                                        temperature=0, metadata={"pad": "p" * 500})
        second = client.responses.create(model="smollm2", input="Say two words.", max_output_tokens=4,
                                         temperature=0, previous_response_id=first.id, metadata={"pad": "q" * 500})
        assert client.responses.retrieve(first.id).id == first.id
        big = client.responses.create(model="smollm2", input="Say three words.", max_output_tokens=4, temperature=0,
                                       metadata={f"pad{i}": "x" * 500 for i in range(14)})
        assert client.responses.retrieve(big.id).id == big.id  # kept, though larger than max_bytes alone
        for gone in (first.id, second.id):
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(gone)
        with pytest.raises(openai.NotFoundError) as lost:
            client.responses.create(model="smollm2", input="Go on.", previous_response_id=second.id,
                                    max_output_tokens=2)
        assert lost.value.body["param"] == "previous_response_id"  # type: ignore[index]
        time.sleep(4.5)
        fresh = client.responses.create(model="smollm2", input="Bye.", max_output_tokens=2, temperature=0)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(big.id)
        assert client.responses.retrieve(fresh.id).id == fresh.id
    finally:
        stop_server(running)


def _row(ident: str, size: int) -> StoredResponse:
    return StoredResponse(id=ident, previous_id=None, body="x" * size, input_items="[]")


def test_store_drops_the_oldest_beyond_its_size(tmp_path: Path) -> None:
    store = ResponseStore(ResponseStoreSettings(dir=tmp_path, max_bytes=2500))

    async def run() -> list[bool]:
        for ident in ("a", "b", "c"):
            await store.put(_row(ident, 1000))
        return [await store.get(ident) is not None for ident in ("a", "b", "c")]

    try:
        assert asyncio.run(run()) == [False, True, True]
    finally:
        store.close()


def test_store_forgets_expired_responses(tmp_path: Path) -> None:
    store = ResponseStore(ResponseStoreSettings(dir=tmp_path, ttl=0.2))

    async def run() -> tuple[bool, bool]:
        await store.put(_row("a", 10))
        fresh = await store.get("a") is not None
        await asyncio.sleep(0.3)
        return fresh, await store.get("a") is not None

    try:
        assert asyncio.run(run()) == (True, False)
    finally:
        store.close()


# -- background responses ------------------------------------------------------------------

def poll(client: openai.OpenAI, ident: str) -> Any:
    for _ in range(600):
        reply = client.responses.retrieve(ident)
        if reply.status not in ("queued", "in_progress"):
            return reply
        time.sleep(0.1)
    raise AssertionError(f"{ident} did not finish")


def test_background_response_is_polled_to_the_same_answer(client: openai.OpenAI) -> None:
    queued = create(client, background=True, instructions="Answer briefly.")
    assert queued.background is True and queued.status in ("queued", "in_progress") and queued.output == []
    done = poll(client, queued.id)
    direct = create(client, instructions="Answer briefly.")
    assert done.status == direct.status and done.output_text == direct.output_text and done.background is True
    assert done.usage.output_tokens == direct.usage.output_tokens
    Response.model_validate(done.model_dump())


def test_background_response_can_be_cancelled(client: openai.OpenAI, http: httpx.Client) -> None:
    queued = create(client, background=True, input="Write a very long story about a lighthouse.",
                    max_output_tokens=1500)
    time.sleep(0.5)
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.id == queued.id
    assert client.responses.retrieve(queued.id).status == "cancelled"
    assert client.responses.cancel(queued.id).status == "cancelled"  # again: the same answer
    done = create(client)
    refused = http.post(f"/v1/responses/{done.id}/cancel")
    assert refused.status_code == 400 and "background" in refused.json()["error"]["message"]
    assert http.post("/v1/responses/resp_nothing/cancel").status_code == 404
    running = create(client, background=True, input="Write a very long story about a harbour.", max_output_tokens=1500)
    assert client.responses.delete(running.id) is None  # deleted while running: it stays deleted
    time.sleep(0.5)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(running.id)
