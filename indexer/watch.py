"""Watch mode: which indexed files changed on disk, reported in debounced batches.

`watch_sources` listens for file-system events under the roots (through `watchfiles`),
groups a burst of them into one batch, keeps only the paths a walk of the roots would pick
(the rules of `sources.SourceRules`: hidden names, `.gitignore`, exclude and include globs,
known extensions) and hands each batch to a callback as root-relative paths. `awatch_sources`
is the same as an async iterator.

A path is reported by what is on disk when its batch is made, not by the order of its
events: a file written and then removed within one burst is `deleted`, a file replaced by a
rename (an editor's atomic save) is `changed`. A folder moved into a root is reported as the
files found in it; a folder moved away or removed is reported once in `deleted_folders`,
since the system may name only the folder. A change to a `.gitignore` sets `rescan`: which
files belong to the index may have changed anywhere below it.

Changed files are judged by name and place only; reading them (`SourceRules.load`) applies
the content checks (size, binary, UTF-8, PDF text), and a changed file that fails them should
leave the index like a deleted one. This module never reads file contents, chunks or
stores anything.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles

from .sources import SourceOptions, SourceRules, file_type

__all__ = ["ChangeBatch", "awatch_sources", "watch_sources"]

DEFAULT_DEBOUNCE_MS = 500
_STEP_MS = 50  # a burst ends after this long without events

Changes = Iterable[tuple[watchfiles.Change, str]]
Events = dict[Path, set[watchfiles.Change]]
"""The kinds of event seen for each path in one burst."""


@dataclass(frozen=True)
class ChangeBatch:
    """What changed under one root in one burst of events; paths root-relative, sorted.

    `changed` files are new or modified; `deleted` files are gone; everything indexed at or
    below a path in `deleted_folders` is gone; `rescan` means a `.gitignore` changed, so the
    whole root should be scanned again.
    """

    root: Path
    changed: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    deleted_folders: tuple[str, ...] = ()
    rescan: bool = False

    def __bool__(self) -> bool:
        return bool(self.changed or self.deleted or self.deleted_folders or self.rescan)


@dataclass
class _Found:
    """The paths of one root's batch, as they are sorted."""

    changed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)  # folders

    def batch(self, root: Path, rescan: bool) -> ChangeBatch:
        """The batch, each folder gone reported once (not those inside another)."""
        gone = {f for f in self.gone if not any(f.startswith(g + "/") for g in self.gone)}
        return ChangeBatch(root, changed=_sorted(self.changed), deleted=_sorted(self.deleted),
                           deleted_folders=_sorted(gone), rescan=rescan)


class _FolderRoot:
    """One watched root folder: its rules and the folders a walk of it enters."""

    def __init__(self, root: Path, options: SourceOptions) -> None:
        self.root = root
        self.rules = SourceRules(root, options)
        self.folders: set[str] = set()
        self._scan(root)

    def owns(self, path: Path) -> bool:
        return self.root in path.parents

    def batch(self, events: Events) -> ChangeBatch:
        """The batch for one burst of events under this root."""
        rescan = self._ignore_files_changed(events)
        found = _Found()
        for path, kinds in events.items():
            self._judge(path, kinds, found)
        self._forget(found.gone)
        return found.batch(self.root, rescan)

    def _judge(self, path: Path, kinds: set[watchfiles.Change], found: _Found) -> None:
        """Sort one path by what is at it now and what it was."""
        rel = self.rules.relative(path)
        is_dir = path.is_dir() and not path.is_symlink()
        if rel in self.folders and not is_dir:
            found.gone.add(rel)
        wanted = self.rules.skip_reason(path) is None
        if not is_dir:
            if wanted:
                (found.changed if os.path.lexists(path) else found.deleted).add(rel)
            return
        if watchfiles.Change.deleted in kinds and wanted:
            found.deleted.add(rel)  # a file replaced by a folder of the same name
        if watchfiles.Change.added in kinds and self._entered(path):
            self.folders.add(rel)
            found.changed |= self._scan(path)

    def _ignore_files_changed(self, events: Events) -> bool:
        """Whether a `.gitignore` the walk reads changed; if so, the rules start afresh."""
        if not self.rules.options.use_gitignore:
            return False
        touched = [p for p in events if p.name == ".gitignore"]
        if not any(p.parent == self.root or self._entered(p.parent) for p in touched):
            return False
        self.rules.forget_ignores()
        self.folders.clear()
        self._scan(self.root)
        return True

    def _entered(self, folder: Path) -> bool:
        return self.rules.skip_reason(folder, is_dir=True) is None

    def _scan(self, folder: Path) -> set[str]:
        """The candidate files under an entered folder, recording the folders entered."""
        files: set[str] = set()
        for here, dirs, names in os.walk(folder):
            base = Path(here)
            dirs[:] = [d for d in dirs if self._entered(base / d)]
            self.folders.update(self.rules.relative(base / d) for d in dirs)
            files.update(self.rules.relative(base / n) for n in names
                         if self.rules.skip_reason(base / n) is None)
        return files

    def _forget(self, gone: set[str]) -> None:
        prefixes = tuple(g + "/" for g in gone)
        self.folders = {f for f in self.folders if f not in gone and not f.startswith(prefixes)}


class _FileRoot:
    """A single file given as a root: only its own events count, judged by its extension."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.known = file_type(path.name) is not None

    def owns(self, path: Path) -> bool:
        return path == self.path

    def batch(self, events: Events) -> ChangeBatch:
        """Its own change, if its extension is one the indexer reads."""
        root, name = self.path.parent, self.path.name
        if not self.known:
            return ChangeBatch(root)
        if os.path.lexists(self.path):
            return ChangeBatch(root, changed=(name,))
        return ChangeBatch(root, deleted=(name,))


def _sorted(paths: set[str]) -> tuple[str, ...]:
    return tuple(sorted(paths))


class _Batcher:
    """Turns the raw event sets of `watchfiles` into one `ChangeBatch` per root touched."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]], options: SourceOptions) -> None:
        paths = [Path(r).expanduser().absolute() for r in roots]
        self.paths = paths
        self.roots: list[_FolderRoot | _FileRoot] = [
            _FileRoot(p) if p.is_file() else _FolderRoot(p, options) for p in paths
        ]

    def batches(self, changes: Changes) -> list[ChangeBatch]:
        """The non-empty batches for one raw set, in the order the roots were given."""
        by_root: dict[int, Events] = {}
        for change, raw in changes:
            path = Path(raw)
            owner = next((i for i, r in enumerate(self.roots) if r.owns(path)), None)
            if owner is not None:  # None: the root folder itself, or a path outside the roots
                by_root.setdefault(owner, {}).setdefault(path, set()).add(change)
        made = [self.roots[i].batch(by_root[i]) for i in sorted(by_root)]
        return [b for b in made if b]


def _check_debounce(debounce_ms: int) -> None:
    if debounce_ms < 1:
        raise ValueError(f"debounce_ms must be at least 1, got {debounce_ms}")


def watch_sources(
    roots: Iterable[str | os.PathLike[str]],
    options: SourceOptions,
    on_change: Callable[[ChangeBatch], None],
    *,
    debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    stop: threading.Event | None = None,
) -> None:
    """Call `on_change` with each batch of changes under the roots until `stop` is set.

    Events are grouped until none has arrived for 50 ms, or for at most `debounce_ms`
    while they keep coming. Only batches holding something are reported; an exception
    raised by `on_change` ends the watch. A root may be a file (its own changes only, by
    extension). The roots must exist when the watch starts; changes made while it starts
    (the roots' folders are listed first) may be missed, so scan once after starting.
    """
    _check_debounce(debounce_ms)
    batcher = _Batcher(roots, options)
    for changes in watchfiles.watch(
        *batcher.paths,
        watch_filter=None,
        debounce=debounce_ms,
        step=min(_STEP_MS, debounce_ms),
        stop_event=stop,
    ):
        for batch in batcher.batches(changes):
            on_change(batch)


async def awatch_sources(
    roots: Iterable[str | os.PathLike[str]],
    options: SourceOptions,
    *,
    debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[ChangeBatch]:
    """`watch_sources` as an async iterator of batches, ending when `stop` is set.

    The folder walks that judge new and removed folders run in a worker thread.
    """
    _check_debounce(debounce_ms)
    batcher = await asyncio.to_thread(_Batcher, list(roots), options)
    async for changes in watchfiles.awatch(
        *batcher.paths,
        watch_filter=None,
        debounce=debounce_ms,
        step=min(_STEP_MS, debounce_ms),
        stop_event=stop,
    ):
        for batch in await asyncio.to_thread(batcher.batches, changes):
            yield batch
