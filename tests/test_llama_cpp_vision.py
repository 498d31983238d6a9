"""Vision chat in the `llama_cpp` plugin: the bundled SmolLM2 with a tiny LLaVA-1.5 projector.

The projector (`tiny_vision.write_tiny_mmproj`) has random weights, so the answers are nonsense;
what is pinned is the plumbing: llama.cpp's mtmd reads the image, the answer depends on it (and
on the order of several), the stream has text chunks and a last chunk with finish reason and
usage (image embeddings counted as prompt tokens), sampling parameters and seeds hold as in text
chat, and bad input is a 400 of the right class. The model loads once for the module.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from crafted_gguf import write_lora
from lampstand.plugins.contract import Capability
from lampstand.plugins.errors import (
    CapabilityMissing,
    ContextLengthExceeded,
    InvalidRequest,
    UnsupportedParameter,
)
from lampstand.plugins.image_files import ImageLimits, inspect_image
from lampstand.plugins.llama_cpp import LlamaCppPlugin
from lampstand.plugins.sources import BUNDLED_MODELS, bundled_path
from lampstand.plugins.types import (
    AdapterLoad,
    AdapterRef,
    ChatMessage,
    ChatRequest,
    FunctionTool,
    GenerationChunk,
    ImageInput,
    ResponseFormat,
    SamplingParams,
)
from PIL import Image
from tiny_vision import IMAGE_TOKENS, write_tiny_mmproj

SMOLLM = bundled_path(BUNDLED_MODELS[0])
N_CTX = 512
THREADS = 1  # two threads spinning on two shared cores run 5-10x slower whenever anything else runs
QUESTION = "What is in this picture?"


def image(color: str | tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (48, 40)) -> ImageInput:
    """A plain-colour image file, inspected as the server would."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return inspect_image(buffer.getvalue(), ImageLimits())


RED, BLUE = image("red"), image("blue")


def ask(*images: ImageInput, text: str = QUESTION, **sampling: object) -> ChatRequest:
    """One user turn with `images` before `text`; greedy and short unless told otherwise."""
    params = {"max_tokens": 10, "temperature": 0.0, **sampling}
    return ChatRequest(messages=(ChatMessage(role="user", content=text, images=images),),
                       sampling=SamplingParams(**params))  # type: ignore[arg-type]


def run(plugin: LlamaCppPlugin, request: ChatRequest) -> tuple[str, list[GenerationChunk]]:
    chunks = list(plugin.chat(request))
    return "".join(c.text for c in chunks), chunks


@pytest.fixture(scope="module")
def mmproj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mmproj(tmp_path_factory.mktemp("vision") / "mmproj.gguf", SMOLLM)


@pytest.fixture(scope="module")
def plugin(mmproj: Path) -> Iterator[LlamaCppPlugin]:
    options = LlamaCppPlugin.Options(mmproj=mmproj, n_ctx=N_CTX, n_threads=THREADS)
    loaded = LlamaCppPlugin("tiny-llava", SMOLLM, options)
    loaded.load()
    yield loaded
    loaded.unload()


def test_capabilities_and_footprint_include_the_projector_only_when_configured(mmproj: Path) -> None:
    text = LlamaCppPlugin("text", SMOLLM, LlamaCppPlugin.Options(n_ctx=N_CTX))
    vision = LlamaCppPlugin("vision", SMOLLM, LlamaCppPlugin.Options(n_ctx=N_CTX, mmproj=mmproj))
    assert Capability.VISION not in text.capabilities()
    assert vision.capabilities() == {Capability.CHAT, Capability.COMPLETIONS, Capability.VISION, Capability.ADAPTERS}
    extra = vision.estimate_footprint().ram_bytes - text.estimate_footprint().ram_bytes
    assert extra == mmproj.stat().st_size


def test_options_name_the_handler_and_refuse_unknown_ones(mmproj: Path) -> None:
    assert LlamaCppPlugin.Options(mmproj=mmproj).chat_handler == "llava-1-5"
    assert LlamaCppPlugin.Options(mmproj=mmproj, chat_handler="llava-1-6").chat_handler == "llava-1-6"
    with pytest.raises(ValueError, match="chat_handler"):
        LlamaCppPlugin.Options(mmproj=mmproj, chat_handler="no-such-format")
    with pytest.raises(ValueError, match="mmproj"):
        LlamaCppPlugin.Options(mmproj=mmproj, embedding=True)


def test_a_chat_with_an_image_streams_text_then_finish_and_usage(plugin: LlamaCppPlugin) -> None:
    text, chunks = run(plugin, ask(RED))
    *body, last = chunks
    assert text.strip()
    assert all(c.finish_reason is None and c.usage is None for c in body)
    assert last.finish_reason in ("stop", "length") and last.usage is not None
    assert last.usage.completion_tokens <= 10
    assert last.usage.prompt_tokens > IMAGE_TOKENS  # the image's embeddings count as prompt tokens


def test_max_tokens_gives_finish_length_and_that_many_tokens(plugin: LlamaCppPlugin) -> None:
    _, chunks = run(plugin, ask(RED, max_tokens=5))
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_a_stop_string_ends_the_answer_before_it(plugin: LlamaCppPlugin) -> None:
    full, _ = run(plugin, ask(RED))
    stop = full.split()[1]  # the answer's second word
    text, chunks = run(plugin, ask(RED, stop=(stop,)))
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"


def test_the_answers_are_llama_cpp_pythons_own_handler_answers(plugin: LlamaCppPlugin, mmproj: Path) -> None:
    """The projector loads in llama-cpp-python's Llava15ChatHandler, which answers as the plugin does."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Llava15ChatHandler

    handler = Llava15ChatHandler(clip_model_path=str(mmproj), verbose=False)
    llm = Llama(model_path=str(SMOLLM), chat_handler=handler, n_ctx=N_CTX, n_threads=THREADS,
                n_threads_batch=THREADS, flash_attn=False, verbose=False)  # as the plugin's default
    try:
        for picture in (RED, BLUE):
            url = f"data:{picture.mime};base64,{base64.b64encode(picture.data).decode()}"
            content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]
            answer = llm.create_chat_completion(messages=[{"role": "user", "content": content}], max_tokens=10,
                                                temperature=0.0, repeat_penalty=1.0)
            text, chunks = run(plugin, ask(picture))
            assert answer["choices"][0]["message"]["content"] == text
            assert answer["usage"]["prompt_tokens"] == chunks[-1].usage.prompt_tokens  # type: ignore[union-attr]
    finally:
        llm.close()


def test_the_same_seed_gives_the_same_sampled_text(plugin: LlamaCppPlugin) -> None:
    first, _ = run(plugin, ask(BLUE, temperature=1.0, top_p=0.95, seed=7))
    run(plugin, ask(RED, temperature=1.0, seed=8))  # something else in between
    again, _ = run(plugin, ask(BLUE, temperature=1.0, top_p=0.95, seed=7))
    assert first == again


def test_the_answer_depends_on_the_image(plugin: LlamaCppPlugin) -> None:
    red_text, red = run(plugin, ask(RED, logprobs=True))
    blue_text, blue = run(plugin, ask(BLUE, logprobs=True))
    assert red[-1].usage == blue[-1].usage  # same prompt length, different pixels
    assert red[0].logprobs[0].logprob != blue[0].logprobs[0].logprob
    assert red_text != blue_text


def test_several_images_are_read_in_order(plugin: LlamaCppPlugin) -> None:
    _, one = run(plugin, ask(RED))
    red_blue, two = run(plugin, ask(RED, BLUE, logprobs=True))
    blue_red, swapped = run(plugin, ask(BLUE, RED, logprobs=True))
    assert two[-1].usage.prompt_tokens == one[-1].usage.prompt_tokens + IMAGE_TOKENS  # type: ignore[union-attr]
    assert (red_blue, two[0].logprobs[0].logprob) != (blue_red, swapped[0].logprobs[0].logprob)


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "GIF"])
def test_other_lossless_formats_give_the_same_answer_as_png(plugin: LlamaCppPlugin, fmt: str) -> None:
    assert run(plugin, ask(image("red", fmt)))[0] == run(plugin, ask(RED))[0]


def test_closing_the_stream_stops_generation_and_leaves_the_model_usable(plugin: LlamaCppPlugin) -> None:
    expected, _ = run(plugin, ask(BLUE))
    stream = plugin.chat(ask(BLUE, max_tokens=200))
    next(stream)
    stream.close()
    assert run(plugin, ask(BLUE))[0] == expected


def test_text_only_chat_still_uses_the_text_path(plugin: LlamaCppPlugin) -> None:
    request = ask(text="Say hello.")
    before, _ = run(plugin, request)
    run(plugin, ask(RED))  # the image prompt replaces the KV cache
    text, chunks = run(plugin, request)
    assert text == before and text.strip()
    # the prompt is the model's own chat template, not the LLaVA format
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == len(plugin.chat_prompt_tokens(request))


def test_a_json_response_format_applies_to_image_chats(plugin: LlamaCppPlugin) -> None:
    request = ChatRequest(messages=ask(RED).messages, sampling=SamplingParams(max_tokens=6, temperature=0.0),
                          response_format=ResponseFormat(kind="json_object"))
    text, _ = run(plugin, request)
    assert text.lstrip().startswith("{")


def test_an_adapter_applies_to_image_chats(plugin: LlamaCppPlugin, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rank, n_embd, n_embd_v = 4, 576, 192  # SmolLM2-135M: 9 heads of 64, 3 of them for K and V
    tensors = {}
    for layer in range(30):
        tensors[f"blk.{layer}.attn_v.weight.lora_a"] = rng.normal(0, 0.05, (rank, n_embd)).astype(np.float32)
        tensors[f"blk.{layer}.attn_v.weight.lora_b"] = rng.normal(0, 0.05, (n_embd_v, rank)).astype(np.float32)
    plugin.load_adapter(AdapterLoad(name="noise", path=str(write_lora(tmp_path / "noise.gguf", tensors))))
    try:
        base, _ = run(plugin, ask(RED, logprobs=True))
        adapted, _ = run(plugin, ChatRequest(messages=ask(RED).messages, adapter=AdapterRef("noise"),
                                                  sampling=SamplingParams(max_tokens=10, temperature=0.0)))
        assert adapted != base
        assert run(plugin, ask(RED, logprobs=True))[0] == base  # and not to the next request
    finally:
        plugin.unload_adapter("noise")


def test_a_prompt_longer_than_the_context_is_refused(plugin: LlamaCppPlugin) -> None:
    with pytest.raises(ContextLengthExceeded):
        plugin.chat(ask(RED, text="word " * N_CTX))


CORRUPT = {
    "not an image": ImageInput(data=b"definitely not pixels", mime="image/png", width=8, height=8),
    "truncated png": ImageInput(data=image("red").data[:60], mime="image/png", width=48, height=40),
    "empty": ImageInput(data=b"", mime="image/png", width=1, height=1),
}


@pytest.mark.parametrize("bad", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_image_is_an_invalid_request(plugin: LlamaCppPlugin, bad: ImageInput) -> None:
    with pytest.raises(InvalidRequest) as caught:
        plugin.chat(ask(bad))
    assert type(caught.value) is InvalidRequest and caught.value.param == "image_url"
    assert run(plugin, ask(RED, max_tokens=2))[0]  # nothing was left half-done


def test_text_that_looks_like_a_media_marker_stays_text(plugin: LlamaCppPlugin) -> None:
    _, chunks = run(plugin, ask(RED, text="<__media__> <image> what?"))
    assert chunks[-1].finish_reason is not None  # one image, however the text reads


def test_an_image_the_chat_format_cannot_show_is_refused(plugin: LlamaCppPlugin) -> None:
    messages = (ChatMessage(role="assistant", content="Here:", images=(RED,)), ChatMessage(role="user", content="And?"))
    with pytest.raises(InvalidRequest) as caught:
        plugin.chat(ChatRequest(messages=messages, sampling=SamplingParams(max_tokens=4)))
    assert caught.value.param == "messages"


def test_tools_with_images_are_refused_naming_the_parameter(plugin: LlamaCppPlugin) -> None:
    request = ChatRequest(messages=ask(RED).messages, sampling=SamplingParams(max_tokens=4),
                          tools=(FunctionTool(name="look"),))
    with pytest.raises(UnsupportedParameter) as caught:
        plugin.chat(request)
    assert caught.value.param == "tools"


def test_an_image_for_a_model_without_projector_is_capability_missing() -> None:
    text_only = LlamaCppPlugin("text", SMOLLM, LlamaCppPlugin.Options(n_ctx=N_CTX))
    with pytest.raises(CapabilityMissing):
        text_only.chat(ask(RED))


def test_unload_and_load_again_gives_the_same_answer(mmproj: Path) -> None:
    options = LlamaCppPlugin.Options(mmproj=mmproj, n_ctx=N_CTX, n_threads=THREADS, chat_handler="llava-1-6")
    other = LlamaCppPlugin("again", SMOLLM, options)
    other.load()
    first, _ = run(other, ask(BLUE))
    other.unload()
    other.load()
    try:
        assert run(other, ask(BLUE))[0] == first
    finally:
        other.unload()
