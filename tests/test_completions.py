"""Legacy completions: text and token-id prompts, echo, suffix, logprobs, several prompts."""

from __future__ import annotations

import openai
import pytest

from conftest import CHAT_MODEL


def test_text_prompt(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=CHAT_MODEL, prompt="The capital of France is", max_tokens=8,
                                      temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].text
    assert reply.usage.completion_tokens == 8


def test_token_id_prompt_matches_text_prompt(client: openai.OpenAI) -> None:
    from transformers import AutoTokenizer

    from conftest import SMOLLM

    tokenizer = AutoTokenizer.from_pretrained(str(SMOLLM.parent), gguf_file=SMOLLM.name)
    ids = tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]
    by_text = client.completions.create(model=CHAT_MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    by_ids = client.completions.create(model=CHAT_MODEL, prompt=ids, max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_echo_prepends_prompt(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=CHAT_MODEL, prompt="Hello there", max_tokens=4, temperature=0, echo=True)
    assert reply.choices[0].text.startswith("Hello there")


def test_several_prompts_and_n(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=CHAT_MODEL, prompt=["One", "Two"], n=2, max_tokens=3, seed=1)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]


def test_logprobs_legacy_shape(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=CHAT_MODEL, prompt="Cats are", max_tokens=4, temperature=0, logprobs=2)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == 4 and len(logprobs.top_logprobs[0]) == 2
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert logprobs.text_offset[0] == 0


def test_suffix_on_a_model_without_fill_in_the_middle_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=CHAT_MODEL, prompt="def f():", suffix="    return x", max_tokens=4)
    assert "fill-in-the-middle" in err.value.message
