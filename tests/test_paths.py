"""Paths named by requests stay inside the configured roots and name regular files."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lampstand.plugins.errors import PathNotAllowed
from lampstand.plugins.paths import confine


@pytest.fixture()
def root(tmp_path: Path) -> Iterator[Path]:
    """A model root beside a secret, holding one of each kind of entry."""
    (tmp_path / "secret.gguf").write_bytes(b"secret")
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    (models / "model.gguf").write_bytes(b"GGUF")
    (models / "sub" / "adapter.gguf").write_bytes(b"GGUF")
    (models / "inside").symlink_to(models / "sub" / "adapter.gguf")
    (models / "outside").symlink_to(tmp_path / "secret.gguf")
    (models / "outside-dir").symlink_to(tmp_path)
    (models / "zero").symlink_to("/dev/zero")
    (models / "dangling").symlink_to(models / "nothing")
    os.mkfifo(models / "fifo")
    server = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(models)  # a short relative name keeps the socket path under the AF_UNIX limit
    try:
        server.bind("sock")
    finally:
        os.chdir(cwd)
    with server:
        yield models


REFUSED = {
    "empty": ("", "empty path"),
    "nul byte": ("model.gguf\0.txt", "NUL byte"),
    "absolute": ("{tmp}/secret.gguf", "absolute paths are not allowed"),
    "home": ("~/secret.gguf", "starts with '~'"),
    "dot-dot": ("../secret.gguf", "contains '..'"),
    "dot-dot inside": ("sub/../../secret.gguf", "contains '..'"),
    "symlink out of the root": ("outside", "leads outside the model roots"),
    "through a symlinked dir": ("outside-dir/secret.gguf", "leads outside the model roots"),
    "symlink to /dev/zero": ("zero", "leads outside the model roots"),
    "the root itself": (".", "names one of the model roots itself"),
    "fifo": ("fifo", "is a FIFO, not a regular file"),
    "socket": ("sock", "is a socket, not a regular file"),
    "directory": ("sub", "is a directory, not a regular file"),
    "missing": ("missing.gguf", "was not found under the model roots"),
    "dangling symlink": ("dangling", "was not found under the model roots"),
    "file as a directory": ("model.gguf/x", "was not found under the model roots"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_refused_paths_never_reveal_where_files_live(root: Path, tmp_path: Path, name: str) -> None:
    user_path, reason = REFUSED[name]
    with pytest.raises(PathNotAllowed, match=reason) as caught:
        confine(user_path.format(tmp=tmp_path), [root])
    assert caught.value.status_code == 400 and caught.value.code == "path_not_allowed"
    for secret in {str(tmp_path), str(tmp_path.resolve())}:
        assert secret not in caught.value.message


def test_files_and_symlinks_within_the_root_resolve(root: Path) -> None:
    assert confine("model.gguf", [root]) == (root / "model.gguf").resolve()
    assert confine("./sub//adapter.gguf", [root]) == (root / "sub" / "adapter.gguf").resolve()
    assert confine("inside", [root]) == (root / "sub" / "adapter.gguf").resolve()


def test_directories_only_when_allowed(root: Path) -> None:
    assert confine("sub", [root], allow_dirs=True) == (root / "sub").resolve()
    with pytest.raises(PathNotAllowed, match="is a FIFO, not a regular file or a directory"):
        confine("fifo", [root], allow_dirs=True)


def test_roots_are_tried_in_order(root: Path, tmp_path: Path) -> None:
    second = tmp_path / "more-models"
    second.mkdir()
    (second / "model.gguf").write_bytes(b"GGUF")
    (second / "extra.gguf").write_bytes(b"GGUF")
    roots = [tmp_path / "not-there", root, second]
    assert confine("model.gguf", roots) == (root / "model.gguf").resolve()
    assert confine("extra.gguf", roots) == (second / "extra.gguf").resolve()


def test_no_roots_refuse_everything() -> None:
    with pytest.raises(PathNotAllowed, match="no model roots are configured"):
        confine("model.gguf", [])


def test_long_paths_are_quoted_short(root: Path) -> None:
    with pytest.raises(PathNotAllowed, match="was not found") as caught:
        confine("x" * 5000, [root])
    assert len(caught.value.message) < 300
