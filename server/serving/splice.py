"""Streamed chunks whose JSON differs only in one string: render once, splice the rest.

Building and serialising a pydantic chunk for every token costs tens of microseconds, spent
while the model is decoding on the same cores. Every content-only chunk of one stream has
the same id, model, index and field order, so its JSON is rendered once with a marker in
place of the text, and each token's frame is that JSON with the marker replaced by
`json.dumps(text)`. Python's `json.dumps(ensure_ascii=False)` and pydantic's serialiser
escape strings the same way (`"`, `\\`, control characters; other text as UTF-8), which
`tests/test_splice.py` checks against pydantic for awkward strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable

__all__ = ["StringSplice"]

_MARKER = "\ue000lampstand-splice\ue000"  # private-use characters: never in a model's id or ours


class StringSplice:
    """Renders `render(text)` for any `text` by splicing into one rendering."""

    def __init__(self, render: Callable[[str], str]) -> None:
        quoted = json.dumps(_MARKER, ensure_ascii=False)
        self._render = render
        self._head, found, self._tail = render(_MARKER).partition(quoted)
        self._spliceable = bool(found) and quoted not in self._tail

    def __call__(self, text: str) -> str:
        if not self._spliceable:  # the marker was already in the rendering: render each time
            return self._render(text)
        return self._head + json.dumps(text, ensure_ascii=False) + self._tail
