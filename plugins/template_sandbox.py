"""Jinja's immutable sandbox with limits on time and size, for untrusted templates.

Chat templates come from model files. They render here with the same globals and filters as
transformers' `apply_chat_template` (`raise_exception`, `strftime_now`, a `tojson` that keeps
non-ASCII), and within limits:

- time: while a template renders, a `sys.settrace` hook on this thread checks the clock on
  every Python call and on every line of the compiled template, and stops the render once it
  runs past `MAX_RENDER_SECONDS`;
- size: what can make a big value out of small ones (`*`, `**`, `+`, `%`, `~`, padding,
  `replace`, `join`, `format`, captured blocks, printing a container) is measured before it
  runs. No value may pass `MAX_PROMPT_CHARS` characters, nor the prompt itself (counted
  as it is produced); one render may build `_WORK_FACTOR` times that in all.

A broken limit raises `LimitExceeded`. Size checks are estimates made before C code runs;
they stop gigabytes, not every megabyte. Engine-free.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import sys
import time
from collections.abc import Callable, Generator, Iterable
from contextvars import ContextVar
from datetime import datetime
from string import Formatter
from types import FrameType
from typing import Any

from jinja2 import Template, TemplateError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["render_within_limits", "LimitExceeded", "MAX_PROMPT_CHARS", "MAX_RENDER_SECONDS"]

MAX_RENDER_SECONDS = 1.0
MAX_PROMPT_CHARS = 4 * 1024 * 1024
_WORK_FACTOR = 16  # `+` chains copy a message a few times over; 16x leaves room for that
_MAX_INT_BITS = 1 << 16  # far past any count or index; bigger powers cost seconds of C time
_SMALL_TEXT = 1 << 16  # `+`, `~` and captures below this go unmeasured: too small to add up in time

_TraceHook = Callable[[FrameType, str, Any], Any]


class LimitExceeded(BaseException):
    """A render ran out of time or room.

    A BaseException so that no `except Exception` in code a template calls can swallow it:
    once the trace hook has raised, Python removes it and the render would go on unlimited.
    """


class _RenderBudget:
    """One render's deadline and character allowance."""

    def __init__(self, seconds: float, max_chars: int) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.max_chars = max_chars
        self.chars_left = _WORK_FACTOR * max_chars
        self.template_file: str | None = None  # frames of this file are traced line by line

    def charge(self, chars: float) -> None:
        """Count `chars` characters about to be built; refuse a value or a total over the limit."""
        if chars > self.max_chars:
            raise LimitExceeded(f"chat template would build a text of more than {self.max_chars} characters")
        self.chars_left -= max(chars, 0)
        if self.chars_left < 0:
            raise LimitExceeded(f"chat template built more than {_WORK_FACTOR * self.max_chars} characters")

    def collect(self, chunks: Generator[str, None, None]) -> str:
        """The prompt from the template's output, refused as soon as it passes the cap."""
        parts: list[str] = []
        size = 0
        with contextlib.closing(chunks):  # closed now, not later under another trace hook
            for chunk in chunks:
                size += len(chunk)
                if size > self.max_chars:
                    raise LimitExceeded(f"chat template rendered more than {self.max_chars} characters")
                parts.append(chunk)
        return "".join(parts)

    def time_out(self) -> None:
        raise LimitExceeded(f"chat template took longer than {self.seconds} s to render")

    def trace_hook(self) -> _TraceHook:
        """The `sys.settrace` hook: the clock on every call, and on every line of the template.

        Closures, not methods: the hook runs on every Python call while a template renders.
        """
        clock, deadline = time.monotonic, self.deadline

        def trace_line(frame: FrameType, event: str, arg: Any) -> _TraceHook:
            if clock() > deadline:
                self.time_out()
            return trace_line

        def trace_call(frame: FrameType, event: str, arg: Any) -> _TraceHook | None:
            if clock() > deadline:
                self.time_out()
            return trace_line if frame.f_code.co_filename == self.template_file else None

        return trace_call


_budget: ContextVar[_RenderBudget | None] = ContextVar("template_budget", default=None)


def _cap() -> int:
    budget = _budget.get()
    return MAX_PROMPT_CHARS if budget is None else budget.max_chars


def _charge(chars: float) -> None:
    """Charge the render under way; outside one only the per-value cap holds."""
    budget = _budget.get()
    if budget is not None:
        budget.charge(chars)
    elif chars > MAX_PROMPT_CHARS:
        raise LimitExceeded(f"chat template would build a text of more than {MAX_PROMPT_CHARS} characters")


# -- size estimates: what an operation would build, worked out before it runs ------------


def _text_size(value: Any, indent: int = 0) -> int:
    """About `len(str(value))` (or of its JSON with `indent`), counted until it passes the cap.

    Shared references count each time they occur, since printing repeats them.
    """
    if isinstance(value, str):
        return len(value)
    cap = _cap()
    size, stack = 0, [(value, 1)]
    while stack and size <= cap:
        item, depth = stack.pop()
        size += 2 + indent * depth  # quotes or brackets and a separator; a JSON line's indent
        if isinstance(item, str):
            size += len(item)
        elif isinstance(item, dict):
            stack.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((part, depth + 1) for part in item)
        else:
            size += 6
    return size


def _printed_size(value: Any, *_: Any, **__: Any) -> int:
    """What printing a non-string builds (printing a string copies nothing new)."""
    return 0 if isinstance(value, str) else _text_size(value)


def _widths(specs: Iterable[str], computed: str) -> float:
    """The padding format specs can add; a width computed from arguments is unbounded."""
    total = 0.0
    for spec in specs:
        if computed in spec:
            return math.inf
        total += sum(int(number) for number in re.findall(r"\d+", spec))
    return total


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?([-#0 +]*[*\d]*(?:\.[*\d]*)?)")


def _printf_size(text: Any, args: Any) -> float:
    """What `text % args` can build: the text, its widths, and all of `args` per field."""
    if not isinstance(text, str):  # printed first, and the print may hold fields
        return _text_size(text) * (1 + _text_size(args))
    specs = _PRINTF_SPEC.findall(text)
    return len(text) + _widths(specs, "*") + len(specs) * _text_size(args)


def _format_size(text: str, *args: Any, **kwargs: Any) -> float:
    """What `text.format(*args, **kwargs)` can build, fields as in `_printf_size`."""
    specs = [spec for _, field, spec, _ in Formatter().parse(text) if field is not None]
    return len(text) + _widths(specs, "{") + len(specs) * (_text_size(args) + _text_size(kwargs))


def _pad_size(value: Any, width: Any = 0, *_: Any) -> float:
    return max(_text_size(value), width if isinstance(width, int) else 0)


def _tabs_size(text: str, tabsize: Any = 8) -> float:
    return len(text) + text.count("\t") * (tabsize if isinstance(tabsize, int) else 0)


def _replace_size(text: Any, old: Any = "", new: Any = "", count: Any = -1, *_: Any) -> float:
    """An upper bound of `str(text).replace(old, new, count)`."""
    if not isinstance(text, str) or not isinstance(old, str):
        return _text_size(text) * (1 + _text_size(new))
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * _text_size(new)


def _join_size(separator: Any, items: list[Any]) -> float:
    return _text_size(separator) * len(items) + _text_size(items)


def _indent_size(value: Any, width: Any = 4, *_: Any, **__: Any) -> float:
    text = _text_size(value)
    lines = value.count("\n") + 1 if isinstance(value, str) else text
    return text + lines * (width if isinstance(width, int) else _text_size(width))


def _wrap_size(value: Any, width: Any = 79, long_words: Any = True, wrapstring: Any = None,
               *_: Any, **__: Any) -> float:
    text = _text_size(value)
    return text + (text + 1) * _text_size("\n" if wrapstring is None else wrapstring)


def _batch_size(value: Any, linecount: Any = 0, fill_with: Any = None, *_: Any) -> float:
    """`batch` pads its last row with `linecount` references to `fill_with`."""
    return linecount if fill_with is not None and isinstance(linecount, int) else 0


def _format_filter_size(value: Any, *args: Any, **kwargs: Any) -> float:
    return _printf_size(value, kwargs or args)


def _int_bits(operator: str, left: int, right: int) -> int:
    if operator == "**":
        return abs(left).bit_length() * right if abs(left) > 1 else 1
    if operator == "*":
        return left.bit_length() + right.bit_length()
    return max(left.bit_length(), right.bit_length()) + 1


def _binop_size(operator: str, left: Any, right: Any) -> float:
    if operator == "*":
        seq, times = (right, left) if isinstance(left, int) else (left, right)
        if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
            return _text_size(seq) * max(times, 0)
    elif operator == "+" and isinstance(left, (str, list, tuple)):
        return _text_size(left) + _text_size(right)
    elif operator == "%" and isinstance(left, str):
        return _printf_size(left, right)
    return 0


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `left <operator> right` before it runs if its result would pass the limits."""
    if isinstance(left, int) and isinstance(right, int):
        if _int_bits(operator, left, right) > _MAX_INT_BITS:
            raise LimitExceeded(f"chat template computed an integer of more than {_MAX_INT_BITS} bits")
    else:
        _charge(_binop_size(operator, left, right))


# -- the bounded sandbox -----------------------------------------------------------------

_STR_METHOD_SIZES: dict[str, Callable[..., float]] = {
    "center": _pad_size, "ljust": _pad_size, "rjust": _pad_size, "zfill": _pad_size,
    "expandtabs": _tabs_size, "replace": _replace_size, "join": _join_size,
    "format": _format_size, "format_map": _format_size,
}
_FILTER_SIZES: dict[str, Callable[..., float]] = {
    "batch": _batch_size, "center": _pad_size, "format": _format_filter_size,
    "indent": _indent_size, "replace": _replace_size, "wordwrap": _wrap_size,
}
_JINJA_CALL_KWARGS = ("_loop_vars", "_block_vars")  # added to calls by Jinja, dropped by `Context.call`
_PRINTING_FILTERS = ("capitalize", "e", "escape", "forceescape", "lower", "pprint", "safe", "string",
                     "striptags", "title", "trim", "truncate", "upper", "urlencode", "wordcount", "xmlattr")


def _bounded_filter(func: Callable[..., Any], size: Callable[..., float]) -> Callable[..., Any]:
    """Jinja filter `func`, charging `size(value, *args, **kwargs)` before it runs."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # keeps Jinja's marker for a context first argument
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _charge(size(*args[skip:], **kwargs))
        return func(*args, **kwargs)

    return bounded


def _bounded_join(join: Callable[..., str]) -> Callable[..., str]:
    """Jinja's `join` filter, measuring its items (gathered into a list) before joining."""

    @functools.wraps(join)
    def bounded(eval_ctx: EvalContext, value: Iterable[Any], d: Any = "", attribute: Any = None) -> str:
        items = list(value)
        _charge(_join_size(d, items))
        return join(eval_ctx, items, d, attribute)

    return bounded


def _str_join(parts: Iterable[Any]) -> str:
    """Jinja's `~` operator, measured before it runs."""
    parts = list(parts)
    plain = set(map(type, parts)) <= {str}  # the usual case, measured without a call per part
    size = sum(map(len if plain else _text_size, parts))
    if size > _SMALL_TEXT:
        _charge(size)
    return "".join(parts if plain else map(str, parts))


def _concat(parts: Iterable[str]) -> str:
    """Joins captured output (`{% set %}` blocks, macro results), measured first."""
    parts = list(parts)
    size = sum(map(len, parts))
    if size > _SMALL_TEXT:
        _charge(size)
    return "".join(parts)


def _measure_printed(value: Any) -> Any:
    """Jinja's `finalize` hook: `{{ container }}` is measured before it is printed."""
    if not isinstance(value, str):
        _charge(_text_size(value))
    return value


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | str | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    width = indent if isinstance(indent, int) else len(indent or "")
    _charge(_text_size(value, indent=max(width, 0)))
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, measuring what would build big values before it runs."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    concat = staticmethod(_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_measure_printed, **options)
        for name in _PRINTING_FILTERS:
            self.filters[name] = _bounded_filter(self.filters[name], _printed_size)
        for name, size in _FILTER_SIZES.items():
            self.filters[name] = _bounded_filter(self.filters[name], size)
        self.filters["join"] = _bounded_join(self.filters["join"])
        self.filters["tojson"] = _tojson
        del self.filters["urlize"]  # its `target`/`rel` repeat per link; chat templates make no links

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and isinstance(left, str) and isinstance(right, str):  # prompt pieces
            if len(left) + len(right) > _SMALL_TEXT:
                _charge(len(left) + len(right))
        else:
            _check_binop(operator, left, right)
        return self.binop_table[operator](left, right)  # the base class's body, minus a frame

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Calls from the template; the `str` methods that grow text are measured first."""
        method = getattr(obj, "__wrapped__", obj)  # Jinja 3.1.5+ wraps `str.format` in a checker
        text = getattr(method, "__self__", None)
        size = _STR_METHOD_SIZES.get(getattr(method, "__name__", "")) if isinstance(text, str) else None
        if size is not None:
            if size is _join_size and args:
                args = (list(args[0]), *args[1:])  # measured and joined from the same list
            named = {k: v for k, v in kwargs.items() if k not in _JINJA_CALL_KWARGS}
            _charge(size(text, *args, **named))
        return super().call(context, obj, *args, **kwargs)


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> Template:
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    template = env.from_string(source)
    # `~` compiles to a call of Jinja's `str_join`, looked up in the template's module namespace.
    template.root_render_func.__globals__["str_join"] = _str_join
    return template


def render_within_limits(source: str, variables: dict[str, Any], *, max_render_seconds: float = MAX_RENDER_SECONDS,
                         max_prompt_chars: int = MAX_PROMPT_CHARS) -> str:
    """Render template `source` with `variables`; `LimitExceeded` past the time or size limits."""
    budget = _RenderBudget(max_render_seconds, max_prompt_chars)
    token = _budget.set(budget)
    previous = sys.gettrace()  # a debugger's or coverage's hook, put back afterwards
    sys.settrace(budget.trace_hook())
    try:
        template = _compile(source)
        budget.template_file = template.root_render_func.__code__.co_filename
        return budget.collect(template.generate(variables))
    finally:
        sys.settrace(previous)
        _budget.reset(token)
