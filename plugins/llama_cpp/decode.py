"""The token loop: sample from a loaded `llama_cpp.Llama`, yield text chunks with logprobs.

Handles what the engine leaves to its caller: UTF-8 split across tokens, stop strings,
the token budget, end-of-generation tokens, seeds and per-token log probabilities. The
caller holds the model exclusively while iterating (the `Llama` object is not reentrant).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np

from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.stop_strings import StopMatcher
from lampstand.plugins.types import (
    FinishReason,
    GenerationChunk,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
    Usage,
)

from .options import LlamaCppOptions
from .prompt_cache import PromptCache
from .vocab import Vocab

__all__ = ["decode_stream", "sample_stream", "text_chunks", "logprob_from_logits", "check_logit_bias"]


def _logprob_of(llm: Any, vocab: Vocab, token: int, top_n: int) -> TokenLogprob:
    """Log-softmax of the logits the token was sampled from (the last decoded position)."""
    import llama_cpp

    return logprob_from_logits(llama_cpp.llama_get_logits_ith(llm.ctx, -1), llm.n_vocab(), vocab, token, top_n)


def logprob_from_logits(pointer: Any, n_vocab: int, vocab: Vocab, token: int, top_n: int) -> TokenLogprob:
    """`token`'s log probability (and the `top_n` best) under the logits at `pointer` (n_vocab floats)."""
    logits = np.ctypeslib.as_array(pointer, shape=(n_vocab,))
    shifted = logits - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())  # (n_vocab,)
    top: tuple[TopLogprob, ...] = ()
    if top_n:
        best = np.argpartition(-logprobs, top_n)[:top_n]
        best = best[np.argsort(-logprobs[best])]
        top = tuple(_top_entry(vocab, int(t), float(logprobs[t])) for t in best)
    piece = vocab.piece(token)
    return TokenLogprob(
        token=piece.decode("utf-8", errors="replace"),
        logprob=float(logprobs[token]),
        bytes=tuple(piece),
        top_logprobs=top,
    )


def _top_entry(vocab: Vocab, token: int, logprob: float) -> TopLogprob:
    piece = vocab.piece(token)
    return TopLogprob(token=piece.decode("utf-8", errors="replace"), logprob=logprob, bytes=tuple(piece))


def check_logit_bias(bias: tuple[tuple[int, float], ...], n_vocab: int) -> None:
    """A 400 when `logit_bias` names a token the vocabulary does not have."""
    highest = max((token for token, _ in bias), default=-1)
    if highest >= n_vocab:
        raise InvalidRequest(f"logit_bias names token {highest}, but the vocabulary has {n_vocab}", param="logit_bias")


def _biased(bias: tuple[tuple[int, float], ...], n_vocab: int) -> Any:
    """A logits processor adding OpenAI's `logit_bias` (-100 bans a token, 100 forces it)."""
    import llama_cpp

    check_logit_bias(bias, n_vocab)
    ids = np.array([token for token, _ in bias], dtype=np.int64)
    values = np.array([value for _, value in bias], dtype=np.float32)

    def add_bias(_input_ids: Any, scores: Any) -> Any:
        scores[ids] += values
        return scores

    return llama_cpp.LogitsProcessorList([add_bias])


def decode_stream(
    llm: Any,
    vocab: Vocab,
    cache: PromptCache,
    prompt_tokens: list[int],
    sampling: SamplingParams,
    options: LlamaCppOptions,
    grammar: Any = None,
    cache_key: Hashable = None,
) -> Iterator[GenerationChunk]:
    """Generate from `prompt_tokens`; the last chunk carries finish_reason and usage.

    `cache_key` names what the KV depends on besides the tokens (the adapter set on the context).
    """
    cache.evaluate(llm, prompt_tokens, cache_key)
    yield from sample_stream(llm, vocab, prompt_tokens, sampling, options, grammar)


def sample_stream(
    llm: Any,
    vocab: Vocab,
    prompt_tokens: list[int],
    sampling: SamplingParams,
    options: LlamaCppOptions,
    grammar: Any = None,
) -> Iterator[GenerationChunk]:
    """Generate after a prompt the context has already evaluated; the last chunk has usage.

    `prompt_tokens` must be `llm.input_ids[:llm.n_tokens]`, the last of them evaluated with its
    logits, so `generate` samples at once from those logits instead of evaluating again.
    """
    import llama_cpp

    llm.set_seed(sampling.seed if sampling.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
    tokens = llm.generate(
        prompt_tokens,
        temp=sampling.temperature,
        top_p=sampling.top_p,
        top_k=options.top_k if sampling.top_k is None else sampling.top_k,
        min_p=options.min_p if sampling.min_p is None else sampling.min_p,
        repeat_penalty=options.repeat_penalty if sampling.repeat_penalty is None else sampling.repeat_penalty,
        frequency_penalty=sampling.frequency_penalty,
        presence_penalty=sampling.presence_penalty,
        grammar=grammar,
        logits_processor=_biased(sampling.logit_bias, llm.n_vocab()) if sampling.logit_bias else None,
    )
    try:
        with_logprobs = ((t, (_logprob_of(llm, vocab, t, sampling.top_logprobs),) if sampling.logprobs else ())
                         for t in tokens)
        yield from text_chunks(with_logprobs, vocab, sampling, len(prompt_tokens))
    finally:
        tokens.close()


def text_chunks(tokens: Iterator[tuple[int, tuple[TokenLogprob, ...]]], vocab: Vocab, sampling: SamplingParams,
                n_prompt: int, cached: Callable[[], int | None] = lambda: None) -> Iterator[GenerationChunk]:
    """Sampled tokens (with their logprobs) as text chunks: UTF-8 split across tokens, stop
    strings, `max_tokens` and end-of-generation tokens; the last chunk has finish_reason and
    usage (`cached()`: the prompt tokens the engine did not read again).

    Stops pulling once the answer is finished; the caller closes `tokens`.
    """
    stops = StopMatcher(sampling.stop)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    generated = 0
    finish: FinishReason = "length"
    for token, logprobs in tokens:
        if vocab.is_end_of_generation(token):
            finish = "stop"
            break
        generated += 1
        text = stops.feed(utf8.decode(vocab.piece(token)))
        if text or logprobs:
            yield GenerationChunk(text=text, logprobs=logprobs)
        if stops.stopped:
            finish = "stop"
            break
        if generated >= sampling.max_tokens:
            break
    tail = "" if stops.stopped else stops.feed(utf8.decode(b"", final=True))
    if stops.stopped:
        finish = "stop"
    else:
        tail += stops.flush()
    yield GenerationChunk(
        text=tail,
        finish_reason=finish,
        usage=Usage(prompt_tokens=n_prompt, completion_tokens=generated, cached_tokens=cached()),
    )
