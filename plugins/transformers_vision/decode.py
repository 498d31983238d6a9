"""The token loop over a loaded `LlavaForConditionalGeneration`: one forward pass per token,
text out as soon as it is whole.

A manual loop rather than `generate()` in a thread: each token is yielded from the thread that
asked for it, so closing the iterator stops the generation before the next forward pass and
nothing is left running. The prompt (text and image features) is read in one pass; each
later pass reads one token against the KV cache. torch is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lampstand.plugins.stop_strings import StopMatcher
from lampstand.plugins.types import FinishReason, GenerationChunk, SamplingParams, Usage

from .sampler import Sampler

__all__ = ["TextPieces", "decode_stream"]


class TextPieces:
    """Token ids to text deltas; a piece that ends inside a UTF-8 character waits for the rest.

    Decoding each token alone loses the spaces and bytes that depend on its neighbours, so a
    short window is decoded twice, with and without the new tokens, and the difference emitted.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.start = 0  # window start: a few tokens of context for the decoder
        self.done = 0  # tokens whose text has been emitted

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self._text(self.ids[self.start:self.done])
        after = self._text(self.ids[self.start:])
        if after.endswith("\ufffd") or len(after) <= len(before):  # a split character, or nothing yet
            return ""
        self.start, self.done = self.done, len(self.ids)
        return after[len(before):]

    def flush(self) -> str:
        """Whatever is still held back when generation ends (a split character, replaced)."""
        before = self._text(self.ids[self.start:self.done])
        after = self._text(self.ids[self.start:])
        self.start = self.done = len(self.ids)
        return after[len(before):]


class _Passes:
    """The model's forward passes for one generation, with its KV cache."""

    def __init__(self, model: Any, inputs: dict[str, Any]) -> None:
        self.model = model
        self.inputs = inputs
        self.cache: Any = None
        self.mask = inputs["attention_mask"]  # (1, tokens so far)

    def prompt(self) -> Any:
        """Logits (vocab,) after reading the whole prompt, images included."""
        return self._run(**self.inputs)

    def after(self, token: int) -> Any:
        """Logits (vocab,) after reading `token`."""
        import torch

        ids = torch.tensor([[token]], device=self.mask.device)  # (1, 1)
        self.mask = torch.cat([self.mask, torch.ones_like(ids)], dim=1)
        return self._run(input_ids=ids, attention_mask=self.mask, past_key_values=self.cache)

    def _run(self, **inputs: Any) -> Any:
        import torch

        with torch.inference_mode():
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        return out.logits[0, -1]


def decode_stream(model: Any, tokenizer: Any, inputs: dict[str, Any], sampling: SamplingParams,
                  end_tokens: frozenset[int], banned: tuple[int, ...]) -> Iterator[GenerationChunk]:
    """Generate from the processor's `inputs`; the last chunk carries finish_reason and usage.

    `end_tokens` end the answer (finish "stop"); `banned` are never sampled (the image token).
    """
    import torch

    context = inputs["input_ids"][0]  # (prompt,) then every generated token after it
    sampler = Sampler(sampling, model.get_output_embeddings().weight.shape[0], context.device, banned)
    passes = _Passes(model, inputs)
    pieces = TextPieces(tokenizer)
    stops = StopMatcher(sampling.stop)
    finish: FinishReason = "length"
    generated = 0
    logits = passes.prompt() if sampling.max_tokens > 0 else None
    while logits is not None:
        with torch.inference_mode():
            token = sampler.pick(logits, context)
        if token in end_tokens:
            finish = "stop"
            break
        generated += 1
        text = stops.feed(pieces.push(token))
        if text:
            yield GenerationChunk(text=text)
        if stops.stopped:
            finish = "stop"
            break
        if generated >= sampling.max_tokens:
            break
        context = torch.cat([context, context.new_tensor([token])])
        logits = passes.after(token)
    tail = "" if stops.stopped else stops.feed(pieces.flush())
    if stops.stopped:
        finish = "stop"
    else:
        tail += stops.flush()
    yield GenerationChunk(text=tail, finish_reason=finish,
                          usage=Usage(prompt_tokens=int(inputs["input_ids"].shape[1]), completion_tokens=generated))
