"""Chat with images: a LLaVA-style projector ("mmproj") run by llama.cpp's multimodal library.

The prompt format is that of one of llama-cpp-python's multimodal chat handlers (`chat_handler`
names it: "llava-1-5", "llava-1-6", ...): the handler's own Jinja `CHAT_FORMAT` and default system
message, rendered in lampstand's sandbox over OpenAI-style messages whose user turns are content
parts, the images first (in order) and then the text. Each image part carries this projector's
media marker where the handler would put the image's URL; libmtmd splits the prompt at the
markers into text and image chunks.

What the handler's `__call__` does after that is done here instead, so that vision chat behaves
like text chat: the pixels Pillow decoded within limits (`open_image`) go to llama.cpp as an RGB
bitmap (no second decoder reads the request's bytes, no URL is ever fetched); the prompt is
tokenized before any work so an over-long one is a `ContextLengthExceeded`; and the answer comes
from the same token loop as text chat (`sample_stream`: stop strings, seeds, logprobs, usage).

`llama_cpp` is imported only inside the methods that run it. The caller holds the model
exclusively from `tokenize` to the end of the stream, as for text chat.
"""

from __future__ import annotations

import ctypes
import secrets
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lampstand.plugins.chat_template import ChatTemplate, message_to_dict
from lampstand.plugins.errors import (
    InvalidModelFile,
    InvalidRequest,
    LampstandError,
    ModelUnavailable,
)
from lampstand.plugins.image_files import open_image
from lampstand.plugins.types import (
    ChatMessage,
    ChatRequest,
    GenerationChunk,
    SamplingParams,
)

from .decode import sample_stream
from .gguf_check import scan_gguf
from .options import LlamaCppOptions, VisionChatFormat
from .vocab import Vocab

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["HANDLER_CLASSES", "ImagePrompt", "VisionProjector", "projector_file_bytes"]

# chat_handler option -> the llama_cpp.llama_chat_format class whose prompt format is rendered
HANDLER_CLASSES: dict[VisionChatFormat, str] = {
    "llava-1-5": "Llava15ChatHandler",
    "llava-1-6": "Llava16ChatHandler",
    "obsidian": "ObsidianChatHandler",
    "moondream2": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "llama-3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
}


def projector_file_bytes(path: Path) -> int:
    """Size of a projector file whose header says it holds a vision encoder, or `InvalidModelFile`.

    The header is read by lampstand's bounded scanner, so a damaged or hostile file never
    reaches llama.cpp.
    """
    header = scan_gguf(path)
    kind, has_vision = header.metadata.get("general.architecture"), header.metadata.get("clip.has_vision_encoder")
    if kind != "clip" or has_vision is not True:
        raise InvalidModelFile(f"{path.name} is not a vision projector (mmproj) GGUF file")
    return header.file_bytes


class ImagePrompt:
    """A chat prompt split by libmtmd into text and image chunks; freed by `close` or when collected."""

    def __init__(self, mtmd: Any, chunks: Any) -> None:
        self.chunks = chunks
        self.n_tokens = 0  # text tokens plus image embeddings, once tokenized
        self._free = weakref.finalize(self, mtmd.mtmd_input_chunks_free, chunks)

    def close(self) -> None:
        self._free()


class VisionProjector:
    """One projector (an mtmd context) bound to one loaded `Llama`, and its chat format."""

    def __init__(self, llm: Any, path: Path, options: LlamaCppOptions, *, bos_token: str, eos_token: str,
                 n_threads: int) -> None:
        """Load the projector; `ModelUnavailable` when llama.cpp cannot pair it with this model."""
        self.file_bytes = projector_file_bytes(path)
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd
        from llama_cpp import llama_chat_format
        from llama_cpp._logger import llama_log_callback

        self._mtmd = mtmd
        # libmtmd logs on its own channel; send it where llama-cpp-python sends llama.cpp's log,
        # which follows the loaded model's verbosity.
        mtmd.mtmd_log_set(llama_log_callback, None)
        mtmd.mtmd_helper_log_set(llama_log_callback, None)
        # A marker no request can contain, so text can never stand in for an image.
        self.marker = f"<__lampstand_image_{secrets.token_hex(8)}__>"
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = options.n_gpu_layers != 0
        params.print_timings = False
        params.n_threads = n_threads
        params.media_marker = self.marker.encode()
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if options.flash_attn
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._ctx = mtmd.mtmd_init_from_file(str(path).encode(), llm.model, params)
        if not self._ctx:
            raise ModelUnavailable(f"llama.cpp could not load the projector {path.name} for this model")
        if not mtmd.mtmd_support_vision(self._ctx) or mtmd.mtmd_decode_use_mrope(self._ctx):
            self.close()
            raise ModelUnavailable(f"{path.name} is not a LLaVA-style image projector llama_cpp can serve")
        handler = getattr(llama_chat_format, HANDLER_CLASSES[options.chat_handler])
        self.chat_format = options.chat_handler
        self._template = ChatTemplate(handler.CHAT_FORMAT, bos_token=bos_token, eos_token=eos_token)
        self._default_system: str | None = handler.DEFAULT_SYSTEM_MESSAGE

    def close(self) -> None:
        """Free the mtmd context (before the model it was loaded against)."""
        if self._ctx:
            self._mtmd.mtmd_free(self._ctx)
        self._ctx = None

    # -- prompt ----------------------------------------------------------------------

    def _template_message(self, message: ChatMessage) -> dict[str, Any]:
        """A message as the handler formats expect it: user turns as content parts."""
        if message.role != "user":
            return message_to_dict(message)
        parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": self.marker}} for _ in message.images]
        parts.append({"type": "text", "text": message.content or ""})
        return {"role": "user", "content": parts}

    def render(self, request: ChatRequest) -> str:
        """The prompt text with one marker per image; a 400 when the format cannot show them all."""
        messages = [self._template_message(m) for m in request.messages]
        if self._default_system is not None and not any(m.role == "system" and m.content for m in request.messages):
            messages.insert(0, {"role": "system", "content": self._default_system})
        text = self._template.render(messages)
        n_images = sum(len(m.images) for m in request.messages)
        if text.count(self.marker) != n_images:
            raise InvalidRequest(f"the {self.chat_format} chat format shows images only in user messages",
                                 param="messages")
        return text

    def tokenize(self, request: ChatRequest) -> ImagePrompt:
        """Render the request and split it into chunks; a bad image is an `InvalidRequest`."""
        images = [open_image(image) for m in request.messages for image in m.images]  # Pillow only, within limits
        text = self.render(request)
        bitmaps: list[Any] = []
        try:
            bitmaps.extend(self._bitmap(rgb) for rgb in images)
            return self._tokenized(text, bitmaps)
        finally:
            for bitmap in bitmaps:
                self._mtmd.mtmd_bitmap_free(bitmap)

    def _bitmap(self, rgb: PILImage) -> Any:
        """RGB pixels as an mtmd bitmap (mtmd copies them)."""
        pixels = rgb.tobytes()  # (height, width, 3) uint8
        data = (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels)
        bitmap = self._mtmd.mtmd_bitmap_init(rgb.width, rgb.height, data)
        if not bitmap:
            raise LampstandError("llama.cpp could not allocate an image bitmap")
        return bitmap

    def _tokenized(self, text: str, bitmaps: list[Any]) -> ImagePrompt:
        mtmd = self._mtmd
        encoded = text.encode("utf-8")
        source = mtmd.mtmd_input_text()
        source.text, source.text_len = encoded, len(encoded)
        source.add_special, source.parse_special = True, True  # BOS as the model wants; template tokens parsed
        chunks = mtmd.mtmd_input_chunks_init()
        if not chunks:
            raise LampstandError("llama.cpp could not allocate the prompt's chunks")
        prompt = ImagePrompt(mtmd, chunks)  # frees the chunks whatever happens next
        array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
        status = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(source), array, len(bitmaps))
        if status != 0:
            prompt.close()
            raise InvalidRequest(f"llama.cpp could not prepare the images (mtmd error {status})", param="messages")
        prompt.n_tokens = int(mtmd.mtmd_helper_get_n_tokens(chunks))
        return prompt

    # -- generation ------------------------------------------------------------------

    def evaluate(self, llm: Any, prompt: ImagePrompt) -> list[int]:
        """Run the prompt from an empty KV cache: text through the model, images through the projector.

        Returns the context's token ids (image positions hold no meaningful id), whose last
        one, a text token, was evaluated with its logits.
        """
        import llama_cpp

        mtmd = self._mtmd
        llm.n_tokens = 0
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        for index in range(mtmd.mtmd_input_chunks_size(prompt.chunks)):
            chunk = mtmd.mtmd_input_chunks_get(prompt.chunks, index)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t()
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                if count.value:
                    llm.eval(ids[:count.value])
                continue
            n_past = llama_cpp.llama_pos(0)
            status = mtmd.mtmd_helper_eval_chunk_single(self._ctx, llm.ctx, chunk, llm.n_tokens, 0, llm.n_batch,
                                                        False, ctypes.byref(n_past))
            if status != 0:
                raise LampstandError(f"llama.cpp could not encode an image (mtmd error {status})")
            llm.n_tokens = n_past.value
        return llm.input_ids[: llm.n_tokens].tolist()

    def evaluate_into(self, ctx: Any, seq_id: int, prompt: ImagePrompt, n_batch: int) -> int:
        """Run the prompt into sequence `seq_id` of a llama.cpp context (the batching engine's),
        from position 0, the last position's logits kept; returns the positions it took."""
        import llama_cpp

        n_past = llama_cpp.llama_pos(0)
        try:
            status = self._mtmd.mtmd_helper_eval_chunks(self._ctx, ctx, prompt.chunks, 0, seq_id, n_batch, True,
                                                        ctypes.byref(n_past))
        finally:
            prompt.close()
        if status != 0:
            raise LampstandError(f"llama.cpp could not read the images (mtmd error {status})")
        return int(n_past.value)

    def stream(self, llm: Any, vocab: Vocab, prompt: ImagePrompt, sampling: SamplingParams,
               options: LlamaCppOptions, grammar: Any = None) -> Iterator[GenerationChunk]:
        """Evaluate the prompt, then generate as text chat does; the last chunk has usage."""
        try:
            prompt_ids = self.evaluate(llm, prompt)
        finally:
            prompt.close()
        yield from sample_stream(llm, vocab, prompt_ids, sampling, options, grammar)
