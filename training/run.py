"""The training recipe: setup, train, save, for one `TrainConfig`.

    setup  output folder, data (validated), base model (found), tokens, memory check, LoRA
    train  `loop.train_loop`, stopping cleanly on SIGINT/SIGTERM with a checkpoint
    save   peft adapter, GGUF LoRA when the base is a GGUF, manifest, the "done" metric

`train()` is what `lampstand train` calls and what the server's fine-tuning jobs run (as
`python -m lampstand.clients train ...`). It reports progress through a `Reporter` and never
prints; errors are `LampstandError`s, and an interruption is `TrainingInterrupted`.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lampstand.plugins.errors import InvalidRequest, LampstandError

from .base_cache import (
    MAX_CACHED_BYTES,
    cache_root,
    cached_file_sha256,
    use_cached,
    write_cached,
)
from .base_model import (
    BaseSource,
    base_sha256,
    load_base_config,
    load_model,
    load_tokenizer,
    resolve_base,
)
from .checkpoint import TrainState, latest_checkpoint, load_checkpoint
from .config import TrainConfig, resolve_output
from .data import TrainingData, load_training_file
from .encode import EncodeReport, Sequence, encode_dataset
from .loop import (
    LoopOutcome,
    LoopSettings,
    StepReport,
    StopFlag,
    make_optimizer,
    make_scheduler,
    steps_per_epoch,
    train_loop,
)
from .lora import (
    Precision,
    apply_lora,
    check_targets,
    choose_precision,
    default_targets,
    linear_layers,
    lora_parameter_count,
    quantization_config,
    skeleton_model,
)
from .manifest import (
    GGUF_FILE,
    MANIFEST_FILE,
    PEFT_WEIGHTS_FILE,
    AdapterFiles,
    AdapterManifest,
    BaseInfo,
    DataInfo,
    file_sha256,
    write_manifest,
)
from .memory import (
    MemoryEstimate,
    available_memory,
    check_fits,
    estimate_training_memory,
)
from .metrics import METRICS_FILE, MetricsLog

if TYPE_CHECKING:
    from lampstand.server.config import Settings

__all__ = ["train", "TrainResult", "TrainingInterrupted", "Reporter"]


class Reporter(Protocol):
    """Where a run tells people what it is doing."""

    def info(self, line: str) -> None: ...

    def step(self, report: StepReport) -> None: ...


class _Silent:
    def info(self, line: str) -> None:
        pass

    def step(self, report: StepReport) -> None:
        pass


class TrainingInterrupted(LampstandError):
    """SIGINT or SIGTERM stopped the run after saving a checkpoint it can resume from."""

    def __init__(self, signum: int, step: int, total: int, checkpoint: Path) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped at step {step} of {total}; checkpoint saved in {checkpoint}; "
                         "run the same command with --resume to continue")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process stopped by it (130 for Ctrl-C)."""
        return 128 + self.signum


@dataclass
class TrainResult:
    """What a finished run produced."""

    name: str
    out: Path
    manifest: AdapterManifest
    steps: int
    seconds: float
    train_loss: float | None
    eval_loss: float | None
    perplexity: float | None
    gguf: Path | None
    data_report: EncodeReport
    memory: MemoryEstimate
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON for `--json` and job records."""
        return {"name": self.name, "out": str(self.out), "steps": self.steps, "seconds": round(self.seconds, 2),
                "train_loss": self.train_loss, "eval_loss": self.eval_loss, "perplexity": self.perplexity,
                "adapter": str(self.out / PEFT_WEIGHTS_FILE), "gguf": str(self.gguf) if self.gguf else None,
                "manifest": self.manifest.to_dict(), "warnings": self.warnings}


@dataclass
class _Setup:
    """What setup hands to training and saving."""

    name: str
    out: Path
    source: BaseSource
    sha256: str
    base_config: Any
    architecture: str
    tokenizer: Any
    train: TrainingData
    eval: TrainingData | None
    train_sequences: list[Sequence]
    eval_sequences: list[Sequence]
    report: EncodeReport
    precision: Precision
    targets: list[str]
    memory: MemoryEstimate
    resume_from: Path | None


def _check_output(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from; refuses to overwrite a finished or resumable run."""
    checkpoint = latest_checkpoint(out)
    finished = (out / MANIFEST_FILE).exists()
    if resume:
        if finished:
            raise InvalidRequest(f"{out} is already trained (it has {MANIFEST_FILE}); nothing to resume")
        if checkpoint is None:
            raise InvalidRequest(f"nothing to resume in {out}: no checkpoint there")
        return checkpoint
    if finished:
        raise InvalidRequest(f"{out} already holds a trained adapter: choose another --out or remove it")
    if checkpoint is not None:
        raise InvalidRequest(f"{out} holds an unfinished run: add --resume to continue it, or remove it")
    return None


def _fingerprint(config: TrainConfig, targets: list[str], setup_data: tuple[str, str | None, str]) -> dict[str, Any]:
    train_sha, eval_sha, base_sha = setup_data
    body = config.hyperparameters() | {"target_modules": targets, "train_sha256": train_sha,
                                       "eval_sha256": eval_sha, "base_sha256": base_sha}
    return json.loads(json.dumps(body))


def _check_resume(saved: dict[str, Any], now: dict[str, Any], checkpoint: Path) -> None:
    changed = [key for key in now if key != "gradient_checkpointing" and saved.get(key) != now[key]]
    if changed:
        detail = ", ".join(f"{key} {saved.get(key)!r} -> {now[key]!r}" for key in changed)
        raise InvalidRequest(f"cannot resume from {checkpoint}: the run's settings changed ({detail}); "
                             "use the same command as the interrupted run")


def _memory(config: TrainConfig, base_config: Any, layers: dict[str, tuple[int, int]], targets: list[str],
            precision: Precision, seq_len: int, parameters: int) -> MemoryEstimate:
    import torch

    if config.max_memory is not None:
        available, where = config.max_memory, "--max-memory"
    else:
        available = available_memory(precision.device)
        where = "free GPU memory" if precision.device == "cuda" else "free RAM"
    weight_bytes = 0.56 if config.qlora else torch.finfo(precision.weights).bits / 8
    activation_dtype = precision.autocast or precision.weights
    return estimate_training_memory(
        base_config, parameters, lora_parameter_count(targets, layers, config.rank), weight_bytes,
        torch.finfo(activation_dtype).bits // 8, config.batch_size, seq_len, config.gradient_checkpointing,
        available, precision.device, where)


def _fill_base_cache(source: BaseSource, sha256: str, base_config: Any, tokenizer: Any, parameters: int,
                     root: Path, reporter: Reporter) -> BaseSource:
    """Dequantise a GGUF base into the cache once (when small enough); the source to train from."""
    if parameters * 4 > MAX_CACHED_BYTES:
        reporter.info(f"base: not cached: {parameters * 4 / 2**30:.1f} GiB of float32 weights is over the "
                      f"{MAX_CACHED_BYTES / 2**30:g} GiB limit")
        return source
    try:
        cached = write_cached(source, sha256, base_config, tokenizer, root)
    except OSError as exc:  # a full or read-only disk costs only the cache: train from the GGUF
        reporter.info(f"warning: cannot cache the dequantised base under {root}: {exc}")
        return source
    reporter.info(f"base: dequantised into {cached.cached}; later runs on this GGUF load it from there")
    return cached


def _find_base(config: TrainConfig, settings: Settings) -> tuple[BaseSource, str, Path | None]:
    """The base (pointing at its dequantised copy when one is cached), its sha256, the cache root if used."""
    cache = cache_root() if config.base_cache else None
    source = resolve_base(config.base, settings)
    sha256 = base_sha256(source, partial(cached_file_sha256, root=cache) if cache else file_sha256)
    return (use_cached(source, sha256, cache) if cache else source), sha256, cache


def _setup(config: TrainConfig, settings: Settings, reporter: Reporter) -> _Setup:
    name, out = resolve_output(config.out, settings.adapters.dir)
    resume_from = _check_output(out, config.resume)
    train_data = load_training_file(config.data)
    eval_data = load_training_file(config.eval_data) if config.eval_data is not None else None
    source, sha256, cache = _find_base(config, settings)
    precision = choose_precision(config.precision, config.qlora)
    base_config = load_base_config(source)
    architecture = str(getattr(base_config, "model_type", "unknown"))
    skeleton = skeleton_model(base_config)
    layers = linear_layers(skeleton)
    targets = list(config.target_modules or default_targets(architecture, layers))
    check_targets(targets, layers, architecture)
    tokenizer = load_tokenizer(source)
    sequences, report = encode_dataset(tokenizer, train_data, config.max_seq_len, config.packing)
    eval_sequences = encode_dataset(tokenizer, eval_data, config.max_seq_len, config.packing)[0] if eval_data else []
    seq_len = min(config.max_seq_len, max(len(s.input_ids) for s in sequences))
    parameters = sum(p.numel() for p in skeleton.parameters())
    estimate = _memory(config, base_config, layers, targets, precision, seq_len, parameters)
    del skeleton
    check_fits(estimate)
    reporter.info(f"data: {report.summary()}" + (f"; eval: {len(eval_sequences)} sequences" if eval_data else ""))
    reporter.info(f"memory: {estimate.describe()}")
    copy = f", dequantised copy in {source.cached}" if source.cached else ""
    reporter.info(f"base: {source.served_id or source.source} ({architecture}, {source.path}{copy}), "
                  f"LoRA r={config.rank} alpha={config.alpha:g} on {', '.join(targets)}, {precision.name}")
    if cache is not None and source.gguf is not None and source.cached is None:
        source = _fill_base_cache(source, sha256, base_config, tokenizer, parameters, cache, reporter)
    return _Setup(name, out, source, sha256, base_config, architecture, tokenizer, train_data, eval_data,
                  sequences, eval_sequences, report, precision, targets, estimate, resume_from)


def _seed(seed: int) -> None:
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def _stop_on_signals(flag: StopFlag) -> Iterator[None]:
    """SIGINT and SIGTERM set `flag` (a second one interrupts at once); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.signum is not None:
            raise KeyboardInterrupt
        flag.signum = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _loop_settings(config: TrainConfig, setup: _Setup) -> LoopSettings:
    per_epoch = steps_per_epoch(len(setup.train_sequences), config.batch_size, config.grad_accum)
    pad = setup.tokenizer.pad_token_id if setup.tokenizer.pad_token_id is not None else setup.tokenizer.eos_token_id
    return LoopSettings(config.batch_size, config.grad_accum, config.max_steps or config.epochs * per_epoch,
                        config.lr, config.schedule, config.warmup_ratio, config.max_grad_norm, config.seed,
                        config.save_every, int(pad or 0), config.packing, setup.precision)


def _train(config: TrainConfig, setup: _Setup, reporter: Reporter) -> tuple[Any, LoopOutcome]:
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    _seed(config.seed)
    quantization = quantization_config(setup.precision) if config.qlora else None
    model = load_model(setup.source, setup.precision.weights, setup.precision.device, quantization,
                       config=setup.base_config)
    model = apply_lora(model, setup.targets, config.rank, config.alpha, config.dropout, config.qlora,
                       config.gradient_checkpointing)
    settings = _loop_settings(config, setup)
    optimizer = make_optimizer(model, config.lr)
    scheduler = make_scheduler(optimizer, settings)
    data_ids = (setup.train.sha256, setup.eval.sha256 if setup.eval else None, setup.sha256)
    fingerprint = _fingerprint(config, setup.targets, data_ids)
    if setup.resume_from is not None:
        state = load_checkpoint(setup.resume_from, model, optimizer, scheduler)
        _check_resume(state.settings, fingerprint, setup.resume_from)
        reporter.info(f"resuming from {setup.resume_from} (step {state.step} of {settings.total_steps})")
    else:
        state = TrainState(settings=fingerprint)
    setup.out.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(setup.out / METRICS_FILE, fresh=setup.resume_from is None)
    stop = StopFlag()
    with _stop_on_signals(stop):
        outcome = train_loop(model, setup.train_sequences, setup.eval_sequences, settings, optimizer, scheduler,
                             state, setup.out, metrics, reporter.step, stop)
    if outcome.stopped_by is not None and outcome.checkpoint is not None:
        raise TrainingInterrupted(outcome.stopped_by, state.step, settings.total_steps, outcome.checkpoint)
    return model, outcome


def _export_gguf(setup: _Setup, warnings: list[str]) -> Path | None:
    """`adapter.gguf` for llama.cpp when the base is a GGUF; a failure is a warning, not an error."""
    if setup.source.gguf is None:
        return None
    from .gguf_lora import (
        export_gguf_lora,  # numpy + the GGUF reader: only when there is a GGUF to write
    )

    target = setup.out / GGUF_FILE
    try:
        export_gguf_lora(setup.out, setup.source.gguf, target, base_sha256=setup.sha256)
    except Exception as exc:  # the peft adapter is written either way; say why the GGUF is missing
        warnings.append(f"GGUF LoRA export failed ({type(exc).__name__}: {exc}): only the peft adapter was written")
        target.unlink(missing_ok=True)
        return None
    return target


def _save(config: TrainConfig, setup: _Setup, model: Any, outcome: LoopOutcome) -> tuple[AdapterManifest, Path | None,
                                                                                           list[str]]:
    warnings: list[str] = []
    model.save_pretrained(str(setup.out), safe_serialization=True, save_embedding_layers=False)
    gguf = _export_gguf(setup, warnings)
    hyperparameters = config.hyperparameters() | {"target_modules": setup.targets, "steps": outcome.state.step,
                                                  "precision": setup.precision.name}
    manifest = AdapterManifest(
        name=setup.name, created=int(time.time()),
        base=BaseInfo(setup.source.served_id, config.base, str(setup.source.path), setup.sha256, setup.architecture),
        data=DataInfo(setup.train.sha256, setup.eval.sha256 if setup.eval else None, len(setup.train.examples),
                      len(setup.eval.examples) if setup.eval else 0),
        hyperparameters=hyperparameters,
        metrics={"train_loss": outcome.train_loss, "eval_loss": outcome.eval_loss,
                 "eval_perplexity": outcome.perplexity},
        files=AdapterFiles(PEFT_WEIGHTS_FILE, GGUF_FILE if gguf else None))
    write_manifest(setup.out, manifest)
    return manifest, gguf, warnings


def train(config: TrainConfig, settings: Settings, reporter: Reporter | None = None) -> TrainResult:
    """Train a LoRA adapter as `config` says and write it, its GGUF twin and its manifest."""
    reporter = reporter or _Silent()
    setup = _setup(config, settings, reporter)
    model, outcome = _train(config, setup, reporter)
    manifest, gguf, warnings = _save(config, setup, model, outcome)
    MetricsLog(setup.out / METRICS_FILE, fresh=False).write(
        "done", step=outcome.state.step, train_loss=outcome.train_loss, eval_loss=outcome.eval_loss,
        perplexity=outcome.perplexity, adapter=str(setup.out), gguf=str(gguf) if gguf else None,
        trained_tokens=outcome.state.tokens)
    for warning in warnings:
        reporter.info(f"warning: {warning}")
    return TrainResult(setup.name, setup.out, manifest, outcome.state.step, outcome.state.seconds,
                       outcome.train_loss, outcome.eval_loss, outcome.perplexity, gguf, setup.report,
                       setup.memory, warnings)
