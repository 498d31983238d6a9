"""The dequantised-base cache: `lampstand train` on the bundled GGUF without it, filling it and
reading it trains the very same adapter; a damaged cache folder is ignored and rebuilt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import SMOLLM
from lampstand.training.base_cache import (
    MARKER,
    base_folder,
    cached_file_sha256,
    is_complete,
    write_marker,
)
from lampstand.training.manifest import file_sha256

DATA = Path(__file__).parent / "data"
FAST = ["--rank", "4", "--alpha", "8", "--lr", "2e-3", "--batch-size", "2", "--max-seq-len", "64", "--threads", "2",
        "--max-steps", "2"]


def _train(tmp: Path, data: Path, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMPSTAND_")}
    env |= {"XDG_DATA_HOME": str(tmp / "data"), "XDG_CACHE_HOME": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lampstand.clients", "train", "--base", "smollm2", "--data",
                           str(data), "--out", str(tmp / out), *FAST, *extra],
                          check=False, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    return done


def _tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two steps three ways, sharing one cache: without it, over a damaged copy (rebuilt), from the copy."""
    tmp = tmp_path_factory.mktemp("base-cache")
    data = tmp / "train.jsonl"
    data.write_text("".join((DATA / "fact_train.jsonl").read_text().splitlines(keepends=True)[:4]))
    plain = _train(tmp, data, "plain", "--no-base-cache")
    untouched = sorted(p.name for p in (tmp / "cache").iterdir()) if (tmp / "cache").exists() else []
    folder = base_folder(tmp / "cache" / "lampstand", file_sha256(SMOLLM))
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"cut short by a full disk")
    write_marker(folder, SMOLLM)
    (folder / "model.safetensors").write_bytes(b"cut short")
    filled = _train(tmp, data, "filled")
    read = _train(tmp, data, "read")
    return {"tmp": tmp, "folder": folder, "untouched": untouched,
            "logs": {"plain": plain.stderr, "filled": filled.stderr, "read": read.stderr}}


def test_the_adapter_is_the_same_with_or_without_the_cache(runs: dict[str, Any]) -> None:
    import torch

    tmp, logs = runs["tmp"], runs["logs"]
    assert runs["untouched"] == []  # --no-base-cache writes nothing there
    assert "dequantised" not in logs["plain"]
    assert f"dequantised into {runs['folder']}" in logs["filled"]
    assert f"dequantised copy in {runs['folder']}" in logs["read"] and "dequantised into" not in logs["read"]
    plain = _tensors(tmp / "plain")
    for name in ("filled", "read"):
        other = _tensors(tmp / name)
        assert other.keys() == plain.keys() and all(torch.equal(plain[k], other[k]) for k in plain), name


def test_a_damaged_copy_is_rebuilt(runs: dict[str, Any]) -> None:
    folder = runs["folder"]
    assert is_complete(folder)
    assert (folder / "model.safetensors").stat().st_size > 500_000_000  # 135M float32 weights
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", MARKER} <= {p.name for p in folder.iterdir()}
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left


def _complete_folder(tmp: Path) -> Path:
    folder = tmp / "base"
    folder.mkdir()
    for name, size in (("config.json", 10), ("tokenizer.json", 20), ("model.safetensors", 30)):
        (folder / name).write_bytes(b"x" * size)
    write_marker(folder, SMOLLM)
    return folder


DAMAGE = {
    "no marker": lambda f: (f / MARKER).unlink(),
    "weights cut short": lambda f: (f / "model.safetensors").write_bytes(b"x"),
    "tokenizer missing": lambda f: (f / "tokenizer.json").unlink(),
    "marker not JSON": lambda f: (f / MARKER).write_text("{"),
    "marker of another format": lambda f: (f / MARKER).write_text(json.dumps({"format": "x", "files": {}})),
    "marker without the weights": lambda f: (f / MARKER).write_text(json.dumps(
        {"format": json.loads((f / MARKER).read_text())["format"], "files": {"config.json": 10}})),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_incomplete_folders_are_not_used(tmp_path: Path, damage: Any) -> None:
    folder = _complete_folder(tmp_path)
    assert is_complete(folder)
    damage(folder)
    assert not is_complete(folder)


def test_file_hashes_are_remembered_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"weights")
    root = tmp_path / "cache"
    assert cached_file_sha256(path, root) == file_sha256(path)
    (record,) = (root / "file-hashes").iterdir()
    record.write_text("f" * 64)
    assert cached_file_sha256(path, root) == "f" * 64  # read back, not rehashed
    path.write_bytes(b"other weights")
    assert cached_file_sha256(path, root) == file_sha256(path)


def test_no_base_cache_round_trips_to_the_command_line() -> None:
    from lampstand.training.config import TrainConfig

    config = TrainConfig(base="smollm2", data=Path("t.jsonl"), out="x", base_cache=False)
    assert config.cli_args()[-1] == "--no-base-cache"
    assert "--no-base-cache" not in TrainConfig(base="smollm2", data=Path("t.jsonl"), out="x").cli_args()
