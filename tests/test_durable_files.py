"""The one crash-safe writer: what a publish leaves behind when it succeeds and when it fails."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lampstand.plugins.durable_files import publish_file, publish_folder, reserve_temp, write_file_atomically


@pytest.mark.parametrize("data", [b"bytes\x00\xff", "text é\n"])
def test_write_replaces_the_target_and_leaves_no_temp(tmp_path: Path, data: bytes | str) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    write_file_atomically(target, data)
    assert target.read_bytes() == (data.encode() if isinstance(data, str) else data)
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")

    def half_write(temp: Path) -> None:
        temp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        publish_file(target, half_write, temp=reserve_temp(target))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_reserved_temp_is_private_unique_and_named_as_asked(tmp_path: Path) -> None:
    first, second = reserve_temp(tmp_path / "a.gguf"), reserve_temp(tmp_path / "a.gguf", prefix=".upload-", suffix="")
    assert first != second and first.name.startswith(".a.gguf-") and first.name.endswith(".tmp")
    assert second.name.startswith(".upload-") and not second.name.endswith(".tmp")
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert publish_file(tmp_path / "a.gguf", lambda temp: temp.write_bytes(b"abc"), temp=first) == 3


def test_a_folder_is_published_whole_and_never_over_another(tmp_path: Path) -> None:
    temp = tmp_path / ".tmp-step-1"
    (temp / "nested").mkdir(parents=True)
    (temp / "state.json").write_text("{}")
    (temp / "nested" / "weights").write_bytes(b"w")
    publish_folder(temp, tmp_path / "step-1")
    assert (tmp_path / "step-1" / "nested" / "weights").read_bytes() == b"w" and not temp.exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(OSError):
        publish_folder(tmp_path / "other", tmp_path / "step-1")
