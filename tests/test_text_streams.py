"""Our own stream parsers, fed text in every possible split: stop strings and tool-call blocks
(and which parser a chat request gets)."""

from __future__ import annotations

import json

import pytest

from lampstand.plugins.stop_strings import StopMatcher
from lampstand.plugins.tool_calls import ToolCallParser, call_parser_for
from lampstand.server import protocol as p
from lampstand.server.config import ServerSettings
from lampstand.server.serving.convert import chat_request


def splits(text: str) -> list[list[str]]:
    """The text whole, char by char, and cut at every position."""
    return [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]


STOP_CASES = [
    ("Hello world. Bye", ("world",), "Hello ", True),
    ("Hello world", ("xyz",), "Hello world", False),
    ("ab", ("abc",), "ab", False),
    ("one\n\ntwo", ("\n\n", "one"), "", True),
]


@pytest.mark.parametrize("text,stops,expected,stopped", STOP_CASES)
def test_stop_matcher(text: str, stops: tuple[str, ...], expected: str, stopped: bool) -> None:
    for pieces in splits(text):
        matcher = StopMatcher(stops)
        out = ""
        for piece in pieces:
            out += matcher.feed(piece)
            if matcher.stopped:
                break
        if not matcher.stopped:
            out += matcher.flush()
        assert (out, matcher.stopped) == (expected, stopped)


CALL = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'


@pytest.mark.parametrize("text,forced,expected_text", [
    (CALL, True, ""),
    (f"Let me check. <tool_call>{CALL}</tool_call>", False, "Let me check. "),
    (f"<tool_call>{CALL}", False, ""),  # unclosed at the end of generation
    ("No tools needed: a < b", False, "No tools needed: a < b"),
])
def test_tool_call_parser(text: str, forced: bool, expected_text: str) -> None:
    for pieces in splits(text):
        parser = ToolCallParser(forced=forced)
        out, deltas = "", []
        for piece in pieces:
            more_text, more = parser.feed(piece)
            out, deltas = out + more_text, deltas + more
        tail, more = parser.finish()
        out, deltas = out + tail, deltas + more
        assert out == expected_text
        if "tool_call" in text or forced:
            assert deltas[0].id and deltas[0].name == "get_weather" and deltas[0].index == 0
            assert json.loads("".join(d.arguments for d in deltas)) == {"city": "Oslo"}
        else:
            assert deltas == []


@pytest.mark.parametrize("max_calls,names", [(None, ["get_weather", "get_time"]), (1, ["get_weather"])])
def test_parallel_tool_calls_off_keeps_only_the_first_call(max_calls: int | None, names: list[str]) -> None:
    second = '{"name": "get_time", "arguments": {"zone": "CET"}}'
    text = f"Checking. <tool_call>{CALL}</tool_call>\n<tool_call>{second}</tool_call> Done."
    for pieces in splits(text):
        parser = ToolCallParser(forced=False, max_calls=max_calls)
        out, deltas = "", []
        for piece in pieces:
            more_text, more = parser.feed(piece)
            out, deltas = out + more_text, deltas + more
        tail, more = parser.finish()
        assert out + tail == "Checking. \n Done."
        deltas += more
        assert [d.name for d in deltas if d.name] == names
        assert [d.index for d in deltas if d.name] == list(range(len(names)))


@pytest.mark.parametrize("sent,one_call", [(None, False), (True, False), (False, True)])
def test_parallel_tool_calls_reaches_the_answer_parser(sent: bool | None, one_call: bool) -> None:
    body = p.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                                   tools=[{"type": "function", "function": {"name": "get_weather"}}],
                                   parallel_tool_calls=sent)
    request = chat_request(body, ServerSettings(), vision=False)
    assert call_parser_for(request).max_calls == (1 if one_call else None)

