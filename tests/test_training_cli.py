"""`lampstand train` end to end: the real CLI in a subprocess, training SmolLM2-135M on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SMOLLM
from lampstand.training.manifest import file_sha256, read_manifest

DATA = Path(__file__).parent / "data"
FAST = ["--rank", "4", "--alpha", "8", "--lr", "2e-3", "--batch-size", "2", "--max-seq-len", "64", "--threads", "2"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMPSTAND_")}
    return env | {"XDG_DATA_HOME": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}


def _train(tmp_path: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lampstand.clients", "train", *args], capture_output=True,
                          text=True, env=_env(tmp_path), timeout=timeout)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _adapter_tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 rows of the fact data set: 2 steps an epoch at batch size 2."""
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join((DATA / "fact_train.jsonl").read_text().splitlines(keepends=True)[:4]))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, small_data: Path) -> tuple[Path, dict[str, Any]]:
    """One short run with held-out data: 3 steps (1.5 epochs), a checkpoint after every step."""
    tmp = tmp_path_factory.mktemp("train")
    done = _train(tmp, "--base", "smollm2", "--data", str(small_data), "--eval", str(DATA / "fact_eval.jsonl"),
                  "--out", "fact", "--max-steps", "3", "--save-every", "1", *FAST, "--json")
    assert done.returncode == 0, done.stderr
    return tmp / "data" / "lampstand" / "adapters" / "fact", json.loads(done.stdout)


def test_a_run_writes_the_adapter_manifest_and_metrics(finished: tuple[Path, dict[str, Any]]) -> None:
    out, result = finished
    assert {"adapter_model.safetensors", "adapter_config.json", "manifest.json", "metrics.jsonl",
            "adapter.gguf"} <= {p.name for p in out.iterdir()}
    manifest = read_manifest(out)
    assert manifest is not None and manifest.name == "fact" and manifest.files.gguf == "adapter.gguf"
    assert manifest.base.sha256 == file_sha256(SMOLLM) and manifest.base.id == "smollm2-135m-instruct"
    assert manifest.base.architecture == "llama" and manifest.data.train_rows == 4 and manifest.data.eval_rows == 3
    assert manifest.hyperparameters["rank"] == 4 and manifest.hyperparameters["steps"] == 3
    records = _records(out / "metrics.jsonl")
    steps = [r for r in records if r["type"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3] and [r["epoch"] for r in steps] == [1, 1, 2]
    assert steps[-1]["loss"] < steps[0]["loss"]  # it learns
    assert {"epoch", "lr", "tokens_per_s", "eta_s", "time"} <= set(steps[0])
    assert [r["step"] for r in records if r["type"] == "checkpoint"] == [1, 2]  # none after the last step
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [2, 3] and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert records[-1]["type"] == "done" and records[-1]["step"] == 3 and records[-1]["gguf"].endswith("adapter.gguf")
    assert result["steps"] == 3 and result["eval_loss"] == pytest.approx(evals[-1]["eval_loss"], abs=1e-4)


def test_interrupt_saves_a_checkpoint_and_resume_reaches_the_same_adapter(
        tmp_path: Path, small_data: Path, finished: tuple[Path, dict[str, Any]]) -> None:
    args = ["--base", "smollm2", "--data", str(small_data), "--eval", str(DATA / "fact_eval.jsonl"),
            "--out", str(tmp_path / "runs" / "fact"), "--max-steps", "3", "--save-every", "1", *FAST]
    out = tmp_path / "runs" / "fact"
    process = subprocess.Popen([sys.executable, "-m", "lampstand.clients", "train", *args], env=_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and any(r["type"] == "step" for r in _records(metrics)):
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert "SIGINT: stopped at step" in last and "--resume" in last and "Traceback" not in stderr
    stopped_at = max(r["step"] for r in _records(out / "metrics.jsonl") if r["type"] == "step")
    assert stopped_at < 3 and (out / "checkpoints" / f"step-{stopped_at}" / "optimizer.pt").exists()

    again = _train(tmp_path, *args)
    assert again.returncode == 2 and "add --resume" in again.stderr

    resumed = _train(tmp_path, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    steps = [r["step"] for r in _records(out / "metrics.jsonl") if r["type"] == "step"]
    assert steps == [1, 2, 3]
    first, second = _adapter_tensors(finished[0]), _adapter_tensors(out)
    assert first.keys() == second.keys()
    assert all(float((first[k] - second[k]).abs().max()) < 1e-5 for k in first)


def test_not_enough_memory_is_refused_with_the_numbers(tmp_path: Path) -> None:
    done = _train(tmp_path, "--base", "smollm2", "--data", str(DATA / "fact_train.jsonl"), "--out", "x",
                  "--max-memory", "100MB", *FAST)
    assert done.returncode == 2
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("error: not enough memory to train: needs about")
    assert "95.4 MiB available (--max-memory)" in line and "weights" in line
    assert not (tmp_path / "data" / "lampstand" / "adapters" / "x").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--base", "no-such-model"], "--base no-such-model: not a served model (smollm2-135m-instruct, smollm2"),
    (["--base", "/nonexistent/model.gguf"], "not a served model"),
    (["--base", "lampstand-tests/not-a-real-repo"], "cannot get it from Hugging Face"),
    (["--base", "smollm2", "--qlora"], "--qlora needs a CUDA GPU"),
    (["--base", "smollm2", "--target-modules", "q_proj,qkv"], "--target-modules qkv: no such linear layer"),
    (["--base", "smollm2", "--out", ".hidden"], "must use only"),
    (["--base", "smollm2", "--rank", "0"], "--rank must be at least 1"),
    (["--base", "smollm2", "--data", "BAD"], "train.jsonl: 2 bad lines: line 1: not valid JSON (Expecting property name enclosed in double quotes); line 3:"),
], ids=["unknown-id", "missing-file", "offline-repo", "qlora-on-cpu", "bad-target", "bad-name", "bad-rank",
        "bad-data"])
def test_bad_requests_fail_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "train.jsonl"
    bad.write_text("{oops\n" + json.dumps({"prompt": "q", "completion": "a"}) + "\n"
                   + json.dumps({"prompt": "q", "completion": ""}) + "\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    if "--data" not in args:
        args += ["--data", str(DATA / "fact_train.jsonl")]
    if "--out" not in args:
        args += ["--out", "x"]
    done = _train(tmp_path, *args, "--max-steps", "1")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
