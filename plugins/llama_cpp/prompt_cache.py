"""Reuses the KV cache between requests without changing any answer.

llama.cpp's logits for a position depend on how it was batched, so reusing cached KV
naively (as llama-cpp-python's `generate` does) makes greedy and seeded output depend on
the previous request. Here prompts are always evaluated in chunks aligned to fixed
positions, and only whole aligned chunks of the previous *prompt* are reused: the KV a
request sees is bit-identical to a fresh evaluation, and a shared prefix (system prompt,
earlier turns) is still not recomputed. KV computed under one LoRA adapter (or scale) is
never reused under another: the cache is keyed by the adapter set on the context.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

__all__ = ["PromptCache"]


class PromptCache:
    """Tracks which prefix of a `Llama`'s KV cache was computed canonically."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.canonical: list[int] = []  # the tokens whose KV was computed in aligned chunks
        self.key: Hashable = None  # what else the KV depends on (the adapter and its scale)

    def evaluate(self, llm: Any, tokens: list[int], key: Hashable = None) -> int:
        """Bring the KV cache to exactly `tokens` computed under `key`; returns tokens reused."""
        keep = 0
        reusable = self.canonical if key == self.key else []
        for cached, new in zip(reusable, tokens):
            if cached != new:
                break
            keep += 1
        keep -= keep % self.chunk
        if keep >= len(tokens):  # the last chunk must run again to produce fresh logits
            keep = max(0, (len(tokens) - 1) // self.chunk * self.chunk)
        self.canonical, self.key = [], key  # invalid until the evaluation below completes
        llm.n_tokens = keep
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        for start in range(keep, len(tokens), self.chunk):
            llm.eval(tokens[start:start + self.chunk])
        self.canonical = list(tokens)
        return keep

    def forget(self) -> None:
        """Drop what is known, e.g. after the context was reset."""
        self.canonical = []
