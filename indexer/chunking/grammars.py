"""What counts as a definition in each language, and where its name and body are.

One `Grammar` per language says which syntax-tree node types are definitions (functions,
classes, methods, types...) and the label each gets in a chunk's `context`
(`("class Store", "def add")`), which nodes merely wrap a definition (decorators, `export`,
`template<...>`), and which variable declarations count as definitions because their value
is a function (`const add = (a, b) => a + b`).

Grammars come from the official `tree-sitter-<language>` wheels, imported only when a file
of that language is parsed; a missing wheel makes `parser_for` return None and the caller
falls back to line windows. This module never decides how to cut.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Node, Parser

__all__ = ["GRAMMARS", "Grammar", "definition_of", "parser_for", "symbol_of"]


@dataclass(frozen=True)
class Grammar:
    """How to find definitions in one language's syntax tree."""

    module: str  # the wheel's import name, e.g. "tree_sitter_python"
    entry: str  # the function in it returning the language, e.g. "language"
    definitions: Mapping[str, str]  # node type -> context label
    wrappers: frozenset[str] = frozenset()  # nodes around a definition (decorators, export)
    function_values: frozenset[str] = frozenset()  # declarations defining a function value
    body_lists: frozenset[str] = frozenset()  # a body's single child holding the statements
    name_fields: tuple[str, ...] = field(default=("name",))


_JS_DEFS = {
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "class_declaration": "class",
    "method_definition": "method",
}
_JS_VALUES = frozenset({"lexical_declaration", "variable_declaration"})
_TS_DEFS = {
    **_JS_DEFS,
    "abstract_class_declaration": "class",
    "interface_declaration": "interface",
    "enum_declaration": "enum",
    "internal_module": "namespace",
    "module": "module",
}
_C_DEFS = {
    "function_definition": "function",
    "struct_specifier": "struct",
    "union_specifier": "union",
    "enum_specifier": "enum",
}

GRAMMARS: dict[str, Grammar] = {
    "python": Grammar(
        "tree_sitter_python",
        "language",
        {"function_definition": "def", "class_definition": "class"},
        wrappers=frozenset({"decorated_definition"}),
    ),
    "javascript": Grammar(
        "tree_sitter_javascript",
        "language",
        _JS_DEFS,
        wrappers=frozenset({"export_statement"}),
        function_values=_JS_VALUES,
    ),
    "typescript": Grammar(
        "tree_sitter_typescript",
        "language_typescript",
        _TS_DEFS,
        wrappers=frozenset({"export_statement"}),
        function_values=_JS_VALUES,
    ),
    "tsx": Grammar(
        "tree_sitter_typescript",
        "language_tsx",
        _TS_DEFS,
        wrappers=frozenset({"export_statement"}),
        function_values=_JS_VALUES,
    ),
    "go": Grammar(
        "tree_sitter_go",
        "language",
        {"function_declaration": "func", "method_declaration": "func", "type_declaration": "type"},
        body_lists=frozenset({"statement_list"}),
    ),
    "rust": Grammar(
        "tree_sitter_rust",
        "language",
        {
            "function_item": "fn",
            "impl_item": "impl",
            "struct_item": "struct",
            "enum_item": "enum",
            "union_item": "union",
            "trait_item": "trait",
            "mod_item": "mod",
            "macro_definition": "macro_rules!",
        },
        name_fields=("name", "type"),
    ),
    "java": Grammar(
        "tree_sitter_java",
        "language",
        {
            "class_declaration": "class",
            "interface_declaration": "interface",
            "enum_declaration": "enum",
            "record_declaration": "record",
            "method_declaration": "method",
            "constructor_declaration": "constructor",
        },
    ),
    "c": Grammar("tree_sitter_c", "language", _C_DEFS),
    "cpp": Grammar(
        "tree_sitter_cpp",
        "language",
        {**_C_DEFS, "class_specifier": "class", "namespace_definition": "namespace"},
        wrappers=frozenset({"template_declaration"}),
    ),
    "bash": Grammar("tree_sitter_bash", "language", {"function_definition": "function"}),
}
"""Language name (as in `lampstand.indexer.sources.LANGUAGES`) to its grammar."""

_FUNCTION_VALUE_TYPES = frozenset(
    {"arrow_function", "function_expression", "function", "generator_function"}
)


@cache
def parser_for(language: str) -> Parser | None:
    """A tree-sitter parser for `language`, or None when its grammar is not installed."""
    grammar = GRAMMARS.get(language)
    if grammar is None:
        return None
    try:
        from tree_sitter import Language, Parser

        module = importlib.import_module(grammar.module)
        return Parser(Language(getattr(module, grammar.entry)()))
    except (ImportError, AttributeError, ValueError):
        return None


def _function_value(grammar: Grammar, node: Node) -> Node | None:
    """The declarator of `const f = () => ...`, when `node` is such a declaration."""
    if node.type not in grammar.function_values:
        return None
    for declarator in node.named_children:
        value = declarator.child_by_field_name("value")
        if value is not None and value.type in _FUNCTION_VALUE_TYPES:
            return declarator
    return None


def definition_of(grammar: Grammar, node: Node) -> tuple[Node, str] | None:
    """The definition `node` stands for (itself or the one it wraps) and its label."""
    if node.type in grammar.wrappers:
        for child in reversed(node.named_children):
            found = definition_of(grammar, child)
            if found is not None:
                return found
        return None
    if node.type in grammar.definitions:
        if node.child_by_field_name("body") is None and node.type.endswith("_specifier"):
            return None  # `struct point *p` mentions a struct; it does not define one
        return node, grammar.definitions[node.type]
    if _function_value(grammar, node) is not None:
        return node, "function"
    return None


def _declarator_name(node: Node) -> Node | None:
    """The innermost `declarator` of a C/C++ function: `f` in `static int *f(int a)`."""
    inner = node.child_by_field_name("declarator")
    while inner is not None and inner.child_by_field_name("declarator") is not None:
        inner = inner.child_by_field_name("declarator")
    return inner


def _name_node(grammar: Grammar, node: Node) -> Node | None:
    for name_field in grammar.name_fields:
        found = node.child_by_field_name(name_field)
        if found is not None:
            return found
    declarator = _function_value(grammar, node)
    if declarator is not None:
        return declarator.child_by_field_name("name")
    if node.child_by_field_name("declarator") is not None:
        return _declarator_name(node)
    for child in node.named_children:  # Go `type X struct`: the name is on the type_spec
        if child.child_by_field_name("name") is not None:
            return child.child_by_field_name("name")
    return None


def symbol_of(grammar: Grammar, definition: Node, label: str) -> str:
    """The context entry of a definition: `"def add"`, `"class Store"`, `"impl Store"`."""
    name = _name_node(grammar, definition)
    text = name.text.decode("utf-8", "replace") if name is not None and name.text else ""
    return f"{label} {' '.join(text.split())}".strip()
