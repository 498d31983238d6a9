"""`lampstand train`: train a LoRA adapter on your own JSONL data, optionally load it into a server.

Thin: options become a `TrainConfig`, `lampstand.training.run.train` does the work, progress
goes to stderr (a bar on a terminal, a line every few seconds otherwise). Errors print one
line and exit 2; SIGINT/SIGTERM save a checkpoint and exit 128 + the signal (130 for Ctrl-C).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from lampstand.plugins.errors import LampstandError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

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
NO_BASE_CACHE_ENV = "LAMPSTAND_NO_BASE_CACHE"  # "1": like --no-base-cache, for every run (the server's jobs too)


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


def _load_into_server(url: str, api_key: str | None, name: str, out: Path, base_model: str) -> Any:
    """POST the adapter to a running server's /v1/load_lora_adapter; its answer."""
    import httpx

    from .wire import bearer, check, unreachable

    endpoint = f"{url.rstrip('/')}/v1/load_lora_adapter"
    body = {"lora_name": name, "lora_path": str(out), "base_model": base_model}
    try:
        response = httpx.post(endpoint, json=body, headers=bearer(api_key), timeout=httpx.Timeout(10.0, read=600.0))
    except httpx.HTTPError as exc:
        raise unreachable(url, exc) from exc
    check(response)
    try:
        return response.json()
    except ValueError:
        return response.text.strip()


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


def train_command(
    base: Annotated[str, typer.Option("--base", help="served model id, GGUF file, HF folder or HF repo id")],
    data: Annotated[Path, typer.Option("--data", help="training JSONL (chat messages or prompt/completion)")],
    out: Annotated[str, typer.Option("--out", help="adapter NAME (under the configured adapters dir) or a folder path")],
    eval_data: Annotated[Optional[Path], typer.Option("--eval", help="held-out JSONL: loss and perplexity each epoch")] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank")] = 16,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / rank)")] = 32.0,
    dropout: Annotated[float, typer.Option(help="LoRA dropout")] = 0.05,
    target_modules: Annotated[Optional[str], typer.Option(help="comma-separated layer names (default: per architecture)")] = None,
    epochs: Annotated[int, typer.Option(help="passes over the data")] = 3,
    max_steps: Annotated[Optional[int], typer.Option(help="optimizer steps (overrides --epochs)")] = None,
    batch_size: Annotated[int, typer.Option(help="sequences per micro-batch")] = 4,
    grad_accum: Annotated[int, typer.Option(help="micro-batches per optimizer step")] = 1,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 2e-4,
    schedule: Annotated[str, typer.Option(help="cosine, linear or constant")] = "cosine",
    warmup_ratio: Annotated[float, typer.Option(help="share of steps warming up")] = 0.03,
    max_grad_norm: Annotated[float, typer.Option(help="gradient clipping norm")] = 1.0,
    max_seq_len: Annotated[int, typer.Option(help="tokens per sequence; longer rows are cut")] = 512,
    packing: Annotated[bool, typer.Option("--packing", help="pack several rows into each sequence")] = False,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="recompute activations: less memory, slower")] = False,
    qlora: Annotated[bool, typer.Option("--qlora", help="4-bit base weights (CUDA + bitsandbytes)")] = False,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16")] = "auto",
    save_every: Annotated[Optional[int], typer.Option(help="checkpoint every N steps (epoch ends always)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the latest checkpoint in --out")] = False,
    max_memory: Annotated[Optional[str], typer.Option(help='memory the run may use, e.g. "6GiB" (default: what is free)')] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch")] = None,
    no_base_cache: Annotated[bool, typer.Option(
        "--no-base-cache", envvar=NO_BASE_CACHE_ENV,
        help="read a GGUF base every run instead of keeping its dequantised weights in "
             "$XDG_CACHE_HOME/lampstand/train-bases")] = False,
    load: Annotated[bool, typer.Option("--load", help="load the adapter into the running server at the end")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train a LoRA adapter on your own data (Ctrl-C saves a checkpoint; --resume continues)."""
    # OpenMP threads that spin while they wait turn every small op into milliseconds once other
    # processes want the cores (measured: a 1 s step became 30-50 s); sleeping waiters cost little.
    # Set before torch loads its OpenMP runtime; a value the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from lampstand.training.config import TrainConfig
    from lampstand.training.run import TrainingInterrupted, train

    try:
        settings = load_cli_settings(config)
        train_config = TrainConfig(
            base=base, data=data, out=out, eval_data=eval_data, rank=rank, alpha=alpha, dropout=dropout,
            target_modules=_targets(target_modules), epochs=epochs, max_steps=max_steps, batch_size=batch_size,
            grad_accum=grad_accum, lr=lr, schedule=schedule, warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm,
            max_seq_len=max_seq_len, packing=packing, seed=seed, gradient_checkpointing=gradient_checkpointing,
            qlora=qlora, precision=precision, save_every=save_every, resume=resume,  # type: ignore[arg-type]
            max_memory=_size(max_memory), threads=threads, base_cache=not no_base_cache, config_path=config)
        served = _served_base(base, settings) if load else None
        if not err.is_terminal:
            _quiet_library_progress()
        with _Progress(quiet=as_json) as progress:
            result = train(train_config, settings, progress)
        loaded = _load_into_server(url, api_key, result.name, result.out, served) if served else None
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
