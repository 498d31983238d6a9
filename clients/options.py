"""Options, error handling and listings every `lampstand` command shares."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from lampstand.plugins.errors import LampstandError

__all__ = ["ConfigOption", "JsonOption", "UrlOption", "KeyOption", "DEFAULT_URL", "fail", "load_cli_settings",
           "print_listing"]

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="lampstand.toml (default: $LAMPSTAND_CONFIG)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
UrlOption = Annotated[str, typer.Option(envvar="LAMPSTAND_URL", help="server to ask")]
KeyOption = Annotated[Optional[str], typer.Option(envvar="LAMPSTAND_API_KEY", help="bearer key")]
DEFAULT_URL = "http://127.0.0.1:8000"


def fail(exc: LampstandError | str) -> NoReturn:
    """Print one line and exit 2: never a traceback."""
    typer.echo(f"error: {exc.message if isinstance(exc, LampstandError) else exc}", err=True)
    raise typer.Exit(2)


def load_cli_settings(config: Path | None, **server_overrides: object):  # type: ignore[no-untyped-def]
    """The settings a command runs with: the config file, the environment, then the flags."""
    from lampstand.server.config import load_settings

    settings = load_settings(config)
    updates = {k: v for k, v in server_overrides.items() if v is not None}
    if updates:
        settings.server = settings.server.model_copy(update=updates)
    return settings


def print_listing(fetch: Callable[[], list[dict[str, Any]]], as_json: bool, columns: Sequence[str],
                  row: Callable[[dict[str, Any]], Sequence[str]]) -> None:
    """What `fetch` returns, as indented JSON with `--json`, else as a table of one `row` each."""
    from rich.console import Console
    from rich.table import Table

    try:
        items = fetch()
    except LampstandError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = Table(*columns)
    for item in items:
        table.add_row(*row(item))
    Console().print(table)
