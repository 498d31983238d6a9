"""The training loop: AdamW over LoRA weights, accumulation, clipping, schedule, eval, checkpoints.

A plain torch loop. Each epoch visits the sequences in an order drawn from `seed + epoch`, so
a resumed run knows its place from (epoch, micro-batches done) alone. A stop request (SIGINT,
SIGTERM) is honoured between optimizer steps: the checkpoint is then exactly the state an
uninterrupted run passes through, and resuming reaches the same final weights.

The loss is the cross-entropy summed over labelled tokens and divided by the labelled tokens
of the whole accumulation group, so accumulating k micro-batches equals one batch k times larger.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import TrainState, save_checkpoint
from .encode import IGNORE, Sequence
from .lora import Precision
from .metrics import MetricsLog

__all__ = ["LoopSettings", "StepReport", "StopFlag", "LoopOutcome", "train_loop", "make_optimizer",
           "make_scheduler", "evaluate", "collate", "epoch_batches", "steps_per_epoch"]

RECENT = 20  # step losses averaged into the reported train loss


@dataclass
class StopFlag:
    """Set by a signal handler; the loop stops at the next step boundary."""

    signum: int | None = None


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs to know besides the model and the data."""

    batch_size: int
    grad_accum: int
    total_steps: int
    lr: float
    schedule: str
    warmup_ratio: float
    max_grad_norm: float
    seed: int
    save_every: int | None
    pad_id: int
    packed: bool
    precision: Precision


@dataclass(frozen=True)
class StepReport:
    """One optimizer step, for a progress display."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    tokens_per_s: float
    eta_s: float


@dataclass
class LoopOutcome:
    """How the loop ended: finished, or stopped by a signal after saving `checkpoint`."""

    state: TrainState
    train_loss: float | None
    eval_loss: float | None = None
    perplexity: float | None = None
    stopped_by: int | None = None
    checkpoint: Path | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)


def steps_per_epoch(sequences: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps in one pass (a short last group still steps)."""
    return math.ceil(math.ceil(sequences / batch_size) / grad_accum)


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Micro-batches of sequence indices for `epoch`, shuffled reproducibly."""
    import torch

    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(count, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, count, batch_size)]


def collate(sequences: list[Sequence], pad_id: int, packed: bool, device: str) -> dict[str, Any]:
    """Right-padded tensors. Packed rows get no attention mask: their restarting positions are it."""
    import torch

    width = max(len(s.input_ids) for s in sequences)
    ids, labels, positions, mask = [], [], [], []
    for s in sequences:
        pad = width - len(s.input_ids)
        ids.append(s.input_ids + [pad_id] * pad)
        labels.append(s.labels + [IGNORE] * pad)
        positions.append(s.position_ids + list(range(pad)))  # padding is its own (ignored) segment
        mask.append([1] * len(s.input_ids) + [0] * pad)
    batch = {"input_ids": torch.tensor(ids, device=device),  # (batch, width)
             "labels": torch.tensor(labels, device=device),
             "position_ids": torch.tensor(positions, device=device)}
    if not packed:
        batch["attention_mask"] = torch.tensor(mask, device=device)
    return batch


def _summed_loss(model: Any, batch: dict[str, Any], precision: Precision) -> Any:
    """Cross-entropy summed over labelled tokens of `batch` (labels shifted by one)."""
    import torch
    import torch.nn.functional as F

    autocast = (torch.autocast(device_type=precision.device, dtype=precision.autocast)
                if precision.autocast is not None else nullcontext())
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with autocast:
        logits = model(**inputs, use_cache=False).logits  # (batch, width, vocab)
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def _labelled(sequences: list[Sequence]) -> int:
    # a row's first label is never predicted (nothing precedes it)
    return sum(sum(label != IGNORE for label in s.labels[1:]) for s in sequences)


def evaluate(model: Any, sequences: list[Sequence], settings: LoopSettings) -> tuple[float, float]:
    """(mean loss per labelled token, perplexity) on held-out sequences."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(sequences), settings.batch_size):
            chunk = sequences[start:start + settings.batch_size]
            batch = collate(chunk, settings.pad_id, settings.packed, settings.precision.device)
            total += float(_summed_loss(model, batch, settings.precision))
            count += _labelled(chunk)
    model.train()
    loss = total / max(count, 1)
    return loss, math.exp(min(loss, 50.0))


def make_optimizer(model: Any, lr: float) -> Any:
    """AdamW over the trainable (LoRA) parameters only."""
    import torch

    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)


class _Schedule:
    """Learning-rate factor: linear warmup, then cosine or linear decay to 0, or constant."""

    def __init__(self, kind: str, warmup: int, total: int) -> None:
        self.kind, self.warmup, self.total = kind, warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress)) if self.kind == "cosine" else max(0.0, 1 - progress)


def make_scheduler(optimizer: Any, settings: LoopSettings) -> Any:
    """The LambdaLR for the run's schedule and warmup."""
    import torch

    warmup = round(settings.warmup_ratio * settings.total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Schedule(settings.schedule, warmup, settings.total_steps))


class _Clock:
    """Tokens per second and time left, over this process's steps."""

    def __init__(self, state: TrainState, total: int) -> None:
        self.start, self.first_step, self.total = time.monotonic(), state.step, total
        self.last = self.start

    def tick(self, step: int, tokens: int) -> tuple[float, float]:
        now = time.monotonic()
        rate = tokens / max(now - self.last, 1e-9)
        self.last = now
        per_step = (now - self.start) / max(step - self.first_step, 1)
        return rate, per_step * (self.total - step)


@dataclass
class _Run:
    """Everything one call of `train_loop` works with."""

    model: Any
    train: list[Sequence]
    eval: list[Sequence]
    settings: LoopSettings
    optimizer: Any
    scheduler: Any
    out: Path
    metrics: MetricsLog
    on_step: Callable[[StepReport], None]
    stop: StopFlag
    scaler: Any = None
    started: float = field(default_factory=time.monotonic)  # start of the time not yet in state.seconds


def _optimizer_step(run: _Run, group: list[list[int]]) -> tuple[float, int, float]:
    """Accumulate gradients over `group`'s micro-batches and step once; (mean loss, tokens, lr used)."""
    import torch

    s = run.settings
    chunks = [[run.train[i] for i in indices] for indices in group]
    labelled = max(sum(_labelled(chunk) for chunk in chunks), 1)
    total, tokens = 0.0, 0
    for chunk in chunks:
        loss = _summed_loss(run.model, collate(chunk, s.pad_id, s.packed, s.precision.device), s.precision)
        total += float(loss.detach())
        tokens += sum(len(seq.input_ids) for seq in chunk)
        scaled = loss / labelled
        (run.scaler.scale(scaled) if run.scaler else scaled).backward()
    lr = run.optimizer.param_groups[0]["lr"]
    if run.scaler:
        run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], s.max_grad_norm)
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total / labelled, tokens, lr


def _clock_in(run: _Run, state: TrainState) -> None:
    now = time.monotonic()
    state.seconds, run.started = state.seconds + now - run.started, now


def _checkpoint(run: _Run, state: TrainState) -> Path:
    _clock_in(run, state)
    path = save_checkpoint(run.out, run.model, run.optimizer, run.scheduler, state)
    run.metrics.write("checkpoint", step=state.step, path=str(path))
    return path


def _held_out_eval(run: _Run, state: TrainState, outcome: LoopOutcome) -> None:
    if run.eval:
        outcome.eval_loss, outcome.perplexity = evaluate(run.model, run.eval, run.settings)
        outcome.evals.append(run.metrics.write("eval", step=state.step, epoch=state.epoch + 1,
                                               eval_loss=round(outcome.eval_loss, 5),
                                               perplexity=round(outcome.perplexity, 4)))


def _step(run: _Run, state: TrainState, clock: _Clock, group: list[list[int]]) -> None:
    """One optimizer step over `group`, then the state, the metrics line and the progress report."""
    loss, tokens, lr = _optimizer_step(run, group)
    state.step, state.batch_in_epoch = state.step + 1, state.batch_in_epoch + len(group)
    state.tokens += tokens
    state.recent_losses = (state.recent_losses + [loss])[-RECENT:]
    rate, eta = clock.tick(state.step, tokens)
    run.metrics.write("step", step=state.step, epoch=state.epoch + 1, loss=round(loss, 5), lr=lr,
                      tokens_per_s=round(rate, 1), eta_s=round(eta, 1), tokens=state.tokens)
    run.on_step(StepReport(state.step, run.settings.total_steps, state.epoch + 1, loss, lr, rate, eta))


def train_loop(model: Any, train: list[Sequence], eval_sequences: list[Sequence], settings: LoopSettings,
               optimizer: Any, scheduler: Any, state: TrainState, out: Path, metrics: MetricsLog,
               on_step: Callable[[StepReport], None], stop: StopFlag) -> LoopOutcome:
    """Train from `state` to `settings.total_steps`, or until `stop` is set (checkpoint saved)."""
    import torch

    scaler = torch.amp.GradScaler("cuda") if settings.precision.grad_scaler else None
    run = _Run(model, train, eval_sequences, settings, optimizer, scheduler, out, metrics, on_step, stop, scaler)
    outcome = LoopOutcome(state, _mean(state.recent_losses))
    clock = _Clock(state, settings.total_steps)
    model.train()
    while state.step < settings.total_steps:
        batches = epoch_batches(len(train), settings.batch_size, settings.seed, state.epoch)
        while state.batch_in_epoch < len(batches) and state.step < settings.total_steps:
            if stop.signum is not None:
                outcome.stopped_by, outcome.checkpoint = stop.signum, _checkpoint(run, state)
                return outcome
            _step(run, state, clock, batches[state.batch_in_epoch:state.batch_in_epoch + settings.grad_accum])
            epoch_done = state.batch_in_epoch >= len(batches)
            if settings.save_every and state.step % settings.save_every == 0 and not epoch_done \
                    and state.step < settings.total_steps:
                _checkpoint(run, state)
        if state.batch_in_epoch >= len(batches):
            _held_out_eval(run, state, outcome)
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if state.step < settings.total_steps:
                _checkpoint(run, state)
        elif run.eval:  # --max-steps ended mid-epoch
            _held_out_eval(run, state, outcome)
    _clock_in(run, state)
    outcome.train_loss = _mean(state.recent_losses)
    return outcome


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
