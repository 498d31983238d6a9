"""MkDocs hook: the reference pages are generated from the code when the site is built.

A page that holds a marker line gets it replaced:

    <!-- generated: settings -->        every section of `Settings` (server/config.py), as tables
    <!-- generated: plugin-options -->  the options model of each built-in plugin
    <!-- generated: openapi -->         every route of the OpenAPI document the server serves

Nothing is copied by hand, so the reference cannot drift from the code. A marker this hook
does not know fails the build. Builds offline: it only imports lampstand.
"""

from __future__ import annotations

import json
import re
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
HOME = str(Path.home())
METHOD_ORDER = ("get", "post", "put", "patch", "delete")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace each marker line of a page with its generated Markdown."""
    return MARKER.sub(lambda match: _generate(match[1], page.file.src_path), markdown)


def _generate(name: str, where: str) -> str:
    generators = {"settings": settings_reference, "plugin-options": plugin_options_reference,
                  "openapi": openapi_reference}
    if name not in generators:
        raise PluginError(f"{where}: unknown generated section {name!r}; known: {', '.join(generators)}")
    return generators[name]()


# -- settings --

def settings_reference() -> str:
    """One table per section of the configuration file, from the pydantic models."""
    from lampstand.server.config import ModelConfig, Settings

    out = []
    for key, field in Settings.model_fields.items():
        model = _model_of(field.annotation)
        if model is ModelConfig:
            continue
        out += [f"### `[{key}]`", "", _doc(model), "", *_fields_table(model, env_prefix=f"LAMPSTAND_{key.upper()}__"), ""]
    out += ["### `[[models]]`", "", _doc(ModelConfig), "",
            *_fields_table(ModelConfig, env_prefix=None), ""]
    return "\n".join(out)


def plugin_options_reference() -> str:
    """The options each built-in plugin accepts in its `[[models]]` entries."""
    from lampstand.plugins.registry import discover_plugins

    registry = discover_plugins()
    out = []
    for name, plugin_cls in sorted(registry.plugins.items()):
        if registry.distribution_of(name) != "lampstand":
            continue  # a third party's plugin installed here documents itself
        out += [f"### `plugin = \"{name}\"`", "", _doc(plugin_cls), "",
                *_fields_table(plugin_cls.Options, env_prefix=None), ""]
    return "\n".join(out)


def _model_of(annotation: Any) -> type[BaseModel]:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise PluginError(f"no settings model in {annotation!r}")


def _doc(obj: type) -> str:
    return " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())


def _fields_table(model: type[BaseModel], env_prefix: str | None) -> list[str]:
    header = ["| key | type | default | meaning |", "|---|---|---|---|"]
    if env_prefix:
        header = ["| key | type | default | meaning | environment variable |", "|---|---|---|---|---|"]
    rows = []
    for key, field in model.model_fields.items():
        row = [f"`{key}`", _cell(_type_name(field.annotation)), _cell(_default(field)),
               _cell(field.description or "")]
        if env_prefix:
            row.append(f"`{env_prefix}{key.upper()}`")
        rows.append("| " + " | ".join(row) + " |")
    return header + rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is typing.Literal:
        return " or ".join(f"`{json.dumps(arg)}`" for arg in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "table"
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path",
              SecretStr: "secret string", type(None): "none"}
    if annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " or ".join(f"`{json.dumps(member.value)}`" for member in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        text = str(value)
        return json.dumps("~" + text[len(HOME):] if text.startswith(HOME + "/") else text)
    if isinstance(value, Enum):
        return json.dumps(value.value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value) if isinstance(value, (str, int, float)) else str(value)


# -- the HTTP API --

def openapi_reference() -> str:
    """Every route of the OpenAPI document: what it takes and what it answers."""
    from lampstand.server.app import create_app
    from lampstand.server.config import Settings

    document = create_app(Settings(models=[])).openapi()
    schemas = document.get("components", {}).get("schemas", {})
    errors: dict[str, dict[str, None]] = {}  # status -> its descriptions, in order, without repeats
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    errors.setdefault(status, {})[response.get("description", "")] = None
    out = ["Errors are the OpenAI envelope (`ErrorResponse`); each route lists the statuses it may "
           "answer with, which mean:", "", "| status | meaning |", "|---|---|",
           *(f"| {status} | {_cell('; '.join(whys))} |" for status, whys in sorted(errors.items())), ""]
    for path, operations in document["paths"].items():
        for method in sorted(operations, key=METHOD_ORDER.index):
            out += _operation(method, path, operations[method], schemas)
    return "\n".join(out)


def _operation(method: str, path: str, operation: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    from lampstand.server.middleware import is_admin_route

    out = [f"### `{method.upper()} {path}`", "", f"**{operation.get('summary', '')}**", ""]
    if is_admin_route(method.upper(), re.sub(r"\{[^}]+\}", "x", path)):
        out += ["Admin: needs a key from `[server] admin_keys` when keys are configured.", ""]
    if operation.get("description"):
        out += [operation["description"].strip(), ""]
    parameters = operation.get("parameters", [])
    if parameters:
        out += ["| parameter | in | type | required |", "|---|---|---|---|"]
        out += [f"| `{p['name']}` | {p['in']} | {_cell(_schema_type(p.get('schema', {})))} | "
                f"{'yes' if p.get('required') else 'no'} |" for p in parameters]
        out.append("")
    body = operation.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            out += [f"Request body (`{media}`):", "", *_properties(content.get("schema", {}), schemas), ""]
    responses = operation.get("responses", {})
    for status, response in responses.items():
        if status[0] in "45":
            continue
        answers = [f"`{media}`" + (f" ({_schema_type(content['schema'])})" if content.get("schema") else "")
                   for media, content in response.get("content", {}).items()]
        out += [f"Answers {status}, {response.get('description', '').rstrip('.')}: "
                f"{', '.join(answers) or 'no body'}.", ""]
    failing = [status for status in responses if status[0] in "45"]
    if failing:
        out += [f"Errors: {', '.join(failing)}.", ""]
    return out


def _properties(schema: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    refs = [option for option in schema.get("anyOf", [schema]) if "$ref" in option]
    name = refs[0]["$ref"].rsplit("/", 1)[-1] if refs else ""
    resolved = schemas.get(name, schema)
    properties = resolved.get("properties", {})
    if not properties:
        return [f"`{name or _schema_type(schema)}`"]
    required = set(resolved.get("required", []))
    rows = ["| field | type | required | meaning |", "|---|---|---|---|"]
    for key, prop in properties.items():
        meaning = " ".join((prop.get("description") or "").split())
        rows.append(f"| `{key}` | {_cell(_schema_type(prop))} | {'yes' if key in required else 'no'} | "
                    f"{_cell(meaning)} |")
    return rows


def _schema_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    for combined in ("anyOf", "oneOf"):
        if combined in schema:
            return " or ".join(_schema_type(option) for option in schema[combined])
    if "enum" in schema:
        return " or ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if schema.get("type") == "array":
        return f"list of {_schema_type(schema.get('items', {}))}"
    return str(schema.get("type", "any"))
