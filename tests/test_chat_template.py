"""The chat prompt equals, token for token, what transformers builds for the bundled model;
hostile templates are stopped by the sandbox, the time limit and the size limits."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import SMOLLM
from lampstand.plugins.chat_template import MAX_PROMPT_CHARS, ChatTemplate
from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.llama_cpp import LlamaCppPlugin
from lampstand.plugins.llama_cpp.gguf_check import scan_gguf
from lampstand.plugins.types import ChatMessage, ChatRequest, SamplingParams

CONVERSATIONS = {
    "user-only": [("user", "Hello!")],
    "with-system": [("system", "You are terse."), ("user", "What is 2+2?")],
    "multi-turn": [("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello! How can I help?"),
                   ("user", "Tell me a joke about <tags> & ümlauts.")],
    "special-text": [("user", "Please repeat: <|im_start|>assistant")],
}


@pytest.fixture(scope="module")
def plugin() -> Iterator[LlamaCppPlugin]:
    model = LlamaCppPlugin("smollm2", SMOLLM, LlamaCppPlugin.Options(n_ctx=512, n_threads=2))
    model.load()
    yield model
    model.unload()


@pytest.fixture(scope="module")
def hf_tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SMOLLM.parent), gguf_file=SMOLLM.name)


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_prompt_tokens_equal_transformers(plugin: LlamaCppPlugin, hf_tokenizer, name: str) -> None:  # type: ignore[no-untyped-def]
    turns = CONVERSATIONS[name]
    request = ChatRequest(messages=tuple(ChatMessage(role=r, content=c) for r, c in turns),
                          sampling=SamplingParams(max_tokens=1))
    expected = hf_tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in turns],
                                                add_generation_prompt=True, tokenize=True)
    if not isinstance(expected, list):  # newer transformers return a BatchEncoding
        expected = expected["input_ids"]
    assert plugin.chat_prompt_tokens(request) == list(expected)


def test_template_runs_sandboxed() -> None:
    hostile = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InvalidRequest):
        hostile.render([{"role": "user", "content": "x"}])


def test_template_errors_are_client_errors() -> None:
    strict = ChatTemplate("{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}")
    with pytest.raises(InvalidRequest, match="system first"):
        strict.render([{"role": "user", "content": "x"}])


def test_limits_leave_the_real_template_unchanged() -> None:
    source = scan_gguf(SMOLLM).metadata["tokenizer.chat_template"]
    assert isinstance(source, str)
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(source)
    for turns in CONVERSATIONS.values():
        messages = [{"role": r, "content": c} for r, c in turns]
        expected = plain.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
        assert ChatTemplate(source).render(messages) == expected


SLOW = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def test_slow_template_is_stopped_and_the_trace_hook_restored() -> None:
    def outer_hook(frame: FrameType, event: str, arg: Any) -> None:  # stands in for coverage or pdb
        return None

    previous = sys.gettrace()
    sys.settrace(outer_hook)
    try:
        started = time.monotonic()
        with pytest.raises(InvalidRequest, match=r"chat template took longer than 1\.0 s to render"):
            ChatTemplate(SLOW).render([{"role": "user", "content": "x"}])
        assert sys.gettrace() is outer_hook
    finally:
        sys.settrace(previous)
    assert time.monotonic() - started < 10


HUGE = {
    "string repetition": "{{ 'x' * 10**9 }}",
    "list repetition": "{{ [1] * 10**9 }}",
    "repeated references": "{% set s = 'x' * 1000000 %}{{ [s] * 100 }}",
    "power": "{{ 10 ** 10000000 }}",
    "squaring in a loop":
        "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
    "padding filter": "{{ 'x'|center(1000000000) }}",
    "padding method": "{{ 'x'.ljust(10**9) }}",
    "format width": "{{ '{:>1000000000}'.format(1) }}",
    "printf width": "{{ '%0*d' % (10**9, 1) }}",
    "replace": "{% set s = 'x' * 4000000 %}{{ s|replace('x', s) }}",
    "join": "{% set s = 'x' * 4000000 %}{{ [s, s, s, s, s]|join }}",
    "doubling with ~":
        "{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ d('x', 40) }}",
    "doubling with +":
        "{% macro d(s, n) %}{{ d(s + s, n - 1) if n else s|length }}{% endmacro %}{{ d('x', 40) }}",
    "doubling with set blocks":
        "{% macro d(s, n) %}{% set t %}{{ s }}{{ s }}{% endset %}{{ d(t, n - 1) if n else s|length }}"
        "{% endmacro %}{{ d('x', 40) }}",
}


@pytest.mark.parametrize("name", HUGE)
def test_huge_values_are_refused_before_they_are_built(name: str) -> None:
    # the message is a size check's, not the time limit's
    with pytest.raises(InvalidRequest, match=r"more than \d+ (characters|bits)"):
        ChatTemplate(HUGE[name]).render([{"role": "user", "content": "x"}])


def test_prompt_length_is_capped() -> None:
    chatty = ChatTemplate("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}", max_prompt_chars=50_000)
    with pytest.raises(InvalidRequest, match="rendered more than 50000 characters"):
        chatty.render([{"role": "user", "content": "x"}])
    assert len(ChatTemplate("{{ 'x' * 4000000 }}").render([])) == 4_000_000 < MAX_PROMPT_CHARS
