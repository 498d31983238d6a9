"""What a JSON body may not hold even when it parses: nesting past a depth, lone surrogates.

Both parse, then fail far from the request: a body nested a few hundred deep raises
RecursionError when it is handed to a worker, and a lone UTF-16 surrogate (`"\\ud800"`)
cannot be encoded for a tokenizer. `json_body_problem` finds either in the raw bytes before
anything else reads them: the depth from the brackets outside strings (C-speed passes), and
surrogates, only when the body has a surrogate escape at all, by parsing and walking it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

__all__ = ["MAX_JSON_DEPTH", "json_body_problem"]

MAX_JSON_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth(body: bytes) -> int:
    brackets = np.frombuffer(_STRING.sub(b"", body).translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if not brackets.size:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(key) or _has_lone_surrogate(item) for key, item in value.items())
    return False


def json_body_problem(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why `body` must be refused, or None (also for a body that is not JSON: its reader says why)."""
    if _depth(body) > max_depth:
        return f"the JSON body is nested deeper than {max_depth} levels"
    if _SURROGATE_ESCAPE.search(body):
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if _has_lone_surrogate(parsed):
            return "the JSON body holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair), which is not text"
    return None
