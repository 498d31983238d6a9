"""`lampstand train`: train a LoRA adapter on your own JSONL data, optionally load it into a server.

Thin: options become a `TrainConfig`, `lampstand.training.run.train` does the work, progress
goes to stderr (a bar on a terminal, a line every few seconds otherwise). Errors print one
line and exit 2; SIGINT/SIGTERM save a checkpoint and exit 128 + the signal (130 for Ctrl-C).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, Optional, get_args, get_origin

import typer
from lampstand.plugins.errors import LampstandError
from lampstand.training.config import CliOption, TrainConfig, cli_options
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from .admin import AdminClient
from .options import (
    DEFAULT_URL,
    ConfigOption,
    JsonOption,
    KeyOption,
    UrlOption,
    fail,
    load_cli_settings,
)

__all__ = ["train_command"]

err = Console(stderr=True)
PLAIN_EVERY_S = 5.0


class _Progress:
    """Reporter: a rich bar on a terminal, else a plain line at most every few seconds."""

    def __init__(self, quiet: bool) -> None:
        self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                            TimeRemainingColumn(), console=err, transient=True) if err.is_terminal and not quiet else None
        self.task = self.bar.add_task("train", total=None, detail="") if self.bar else None
        self.quiet, self.last = quiet, 0.0

    def info(self, line: str) -> None:
        if not self.quiet:
            err.print(line, markup=False, highlight=False, soft_wrap=True)

    def step(self, report: Any) -> None:
        detail = (f"loss {report.loss:.4f}  lr {report.lr:.2e}  {report.tokens_per_s:.0f} tok/s  "
                  f"epoch {report.epoch}")
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=report.step, total=report.total_steps, detail=detail)
            return
        now = time.monotonic()
        if not self.quiet and (now - self.last >= PLAIN_EVERY_S or report.step == report.total_steps):
            self.last = now
            err.print(f"step {report.step}/{report.total_steps}  {detail}  eta {report.eta_s:.0f}s",
                      markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _served_base(base: str, settings: Any) -> str:
    """The served id `--load` attaches the adapter to; fails before training when there is none."""
    from lampstand.training.base_model import resolve_base

    served = resolve_base(base, settings).served_id
    if served is None:
        fail(f"--load needs a --base the server serves (a model id from the config); {base} is not one")
    return served


def _quiet_library_progress() -> None:
    """No tqdm bars from transformers in logs (a job's stderr): our own progress lines say enough."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def _targets(value: str | None) -> list[str] | None:
    return [t.strip() for t in value.split(",")] if value else None


def _size(value: str | None) -> int | None:
    from lampstand.server.memory import parse_size

    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        fail(f"--max-memory: {exc}")


# Fields the command line takes as text: how the text becomes the field's value.
_FROM_TEXT: dict[str, Callable[[str | None], Any]] = {"target_modules": _targets, "max_memory": _size}


def _cli_type(option: CliOption) -> Any:
    """The type the command line parses for `option`: the field's, with a choice taken as text."""
    if option.name in _FROM_TEXT:
        return Optional[str]
    args = get_args(option.type)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else option.type
    base = str if get_origin(base) is Literal else base
    return Optional[base] if optional else base


def _keyword(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _parameter(option: CliOption) -> inspect.Parameter:
    """`option` as a typer option parameter: its flag, help, default and environment variable."""
    info = typer.Option(option.flag, help=option.help, envvar=option.envvar)
    annotation = Annotated[_cli_type(option), info]
    if option.negated:
        return _keyword(f"no_{option.name}", annotation, False)
    return _keyword(option.name, annotation) if option.required else _keyword(option.name, annotation, option.default)


def _config_values(values: dict[str, Any]) -> dict[str, Any]:
    """The `TrainConfig` keyword arguments the parsed options give."""
    config: dict[str, Any] = {}
    for option in cli_options():
        if option.negated:
            config[option.name] = not values[f"no_{option.name}"]
        else:
            value = values[option.name]
            config[option.name] = _FROM_TEXT[option.name](value) if option.name in _FROM_TEXT else value
    return config


def train_command(**options: Any) -> None:
    """Train a LoRA adapter on your own data (Ctrl-C saves a checkpoint; --resume continues)."""
    # OpenMP threads that spin while they wait turn every small op into milliseconds once other
    # processes want the cores (measured: a 1 s step became 30-50 s); sleeping waiters cost little.
    # Set before torch loads its OpenMP runtime; a value the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from lampstand.training.run import TrainingInterrupted, train

    load, url, api_key, config, as_json = (options[key] for key in ("load", "url", "api_key", "config", "as_json"))
    try:
        settings = load_cli_settings(config)
        train_config = TrainConfig(**_config_values(options), config_path=config)
        served = _served_base(train_config.base, settings) if load else None
        if not err.is_terminal:
            _quiet_library_progress()
        with _Progress(quiet=as_json) as progress:
            result = train(train_config, settings, progress)
        loaded = AdminClient(url, api_key).load_adapter(result.name, str(result.out), served) if served else None
    except typer.Exit:
        raise
    except TrainingInterrupted as exc:
        typer.echo(f"interrupted: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted before a checkpoint was saved; --resume continues from the last one, if any", err=True)
        raise typer.Exit(130)
    except LampstandError as exc:
        fail(exc)
    except (RuntimeError, OSError, ValueError) as exc:  # torch out of memory, disk full: one line, not a traceback
        fail(f"training failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    _report(result, loaded, as_json)


# The command's options: one per `TrainConfig` field (defaults and help written once, there), then its own.
train_command.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    *(_parameter(option) for option in cli_options()),
    _keyword("load", Annotated[bool, typer.Option("--load", help="load the adapter into the running server at the end")],
             False),
    _keyword("url", UrlOption, DEFAULT_URL),
    _keyword("api_key", KeyOption, None),
    _keyword("config", ConfigOption, None),
    _keyword("as_json", JsonOption, False),
])


def _report(result: Any, loaded: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_dict() | {"loaded": loaded}, indent=2))
        return
    metrics = [f"{result.steps} steps in {result.seconds:.0f} s"]
    if result.train_loss is not None:
        metrics.append(f"train loss {result.train_loss:.4f}")
    if result.eval_loss is not None:
        metrics.append(f"eval loss {result.eval_loss:.4f} (perplexity {result.perplexity:.2f})")
    typer.echo(f"{result.name}: {', '.join(metrics)}")
    typer.echo(f"adapter: {result.out}" + (f" (GGUF: {result.gguf.name})" if result.gguf else ""))
    if loaded is not None:
        typer.echo(f"loaded: {loaded if isinstance(loaded, str) else json.dumps(loaded)}")
    sys.stdout.flush()
