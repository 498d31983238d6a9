"""Picking the next token from one position's logits, the way a request's sampling asks.

Penalties and `logit_bias` first, then greedy (temperature 0) or temperature, top-k, min-p
and top-p before a draw from the request's own `torch.Generator` (same seed, same tokens).
torch is imported by the caller; this module only receives its tensors.
"""

from __future__ import annotations

from typing import Any

from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.types import SamplingParams

__all__ = ["Sampler"]


class Sampler:
    """One generation's sampling state: its settings, its generator and its banned tokens."""

    def __init__(self, sampling: SamplingParams, vocab_size: int, device: Any, banned: tuple[int, ...] = ()) -> None:
        import torch

        self.sampling = sampling
        self.generator = torch.Generator(device=device)
        if sampling.seed is not None:
            self.generator.manual_seed(sampling.seed)
        else:
            self.generator.seed()
        self.bias = torch.zeros(vocab_size, device=device)  # (vocab,)
        for token, value in sampling.logit_bias:
            if not 0 <= token < vocab_size:
                raise InvalidRequest(f"logit_bias names token {token}, but the vocabulary has {vocab_size}",
                                     param="logit_bias")
            self.bias[token] += value
        self.bias[list(banned)] = float("-inf")
        self.counts = torch.zeros(vocab_size, device=device)  # (vocab,) times each token was generated

    def pick(self, logits: Any, context: Any) -> int:
        """The next token from `logits` (vocab,); `context` (n,) holds every token before it."""
        import torch

        scores = logits.float() + self.bias  # (vocab,)
        scores = self._penalised(scores, context)
        if self.sampling.temperature <= 0:
            token = int(scores.argmax())
        else:
            probs = torch.softmax(self._truncated(scores / self.sampling.temperature), dim=-1)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        self.counts[token] += 1
        return token

    def _penalised(self, scores: Any, context: Any) -> Any:
        import torch

        sampling = self.sampling
        if sampling.repeat_penalty not in (None, 1.0):  # CTRL's penalty over the whole context
            seen = scores[context]  # (n,)
            penalty = sampling.repeat_penalty
            scores[context] = torch.where(seen < 0, seen * penalty, seen / penalty)
        if sampling.frequency_penalty or sampling.presence_penalty:  # OpenAI's, over generated tokens
            scores = scores - sampling.frequency_penalty * self.counts - sampling.presence_penalty * (self.counts > 0)
        return scores

    def _truncated(self, scores: Any) -> Any:
        """`scores` with the tokens top-k, min-p and top-p rule out set to -inf."""
        import torch

        sampling = self.sampling
        if sampling.top_k:
            kth = torch.topk(scores, min(sampling.top_k, scores.numel())).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if sampling.min_p:
            probs = torch.softmax(scores, dim=-1)
            scores = scores.masked_fill(probs < sampling.min_p * probs.max(), float("-inf"))
        if sampling.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=True)
            before = torch.softmax(ordered, dim=-1).cumsum(dim=-1) - torch.softmax(ordered, dim=-1)
            drop = before >= sampling.top_p  # the first token always stays (0 before it)
            scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        return scores
