"""The chat prompt equals, token for token, what transformers builds for the bundled model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import SMOLLM
from lampstand.plugins.chat_template import ChatTemplate
from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.llama_cpp import LlamaCppPlugin
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
