"""OpenAI's attribute filters (`eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `nin`, nested in `and` /
`or`) applied to a file's attributes. A comparison with a key the file lacks is false, except
`ne` and `nin`, which are true; numbers compare with numbers, strings with strings, and a
comparison across kinds is false (never an error: one odd file must not fail a search)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from ..protocol_vector_stores import AttributeFilter, ComparisonFilter

__all__ = ["matches"]

ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, (int, float)) else "str"


def _equal(left: Any, right: Any) -> bool:
    return _kind(left) == _kind(right) and left == right


def _compare(rule: ComparisonFilter, attributes: Mapping[str, Any]) -> bool:
    if rule.key not in attributes:
        return rule.type in ("ne", "nin")
    value = attributes[rule.key]
    if rule.type in ("in", "nin"):
        found = any(_equal(value, option) for option in rule.value)  # type: ignore[union-attr]
        return found if rule.type == "in" else not found
    if rule.type in ("eq", "ne"):
        return _equal(value, rule.value) == (rule.type == "eq")
    kind = _kind(value)
    return kind == _kind(rule.value) and kind != "bool" and ORDERED[rule.type](value, rule.value)


def matches(rule: AttributeFilter, attributes: Mapping[str, Any]) -> bool:
    """Whether a file with `attributes` passes `rule`."""
    if isinstance(rule, ComparisonFilter):
        return _compare(rule, attributes)
    results = (matches(inner, attributes) for inner in rule.filters)
    return all(results) if rule.type == "and" else any(results)
