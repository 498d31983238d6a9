"""Watch mode on real folders: real file-system events, batched and filtered like a walk."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lampstand.indexer.sources import SourceOptions
from lampstand.indexer.watch import ChangeBatch, awatch_sources, watch_sources

PROBE = "ready.md"


def write(path: Path, text: str = "hello\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class Watcher:
    """`watch_sources` running in a thread, its batches in a queue."""

    def __init__(self, roots: list[Path], options: SourceOptions, debounce_ms: int) -> None:
        self.roots = roots
        self.batches: queue.Queue[ChangeBatch] = queue.Queue()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(options, debounce_ms), daemon=True)

    def _run(self, options: SourceOptions, debounce_ms: int) -> None:
        try:
            watch_sources(self.roots, options, self.batches.put, debounce_ms=debounce_ms,
                          stop=self.stop)
        except Exception as exc:  # noqa: BLE001 -- reported to the test through `errors`
            self.errors.append(exc)

    def start(self) -> None:
        """Start watching, and return once an event under the first root has come through."""
        self.thread.start()
        deadline = time.monotonic() + 10
        for attempt in range(1000):
            write(self.roots[0] / PROBE, f"probe {attempt}\n")
            try:
                if PROBE in self.batches.get(timeout=0.2).changed:
                    break
            except queue.Empty:
                assert not self.errors, self.errors
            assert time.monotonic() < deadline, "the watcher never reported an event"
        self.drain()

    def next(self, timeout: float = 5) -> ChangeBatch:
        try:
            return self.batches.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no batch within {timeout}s; errors: {self.errors}") from None

    def drain(self, quiet: float = 0.3) -> list[ChangeBatch]:
        """The batches that arrive until none has for `quiet` seconds."""
        found = []
        while True:
            try:
                found.append(self.batches.get(timeout=quiet))
            except queue.Empty:
                return found

    def close(self) -> float:
        """Stop the watch; how long the loop took to end."""
        began = time.monotonic()
        self.stop.set()
        self.thread.join(timeout=10)
        return time.monotonic() - began


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    write(folder / "a.md", "# A\n")
    write(folder / "old" / "x.md")
    write(folder / "old" / "deep" / "y.md")
    write(folder / ".gitignore", "build/\n*.log\n")
    return folder


@pytest.fixture()
def watching(root: Path) -> Iterator[Watcher]:
    watcher = Watcher([root], SourceOptions(exclude=("private/",)), debounce_ms=2000)
    watcher.start()
    yield watcher
    watcher.close()
    assert not watcher.errors


def test_a_burst_of_writes_is_one_batch(root: Path, watching: Watcher) -> None:
    for i in range(30):
        write(root / "burst" / f"{i:02}.md", f"note {i}\n")
    for i in range(5):
        write(root / "a.md", f"# A, edit {i}\n")
    batch = watching.next()
    assert batch.root == root
    assert batch.changed == ("a.md", *(f"burst/{i:02}.md" for i in range(30)))
    assert (batch.deleted, batch.deleted_folders, batch.rescan) == ((), (), False)
    assert watching.drain() == []


def test_files_a_walk_would_skip_do_not_trigger(root: Path, watching: Watcher) -> None:
    write(root / ".draft.md")  # hidden
    write(root / ".cache" / "c.md")  # below a hidden folder
    write(root / "build" / "out.py")  # gitignored folder
    write(root / "debug.log")  # gitignored name
    write(root / "private" / "diary.md")  # excluded
    write(root / "image.png")  # unknown extension
    write(root / "Makefile")
    (root / "a.md").unlink()
    (root / "a.md").mkdir()  # a folder where a file was: nothing to index in it
    assert watching.drain() == [ChangeBatch(root, deleted=("a.md",))]
    write(root / "kept.md")
    assert watching.next() == ChangeBatch(root, changed=("kept.md",))


def test_deleted_files_and_folders_are_reported(root: Path, watching: Watcher,
                                                tmp_path: Path) -> None:
    (root / "a.md").unlink()
    assert watching.next() == ChangeBatch(root, deleted=("a.md",))
    write(root / "brief.md")
    (root / "brief.md").unlink()  # created and removed within one burst
    assert watching.next() == ChangeBatch(root, deleted=("brief.md",))
    os.rename(root / "old", tmp_path / "moved")  # the system names only the folder
    assert watching.next() == ChangeBatch(root, deleted_folders=("old",))
    os.rename(tmp_path / "moved", root / "back")  # moved in: its files are found
    assert watching.next() == ChangeBatch(root, changed=("back/deep/y.md", "back/x.md"))
    shutil.rmtree(root / "back")
    batch = watching.next()
    assert batch.deleted_folders == ("back",)
    assert set(batch.deleted) <= {"back/x.md", "back/deep/y.md"}


def test_an_atomic_save_is_a_change(root: Path, watching: Watcher) -> None:
    write(root / ".a.md.swp", "# A, saved\n")
    os.replace(root / ".a.md.swp", root / "a.md")
    assert watching.next() == ChangeBatch(root, changed=("a.md",))


def test_a_changed_gitignore_asks_for_a_rescan(root: Path, watching: Watcher) -> None:
    write(root / "old" / ".gitignore", "x.md\n")
    assert watching.next() == ChangeBatch(root, rescan=True)
    write(root / "old" / "x.md", "now ignored\n")
    write(root / "old" / "z.md")
    assert watching.next() == ChangeBatch(root, changed=("old/z.md",))
    write(root / "build" / ".gitignore", "")  # inside an ignored folder: not read by a walk
    assert watching.drain() == []


def test_each_root_gets_its_own_batch(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    write(second / "s.md")
    watcher = Watcher([first, second / "s.md"], SourceOptions(), debounce_ms=2000)
    watcher.start()
    write(first / "f.md")
    write(second / "s.md", "edited\n")
    write(second / "other.md")  # beside a file root: not watched
    found = {b.root: b for b in watcher.drain()}
    assert found == {first: ChangeBatch(first, changed=("f.md",)),
                     second: ChangeBatch(second, changed=("s.md",))}
    watcher.close()


def test_the_stop_event_ends_the_loop_promptly(root: Path) -> None:
    watcher = Watcher([root], SourceOptions(), debounce_ms=5000)
    watcher.start()
    assert watcher.close() < 1
    assert not watcher.thread.is_alive() and not watcher.errors


def test_roots_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        watch_sources([tmp_path / "nowhere"], SourceOptions(), print)


def test_the_debounce_must_be_positive(root: Path) -> None:
    with pytest.raises(ValueError, match="debounce_ms"):
        watch_sources([root], SourceOptions(), print, debounce_ms=0)


def test_the_async_variant_yields_batches_until_stopped(root: Path) -> None:
    async def scenario() -> list[ChangeBatch]:
        stop = asyncio.Event()
        found: list[ChangeBatch] = []

        async def edit() -> None:
            while not found:  # until the watcher is listening and has seen an edit
                write(root / "a.md", "# A, again\n")
                await asyncio.sleep(0.2)
            (root / "a.md").unlink()
            await asyncio.sleep(1)
            stop.set()

        editing = asyncio.create_task(edit())
        async for batch in awatch_sources([root], SourceOptions(), debounce_ms=300, stop=stop):
            found.append(batch)
        await editing
        return found

    batches = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert set(batches) >= {ChangeBatch(root, changed=("a.md",)),
                            ChangeBatch(root, deleted=("a.md",))}
    assert batches[-1] == ChangeBatch(root, deleted=("a.md",))
