"""One `lampstand train` run in its own process, and its `metrics.jsonl` as it grows.

The trainer gets a new session (its own process group): a Ctrl-C in the server's terminal
reaches the server, which stops the trainer itself with SIGTERM (the trainer saves a
checkpoint and exits), then SIGKILL when it takes longer than the grace period. This
module starts and stops processes and reads files; what a job makes of them is the
service's business.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lampstand.training.checkpoint import latest_checkpoint

__all__ = ["TrainerProcess", "MetricsReader", "last_error_line", "metrics_event", "stop_orphan", "trained_tokens"]

POLL_SECONDS = 0.5
TRAINER_NICENESS = 10  # requests on the same CPUs come first: training yields to them
TAIL_BYTES = 16 * 1024
MAX_ERROR_CHARS = 2000


class MetricsReader:
    """The complete JSON lines appended to a file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                if os.fstat(handle.fileno()).st_size < self.offset:  # rewritten from the start
                    self.offset, self.partial = 0, b""
                handle.seek(self.offset)
                new = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(new)
        *lines, self.partial = (self.partial + new).split(b"\n")
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


class TrainerProcess:
    """`python -m lampstand.clients <args>` with its output in a log file."""

    def __init__(self, args: list[str], cwd: Path, log_path: Path, metrics_path: Path) -> None:
        self.args, self.cwd, self.log_path = args, cwd, log_path
        self.metrics = MetricsReader(metrics_path)
        self.process: subprocess.Popen[bytes] | None = None
        self._kill_timer: asyncio.TimerHandle | None = None

    def start(self) -> int:
        """Start the trainer, below the server's priority; its pid."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "lampstand.clients", *self.args],
                                            cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:  # before it starts its compute threads, which inherit the niceness
            os.setpriority(os.PRIO_PROCESS, self.process.pid, TRAINER_NICENESS)
        except OSError:
            pass  # gone already, or no such call here
        return self.process.pid

    async def follow(self, on_record: Callable[[dict[str, Any]], None]) -> int:
        """Hand every metrics record to `on_record` until the trainer exits; its exit code."""
        assert self.process is not None, "start() first"
        try:
            while True:
                code = self.process.poll()
                for record in self.metrics.read():  # after poll(): everything written before the exit
                    on_record(record)
                if code is not None:
                    return code
                await asyncio.sleep(POLL_SECONDS)
        finally:
            if self._kill_timer is not None:
                self._kill_timer.cancel()

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; asked again, the earlier deadline holds.

        SIGTERM goes once: the trainer takes a second one as "stop now, without a checkpoint".
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._kill_timer is None:
            self._signal(signal.SIGTERM)
        elif self._kill_timer.when() <= deadline:
            return
        else:
            self._kill_timer.cancel()
        self._kill_timer = loop.call_at(deadline, self.kill)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)  # its own group: helpers it started go too
        except ProcessLookupError:
            pass


def last_error_line(log_path: Path, code: int) -> str:
    """The trainer's last `error:` line, else its last line, else its exit code."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - TAIL_BYTES))
            lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.lower().startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()[:MAX_ERROR_CHARS]
    if lines:
        return lines[-1][:MAX_ERROR_CHARS]
    return f"the trainer exited with code {code}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metrics_event(record: dict[str, Any]) -> tuple[str, dict[str, Any] | None] | None:
    """The (message, data) of the job event a metrics record becomes; None for other records."""
    kind, step = record.get("type"), record.get("step")
    if kind == "step":
        data = {"step": step, "train_loss": _number(record.get("loss")), "epoch": record.get("epoch"),
                "learning_rate": _number(record.get("lr")), "tokens_per_s": _number(record.get("tokens_per_s")),
                "eta_s": _number(record.get("eta_s"))}
        return f"Step {step}: training loss={data['train_loss']}", data
    if kind == "eval":
        data = {"step": step, "valid_loss": _number(record.get("eval_loss")),
                "perplexity": _number(record.get("perplexity")), "epoch": record.get("epoch")}
        return f"Step {step}: validation loss={data['valid_loss']}, perplexity={data['perplexity']}", data
    if kind == "checkpoint":
        return f"Checkpoint created at step {step}", None
    if kind == "done":
        data = {"step": step, "train_loss": _number(record.get("train_loss")),
                "valid_loss": _number(record.get("eval_loss")), "perplexity": _number(record.get("perplexity"))}
        return f"Training finished at step {step}", data
    return None


def trained_tokens(out: Path) -> int | None:
    """The tokens the run trained on, from its latest checkpoint's state (blocking)."""
    checkpoint = latest_checkpoint(out)
    try:
        tokens = json.loads((checkpoint / "state.json").read_text(encoding="utf-8")).get("tokens") if checkpoint else None
    except (OSError, ValueError, AttributeError):
        return None
    return tokens if isinstance(tokens, int) else None


def stop_orphan(pid: int, marker: str) -> bool:
    """SIGTERM a trainer a previous server left running: `pid`, if its command line has `marker`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
    except OSError:
        return False  # gone, or no /proc here
    if marker not in cmdline:
        return False  # the pid was reused by another program
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    return True
