"""Bounds a JSON schema must keep before it becomes a llama.cpp grammar.

llama.cpp writes a bounded repetition (`maxLength: 1000`, `minItems`, `{m,n}` in a `pattern`)
as that many nested grammar rules: at about 2,000 the grammar sampler overflows its stack and
the worker dies (SIGSEGV), and well below that every token costs seconds. A schema is refused
(400, naming the keyword) when any count exceeds `MAX_REPEAT`, when its counts add up to more
than `MAX_TOTAL_REPEAT`, when it nests deeper than `MAX_DEPTH`, or when it is larger than
`MAX_SCHEMA_BYTES`. Pure Python, no llama.cpp import.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lampstand.plugins.errors import InvalidRequest

__all__ = ["MAX_DEPTH", "MAX_REPEAT", "MAX_SCHEMA_BYTES", "MAX_TOTAL_REPEAT", "check_schema_limits"]

MAX_REPEAT = 256
MAX_TOTAL_REPEAT = 1024
MAX_DEPTH = 32
MAX_SCHEMA_BYTES = 64 * 1024
COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
                  "minContains", "maxContains")
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def _counts(node: dict[str, Any]) -> list[tuple[str, int]]:
    found = [(key, node[key]) for key in COUNT_KEYWORDS
             if isinstance(node.get(key), (int, float)) and not isinstance(node.get(key), bool)]
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        for low, high in _QUANTIFIER.findall(pattern):
            found.append(("pattern", max(int(low[:12]), int(high[:12] or 0))))
    return [(key, int(value)) if value < 10**12 else (key, 10**12) for key, value in found]


def check_schema_limits(schema: Any, param: str) -> None:
    """Raise `InvalidRequest` (naming the keyword) for a schema past the bounds above."""
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(f"the JSON schema is larger than {MAX_SCHEMA_BYTES} bytes", param=param)
    total = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, list):
            stack.extend((item, depth) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"the JSON schema nests deeper than {MAX_DEPTH} levels", param=param)
        for key, count in _counts(node):
            if count > MAX_REPEAT:
                raise InvalidRequest(f"{key} {count} is more than this server constrains output to "
                                     f"({MAX_REPEAT}); leave it out and check the length after", param=param)
            total += max(count, 0)
        stack.extend((value, depth + 1) for value in node.values() if isinstance(value, (dict, list)))
    if total > MAX_TOTAL_REPEAT:
        raise InvalidRequest(f"the JSON schema's lengths and counts add up to {total}, more than this server "
                             f"constrains output to ({MAX_TOTAL_REPEAT})", param=param)
