"""Chat completions through the official openai SDK against the real server and SmolLM2."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from conftest import CHAT_MODEL

QUESTION = [{"role": "user", "content": "Name three colours."}]


def ask(client: openai.OpenAI, **kwargs):  # type: ignore[no-untyped-def]
    params = {"model": CHAT_MODEL, "messages": QUESTION, "max_tokens": 24, "temperature": 0}
    return client.chat.completions.create(**(params | kwargs))


def test_plain_answer_has_openai_shape(client: openai.OpenAI) -> None:
    reply = ask(client)
    assert reply.object == "chat.completion"
    assert isinstance(reply.created, int)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content.strip()
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_stream_equals_whole_answer(client: openai.OpenAI) -> None:
    whole = ask(client).choices[0].message.content
    stream = ask(client, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])


def test_async_client(async_client: openai.AsyncOpenAI) -> None:
    async def run() -> tuple[str, str]:
        whole = await async_client.chat.completions.create(
            model=CHAT_MODEL, messages=QUESTION, max_tokens=12, temperature=0)
        stream = await async_client.chat.completions.create(
            model=CHAT_MODEL, messages=QUESTION, max_tokens=12, temperature=0, stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return whole.choices[0].message.content or "", "".join(parts)

    whole, streamed = asyncio.run(run())
    assert whole and whole == streamed


def test_same_seed_same_output_and_other_seed_differs(client: openai.OpenAI) -> None:
    runs = [ask(client, temperature=1.0, seed=seed, max_tokens=32).choices[0].message.content
            for seed in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_max_tokens_and_max_completion_tokens_cap_the_answer(client: openai.OpenAI) -> None:
    for key in ("max_tokens", "max_completion_tokens"):
        reply = client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, temperature=0,
                                               **{key: 3})
        assert reply.usage.completion_tokens == 3
        assert reply.choices[0].finish_reason == "length"


def test_default_cap_applies_without_max_tokens(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL, temperature=0,
        messages=[{"role": "user", "content": "Write a very long story about a dragon."}])
    assert reply.usage.completion_tokens <= 64  # the test server's default_max_tokens


def test_stop_sequence_cuts_the_text(client: openai.OpenAI) -> None:
    free = ask(client, max_tokens=40).choices[0].message.content
    word = free.split()[2]
    reply = ask(client, max_tokens=40, stop=[word])
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == free[: free.index(word)]


def test_logprobs(client: openai.OpenAI) -> None:
    reply = ask(client, logprobs=True, top_logprobs=3, max_tokens=5)
    content = reply.choices[0].logprobs.content
    assert len(content) == 5
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob >= token.logprob - 1e-4


def test_n_choices(client: openai.OpenAI) -> None:
    reply = ask(client, n=2, temperature=1.0, seed=3, max_tokens=8)
    assert [c.index for c in reply.choices] == [0, 1]


def test_developer_role_and_list_of_parts(client: openai.OpenAI) -> None:
    messages = [
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "fruit."}]},
    ]
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content.strip()


def test_json_object_mode_always_parses(client: openai.OpenAI) -> None:
    reply = ask(client, response_format={"type": "json_object"}, max_tokens=200,
                messages=[{"role": "user", "content": "Give a JSON object with a cat's name and colour."}])
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    reply = ask(client, max_tokens=120, messages=[{"role": "user", "content": "Invent a person."}],
                response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    person = json.loads(reply.choices[0].message.content)
    assert set(person) == {"name", "age"}
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}},
}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_call(client: openai.OpenAI, choice) -> None:  # type: ignore[no-untyped-def]
    reply = ask(client, messages=WEATHER_QUESTION, tools=[WEATHER, TIME], tool_choice=choice, max_tokens=60)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]
    assert call.type == "function" and call.id
    if isinstance(choice, dict):
        assert call.function.name == "get_weather"
    assert call.function.name in ("get_weather", "get_time")
    assert isinstance(json.loads(call.function.arguments), dict)


def test_streamed_tool_call_deltas_work_with_the_sdk_helper(client: openai.OpenAI) -> None:
    with client.beta.chat.completions.stream(
        model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER], max_tokens=60, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    messages = WEATHER_QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
    ]
    reply = ask(client, messages=messages, tools=[WEATHER], max_tokens=30)
    assert reply.choices[0].message.content is not None or reply.choices[0].message.tool_calls


def test_concurrent_greedy_streams_are_not_cut_or_mixed(client: openai.OpenAI) -> None:
    prompts = ["Tell me about the sea.", "Tell me about mountains."]

    def stream_text(prompt: str) -> str:
        stream = client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=40,
            temperature=0, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    alone = [stream_text(p) for p in prompts]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(stream_text, prompts + prompts))
    assert together == alone + alone


def test_langchain_chat_openai_round_trip(server) -> None:  # type: ignore[no-untyped-def]
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=CHAT_MODEL, base_url=server.base_url, api_key="x", temperature=0,
                     max_tokens=12, stream_usage=True, max_retries=0)
    answer = llm.invoke("Say hello.")
    assert answer.content
    chunks = list(llm.stream("Say hello."))
    assert "".join(c.content for c in chunks) == answer.content
    assert sum((c.usage_metadata or {}).get("output_tokens", 0) for c in chunks) > 0
