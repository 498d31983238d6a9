"""Continuous batching: many sequences decoded together on one llama.cpp context.

`BatchEngine` owns a context of `parallel` sequences (each with `n_ctx` positions of KV) and
one scheduler thread. Each step decodes the next token of every sequence that is generating
in one `llama_decode`, then as many prompt chunks of newly joined sequences as the batch has
room for, each in a `llama_decode` of its own (a long prompt is read in chunks between decode
steps, so neither starves the other). Each sequence samples from its own logits with its own sampler
chain (penalties, logit bias, grammar, top-k, top-p, min-p, temperature, its own seeded RNG).
A sequence that ends, or whose reader goes away, frees its KV cells at once.

Reusing KV never changes an answer. A new sequence takes the free slot whose KV holds the
longest beginning of its prompt (a shared system prompt, the earlier turns of a conversation)
and reads only the rest, in the pieces `prompt_cache.PromptCuts` allows: a prompt is read as
a fresh read would cut it (one piece per sequence per step), and only the part of an earlier
prompt that a fresh read would leave the same is reused (never generated tokens, which were
read one at a time). Sequences with the same prompt that arrive together (the `n` choices of
one request) read it once: the first reads it, the others wait and then copy its KV (llama.cpp
copies only whole sequences between the slots of a split cache, so the copy is taken right
after the prompt, before any generated token) and read its last piece again.

A prompt with images (vision chat) is read by llama.cpp's multimodal helper into its slot in a
step of its own (the other streams wait for that prefill only), then generates like the rest;
its KV is never reused, since image embeddings match no token prefix.

LoRA adapters apply to a whole context, not to one sequence, so the sequences of one step
all run with the same adapter set: the scheduler serves one group (sequences with the same
adapter and scale, or none) for up to `GROUP_STEPS` steps while others wait, then the next
group, round robin. KV read under one adapter is never reused under another.

Requests join between steps; `submit` returns the sequence's token stream, read in the
caller's thread. This module touches llama.cpp's C API only; text, stop strings and usage
are `decode.text_chunks`' job.
"""

from __future__ import annotations

import collections
import ctypes
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lampstand.plugins.errors import LampstandError
from lampstand.plugins.types import SamplingParams, TokenLogprob

from .prompt_cache import PromptCuts

__all__ = ["BatchEngine", "SamplerSettings", "TokenStream", "Adapter", "MediaPrompt"]

PENALTY_LAST_N = 64  # tokens the repeat/frequency/presence penalties look back over
GROUP_STEPS = 16  # decode steps one adapter group runs while another waits
AdapterKey = tuple[str, float] | None  # (name, scale), None for the base model alone
# Reads a prompt with images into (context, sequence id) from position 0, leaving the last
# position's logits; returns the positions it took.
MediaPrompt = Callable[[Any, int], int]
_END = object()


@dataclass(frozen=True)
class SamplerSettings:
    """Everything one sequence samples with (the model's defaults already filled in)."""

    sampling: SamplingParams
    top_k: int
    min_p: float
    repeat_penalty: float
    grammar: str | None = None  # GBNF, root rule "root"


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter loaded into the model (`llama_adapter_lora_p`) and the scale to apply it at."""

    name: str
    pointer: Any
    scale: float

    @property
    def key(self) -> AdapterKey:
        return (self.name, self.scale)


@dataclass(eq=False)
class _Sequence:
    prompt: list[int]
    settings: SamplerSettings
    max_tokens: int
    adapter: Adapter | None = None
    sampler: Any = None
    seq_id: int = -1
    fed: int = 0  # prompt tokens in the KV cache
    reused: int = 0  # of those, the ones a previous sequence in the slot had read
    written: list[int] = field(default_factory=list)  # generated tokens in the KV cache
    generated: int = 0
    last: int | None = None  # the token sampled last, not yet in the KV cache
    cancelled: bool = False
    answers: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    media: MediaPrompt | None = None  # a prompt with images, read by its own evaluator (empty `prompt`)

    @property
    def key(self) -> AdapterKey:
        return None if self.adapter is None else self.adapter.key

    @property
    def position(self) -> int:
        return self.fed + max(self.generated - 1, 0)


class BatchEngine:
    """Sequences decoded together on their own context of `parallel` sequences."""

    def __init__(self, model: Any, parallel: int, n_ctx: int, n_batch: int, n_threads: int, n_threads_batch: int,
                 logprob: Callable[[Any, int, int], TokenLogprob], flash_attn: bool = False,
                 chunk: int = 128) -> None:
        import llama_cpp

        self._lib = llama_cpp
        if not 0 < chunk <= n_batch:
            raise ValueError("chunk must be between 1 and n_batch")
        self.parallel, self.n_ctx = parallel, n_ctx
        self.n_batch = n_batch + parallel  # room for a whole chunk beside every sequence's next token
        self._cuts = PromptCuts(chunk, aligned=flash_attn)
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._logprob = logprob  # (logits pointer, token, top_n) -> TokenLogprob
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_seq_max = n_ctx * parallel, parallel  # the KV is split evenly: n_ctx each
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_threads, params.n_threads_batch = n_threads, n_threads_batch
        # as the model's own context has it (llama.cpp's default, "auto", would differ in its numerics)
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._ctx = llama_cpp.llama_init_from_model(model, params)
        if not self._ctx:
            raise LampstandError("llama.cpp could not create a context for batched decoding")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._free = list(range(parallel))
        # a free slot's KV: the adapter it was read under and the tokens a later prompt may reuse
        self._held: dict[int, tuple[AdapterKey, list[int]]] = {slot: (None, []) for slot in range(parallel)}
        self._applied: AdapterKey = None  # the adapter set on the context
        self._group: AdapterKey = None  # the group this step serves
        self._group_steps = 0
        self._dropping: set[str] = set()  # adapters being unloaded: their sequences end first
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._active: list[_Sequence] = []
        self._wake = threading.Condition()
        self._steps: list[int] = []  # sequences decoded in each step since `take_step_sizes`
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lampstand-batch", daemon=True)
        self._thread.start()

    # -- the caller's side --

    def submit(self, prompt: list[int], settings: SamplerSettings, max_tokens: int,
               adapter: Adapter | None = None, media: MediaPrompt | None = None) -> TokenStream:
        """The sequence's sampled tokens with their logprobs; closing the stream cancels it.

        With `media` (a prompt with images), `prompt` is empty: the scheduler runs `media` on the
        sequence's slot in a step of its own, then the sequence generates beside the others.
        """
        sequence = _Sequence(list(prompt), settings, max_tokens, adapter, media=media)
        sequence.sampler = self._sampler(settings)  # a grammar error is raised here, in the caller
        with self._wake:
            if self._closed:
                raise LampstandError("the model is unloading")
            self._waiting.append(sequence)
            self._wake.notify()
        return TokenStream(self, sequence)

    def drop_adapter(self, name: str) -> None:
        """Before adapter `name` is freed: end its sequences, take it off the context, forget its KV."""
        with self._wake:
            self._dropping.add(name)
            self._wake.notify()
            while name in self._dropping and not self._closed and self._thread.is_alive():
                self._wake.wait(0.1)

    def _drop_adapters(self) -> None:
        for name in list(self._dropping):
            gone = LampstandError(f"adapter {name!r} was unloaded during the request")
            for sequence in [s for s in [*self._active, *self._waiting] if s.adapter and s.adapter.name == name]:
                if sequence in self._waiting:
                    self._waiting.remove(sequence)
                self._finish(sequence, gone)
            if self._applied is not None and self._applied[0] == name:
                self._set_adapter(None)
            for slot, (key, _) in list(self._held.items()):
                if key is not None and key[0] == name:
                    self._held[slot] = (None, [])
                    self._lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
            self._dropping.discard(name)
        self._wake.notify_all()

    def take_step_sizes(self) -> tuple[int, ...]:
        """Sequences decoded in each step since the last call (the metrics' batch sizes)."""
        with self._wake:
            steps, self._steps = tuple(self._steps), []
        return steps

    def _cancel(self, sequence: _Sequence) -> None:
        with self._wake:
            sequence.cancelled = True
            self._wake.notify()

    def close(self) -> None:
        """Stop the scheduler, end every sequence, free the context."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()
        for sequence in [*self._active, *self._waiting]:
            self._finish(sequence, LampstandError("the model was unloaded during the request"))
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)

    # -- the scheduler --

    def _run(self) -> None:
        while True:
            with self._wake:
                self._drop_adapters()
                self._drop_cancelled()
                self._admit()
                while not self._closed and not self._active:
                    self._wake.wait()
                    self._drop_adapters()
                    self._drop_cancelled()
                    self._admit()
                if self._closed:
                    return
            try:
                self._step()
            except BaseException as exc:  # an engine failure ends the sequences of this step, not the worker
                for sequence in list(self._active):
                    self._finish(sequence, LampstandError(f"llama.cpp failed to decode: {exc}"))

    def _admit(self) -> None:
        while self._waiting and self._free:
            sequence = self._waiting.popleft()
            if sequence.cancelled:
                self._free_sampler(sequence)
                continue
            slot = max(self._free, key=lambda s: self._reusable(s, sequence))
            self._free.remove(slot)
            keep = self._reusable(slot, sequence)
            if not self._lib.llama_memory_seq_rm(self._memory, slot, keep, -1):
                keep = 0  # this cache cannot cut a sequence short: read the prompt from the start
                self._lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
            self._held[slot] = (None, [])
            sequence.seq_id, sequence.fed, sequence.reused = slot, keep, keep
            self._active.append(sequence)

    def _reusable(self, slot: int, sequence: _Sequence) -> int:
        """Prompt tokens of `sequence` in the free `slot`'s KV exactly as a fresh read would leave
        them (read under the same adapter, cut as a fresh read cuts), short of its own last piece
        (read again for its logits)."""
        key, tokens = self._held[slot]
        if key != sequence.key or sequence.media is not None:
            return 0
        same = _common_prefix(tokens, sequence.prompt)
        return self._cuts.reusable(same, len(sequence.prompt))

    def _last_piece(self, sequence: _Sequence) -> int:
        """Where the last piece of the sequence's prompt begins (read again for its logits)."""
        return self._cuts.reusable(len(sequence.prompt), len(sequence.prompt))

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self._active if s.cancelled]:
            self._finish(sequence, None)

    def _pick_group(self) -> list[_Sequence]:
        """The sequences of this step: one adapter group, kept for GROUP_STEPS steps while others wait."""
        keys = list(dict.fromkeys(s.key for s in self._active))
        if self._group not in keys or (len(keys) > 1 and self._group_steps >= GROUP_STEPS):
            after = keys.index(self._group) + 1 if self._group in keys else 0
            self._group, self._group_steps = keys[after % len(keys)], 0
        self._group_steps += 1
        members = [s for s in self._active if s.key == self._group]
        if self._group != self._applied:
            self._set_adapter(members[0].adapter)
        return members

    def _set_adapter(self, adapter: Adapter | None) -> None:
        lib = self._lib
        if adapter is None:
            status = lib.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            pointers = (lib.llama_adapter_lora_p_ctypes * 1)(adapter.pointer)
            scales = (ctypes.c_float * 1)(adapter.scale)
            status = lib.llama_set_adapters_lora(self._ctx, pointers, 1, scales)
        if status != 0:
            raise LampstandError("llama.cpp refused to set the adapter on the batched context")
        self._applied = None if adapter is None else adapter.key

    def _step(self) -> None:
        """One step: the next token of every stream in one `llama_decode`, then each prompt
        chunk of this step in a `llama_decode` of its own.

        With a cache split per sequence, llama.cpp cuts a batch into micro-batches holding the
        same number of tokens of each sequence, from consecutive sequence ids only: a chunk read
        beside streams would be cut (one token beside theirs, the rest alone), and its numbers
        would differ from a read alone. Streams go in slot order, so that neighbouring slots
        share a micro-batch."""
        members = self._pick_group()
        for sequence in [s for s in members if s.media is not None and s.last is None]:
            self._read_media(sequence)
        members = [s for s in members if s in self._active]
        streams = sorted((s for s in members if s.last is not None), key=lambda s: s.seq_id)
        room = self.n_batch - len(streams)
        chunks: list[tuple[_Sequence, int]] = []
        for sequence in (s for s in members if s.last is None):
            donor = self._donor_of(sequence, reading=False)
            if donor is not None:  # a sibling holds exactly this prompt now (copied before this step writes more)
                self._copy_prompt(donor, sequence)
            elif self._donor_of(sequence, reading=True) is not None:
                continue  # a sibling is reading the same prompt: copy it afterwards
            take = self._cuts.piece_end(sequence.fed, len(sequence.prompt)) - sequence.fed
            if 0 < take <= room:  # a piece is read whole or waits for the next step
                chunks.append((sequence, take))
                room -= take
        if not streams and not chunks:
            return
        self._steps.append(len(streams) + len(chunks))
        if streams:
            self._decode([(s, [s.last], s.position) for s in streams])
        for sequence, take in chunks:
            start = sequence.fed
            sequence.fed += take
            self._decode([(sequence, sequence.prompt[start:sequence.fed], start)])
        for sequence in [s for s in self._active if s.last is None]:
            donor = self._donor_of(sequence, reading=False)
            if donor is not None:
                self._copy_prompt(donor, sequence)

    def _decode(self, reads: list[tuple[_Sequence, list[Any], int]]) -> None:
        """One `llama_decode` of `reads` (a sequence, its tokens, the position of the first),
        then a token sampled for each sequence whose prompt is read to its end or that generates."""
        batch = self._batch
        batch.n_tokens = 0
        rows: list[tuple[_Sequence, int]] = []
        for sequence, tokens, start in reads:
            done = sequence.last is not None or sequence.fed == len(sequence.prompt)
            for offset, token in enumerate(tokens):
                row = self._add(token, start + offset, sequence.seq_id, done and offset == len(tokens) - 1)
            if done:
                rows.append((sequence, row))
        code = self._lib.llama_decode(self._ctx, batch)
        if code != 0:
            raise LampstandError(f"llama_decode returned {code}")
        for sequence, row in rows:
            if sequence in self._active:
                self._sample(sequence, row)

    def _read_media(self, sequence: _Sequence) -> None:
        """A prompt with images: read on its own (llama.cpp's multimodal helper decodes it), then
        its first token sampled at once, before another decode replaces the logits."""
        assert sequence.media is not None
        try:
            sequence.fed = sequence.media(self._ctx, sequence.seq_id)
        except BaseException as exc:
            self._finish(sequence, exc if isinstance(exc, LampstandError) else LampstandError(str(exc)))
            return
        self._steps.append(1)
        self._sample(sequence, row=-1)  # the last row of that decode

    def _donor_of(self, sequence: _Sequence, *, reading: bool) -> _Sequence | None:
        """An earlier sequence with the same prompt that is still reading it (`reading`), or whose
        KV cache holds exactly that prompt now (it has just sampled its first token)."""
        if sequence.fed >= self._last_piece(sequence):
            return None
        for other in self._active:
            if other is sequence:
                return None  # only earlier ones: two siblings never wait for each other
            if other.prompt == sequence.prompt and other.key == sequence.key and (
                    other.last is None if reading else other.generated == 1 and not other.written):
                return other
        return None

    def _copy_prompt(self, donor: _Sequence, sequence: _Sequence) -> None:
        lib, last = self._lib, self._last_piece(sequence)
        lib.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
        lib.llama_memory_seq_cp(self._memory, donor.seq_id, sequence.seq_id, -1, -1)
        lib.llama_memory_seq_rm(self._memory, sequence.seq_id, last, -1)  # read again for its own logits
        sequence.fed = sequence.reused = last

    def _add(self, token: int, position: int, seq_id: int, logits: bool) -> int:
        batch = self._batch
        i = batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
        batch.seq_id[i][0], batch.logits[i] = seq_id, logits
        batch.n_tokens = i + 1
        return i

    def _sample(self, sequence: _Sequence, row: int) -> None:
        lib = self._lib
        sampling = sequence.settings.sampling
        token = lib.llama_sampler_sample(sequence.sampler, self._ctx, row)
        if sampling.logprobs:
            logprobs = (self._logprob(lib.llama_get_logits_ith(self._ctx, row), token, sampling.top_logprobs),)
        else:
            logprobs = ()
        sequence.answers.put((token, logprobs))
        if sequence.last is not None:
            sequence.written.append(sequence.last)  # decoded in this step, so now in the KV cache
        sequence.generated += 1
        sequence.last = token
        ended = lib.llama_vocab_is_eog(self._vocab, token) or sequence.generated >= sequence.max_tokens
        if ended or sequence.position >= self.n_ctx:
            self._finish(sequence, None)

    def _finish(self, sequence: _Sequence, error: BaseException | None) -> None:
        """End a sequence: its reader hears the end (or `error`); its slot is free again, its
        KV cache kept for a later prompt with the same beginning (dropped after an error)."""
        sequence.answers.put(error if error is not None else _END)
        if sequence in self._active:
            self._active.remove(sequence)
            if error is None and sequence.media is None:  # KV holding images matches no token prefix
                # generated tokens were read one at a time: a fresh read of them would differ
                self._held[sequence.seq_id] = (sequence.key, sequence.prompt[:sequence.fed])
            elif error is None:
                self._held[sequence.seq_id] = (sequence.key, [])
            else:
                self._lib.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
            self._free.append(sequence.seq_id)
        self._free_sampler(sequence)

    def _free_sampler(self, sequence: _Sequence) -> None:
        if sequence.sampler is not None:
            self._lib.llama_sampler_free(sequence.sampler)
            sequence.sampler = None

    def _sampler(self, settings: SamplerSettings) -> Any:
        """A sampler chain for one sequence, in llama.cpp's usual order."""
        lib, sampling = self._lib, settings.sampling
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            lib.llama_sampler_chain_add(chain, sampler)

        if settings.grammar is not None:
            grammar = lib.llama_sampler_init_grammar(self._vocab, settings.grammar.encode(), b"root")
            if not grammar:
                lib.llama_sampler_free(chain)
                raise LampstandError("llama.cpp could not parse the grammar")
            add(grammar)
        if sampling.logit_bias:
            biases = (lib.llama_logit_bias * len(sampling.logit_bias))(
                *(lib.llama_logit_bias(token, bias) for token, bias in sampling.logit_bias))
            add(lib.llama_sampler_init_logit_bias(lib.llama_vocab_n_tokens(self._vocab), len(biases), biases))
        # The binding declares an older (n_vocab, last_n, ...) signature than llama.cpp's own
        # (last_n, ...): passing last_n in both integer places is right under either.
        add(lib.llama_sampler_init_penalties(PENALTY_LAST_N, PENALTY_LAST_N, settings.repeat_penalty,
                                             sampling.frequency_penalty, sampling.presence_penalty))
        if sampling.temperature <= 0:
            add(lib.llama_sampler_init_greedy())
            return chain
        add(lib.llama_sampler_init_top_k(settings.top_k))
        add(lib.llama_sampler_init_top_p(sampling.top_p, 1))
        add(lib.llama_sampler_init_min_p(settings.min_p, 1))
        add(lib.llama_sampler_init_temp(sampling.temperature))
        seed = sampling.seed if sampling.seed is not None else lib.LLAMA_DEFAULT_SEED
        add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain


class TokenStream:
    """One sequence's sampled tokens and their logprobs, as they come; `close` cancels it."""

    def __init__(self, engine: BatchEngine, sequence: _Sequence) -> None:
        self._engine, self._sequence = engine, sequence

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens found in the slot's KV cache rather than read again (known once it started)."""
        return self._sequence.reused

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> tuple[int, tuple[TokenLogprob, ...]]:
        item = self._sequence.answers.get()
        if item is _END:
            self._sequence.answers.put(_END)  # a later `next` ends too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._engine._cancel(self._sequence)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
