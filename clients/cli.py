"""The `lampstand` command: serve, list models, chat.

Thin: each command parses options and calls the server package or the HTTP API. Output
that is data has `--json`. Errors print one line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lampstand.plugins.errors import ConfigError, LampstandError

from .adapters_cli import adapters_app
from .admin import AdminClient
from .chat import chat_in_process, chat_over_http
from .eval_cli import eval_app
from .index_cli import ask_command, index_app
from .options import DEFAULT_URL, ConfigOption, JsonOption, KeyOption, UrlOption, fail, load_cli_settings, print_listing
from .train_cli import train_command

__all__ = ["app", "main"]

app = typer.Typer(help="lampstand: a local OpenAI-compatible server for LLMs, embeddings and more.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(index_app, name="index")
app.add_typer(eval_app, name="eval")
app.add_typer(adapters_app, name="adapters")
app.command("ask")(ask_command)
app.command("train")(train_command)

_settings = load_cli_settings
_fail = fail


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[Optional[str], typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default 8000)")] = None,
) -> None:
    """Start the OpenAI-compatible server (SIGTERM drains, then exits 0)."""
    from lampstand.server.app import build_state
    from lampstand.server.logs import configure_logging
    from lampstand.server.runner import check_bind
    from lampstand.server.runner import serve as run_server

    try:
        settings = _settings(config, host=host, port=port)
        check_bind(settings.server)
        configure_logging(settings.server.log_level, settings.server.log_format)
        state = build_state(settings)
    except ConfigError as exc:
        _fail(exc)
    run_server(settings, state)


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
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    local: Annotated[bool, typer.Option("--local", help="load the model in this process instead")] = False,
    system: Annotated[Optional[str], typer.Option(help="system message")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="cap on generated tokens")] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.7,
    seed: Annotated[Optional[int], typer.Option(help="seed for reproducible output")] = None,
    image: Annotated[Optional[list[Path]], typer.Option(
        "--image", "-i", help="picture for a vision model, sent before the prompt; repeatable",
        exists=True, dir_okay=False, readable=True)] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask a model and stream the answer (from a running server, or in-process with --local)."""
    from .chat import user_content

    messages = (([{"role": "system", "content": system}] if system else [])
                + [{"role": "user", "content": user_content(prompt, image or [])}])
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


def _size(n: int | None) -> str:
    return "-" if not n else f"{n / 1024**2:.0f} MiB"


def _until(timestamp: int | None) -> str:
    if timestamp is None:
        return "-"
    left = int(timestamp - time.time())
    return "now" if left <= 0 else (f"{left // 60}m{left % 60:02d}s" if left >= 60 else f"{left}s")


def _memory(card: dict) -> str:  # type: ignore[type-arg]
    """The worker's RSS when loaded; otherwise the estimate, marked with ~."""
    footprint = card.get("footprint") or {}
    if card["status"] == "loaded":
        measured = footprint.get("measured") or {}
        return _size(footprint.get("worker_rss") or measured.get("ram") or measured.get("vram"))
    estimated = footprint.get("estimated")
    return f"~{_size(estimated['ram'] + estimated['vram'])}" if estimated else "-"


def _expiry(card: dict) -> str:  # type: ignore[type-arg]
    if card["status"] == "loaded" and card.get("expires_at") is None:
        return "forever"
    return _until(card.get("expires_at"))


def _ps_row(card: dict) -> list[str]:  # type: ignore[type-arg]
    status = card["status"] + (" (pinned)" if card.get("pinned") else "")
    if card["status"] == "failed" and card.get("error"):
        status += f": {card['error'][:60]}"
    return [card["id"], status, card.get("device") or "-", _memory(card), str(card.get("running", 0)),
            str(card.get("waiting", 0)), _expiry(card), str(card.get("worker_pid") or "-")]


@app.command()
def ps(url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Show each model's residency on a running server: status, memory, queue, keep-alive."""
    print_listing(AdminClient(url, api_key).models, as_json,
                  ("id", "status", "device", "memory", "running", "waiting", "expires in", "pid"), _ps_row)


@app.command()
def load(model: Annotated[str, typer.Argument(help="model id or alias")], url: UrlOption = DEFAULT_URL,
         api_key: KeyOption = None,
         keep_alive: Annotated[Optional[str], typer.Option(help='e.g. "30m", 0, -1 (forever)')] = None) -> None:
    """Load a model on a running server now."""
    try:
        card = AdminClient(url, api_key).load(model, keep_alive)
    except LampstandError as exc:
        _fail(exc)
    typer.echo(f"{card['id']}: {card['status']} (pid {card.get('worker_pid')})")


@app.command()
def unload(model: Annotated[str, typer.Argument(help="model id or alias")], url: UrlOption = DEFAULT_URL,
           api_key: KeyOption = None) -> None:
    """Unload a model on a running server once its requests finish."""
    try:
        card = AdminClient(url, api_key).unload(model)
    except LampstandError as exc:
        _fail(exc)
    typer.echo(f"{card['id']}: {card['status']}")


SUFFIXES = {"json": ".json", "verbose_json": ".json", "text": ".txt", "srt": ".srt", "vtt": ".vtt"}


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="audio files (wav, mp3, m4a, ogg, flac, webm, ...)",
                                                exists=True, dir_okay=False, readable=True)],
    response_format: Annotated[str, typer.Option("--format", "-f", help="text, srt, vtt, json or verbose_json")] = "text",
    language: Annotated[Optional[str], typer.Option(help="spoken language, ISO-639-1 (default: detect)")] = None,
    translate: Annotated[bool, typer.Option("--translate", help="English text from any language")] = False,
    prompt: Annotated[Optional[str], typer.Option(help="names and terms to expect")] = None,
    stdout: Annotated[bool, typer.Option("--stdout", help="print instead of writing FILE.<format>")] = False,
    model: Annotated[str, typer.Option("--model", "-m", help="model id or alias")] = "whisper",
    local: Annotated[bool, typer.Option("--local", help="load the model in this process instead")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Transcribe audio files next to themselves (FILE.srt, ...) or to stdout, with progress."""
    from rich.progress import Progress

    from lampstand.server.serving.transcript_formats import render_transcript

    from .transcribe import transcribe_in_process, transcribe_over_http, verbose_over_http

    if response_format not in SUFFIXES:
        typer.echo(f"error: --format must be one of {', '.join(SUFFIXES)}", err=True)
        raise typer.Exit(2)
    task = "translate" if translate else "transcribe"
    endpoint = f"{url.rstrip('/')}/v1/audio/{'translations' if translate else 'transcriptions'}"
    fields = {"model": model, "language": None if translate else language, "prompt": prompt}
    try:
        for path in files:
            with Progress(transient=True, disable=stdout and not sys.stderr.isatty(),
                          console=Console(stderr=True)) as bar:
                job = bar.add_task(path.name, total=None)

                def progress(done: float, total: float) -> None:
                    bar.update(job, completed=done, total=total or None)

                if response_format == "verbose_json" and not local:
                    body = verbose_over_http(endpoint, api_key, path, fields)
                else:
                    if local:
                        from lampstand.plugins.types import TranscriptionRequest

                        request = TranscriptionRequest(audio=path.read_bytes(), task=task, prompt=prompt,
                                                       language=None if translate else language)
                        info, segments = transcribe_in_process(_settings(config), model, request, progress)
                    else:
                        info, segments = transcribe_over_http(endpoint, api_key, path, fields, progress)
                    body, _ = render_transcript(info, segments, response_format, task)
            if stdout:
                sys.stdout.write(body if body.endswith("\n") else body + "\n")
            else:
                target = path.with_suffix(SUFFIXES[response_format])
                target.write_text(body, encoding="utf-8")
                typer.echo(f"{path} -> {target}", err=True)
    except LampstandError as exc:
        _fail(exc)


@app.command()
def imagine(
    prompt: Annotated[str, typer.Argument(help="what to draw")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write; more images go to OUT-2.png, ...")
                   ] = Path("image.png"),
    steps: Annotated[Optional[int], typer.Option(help="denoising steps (default: the model's)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="same seed, same image (default: random)")] = None,
    size: Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT, e.g. 512x512 (default: the model's)")] = None,
    negative: Annotated[Optional[str], typer.Option("--negative", help="what the image should not show")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="guidance scale (default: the model's)")] = None,
    lora: Annotated[Optional[list[str]], typer.Option(
        help="style LoRA file in the lora_dir of the images config, NAME or NAME:SCALE; repeatable")] = None,
    n: Annotated[int, typer.Option("-n", help="how many images")] = 1,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="model id (default: the first image model)")
                     ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Draw PROMPT with the server's image model and write PNG files (parameters in their metadata)."""
    from rich.progress import Progress

    from .imagine import imagine_over_http, output_paths

    body: dict[str, object] = {"prompt": prompt, "n": n, "model": model, "steps": steps, "seed": seed,
                               "size": size, "negative_prompt": negative, "guidance_scale": guidance,
                               "lora": [_lora_arg(item) for item in lora or ()]}
    try:
        with Progress(transient=True, console=Console(stderr=True), disable=not sys.stderr.isatty()) as bar:
            jobs: dict[int, object] = {}

            def progress(index: int, step: int, steps_total: int) -> None:
                if index not in jobs:
                    jobs[index] = bar.add_task(f"image {index + 1}/{n}", total=steps_total)
                bar.update(jobs[index], completed=step)  # type: ignore[arg-type]

            images = imagine_over_http(url, api_key, {k: v for k, v in body.items() if v is not None}, progress)
    except LampstandError as exc:
        _fail(exc)
    for path, (png, image_seed) in zip(output_paths(out, len(images)), images):
        path.write_bytes(png)
        typer.echo(f"{path} (seed {image_seed})", err=True)


def _lora_arg(item: str) -> dict[str, object]:
    name, colon, scale = item.rpartition(":")
    if colon and name:
        try:
            return {"name": name, "scale": float(scale)}
        except ValueError:
            pass
    return {"name": item, "scale": 1.0}


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
