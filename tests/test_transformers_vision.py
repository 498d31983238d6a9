"""The `transformers_vision` plugin on a real (tiny, random) LLaVA folder, at the plugin boundary.

The folder is written by `tiny_llava` with transformers' own classes and loaded through
`from_pretrained` like any Hub download; its answers are nonsense but deterministic, and they
depend on the image. The server side of vision chat is tested through the wire elsewhere.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from tiny_llava import CHAT_TEMPLATE, CONTEXT, IMAGE_TOKENS, write_tiny_llava

from lampstand.plugins.chat_template import ChatTemplate
from lampstand.plugins.contract import Capability
from lampstand.plugins.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelUnavailable,
    UnsupportedParameter,
)
from lampstand.plugins.image_files import ImageLimits, inspect_image
from lampstand.plugins.transformers_vision import TransformersVisionPlugin
from lampstand.plugins.transformers_vision.prompt import VisionPrompt, sandboxed_source
from lampstand.plugins.types import (
    AdapterRef,
    ChatMessage,
    ChatRequest,
    FunctionTool,
    GenerationChunk,
    ImageInput,
    ResponseFormat,
    SamplingParams,
)

EOS = 2  # "</s>" in the tiny tokenizer


def png(image: Image.Image) -> ImageInput:
    out = io.BytesIO()
    image.save(out, "PNG")
    return inspect_image(out.getvalue(), ImageLimits())


RED = png(Image.new("RGB", (64, 48), (255, 0, 0)))
STRIPES = png(Image.frombytes("L", (40, 40), bytes(255 if (x // 4) % 2 else 0 for _ in range(40) for x in range(40))))


def ask(text: str | None = "What is in this picture?", *images: ImageInput, **sampling: object) -> ChatRequest:
    settings: dict[str, object] = {"max_tokens": 8, "temperature": 0.0, **sampling}
    return ChatRequest(messages=(ChatMessage("user", text, images=images),),
                       sampling=SamplingParams(**settings))  # type: ignore[arg-type]


def answer(plugin: TransformersVisionPlugin, request: ChatRequest) -> tuple[str, GenerationChunk]:
    chunks = list(plugin.chat(request))
    return "".join(c.text for c in chunks), chunks[-1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def plugin(folder: Path) -> Iterator[TransformersVisionPlugin]:
    loaded = TransformersVisionPlugin("tiny-llava", folder, TransformersVisionPlugin.Options())
    loaded.load()
    yield loaded
    loaded.unload()


@pytest.fixture
def forward_passes(plugin: TransformersVisionPlugin) -> Iterator[list[int]]:
    """Grows by one entry per forward pass of the model."""
    passes: list[int] = []
    handle = plugin._model.register_forward_hook(lambda *_: passes.append(1))
    yield passes
    handle.remove()


def test_capabilities_context_and_footprint(plugin: TransformersVisionPlugin, folder: Path) -> None:
    assert plugin.capabilities() == {Capability.CHAT, Capability.VISION}
    assert plugin.context_length() == CONTEXT
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    on_cpu = TransformersVisionPlugin("m", folder, TransformersVisionPlugin.Options(device="cpu"))
    footprint = on_cpu.estimate_footprint()
    assert footprint.vram_bytes == 0 and footprint.ram_bytes > weights
    assert on_cpu.capabilities() == plugin.capabilities() and on_cpu.context_length() == CONTEXT  # not loaded


def test_estimates_import_no_engine(folder: Path) -> None:
    code = ("import sys; from lampstand.plugins.transformers_vision import TransformersVisionPlugin as P; "
            f"from pathlib import Path; p = P('m', Path({str(folder)!r}), P.Options()); p.estimate_footprint(); p.capabilities(); "
            "print([m for m in ('torch', 'transformers') if m in sys.modules])")
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "[]"


def test_four_bit_estimate_is_a_quarter_of_float16(folder: Path) -> None:
    def vram(load_in_4bit: bool) -> int:
        options = TransformersVisionPlugin.Options(device="cuda", dtype="float16", load_in_4bit=load_in_4bit)
        return TransformersVisionPlugin("m", folder, options).estimate_footprint().vram_bytes

    assert vram(True) == pytest.approx(vram(False) / 4, rel=0.01)


def test_chat_about_an_image_streams(plugin: TransformersVisionPlugin, forward_passes: list[int]) -> None:
    stream = plugin.chat(ask("Describe it.", RED, max_tokens=16, logit_bias=((EOS, -100.0),)))
    assert forward_passes == []  # nothing runs before the first chunk is asked for
    first = next(stream)
    assert first.text and first.finish_reason is None and len(forward_passes) < 16
    chunks = [first, *stream]
    assert len([c for c in chunks if c.text]) > 1 and len(forward_passes) == 16
    last = chunks[-1]
    assert last.finish_reason == "length" and last.usage is not None
    assert last.usage.completion_tokens == 16
    text_only = list(plugin.chat(ask("Describe it.", max_tokens=1)))[-1].usage
    assert text_only is not None and last.usage.prompt_tokens >= text_only.prompt_tokens + IMAGE_TOKENS


def test_max_tokens_is_respected(plugin: TransformersVisionPlugin) -> None:
    for max_tokens in (1, 5):
        _, last = answer(plugin, ask("Hi", RED, max_tokens=max_tokens, logit_bias=((EOS, -100.0),)))
        assert last.finish_reason == "length" and last.usage is not None
        assert last.usage.completion_tokens == max_tokens


def test_forcing_the_end_token_stops_with_no_text(plugin: TransformersVisionPlugin) -> None:
    text, last = answer(plugin, ask("Hi", RED, logit_bias=((EOS, 100.0),)))
    assert text == "" and last.finish_reason == "stop" and last.usage is not None
    assert last.usage.completion_tokens == 0


def test_same_seed_same_text(plugin: TransformersVisionPlugin) -> None:
    def sampled(seed: int) -> str:
        return answer(plugin, ask("Tell me.", RED, temperature=1.0, top_p=0.95, seed=seed, max_tokens=12))[0]

    assert sampled(7) == sampled(7)
    assert len({sampled(seed) for seed in (1, 2, 3)}) > 1


def test_the_image_changes_the_answer(plugin: TransformersVisionPlugin) -> None:
    red, _ = answer(plugin, ask("What is it?", RED, max_tokens=12))
    stripes, _ = answer(plugin, ask("What is it?", STRIPES, max_tokens=12))
    assert red == answer(plugin, ask("What is it?", RED, max_tokens=12))[0]  # greedy is repeatable
    assert red != stripes


def test_stop_string_cuts_the_answer(plugin: TransformersVisionPlugin) -> None:
    full, _ = answer(plugin, ask("What is it?", RED, max_tokens=24, logit_bias=((EOS, -100.0),)))
    stop = full[len(full) // 2:len(full) // 2 + 2]
    text, last = answer(plugin, ask("What is it?", RED, max_tokens=24, logit_bias=((EOS, -100.0),), stop=(stop,)))
    assert text == full[:full.index(stop)] and last.finish_reason == "stop"


def test_conversation_with_history_and_text_only(plugin: TransformersVisionPlugin) -> None:
    request = ChatRequest(messages=(
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "What colour?", images=(RED,)),
        ChatMessage("assistant", "Red."),  # rendered through the template's {% generation %} block
        ChatMessage("user", "And this one?", images=(STRIPES,)),
    ), sampling=SamplingParams(max_tokens=4, temperature=0.0))
    _, last = answer(plugin, request)
    assert last.usage is not None and last.usage.prompt_tokens > 2 * IMAGE_TOKENS
    _, last = answer(plugin, ask("Hello", max_tokens=3))
    assert last.usage is not None and last.usage.prompt_tokens < IMAGE_TOKENS


def test_prompt_puts_images_before_text_and_shrinks_large_ones() -> None:
    assert sandboxed_source("{%- generation -%}x{% endgeneration %}") == "{%- if true -%}x{% endif %}"
    template = ChatTemplate(sandboxed_source(CHAT_TEMPLATE), bos_token="<s>", eos_token="</s>")
    request = ChatRequest(messages=(
        ChatMessage("user", "Compare.", images=(RED, STRIPES)),
        ChatMessage("assistant", "Red, stripes."),
        ChatMessage("user", None, images=(RED,)),
    ), sampling=SamplingParams(max_tokens=1))
    text, images = VisionPrompt(template, "<image>", max_image_side=16).render(request)
    assert text == ("<s>USER: <image>\n<image>\nCompare. ASSISTANT: Red, stripes.</s>"
                    "USER: <image>\nASSISTANT:")
    assert [image.size for image in images] == [(16, 12), (16, 16), (16, 12)]


def test_closing_the_stream_stops_generation(plugin: TransformersVisionPlugin, forward_passes: list[int]) -> None:
    stream = plugin.chat(ask("Describe it.", RED, max_tokens=200, logit_bias=((EOS, -100.0),)))
    next(stream)
    started = len(forward_passes)
    stream.close()
    assert len(forward_passes) == started < 200
    assert answer(plugin, ask("Hi", RED, max_tokens=2))[1].finish_reason  # the next request is unaffected


CORRUPT = ImageInput(data=b"\x89PNG\r\n\x1a\n not really", mime="image/png", width=8, height=8)


@pytest.mark.parametrize(("request_", "error", "param"), [
    (ask("Look", CORRUPT), InvalidRequest, "image_url"),
    (ask("What is <image> here?", RED), InvalidRequest, "messages"),
    (ask("word " * CONTEXT), ContextLengthExceeded, "messages"),
    (ask("Hi", RED, max_tokens=CONTEXT), ContextLengthExceeded, "messages"),
    (ChatRequest(messages=ask().messages, sampling=ask().sampling, tools=(FunctionTool("f"),)),
     UnsupportedParameter, "tools"),
    (ChatRequest(messages=ask().messages, sampling=ask().sampling, response_format=ResponseFormat("json_object")),
     UnsupportedParameter, "response_format"),
    (ChatRequest(messages=ask().messages, sampling=ask().sampling, adapter=AdapterRef("lora")),
     UnsupportedParameter, "model"),
    (ask("Hi", logprobs=True), UnsupportedParameter, "logprobs"),
    (ask("Hi", logit_bias=((10**6, 1.0),)), InvalidRequest, "logit_bias"),
], ids=["corrupt-image", "placeholder-in-text", "long-prompt", "long-completion", "tools", "response-format",
        "adapter", "logprobs", "logit-bias-range"])
def test_bad_requests(plugin: TransformersVisionPlugin, request_: ChatRequest, error: type[InvalidRequest],
                      param: str) -> None:
    with pytest.raises(error) as raised:
        list(plugin.chat(request_))
    assert type(raised.value) is error and raised.value.param == param


def _copy_without(name: str) -> Callable[[Path, Path], Path]:
    def build(tiny: Path, into: Path) -> Path:
        shutil.copytree(tiny, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns(name))
        return into
    return build


def _with_files(files: dict[str, str]) -> Callable[[Path, Path], Path]:
    def build(_tiny: Path, into: Path) -> Path:
        for name, text in files.items():
            (into / name).write_text(text)
        return into
    return build


@pytest.mark.parametrize(("build", "options", "reason"), [
    (_with_files({}), {}, "no config.json"),
    (_with_files({"config.json": json.dumps({"model_type": "bert"})}), {}, "not a LLaVA model: .* 'bert'"),
    (_with_files({"config.json": "{not json"}), {}, "cannot be read"),
    (_with_files({"config.json": json.dumps({"model_type": "llava"})}), {}, "no .safetensors weights"),
    (_copy_without("processor_config.json"), {}, "could not load"),
    (_copy_without("x"), {"device": "cpu", "load_in_4bit": True}, "needs a CUDA GPU"),
], ids=["empty-folder", "bert", "broken-config", "no-weights", "no-processor", "4bit-without-cuda"])
def test_folders_that_do_not_load(tmp_path: Path, folder: Path, build: Callable[[Path, Path], Path],
                                  options: dict[str, object], reason: str) -> None:
    plugin = TransformersVisionPlugin("m", build(folder, tmp_path), TransformersVisionPlugin.Options(**options))  # type: ignore[arg-type]
    with pytest.raises(ModelUnavailable, match=reason):
        plugin.load()
    assert plugin._model is None and plugin._processor is None
