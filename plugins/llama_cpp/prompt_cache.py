"""Reuses the KV cache between requests without changing any answer.

llama.cpp's logits for a position can depend on how its sequence was cut into decodes, so
reusing cached KV naively (as llama-cpp-python's `generate` does) could make greedy and seeded
output depend on the previous request. Measured to the last bit on CPU:

- without flash attention (the default), a prompt read in pieces of two or more tokens gives the
  same numbers however it is cut; a token read alone (as every generated token is) gives its
  later tokens other numbers. So any common beginning of an earlier *prompt* is reused, and no
  piece of a prompt is a lone token, save a one-token prompt;
- with flash attention, any other cut gives other numbers (a 533-token prompt read as 516 + 17
  tokens took other greedy tokens than read in chunks of 128), so prompts are read in chunks
  aligned to fixed positions and only whole aligned chunks are reused.

Either way the KV a request sees is bit-identical to a fresh read, and a shared prefix (system
prompt, earlier turns) is still not read again. KV computed under one LoRA adapter (or scale)
is never reused under another: the cache is keyed by the adapter set on the context.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

__all__ = ["PromptCache", "PromptCuts"]


class PromptCuts:
    """Where a prompt read may be cut: pieces of `chunk` tokens, aligned to multiples of it
    (`aligned`, for flash attention) or starting anywhere but never leaving a lone token."""

    def __init__(self, chunk: int, aligned: bool) -> None:
        self.chunk, self.aligned = chunk, aligned

    def reusable(self, common: int, length: int) -> int:
        """Tokens of a `length`-token prompt to take from a KV cache sharing its first `common`
        (the last piece is always read again, for its logits)."""
        if self.aligned:
            return min(common // self.chunk, max(length - 1, 0) // self.chunk) * self.chunk
        return max(min(common, length - 2), 0)

    def piece_end(self, start: int, length: int) -> int:
        """Where the piece of a `length`-token prompt read from `start` ends."""
        if self.aligned:
            return min(start // self.chunk * self.chunk + self.chunk, length)
        end = min(start + self.chunk, length)
        return end - 1 if length - end == 1 and end - start > 2 else end


class PromptCache:
    """Tracks which prefix of a `Llama`'s KV cache a fresh read would leave the same."""

    def __init__(self, cuts: PromptCuts) -> None:
        self.cuts = cuts
        self.canonical: list[int] = []  # the prompt tokens whose KV a fresh read would leave the same
        self.key: Hashable = None  # what else the KV depends on (the adapter and its scale)

    def evaluate(self, llm: Any, tokens: list[int], key: Hashable = None) -> int:
        """Bring the KV cache to exactly `tokens` computed under `key`; returns tokens reused."""
        common = 0
        for cached, new in zip(self.canonical if key == self.key else [], tokens):
            if cached != new:
                break
            common += 1
        keep = self.cuts.reusable(common, len(tokens))
        self.canonical, self.key = [], key  # invalid until the read below completes
        llm.n_tokens = keep
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        start = keep
        while start < len(tokens):
            end = self.cuts.piece_end(start, len(tokens))
            llm.eval(tokens[start:end])
            start = end
        self.canonical = list(tokens)
        return keep

    def forget(self) -> None:
        """Drop what is known, e.g. after the context was reset."""
        self.canonical = []
