"""How big a chunk may be: a token limit, an overlap, and the function that counts tokens.

The default counter, `approx_token_count`, is a cheap regex estimate tuned on the bundled
embedder's word-piece vocabulary (all-MiniLM-L6-v2): on Python sources and Markdown it
overestimates the real count by about 10% on average, so chunks sized with it nearly always
fit the model. For exact sizes build the budget from the model's own tokenizer with
`TokenBudget.from_tokenizer_file`.

Counters must be additive over whitespace: counting two lines joined by a newline must give
the sum of their counts (true of word-piece tokenizers and of the estimate), because the
chunkers add up per-line counts instead of recounting every candidate chunk.

This module only measures text; it never splits it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_OVERLAP_TOKENS",
    "TokenBudget",
    "TokenCounter",
    "approx_token_count",
    "tokenizer_counter",
]

DEFAULT_MAX_TOKENS = 256
"""all-MiniLM-L6-v2 reads at most 256 word pieces; longer input is truncated."""
DEFAULT_OVERLAP_TOKENS = 32
"""About an eighth of a chunk repeated from the previous one when text is cut mid-flow."""

TokenCounter = Callable[[str], int]

_WORDS = re.compile(r"[^\W\d_]+|\d+|\S")
_SHORT_WORD = 4  # ASCII words up to this length are almost always one word piece
_PIECE_CHARS = 3  # longer words cost one more piece per this many further letters


def approx_token_count(text: str) -> int:
    """Estimate the word pieces in `text`: letters runs, digit runs and punctuation."""
    total = 0
    for match in _WORDS.finditer(text):
        word = match.group()
        if word[0].isdigit():
            total += -(-len(word) // 2)
        elif not word[0].isalpha():
            total += 1  # punctuation: one piece per character
        elif not word.isascii():
            total += len(word)  # CJK and other scripts: about a piece per character
        else:
            total += 1 + max(0, -(-(len(word) - _SHORT_WORD) // _PIECE_CHARS))
    return total


def tokenizer_counter(tokenizer: object) -> TokenCounter:
    """A counter from a `tokenizers.Tokenizer`: content pieces, without special tokens.

    Truncation and padding configured in the tokenizer file are switched off (the MiniLM
    file truncates at 128, which would make every long text look short).
    """
    tokenizer.no_truncation()  # type: ignore[attr-defined]
    tokenizer.no_padding()  # type: ignore[attr-defined]

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]

    return count


@dataclass(frozen=True)
class TokenBudget:
    """At most `max_tokens` per chunk (by `count`), `overlap_tokens` repeated across cuts."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS
    count: TokenCounter = field(default=approx_token_count, compare=False)

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, got {self.max_tokens}")
        if not 0 <= self.overlap_tokens * 2 <= self.max_tokens:
            raise ValueError(
                f"overlap_tokens must be in [0, max_tokens / 2], got {self.overlap_tokens}"
            )

    @classmethod
    def from_tokenizer_file(
        cls,
        path: str | Path,
        model_max_tokens: int = DEFAULT_MAX_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
    ) -> TokenBudget:
        """Exact counting with a model's `tokenizer.json`.

        The model adds its special tokens (`[CLS]`, `[SEP]`) to every input, so the content
        limit is `model_max_tokens` minus their number.
        """
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        count = tokenizer_counter(tokenizer)
        specials = len(tokenizer.encode("").ids)
        return cls(model_max_tokens - specials, overlap_tokens, count)
