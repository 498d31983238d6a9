"""The `lampstand` command: serve, list models, chat.

Thin: each command parses options and calls the server package or the HTTP API. Output
that is data has `--json`. Errors print one line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lampstand.plugins.errors import ConfigError, LampstandError

from .chat import chat_in_process, chat_over_http

__all__ = ["app", "main"]

app = typer.Typer(help="lampstand: a local OpenAI-compatible server for LLMs, embeddings and more.",
                  no_args_is_help=True, add_completion=False)

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="lampstand.toml (default: $LAMPSTAND_CONFIG)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _settings(config: Path | None, **server_overrides: object):  # type: ignore[no-untyped-def]
    from lampstand.server.config import load_settings

    settings = load_settings(config)
    updates = {k: v for k, v in server_overrides.items() if v is not None}
    if updates:
        settings.server = settings.server.model_copy(update=updates)
    return settings


def _fail(exc: LampstandError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(2)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[Optional[str], typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default 8000)")] = None,
) -> None:
    """Start the OpenAI-compatible server."""
    import uvicorn

    from lampstand.server.app import build_state, create_app

    try:
        settings = _settings(config, host=host, port=port)
        state = build_state(settings)
    except ConfigError as exc:
        _fail(exc)
    level = settings.server.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings, state), host=settings.server.host, port=settings.server.port,
                log_level=settings.server.log_level, timeout_graceful_shutdown=10)


@app.command()
def models(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the configured models and the installed plugins."""
    from lampstand.server.app import build_state

    try:
        state = build_state(_settings(config))
    except ConfigError as exc:
        _fail(exc)
    rows = [
        {"id": h.id, "plugin": h.plugin_cls.name, "capabilities": sorted(c.value for c in h.capabilities),
         "aliases": h.config.aliases, "source": str(h.config.path or f"hf:{h.config.hf}")}
        for h in state.pool.models.values()
    ]
    plugins = {name: state.registry.distribution_of(name) for name in sorted(state.registry.plugins)}
    if as_json:
        print(json.dumps({"models": rows, "plugins": plugins, "broken_plugins": state.registry.broken}, indent=2))
        return
    table = Table("id", "plugin", "capabilities", "aliases", "source", title="models")
    for row in rows:
        table.add_row(row["id"], row["plugin"], ", ".join(row["capabilities"]), ", ".join(row["aliases"]), row["source"])
    out = Console()
    out.print(table)
    plugin_table = Table("plugin", "distribution", title="installed plugins")
    for name, dist in plugins.items():
        plugin_table.add_row(name, dist or "?")
    for name, why in state.registry.broken.items():
        plugin_table.add_row(name, f"[red]broken: {why}[/red]")
    out.print(plugin_table)


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="what to ask")],
    model: Annotated[str, typer.Option("--model", "-m", help="model id or alias")] = "smollm2",
    url: Annotated[str, typer.Option(envvar="LAMPSTAND_URL", help="server to ask")] = "http://127.0.0.1:8000",
    api_key: Annotated[Optional[str], typer.Option(envvar="LAMPSTAND_API_KEY", help="bearer key")] = None,
    local: Annotated[bool, typer.Option("--local", help="load the model in this process instead")] = False,
    system: Annotated[Optional[str], typer.Option(help="system message")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="cap on generated tokens")] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.7,
    seed: Annotated[Optional[int], typer.Option(help="seed for reproducible output")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask a model and stream the answer (from a running server, or in-process with --local)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    params = {"model": model, "messages": messages, "temperature": temperature,
              "max_tokens": max_tokens, "seed": seed}
    try:
        if local:
            pieces = chat_in_process(_settings(config), params)
        else:
            pieces = chat_over_http(url, api_key, params)
        text = []
        for piece in pieces:
            text.append(piece)
            if not as_json:
                sys.stdout.write(piece)
                sys.stdout.flush()
    except LampstandError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps({"model": model, "content": "".join(text)}))
    else:
        sys.stdout.write("\n")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
