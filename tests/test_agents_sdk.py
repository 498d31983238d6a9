"""The OpenAI Agents SDK (`openai-agents`) runs an agent with a Python function tool on /v1/responses.

The SDK's own Responses model (`OpenAIResponsesModel`) talks to the real server and SmolLM2; the
first turn is forced to call the tool (`tool_choice="required"`), and the SDK's default
`reset_tool_choice` leaves the second turn free to answer from the tool's output. Tracing is off
per run (`RunConfig`), since its exporter would try to reach OpenAI; no global SDK state is set.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from agents import (Agent, ItemHelpers, MessageOutputItem, ModelSettings, OpenAIResponsesModel,
                    RawResponsesStreamEvent, RunConfig, RunItemStreamEvent, RunResult, Runner, ToolCallItem,
                    ToolCallOutputItem, function_tool)

from conftest import CHAT_MODEL, RunningServer

QUESTION = "What is the weather in Paris?"
RUN_CONFIG = RunConfig(tracing_disabled=True)
MAX_TOKENS = 60


def weather_agent(client: openai.AsyncOpenAI, calls: list[str]) -> Agent[Any]:
    """An agent whose one tool records the city it is called with in `calls`."""

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        calls.append(city)
        return f"Sunny, 21 C in {city}"

    return Agent(name="weather", instructions="Answer in one short sentence.", tools=[get_weather],
                 model=OpenAIResponsesModel(CHAT_MODEL, client),
                 model_settings=ModelSettings(tool_choice="required", max_tokens=MAX_TOKENS, temperature=0))


def run_agent(server: RunningServer, drive: Callable[[Agent[Any]], Any]) -> tuple[Any, list[str]]:
    """`drive(agent)` in an event loop of its own, with a client of its own (bound to that loop)."""
    calls: list[str] = []

    async def run() -> Any:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0,
                                      timeout=120) as client:
            return await drive(weather_agent(client, calls))

    return asyncio.run(run()), calls


def assert_tool_then_answer(result: RunResult, calls: list[str]) -> tuple[ToolCallItem, ToolCallOutputItem]:
    """The run called the tool once with the model's arguments, then answered in text."""
    call, output, message = result.new_items
    assert isinstance(call, ToolCallItem) and isinstance(output, ToolCallOutputItem)
    assert isinstance(message, MessageOutputItem)
    assert call.raw_item.name == "get_weather" and call.raw_item.status == "completed"
    assert calls == [json.loads(call.raw_item.arguments)["city"]] and calls[0]
    assert output.raw_item["call_id"] == call.raw_item.call_id
    assert output.output == f"Sunny, 21 C in {calls[0]}"
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert result.final_output == ItemHelpers.text_message_output(message)
    return call, output


@pytest.mark.parametrize("chained", [False, True], ids=["whole-input", "previous-response-id"])
def test_agent_calls_a_function_tool_and_answers(server: RunningServer, client: openai.OpenAI,
                                                 chained: bool) -> None:
    result, calls = run_agent(server, lambda agent: Runner.run(
        agent, QUESTION, run_config=RUN_CONFIG, max_turns=3, auto_previous_response_id=chained))
    call, output = assert_tool_then_answer(result, calls)
    # Two requests, both stored: the forced tool turn, then the answer with tool_choice reset.
    first, second = (client.responses.retrieve(raw.response_id) for raw in result.raw_responses)
    assert first.tool_choice == "required" and second.tool_choice == "auto"
    assert first.max_output_tokens == second.max_output_tokens == MAX_TOKENS
    assert [item.type for item in first.output] == ["function_call"]
    assert first.output[0].call_id == call.raw_item.call_id
    assert second.status == "completed" and second.output_text == result.final_output
    # The second request carried the tool's output: alone after previous_response_id, or the whole turn.
    assert second.previous_response_id == (first.id if chained else None)
    sent = client.responses.input_items.list(second.id, order="asc").data
    expected = ["function_call_output"] if chained else ["message", "function_call", "function_call_output"]
    assert [item.type for item in sent] == expected
    assert (sent[-1].call_id, sent[-1].output) == (call.raw_item.call_id, output.output)
    assert second.usage.input_tokens > first.usage.input_tokens


def test_streamed_agent_run_sees_text_deltas_and_ends(server: RunningServer) -> None:
    async def drive(agent: Agent[Any]) -> tuple[Any, list[Any]]:
        streamed = Runner.run_streamed(agent, QUESTION, run_config=RUN_CONFIG, max_turns=3)
        return streamed, [event async for event in streamed.stream_events()]

    (result, events), calls = run_agent(server, drive)
    assert result.is_complete
    call, _ = assert_tool_then_answer(result, calls)
    raw = [event.data for event in events if isinstance(event, RawResponsesStreamEvent)]
    arguments = "".join(data.delta for data in raw if data.type == "response.function_call_arguments.delta")
    assert arguments == call.raw_item.arguments
    text = [data.delta for data in raw if data.type == "response.output_text.delta"]
    assert text and "".join(text) == result.final_output
    assert [data.type for data in raw].count("response.completed") == 2
    names = [event.name for event in events if isinstance(event, RunItemStreamEvent)]
    assert names == ["tool_called", "tool_output", "message_output_created"]
