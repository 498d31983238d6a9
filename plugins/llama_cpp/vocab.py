"""Token ids to bytes for a loaded model, exactly (llama-cpp-python's helper pads and truncates)."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

__all__ = ["Vocab"]


class Vocab:
    """Cached token pieces of one loaded `Llama`."""

    def __init__(self, llm: Any) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._vocab = llm._model.vocab
        self._pieces: dict[tuple[int, bool], bytes] = {}

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes one token stands for (may be part of a UTF-8 character)."""
        key = (token, special)
        cached = self._pieces.get(key)
        if cached is None:
            cached = self._pieces[key] = self._render(token, special)
        return cached

    def _render(self, token: int, special: bool) -> bytes:
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            size = -n  # llama.cpp answers with the size it needs

    def text(self, tokens: Sequence[int], *, special: bool = False) -> str:
        """Decoded text of a token sequence."""
        return b"".join(self.piece(t, special=special) for t in tokens).decode("utf-8", "replace")

    def is_end_of_generation(self, token: int) -> bool:
        """Whether the token ends a turn (EOS, EOT and the like)."""
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))
