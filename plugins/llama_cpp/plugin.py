"""The `llama_cpp` plugin: GGUF models through llama-cpp-python, on CPU or GPU.

Serves chat and completions (or embeddings when configured with `embedding = true`), and
chat with images when configured with a projector (`mmproj`, see `vision.py`). The chat
prompt is the GGUF's own template rendered in a sandbox, tokenized with special tokens
parsed. `llama_cpp` is imported only inside `load`.
"""

from __future__ import annotations

import os
import threading
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
    Plugin,
)
from lampstand.plugins.errors import (
    CapabilityMissing,
    InvalidRequest,
    ModelUnavailable,
    UnsupportedParameter,
)
from lampstand.plugins.fitting import fit_to_context
from lampstand.plugins.tool_calls import call_parser_for, with_tool_calls
from lampstand.plugins.types import (
    AdapterInfo,
    AdapterLoad,
    ChatRequest,
    CompletionRequest,
    AdapterRef,
    EmbeddingResult,
    GenerationChunk,
    SamplingParams,
)

from .adapters import LoraAdapters
from .batching import Adapter, BatchEngine, MediaPrompt, SamplerSettings
from .decode import check_logit_bias, decode_stream, logprob_from_logits, text_chunks
from .gguf_info import GgufInfo, read_gguf_info
from .grammar import grammar_for_chat
from .options import LlamaCppOptions
from .prompt_cache import PromptCache, PromptCuts
from .vision import VisionProjector, projector_file_bytes
from .vocab import Vocab

__all__ = ["LlamaCppPlugin"]

BATCHED_OWN_CTX = 64  # positions of the model's own context when the batching engine generates
POOLING = {"mean": 1, "cls": 2, "last": 3}  # llama_cpp.LLAMA_POOLING_TYPE_*


class LlamaCppPlugin(Plugin, ChatModel, CompletionModel, Embedder, AdapterHost):
    """One GGUF model in one llama.cpp context, with the LoRA adapters loaded into it."""

    name = "llama_cpp"
    Options = LlamaCppOptions
    options: LlamaCppOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._llm: Any = None
        self._info: GgufInfo | None = None
        self._template: ChatTemplate | None = None
        self._vocab: Vocab | None = None
        self._projector: VisionProjector | None = None
        self._cache = PromptCache(PromptCuts(self.options.cache_chunk, aligned=self.options.flash_attn))
        self._adapters = LoraAdapters(self.path)
        self._engine: BatchEngine | None = None  # with parallel > 1: every generation
        self._exclusive = threading.Lock()  # everything else runs on the Llama context, one at a time

    # -- lifecycle -------------------------------------------------------------------

    def capabilities(self) -> frozenset[Capability]:
        if self.options.embedding:
            return frozenset({Capability.EMBEDDINGS})
        if self.options.mmproj is not None:
            return frozenset({Capability.CHAT, Capability.COMPLETIONS, Capability.VISION, Capability.ADAPTERS})
        return frozenset({Capability.CHAT, Capability.COMPLETIONS, Capability.ADAPTERS})

    def _gguf(self) -> GgufInfo:
        if self._info is None:
            self._info = read_gguf_info(self.path)
        return self._info

    def _n_ctx(self) -> int:
        train = self._gguf().n_ctx_train
        return min(self.options.n_ctx, train) if train else self.options.n_ctx

    def _projector_bytes(self) -> int:
        mmproj = self.options.mmproj
        return projector_file_bytes(mmproj) if mmproj is not None else 0

    def slots(self) -> int:
        return 1 if self.options.embedding else self.options.parallel

    def _own_n_ctx(self) -> int:
        """The `Llama` object's own context: all of n_ctx, unless the batching engine runs every
        generation (then it only tokenizes, and a few positions of KV are enough)."""
        return min(BATCHED_OWN_CTX, self._n_ctx()) if self.slots() > 1 else self._n_ctx()

    def _batch_bytes(self) -> int:
        """The batched context: `parallel` sequences of n_ctx tokens of KV each, and its compute buffer."""
        if self.slots() == 1:
            return 0
        info = self._gguf()
        return info.kv_cache_bytes(self._n_ctx()) * self.slots() + info.compute_bytes(self.options.n_batch + self.slots())

    def estimate_footprint(self) -> Footprint:
        own = self._own_n_ctx()
        text = self._gguf().footprint(own, min(self.options.n_batch, own))
        extra = self._projector_bytes() + self._batch_bytes()
        return Footprint(ram_bytes=text.ram_bytes + extra, vram_bytes=text.vram_bytes)

    def measured_footprint(self) -> Footprint | None:
        if self._llm is None:
            return None
        import llama_cpp

        weights = int(llama_cpp.llama_model_size(self._llm.model))
        weights += self._projector.file_bytes if self._projector is not None else 0
        kv = self._gguf().kv_cache_bytes(self._llm.n_ctx()) + self._batch_bytes()
        on_gpu = self.options.n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload()
        return Footprint(ram_bytes=0 if on_gpu else weights + kv, vram_bytes=weights + kv if on_gpu else 0)

    def load(self) -> None:
        info = self._gguf()
        self._projector_bytes()  # a bad projector file fails here, before llama.cpp reads anything
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelUnavailable("the llama_cpp plugin needs `pip install lampstand[llama]`") from exc
        pooling = POOLING.get(self.options.pooling)
        if self.options.embedding and pooling is None and info.pooling_type in (None, 0):
            pooling = POOLING["mean"]  # a causal LM has no pooling of its own
        try:
            self._llm = Llama(
                model_path=str(self.path),
                n_ctx=self._own_n_ctx(),
                n_batch=min(self.options.n_batch, self._own_n_ctx()),
                n_threads=self.options.n_threads or os.cpu_count(),
                # llama-cpp-python would read prompts on every core whatever n_threads says, and
                # two workers spinning on more threads than cores slow each other 10x.
                n_threads_batch=self.options.n_threads_batch or self.options.n_threads or os.cpu_count(),
                n_gpu_layers=self.options.n_gpu_layers,
                flash_attn=self.options.flash_attn,
                use_mmap=self.options.use_mmap,
                embedding=self.options.embedding,
                pooling_type=pooling if pooling is not None else -1,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp reports every load failure as ValueError/RuntimeError
            raise ModelUnavailable(f"llama.cpp could not load {self.path.name}: {exc}") from exc
        self._vocab = Vocab(self._llm)
        source = self.options.chat_template or self._llm.metadata.get("tokenizer.chat_template")
        if source:
            self._template = ChatTemplate(
                source, bos_token=self._token_text(self._llm.token_bos()),
                eos_token=self._token_text(self._llm.token_eos()),
            )
        if self.options.mmproj is not None:
            self._load_projector(self.options.mmproj)
        if self.slots() > 1:
            self._start_engine()

    def _start_engine(self) -> None:
        n_vocab, vocab = self._llm.n_vocab(), self._vocab
        threads = self.options.n_threads or os.cpu_count() or 1
        try:
            self._engine = BatchEngine(
                self._llm.model, self.slots(), self._n_ctx(), self.options.n_batch, threads,
                self.options.n_threads_batch or threads,
                lambda logits, token, top_n: logprob_from_logits(logits, n_vocab, vocab, token, top_n),
                flash_attn=self.options.flash_attn, chunk=self.options.cache_chunk)
        except BaseException:
            self.unload()
            raise

    def _load_projector(self, mmproj: Path) -> None:
        try:
            self._projector = VisionProjector(
                self._llm, mmproj, self.options, n_threads=self.options.n_threads or os.cpu_count() or 1,
                bos_token=self._token_text(self._llm.token_bos()), eos_token=self._token_text(self._llm.token_eos()))
        except BaseException:
            self.unload()
            raise

    def engine_stats(self) -> EngineStats | None:
        if self._engine is None:
            return None
        sizes = self._engine.take_step_sizes()
        return EngineStats(batch_sizes=sizes) if sizes else None

    def unload(self) -> None:
        if self._engine is not None:
            self._engine.close()  # its context refers to the model
        self._engine = None
        if self._projector is not None:
            self._projector.close()  # the mtmd context refers to the model, so it goes first
        self._projector = None
        if self._llm is not None:
            self._adapters.free_all(self._llm)
            self._llm.close()
        self._llm = None
        self._template = None
        self._vocab = None
        self._cache.forget()

    def context_length(self) -> int | None:
        if self._llm is None or self._engine is not None:
            return self._n_ctx()  # with the engine: each sequence's n_ctx
        return self._llm.n_ctx()

    # -- tokens ----------------------------------------------------------------------

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._vocab.text([token], special=True)

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        """Token ids of `text` in this model's vocabulary."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def _add_bos(self) -> bool:
        return bool(self._llm._model.add_bos_token()) and self._llm.token_bos() >= 0

    # -- capabilities ----------------------------------------------------------------

    def _require_generation(self) -> None:
        if self.options.embedding:
            raise CapabilityMissing(f"model {self.model_id!r} is configured for embeddings only")

    def chat_prompt_tokens(self, request: ChatRequest) -> list[int]:
        """The prompt a chat request becomes: the model's template, special tokens parsed."""
        if self._template is None:
            raise UnsupportedParameter(
                f"model {self.model_id!r} has no chat template; set chat_template in its config "
                "or use /v1/completions", param="messages")
        return self.tokenize(render_chat(self._template, request), add_bos=False)

    def chat(self, request: ChatRequest) -> Iterator[GenerationChunk]:
        self._require_generation()
        if any(m.images for m in request.messages):
            return self._chat_with_images(request)
        prompt = self.chat_prompt_tokens(request)
        sampling = fit_to_context(self._n_ctx(), len(prompt), request.sampling)
        chunks = self._generate(prompt, sampling, grammar_for_chat(request), request.adapter)
        if request.tools and request.tool_choice.mode != "none":
            chunks = with_tool_calls(chunks, call_parser_for(request))
        return chunks

    def _chat_with_images(self, request: ChatRequest) -> Iterator[GenerationChunk]:
        """A chat whose messages carry images, through the projector (see `vision.py`)."""
        if self._projector is None:
            raise CapabilityMissing(f"model {self.model_id!r} has no image projector; configure mmproj to read images")
        if request.tools and request.tool_choice.mode != "none":
            raise UnsupportedParameter("tools cannot be combined with images on this model", param="tools")
        prompt = self._projector.tokenize(request)
        projector, n_batch = self._projector, self.options.n_batch
        try:
            sampling = fit_to_context(self._n_ctx(), prompt.n_tokens, request.sampling, images=True)
            grammar = grammar_for_chat(request)
            if self._engine is not None:
                return self._batched([], sampling, grammar, request.adapter, prompt.n_tokens,
                                     media=lambda ctx, seq_id: projector.evaluate_into(ctx, seq_id, prompt, n_batch))
            self._adapters.apply(self._llm, request.adapter)  # the whole prompt runs again, so no cache key
        except BaseException:
            prompt.close()
            raise
        return self._images_alone(prompt, sampling, grammar)

    def _images_alone(self, prompt: Any, sampling: SamplingParams, grammar: Any) -> Iterator[GenerationChunk]:
        with self._exclusive:
            self._cache.forget()  # the KV cache will hold image embeddings, which no token prefix matches
            yield from self._projector.stream(self._llm, self._vocab, prompt, sampling, self.options, grammar)

    def complete(self, request: CompletionRequest) -> Iterator[GenerationChunk]:
        self._require_generation()
        prompt = self._completion_prompt(request)
        sampling = fit_to_context(self._n_ctx(), len(prompt), request.sampling)
        chunks = self._generate(prompt, sampling, None, request.adapter)
        if not request.echo:
            return chunks
        echoed = request.prompt if isinstance(request.prompt, str) else self._vocab.text(request.prompt)
        return _prepend(GenerationChunk(text=echoed), chunks)

    def _generate(self, prompt: list[int], sampling: SamplingParams, grammar: Any,
                  adapter: AdapterRef | None) -> Iterator[GenerationChunk]:
        """Batched with the other sequences when the engine runs (grouped by adapter); otherwise
        alone on the model's own context, with its prompt cache and its adapters."""
        if self._engine is not None:
            return self._batched(prompt, sampling, grammar, adapter, len(prompt))
        return self._alone(prompt, sampling, grammar, adapter)

    def _batched(self, prompt: list[int], sampling: SamplingParams, grammar: Any, adapter: AdapterRef | None,
                 n_prompt: int, media: MediaPrompt | None = None) -> Iterator[GenerationChunk]:
        """A sequence of the batching engine (`media`: a prompt with images, read by the projector)."""
        assert self._engine is not None
        check_logit_bias(sampling.logit_bias, self._llm.n_vocab())  # llama.cpp would read past its logits
        settings = SamplerSettings(
            sampling, top_k=self.options.top_k if sampling.top_k is None else sampling.top_k,
            min_p=self.options.min_p if sampling.min_p is None else sampling.min_p,
            repeat_penalty=self.options.repeat_penalty if sampling.repeat_penalty is None
            else sampling.repeat_penalty,
            grammar=grammar._grammar if grammar is not None else None)
        with self._adapters.lock:  # not unloaded between finding the adapter and joining the batch
            lora = None if adapter is None else Adapter(adapter.name, self._adapters.pointer(adapter.name),
                                                        float(adapter.scale))
            stream = self._engine.submit(prompt, settings, sampling.max_tokens, lora, media)
        return _closing(stream, lambda tokens: text_chunks(tokens, self._vocab, sampling, n_prompt,
                                                           lambda: stream.cached_tokens))

    def _alone(self, prompt: list[int], sampling: SamplingParams, grammar: Any,
               adapter: AdapterRef | None) -> Iterator[GenerationChunk]:
        with self._exclusive:
            key = self._adapters.apply(self._llm, adapter)
            yield from decode_stream(self._llm, self._vocab, self._cache, prompt, sampling, self.options,
                                     grammar, key)

    # -- adapters --------------------------------------------------------------------

    def load_adapter(self, request: AdapterLoad) -> AdapterInfo:
        self._require_generation()
        return self._adapters.load(self._llm, request)

    def unload_adapter(self, name: str) -> None:
        drop = self._engine.drop_adapter if self._engine is not None else None  # batched sequences end first
        with self._exclusive:  # not while a generation on the model's context may be using it
            self._adapters.unload(self._llm, name, before_free=drop)

    def _completion_prompt(self, request: CompletionRequest) -> list[int]:
        if isinstance(request.prompt, str):
            prefix = self.tokenize(request.prompt, add_bos=False)
        else:
            prefix = self._checked_ids(request.prompt)
        bos = [self._llm.token_bos()] if self._add_bos() else []
        if request.suffix is None:
            prompt = prefix if not isinstance(request.prompt, str) else bos + prefix
            if not prompt:
                raise InvalidRequest("the prompt is empty", param="prompt")
            return prompt
        model = self._llm._model
        pre, suf, mid = model.token_prefix(), model.token_suffix(), model.token_middle()
        if min(pre, suf, mid) < 0:
            raise UnsupportedParameter(
                f"model {self.model_id!r} has no fill-in-the-middle tokens, so `suffix` is not supported",
                param="suffix")
        suffix = self.tokenize(request.suffix, add_bos=False, special=False)
        return bos + [pre] + prefix + [suf] + suffix + [mid]

    def _checked_ids(self, ids: Sequence[int]) -> list[int]:
        n_vocab = self._llm.n_vocab()
        if any(not 0 <= t < n_vocab for t in ids):
            raise InvalidRequest(f"token ids must be in [0, {n_vocab})", param="prompt")
        return list(ids)

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> EmbeddingResult:
        if not self.options.embedding:
            raise CapabilityMissing(
                f"model {self.model_id!r} serves text generation; configure embedding = true for embeddings")
        texts = [
            item if isinstance(item, str)
            else self._vocab.text(self._checked_ids(item))
            for item in inputs
        ]
        vectors = self._llm.embed(texts, normalize=True, truncate=True)
        n_ctx = self._llm.n_ctx()
        counts = [min(len(self.tokenize(t, add_bos=self._add_bos())), n_ctx) for t in texts]
        return EmbeddingResult(vectors=[list(map(float, v)) for v in vectors], token_counts=counts)


def _closing(tokens: Iterator[Any], chunks_of: Any) -> Iterator[GenerationChunk]:
    """`chunks_of(tokens)`, closing `tokens` (so the engine frees the sequence) however it ends."""
    try:
        yield from chunks_of(tokens)
    finally:
        tokens.close()  # type: ignore[attr-defined]


def _prepend(first: GenerationChunk, rest: Iterator[GenerationChunk]) -> Iterator[GenerationChunk]:
    yield first
    yield from rest
