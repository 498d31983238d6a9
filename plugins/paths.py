"""Confines a path a request names (a model file, an adapter, an upload) to the configured roots.

A request may only name a path relative to a root, without `..`, `~` or NUL bytes. The path
is resolved under each root in turn; the first root where it exists decides, and the resolved
path must still lie inside that root (symlinks are followed, so one pointing out of the root
is refused) and be a regular file, or a directory when asked for. The file is checked with
`os.stat`, never opened: opening a FIFO would block.

Error messages quote only the request's own string, shortened, never a resolved path or a
root's location. The check describes the filesystem as it is now; a caller that opens the
path later should still open it without blocking and check what it got.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePath

from .errors import PathNotAllowed

__all__ = ["confine", "confine_absolute"]

_QUOTE_CHARS = 200
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def confine(user_path: str, roots: Sequence[Path], *, allow_dirs: bool = False, what: str = "model roots") -> Path:
    """The resolved absolute path `user_path` names under the first root where it exists.

    Raises `PathNotAllowed` (400) for a path of a refused form, one that leads out of its
    root, one found under no root, or one that is not a regular file (nor, with
    `allow_dirs`, a directory). `what` names the roots in messages.
    """
    if not roots:
        raise PathNotAllowed(f"path {_quote(user_path)} is not allowed: no {what} are configured")
    relative = _relative(user_path, what)
    for root in roots:
        try:
            base = Path(root).resolve(strict=True)
            found = (base / relative).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a file on the way, unreadable, a symlink loop
            continue
        if not found.is_relative_to(base):
            raise PathNotAllowed(f"path {_quote(user_path)} leads outside the {what}")
        if found == base:
            raise PathNotAllowed(f"path {_quote(user_path)} names one of the {what} itself, not a path inside it")
        _require_kind(user_path, found, allow_dirs, what)
        return found
    raise PathNotAllowed(f"path {_quote(user_path)} was not found under the {what}")


def confine_absolute(user_path: str, roots: Sequence[Path], what: str = "source roots") -> Path:
    """The resolved absolute `user_path` (a file or a directory), which must lie inside a root.

    For paths a user names on their own machine (a folder to index): absolute, or starting
    with `~`, is expected here. Raises `PathNotAllowed` (400) when it is missing, outside every
    root (symlinks followed), or a special file.
    """
    if not user_path or "\0" in user_path:
        raise PathNotAllowed(f"path {_quote(user_path)} is empty or contains a NUL byte")
    path = Path(user_path).expanduser()
    if not path.is_absolute():
        raise PathNotAllowed(f"path {_quote(user_path)} is relative; name an absolute path")
    try:
        found = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise PathNotAllowed(f"path {_quote(user_path)} cannot be resolved") from None
    if not roots:
        raise PathNotAllowed(f"no {what} are configured, so no path {_quote(user_path)} is allowed; list the "
                             "folders in the server's configuration")
    if not any(found.is_relative_to(Path(root).resolve()) for root in roots):  # before any existence check
        raise PathNotAllowed(f"path {_quote(user_path)} is outside the configured {what}")
    if not found.exists():
        raise PathNotAllowed(f"path {_quote(user_path)} was not found")
    _require_kind(user_path, found, allow_dirs=True, what=what)
    return found


def _quote(user_path: str) -> str:
    """The request's own string, shortened, for an error message."""
    if len(user_path) <= _QUOTE_CHARS:
        return repr(user_path)
    return repr(user_path[:_QUOTE_CHARS]) + "..."


def _relative(user_path: str, what: str) -> PurePath:
    """`user_path` as a path relative to a root; the forms never accepted are refused here."""
    if not user_path:
        raise PathNotAllowed("an empty path names no file")
    if "\0" in user_path:
        raise PathNotAllowed(f"path {_quote(user_path)} contains a NUL byte")
    path = PurePath(user_path)
    if path.is_absolute():  # not quoted: the request's absolute path is no business of the reply
        raise PathNotAllowed(f"absolute paths are not allowed; name a path relative to the {what}")
    if user_path.startswith("~"):
        raise PathNotAllowed(f"path {_quote(user_path)} starts with '~', which is not expanded; "
                             f"name a path relative to the {what}")
    if ".." in path.parts:
        raise PathNotAllowed(f"path {_quote(user_path)} contains '..'; name a path inside the {what}")
    return path


def _require_kind(user_path: str, found: Path, allow_dirs: bool, what: str = "roots") -> None:
    """Refuse anything but a regular file (or a directory, if allowed), without opening it."""
    try:
        mode = os.stat(found).st_mode
    except OSError:  # gone since it was resolved
        raise PathNotAllowed(f"path {_quote(user_path)} was not found under the {what}") from None
    if stat.S_ISREG(mode) or (allow_dirs and stat.S_ISDIR(mode)):
        return
    kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
    wanted = "a regular file or a directory" if allow_dirs else "a regular file"
    raise PathNotAllowed(f"path {_quote(user_path)} is {kind}, not {wanted}")
