"""The `transformers_vision` plugin: chat about images with a LLaVA model through transformers.

The model comes from a local folder in the Hub's `llava-hf` layout (config.json with
`model_type = "llava"`, safetensors weights, the processor's files) and is loaded with
`LlavaForConditionalGeneration` and `AutoProcessor`, never from the network. On CUDA the
weights are float16, or 4-bit NF4 when bitsandbytes is installed; on CPU float32.
`torch` and `transformers` are imported only inside the methods that need them.
"""

from __future__ import annotations

import gc
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lampstand.plugins.chat_template import ChatTemplate
from lampstand.plugins.contract import Capability, ChatModel, Footprint, Plugin
from lampstand.plugins.fitting import cuda_at_load, default_dtype, expects_cuda, fit_to_context
from lampstand.plugins.errors import ModelUnavailable, UnsupportedParameter
from lampstand.plugins.types import ChatRequest, GenerationChunk

from .decode import decode_stream
from .options import TransformersVisionOptions
from .prompt import VisionPrompt, sandboxed_source

__all__ = ["TransformersVisionPlugin"]

WEIGHT_SUFFIX = ".safetensors"  # pickled weights (.bin, .pt) are never opened
RUNTIME_BYTES = 512 * 1024 * 1024  # torch, transformers and Pillow in the worker
ACTIVATION_SHARE = 5  # KV cache and activations: about a fifth of the weights on top
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
NF4_BYTES = 0.5  # bitsandbytes 4-bit: half a byte per weight (plus small per-block scales)


def _config(folder: Path) -> dict[str, Any]:
    """The folder's config.json, or a `ModelUnavailable` saying why it is not a LLaVA model."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelUnavailable(f"{folder.name} is not a transformers model folder (no config.json)") from None
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"{folder.name}/config.json cannot be read: {exc}") from exc
    if not isinstance(config, dict) or config.get("model_type") != "llava":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise ModelUnavailable(f"{folder.name} is not a LLaVA model: config.json has model_type {found!r}, "
                               "the transformers_vision plugin serves 'llava'")
    return config


class TransformersVisionPlugin(Plugin, ChatModel):
    """One LLaVA model and its processor."""

    name = "transformers_vision"
    Options = TransformersVisionOptions
    hub_files = ("*.json", "*.jinja", "*.txt", "*.model", "*.safetensors")  # not the .bin copies
    options: TransformersVisionOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._processor: Any = None
        self._prompt: VisionPrompt | None = None
        self._end_tokens: frozenset[int] = frozenset()
        self._device = "cpu"

    # -- lifecycle -------------------------------------------------------------------

    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.CHAT, Capability.VISION})

    def _weights_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.glob("*" + WEIGHT_SUFFIX)) if self.path.is_dir() else 0

    def estimate_footprint(self) -> Footprint:
        """From the safetensors sizes, rescaled from the stored dtype to the one loaded."""
        try:
            config = _config(self.path)
        except ModelUnavailable:  # `load` says why; the estimate needs only the sizes
            config = {}
        stored = str(config.get("dtype") or config.get("torch_dtype") or "float32")
        weights = self._weights_bytes() / DTYPE_BYTES.get(stored, 4)  # parameters, about one per element
        on_gpu = expects_cuda(self.options.device)
        dtype = default_dtype(self.options.dtype, on_gpu)
        per_weight = NF4_BYTES if on_gpu and self._wants_4bit(on_gpu) else DTYPE_BYTES[dtype]
        size = int(weights * per_weight)
        size += size // ACTIVATION_SHARE
        return Footprint(ram_bytes=RUNTIME_BYTES, vram_bytes=size) if on_gpu else Footprint(size + RUNTIME_BYTES)

    def _wants_4bit(self, on_gpu: bool) -> bool:
        if self.options.load_in_4bit == "auto":
            return on_gpu and importlib.util.find_spec("bitsandbytes") is not None
        return bool(self.options.load_in_4bit)

    def load(self) -> None:
        _config(self.path)  # a 424 naming why the folder is not a LLaVA model
        try:
            import torch
            from transformers import AutoProcessor, LlavaForConditionalGeneration
        except ImportError as exc:
            raise ModelUnavailable("the transformers_vision plugin needs `pip install lampstand[vision]`") from exc
        if not self._weights_bytes():
            raise ModelUnavailable(f"{self.path.name} has no .safetensors weights; pickled weights are never loaded")
        on_gpu = cuda_at_load(self.options.device)
        settings = self._load_settings(on_gpu, torch)
        if not on_gpu and self.options.cpu_threads:
            torch.set_num_threads(self.options.cpu_threads)  # the worker runs this one model
        self._device = "cuda" if on_gpu else "cpu"
        self._processor = self._loaded(AutoProcessor.from_pretrained)
        if not all(hasattr(self._processor, name) for name in ("image_processor", "tokenizer", "image_token")):
            self._processor = None
            raise ModelUnavailable(f"{self.path.name} has no LLaVA processor (processor_config.json naming an "
                                   "image processor and an image token)")
        self._model = self._loaded(LlavaForConditionalGeneration.from_pretrained, use_safetensors=True, **settings)
        if "device_map" not in settings:  # 4-bit weights are placed on the GPU as they load
            self._model.to(self._device)
        self._model.eval()
        self._prompt = self._vision_prompt()
        self._end_tokens = self._end_token_ids()

    def _loaded(self, from_pretrained: Any, **settings: Any) -> Any:
        """`from_pretrained` on the folder, offline; any failure is a `ModelUnavailable`."""
        try:
            return from_pretrained(self.path, local_files_only=True, **settings)
        except Exception as exc:  # a broken folder, missing processor files, a dtype the device lacks
            self.unload()
            raise ModelUnavailable(f"transformers could not load {self.path.name}: {exc}") from exc

    def _load_settings(self, on_gpu: bool, torch: Any) -> dict[str, Any]:
        """`from_pretrained` keyword arguments for the device, dtype and quantization asked for."""
        dtype = getattr(torch, default_dtype(self.options.dtype, on_gpu))
        if not self._wants_4bit(on_gpu):
            return {"dtype": dtype}
        if not on_gpu:
            raise ModelUnavailable("load_in_4bit = true needs a CUDA GPU (bitsandbytes 4-bit runs on CUDA only)")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelUnavailable("load_in_4bit = true needs bitsandbytes: `pip install lampstand[vision4bit]`")
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        return {"dtype": dtype, "quantization_config": quantization, "device_map": {"": 0}}

    def _vision_prompt(self) -> VisionPrompt | None:
        tokenizer = self._processor.tokenizer
        source = (self.options.chat_template or getattr(self._processor, "chat_template", None)
                  or getattr(tokenizer, "chat_template", None))
        if not isinstance(source, str):  # no template, or a dict of named templates
            return None
        template = ChatTemplate(sandboxed_source(source), bos_token=tokenizer.bos_token or "",
                                eos_token=tokenizer.eos_token or "")
        return VisionPrompt(template, self._processor.image_token, self.options.max_image_side)

    def _end_token_ids(self) -> frozenset[int]:
        configured = self._model.generation_config.eos_token_id
        ids = configured if isinstance(configured, list) else [configured]
        return frozenset(int(t) for t in [*ids, self._processor.tokenizer.eos_token_id] if t is not None)

    def unload(self) -> None:
        on_gpu = self._device == "cuda" and self._model is not None
        self._model = None
        self._processor = None
        self._prompt = None
        gc.collect()
        if on_gpu:
            import torch

            torch.cuda.empty_cache()

    def measured_footprint(self) -> Footprint | None:
        if self._model is None or self._device != "cuda":
            return None  # on CPU the worker measures what loading added to its RSS
        return Footprint(ram_bytes=RUNTIME_BYTES, vram_bytes=int(self._model.get_memory_footprint()))

    def context_length(self) -> int | None:
        if self._model is not None:
            return int(self._model.config.text_config.max_position_embeddings)
        try:
            text = _config(self.path).get("text_config") or {}
        except ModelUnavailable:
            return None
        return text.get("max_position_embeddings")

    # -- chat ------------------------------------------------------------------------

    def chat(self, request: ChatRequest) -> Iterator[GenerationChunk]:
        """Checks, the prompt and its images are read before the first token is asked for."""
        _refuse_unsupported(request)
        if self._prompt is None:
            raise UnsupportedParameter(f"model {self.model_id!r} has no chat template; set chat_template in "
                                       "its config", param="messages")
        text, images = self._prompt.render(request)
        bos = self._processor.tokenizer.bos_token
        inputs = self._processor(images=images or None, text=text, return_tensors="pt",
                                 add_special_tokens=not (bos and text.startswith(bos)))
        inputs = {key: value.to(self._model.device) for key, value in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        sampling = fit_to_context(int(self.context_length() or 0), int(inputs["input_ids"].shape[1]), request.sampling,
                                  images=True)
        return decode_stream(self._model, self._processor.tokenizer, inputs, sampling, self._end_tokens,
                             banned=(self._processor.image_token_id,))


def _refuse_unsupported(request: ChatRequest) -> None:
    """A 400 naming the first parameter this plugin cannot honour."""
    if request.tools:
        raise UnsupportedParameter("the transformers_vision plugin does not call tools", param="tools")
    if request.response_format.kind != "text":
        raise UnsupportedParameter("the transformers_vision plugin cannot constrain output to JSON",
                                   param="response_format")
    if request.adapter is not None:
        raise UnsupportedParameter("the transformers_vision plugin takes no LoRA adapters", param="model")
    if request.sampling.logprobs or request.sampling.top_logprobs:
        raise UnsupportedParameter("the transformers_vision plugin does not report logprobs", param="logprobs")
