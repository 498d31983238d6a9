"""Which files under the indexed roots are worth chunking, and why the others are not.

Walks one or more root folders and yields `SourceFile`s (decoded UTF-8 text with the
language and chunk kind picked from the file extension). Every file that is passed over is
counted under a `SkipReason`; a folder that is pruned without being entered (hidden,
ignored, excluded, or a symlink) is counted once, separately from files.

Rules, in the order they are applied:

- hidden names (starting with `.`) are skipped unless `include_hidden` is set;
- symlinks whose target lies outside the root are skipped; symlinked folders inside the root
  are not entered, since their files are reached through their real path;
- `.gitignore` files are honoured at every level (gitignore semantics through `pathspec`,
  a deeper file overriding a shallower one); ignore files above the root and
  `.git/info/exclude` are not read;
- `exclude` globs (gitignore syntax, relative to the root) prune files and folders; when
  `include` globs are given, a file must match one of them;
- unknown extensions, files over `max_bytes`, binary files (a NUL byte in the first 8 KiB),
  files that are not valid UTF-8, unreadable files, and files already yielded under another
  path (overlapping roots) are skipped;
- PDFs are read for their text (see `indexer.pdf`, one `PAGE_BREAK` line between pages) under
  their own caps, `max_pdf_bytes` and `max_pdf_pages` (over either: too large); a PDF the
  parser fails on is unreadable, one that needs a password is encrypted.

`SourceRules` applies the same rules to one path at a time, for callers that learn about
files one by one (watch mode): whether a walk would pick a path, and loading it if so.

This module reads files and never chunks, embeds or stores them.
"""

from __future__ import annotations

import enum
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pathspec import GitIgnoreSpec

from .chunks import ChunkKind
from .pdf import (
    DEFAULT_MAX_PDF_BYTES,
    DEFAULT_MAX_PDF_PAGES,
    PdfEncrypted,
    PdfTooLong,
    PdfUnreadable,
    pdf_text,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "LANGUAGES",
    "FileType",
    "SkipCounts",
    "SkipReason",
    "SourceFile",
    "SourceOptions",
    "SourceRules",
    "SourceScan",
    "file_type",
    "is_candidate",
    "iter_sources",
    "scan_sources",
]

DEFAULT_MAX_BYTES = 2 * 1024 * 1024
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class FileType:
    """What a file extension means to the chunker: its language and chunk kind."""

    language: str
    kind: ChunkKind


def _types(kind: ChunkKind, language: str, *extensions: str) -> dict[str, FileType]:
    return {ext: FileType(language, kind) for ext in extensions}


LANGUAGES: dict[str, FileType] = {
    **_types("markdown", "markdown", ".md", ".markdown"),
    **_types("text", "text", ".txt"),
    **_types("rst", "rst", ".rst"),
    **_types("code", "python", ".py", ".pyi"),
    **_types("code", "javascript", ".js", ".mjs", ".cjs", ".jsx"),
    **_types("code", "typescript", ".ts"),
    **_types("code", "tsx", ".tsx"),
    **_types("code", "go", ".go"),
    **_types("code", "rust", ".rs"),
    **_types("code", "java", ".java"),
    **_types("code", "c", ".c", ".h"),
    **_types("code", "cpp", ".cc", ".cpp", ".cxx", ".hpp", ".hh"),
    **_types("code", "bash", ".sh", ".bash"),
    **_types("pdf", "pdf", ".pdf"),
}
"""File extension (lower case, with the dot) to language and chunk kind."""


def file_type(name: str) -> FileType | None:
    """The language and kind of a file name, or None when the extension is unknown."""
    return LANGUAGES.get(os.path.splitext(name)[1].lower())


class SkipReason(str, enum.Enum):
    """Why a file (or a pruned folder) was not indexed."""

    HIDDEN = "hidden"
    GITIGNORED = "gitignored"
    EXCLUDED = "excluded"
    NOT_INCLUDED = "not_included"
    SYMLINK_OUTSIDE = "symlink_outside"
    DUPLICATE = "duplicate"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    BINARY = "binary"
    NOT_UTF8 = "not_utf8"
    UNREADABLE = "unreadable"
    ENCRYPTED = "encrypted"


@dataclass
class SkipCounts:
    """Skipped files and pruned folders, counted by reason."""

    files: Counter[SkipReason] = field(default_factory=Counter)
    dirs: Counter[SkipReason] = field(default_factory=Counter)

    def add(self, reason: SkipReason, *, is_dir: bool = False) -> None:
        """Count one skipped file, or one folder that was not entered."""
        (self.dirs if is_dir else self.files)[reason] += 1

    @property
    def total_files(self) -> int:
        """How many files were skipped, whatever the reason."""
        return sum(self.files.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Plain counts for logs and JSON: `{"files": {"binary": 2}, "dirs": {...}}`."""
        return {
            "files": {r.value: n for r, n in sorted(self.files.items())},
            "dirs": {r.value: n for r, n in sorted(self.dirs.items())},
        }


@dataclass(frozen=True)
class SourceOptions:
    """How to choose files: include/exclude globs (gitignore syntax), size caps, hidden."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    use_gitignore: bool = True
    include_hidden: bool = False
    max_pdf_bytes: int = DEFAULT_MAX_PDF_BYTES
    max_pdf_pages: int = DEFAULT_MAX_PDF_PAGES


@dataclass(frozen=True)
class SourceFile:
    """One file to index: where it is, what it is, and its decoded (or extracted) text."""

    root: Path
    path: Path
    rel_path: str  # relative to `root`, `/`-separated
    language: str
    kind: ChunkKind
    size: int
    text: str = field(repr=False)


@dataclass
class SourceScan:
    """The result of `scan_sources`: the files to index and what was skipped."""

    files: list[SourceFile]
    skipped: SkipCounts


@dataclass(frozen=True)
class _Ignore:
    """One `.gitignore`, with the root-relative folder its patterns are relative to."""

    prefix: str  # "" or "sub/dir/"
    spec: GitIgnoreSpec

    def verdict(self, rel: str) -> bool | None:
        """True: ignored, False: re-included by `!`, None: no pattern here matched."""
        if not rel.startswith(self.prefix):
            return None
        return self.spec.check_file(rel[len(self.prefix) :]).include


def _spec(lines: Iterable[str]) -> GitIgnoreSpec:
    return GitIgnoreSpec.from_lines(list(lines))


@dataclass(frozen=True)
class _Globs:
    """The options' rules that look at a root-relative path alone: ignores, excludes, includes."""

    options: SourceOptions
    include: GitIgnoreSpec | None
    exclude: GitIgnoreSpec

    @classmethod
    def of(cls, options: SourceOptions) -> _Globs:
        include = _spec(options.include) if options.include else None
        return cls(options, include, _spec(options.exclude))

    def reason(self, rel: str, ignores: list[_Ignore], *, is_dir: bool) -> SkipReason | None:
        """Why `rel` is ignored, excluded or (a file) not included; None if it is wanted."""
        key = rel + "/" if is_dir else rel
        if self.options.use_gitignore and _is_ignored(ignores, key):
            return SkipReason.GITIGNORED
        if self.exclude.match_file(key):
            return SkipReason.EXCLUDED
        if not is_dir and self.include is not None and not self.include.match_file(rel):
            return SkipReason.NOT_INCLUDED
        return None


@dataclass
class _Walk:
    """The state of one root's walk."""

    root: Path
    real_root: Path
    options: SourceOptions
    skipped: SkipCounts
    seen: set[Path]
    globs: _Globs


def _read_ignore(folder: Path, prefix: str) -> _Ignore | None:
    try:
        lines = (folder / ".gitignore").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return _Ignore(prefix, _spec(lines.splitlines()))


def _is_ignored(ignores: list[_Ignore], rel: str) -> bool:
    for ignore in reversed(ignores):  # the deepest .gitignore decides first
        verdict = ignore.verdict(rel)
        if verdict is not None:
            return verdict
    return False


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _symlink_reason(path: str, real_root: Path, *, is_dir: bool) -> SkipReason | None:
    """Why a symlink is passed over: a folder link is never entered, a file link may not leave."""
    inside = _is_within(Path(path).resolve(), real_root)
    if is_dir:
        return SkipReason.DUPLICATE if inside else SkipReason.SYMLINK_OUTSIDE
    return None if inside else SkipReason.SYMLINK_OUTSIDE


def _pruned_dir_reason(walk: _Walk, entry: os.DirEntry[str], rel: str,
                       ignores: list[_Ignore]) -> SkipReason | None:
    if entry.is_symlink():
        return _symlink_reason(entry.path, walk.real_root, is_dir=True)
    return walk.globs.reason(rel, ignores, is_dir=True)


def _selection_reason(walk: _Walk, entry: os.DirEntry[str], rel: str,
                      ignores: list[_Ignore]) -> SkipReason | None:
    """Why a file is not wanted, judged by its name and place alone."""
    if entry.is_symlink():
        reason = _symlink_reason(entry.path, walk.real_root, is_dir=False)
        if reason is not None:
            return reason
    return walk.globs.reason(rel, ignores, is_dir=False)


def _decode(data: bytes) -> str | SkipReason:
    if b"\0" in data[:_SNIFF_BYTES]:
        return SkipReason.BINARY
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return SkipReason.NOT_UTF8


_PDF_PROBLEMS = {
    PdfUnreadable: SkipReason.UNREADABLE,
    PdfEncrypted: SkipReason.ENCRYPTED,
    PdfTooLong: SkipReason.TOO_LARGE,
}


def _extract_pdf(data: bytes, options: SourceOptions) -> str | SkipReason:
    try:
        return pdf_text(data, options.max_pdf_pages)
    except (PdfUnreadable, PdfEncrypted, PdfTooLong) as problem:
        return _PDF_PROBLEMS[type(problem)]


def _load(walk: _Walk, path: Path, rel: str, ftype: FileType) -> SourceFile | SkipReason:
    """Read, size-check, sniff and decode (or, a PDF, extract) one selected file."""
    is_pdf = ftype.kind == "pdf"
    try:
        real = path.resolve(strict=True)
        size = real.stat().st_size
        if size > (walk.options.max_pdf_bytes if is_pdf else walk.options.max_bytes):
            return SkipReason.TOO_LARGE
        data = real.read_bytes()
    except OSError:
        return SkipReason.UNREADABLE
    text = _extract_pdf(data, walk.options) if is_pdf else _decode(data)
    if isinstance(text, SkipReason):
        return text
    if real in walk.seen:
        return SkipReason.DUPLICATE
    walk.seen.add(real)
    return SourceFile(walk.root, path, rel, ftype.language, ftype.kind, size, text)


def _entries(folder: Path, walk: _Walk) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        walk.skipped.add(SkipReason.UNREADABLE, is_dir=True)
        return []


def _walk_folder(walk: _Walk, folder: Path, prefix: str,
                 ignores: list[_Ignore]) -> Iterator[SourceFile]:
    here = _read_ignore(folder, prefix) if walk.options.use_gitignore else None
    ignores = ignores + [here] if here else ignores
    for entry in _entries(folder, walk):
        rel = prefix + entry.name
        if entry.name.startswith(".") and not walk.options.include_hidden:
            walk.skipped.add(SkipReason.HIDDEN, is_dir=entry.is_dir())
        elif entry.is_dir():
            reason = _pruned_dir_reason(walk, entry, rel, ignores)
            if reason is not None:
                walk.skipped.add(reason, is_dir=True)
            else:
                yield from _walk_folder(walk, Path(entry.path), rel + "/", ignores)
        else:
            yield from _visit_file(walk, entry, rel, ignores)


def _examine(walk: _Walk, entry: os.DirEntry[str], rel: str,
             ignores: list[_Ignore]) -> SourceFile | SkipReason:
    """The file to index at this entry, or why there is none."""
    if not entry.is_file():  # a broken symlink, socket, fifo or device
        return SkipReason.UNREADABLE if entry.is_symlink() else SkipReason.UNKNOWN_TYPE
    reason = _selection_reason(walk, entry, rel, ignores)
    if reason is not None:
        return reason
    ftype = file_type(entry.name)
    if ftype is None:
        return SkipReason.UNKNOWN_TYPE
    return _load(walk, Path(entry.path), rel, ftype)


def _visit_file(walk: _Walk, entry: os.DirEntry[str], rel: str,
                ignores: list[_Ignore]) -> Iterator[SourceFile]:
    found = _examine(walk, entry, rel, ignores)
    if isinstance(found, SourceFile):
        yield found
    else:
        walk.skipped.add(found)


def _named_file(walk: _Walk, path: Path) -> Iterator[SourceFile]:
    """A file given as a root: wanted by name, so only its type and content are checked."""
    ftype = file_type(path.name)
    found = _load(walk, path, path.name, ftype) if ftype else SkipReason.UNKNOWN_TYPE
    if isinstance(found, SourceFile):
        yield found
    else:
        walk.skipped.add(found)


def iter_sources(
    roots: Iterable[str | os.PathLike[str]],
    options: SourceOptions | None = None,
    skipped: SkipCounts | None = None,
) -> Iterator[SourceFile]:
    """Yield the files to index under each root, in a stable (sorted) order.

    A root may be a single file: named explicitly, it is only checked for its type, size
    and content (hidden, ignore and include/exclude rules are for what a walk finds), and
    its `rel_path` is its name.

    Skips are added to `skipped` as the walk goes; pass a `SkipCounts` to read them after
    the iterator is exhausted, or use `scan_sources` to get both at once.
    """
    options = options or SourceOptions()
    counts = skipped if skipped is not None else SkipCounts()
    globs = _Globs.of(options)
    seen: set[Path] = set()
    for root in roots:
        root_path = Path(root).expanduser().absolute()
        folder = root_path.parent if root_path.is_file() else root_path
        walk = _Walk(folder, folder.resolve(), options, counts, seen, globs)
        if root_path.is_file():
            yield from _named_file(walk, root_path)
        else:
            yield from _walk_folder(walk, root_path, "", [])


def scan_sources(
    roots: Iterable[str | os.PathLike[str]], options: SourceOptions | None = None
) -> SourceScan:
    """All files to index under the roots, with the skip counts (texts held in memory)."""
    skipped = SkipCounts()
    files = list(iter_sources(roots, options, skipped))
    return SourceScan(files, skipped)


class SourceRules:
    """The walk's rules for one root folder, applied to one path at a time.

    For callers that hear about files one by one (watch mode): `skip_reason` says why a walk
    of the root would pass over a path by its name and place alone (hidden names, symlinks
    while the path still exists, `.gitignore` files from the root down, exclude and include
    globs, the extension), so it also answers for paths that were just deleted; `load`
    reads a path with the walk's content checks as well. `.gitignore` files are read once
    and kept: call `forget_ignores` after one changes.
    """

    def __init__(self, root: str | os.PathLike[str], options: SourceOptions | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self.options = options or SourceOptions()
        self._real_root = self.root.resolve()
        self._globs = _Globs.of(self.options)
        self._ignores: dict[str, _Ignore | None] = {}

    def relative(self, path: str | os.PathLike[str]) -> str:
        """`path` relative to the root, `/`-separated; ValueError unless it lies below it."""
        rel = Path(path).expanduser().absolute().relative_to(self.root)
        if not rel.parts:
            raise ValueError(f"{path} is the root itself, not a path below it")
        return rel.as_posix()

    def skip_reason(self, path: str | os.PathLike[str], *, is_dir: bool = False) -> SkipReason | None:
        """Why a walk would not pick `path` (or, with `is_dir`, not enter it); None if it would.

        Content is not looked at: a picked file may still be too large, binary or not UTF-8.
        """
        parts = self.relative(path).split("/")
        ignores: list[_Ignore] = []
        for depth, name in enumerate(parts):
            ignores = self._with_ignore("".join(p + "/" for p in parts[:depth]), ignores)
            folder = is_dir or depth < len(parts) - 1
            reason = self._entry_reason(name, "/".join(parts[: depth + 1]), ignores, folder)
            if reason is not None:
                return reason
        if not is_dir and file_type(parts[-1]) is None:
            return SkipReason.UNKNOWN_TYPE
        return None

    def load(self, path: str | os.PathLike[str]) -> SourceFile | SkipReason:
        """The file at `path` as a walk of the root would yield it, or why it would not."""
        reason = self.skip_reason(path)
        if reason is not None:
            return reason
        rel = self.relative(path)
        full = self.root / rel
        if not full.is_file():  # gone, a broken symlink, or a fifo that must not be read
            return SkipReason.UNKNOWN_TYPE if full.exists() else SkipReason.UNREADABLE
        ftype = file_type(full.name)
        if ftype is None:
            return SkipReason.UNKNOWN_TYPE
        walk = _Walk(self.root, self._real_root, self.options, SkipCounts(), set(), self._globs)
        return _load(walk, full, rel, ftype)

    def forget_ignores(self) -> None:
        """Drop the `.gitignore` files read so far; they are read again when next needed."""
        self._ignores.clear()

    def _with_ignore(self, prefix: str, ignores: list[_Ignore]) -> list[_Ignore]:
        """`ignores` plus the `.gitignore` of the folder at `prefix`, if it has one."""
        if not self.options.use_gitignore:
            return ignores
        if prefix not in self._ignores:
            self._ignores[prefix] = _read_ignore(self.root / prefix, prefix)
        here = self._ignores[prefix]
        return ignores + [here] if here else ignores

    def _entry_reason(self, name: str, rel: str, ignores: list[_Ignore],
                      is_dir: bool) -> SkipReason | None:
        if name.startswith(".") and not self.options.include_hidden:
            return SkipReason.HIDDEN
        full = self.root / rel
        if full.is_symlink():
            reason = _symlink_reason(str(full), self._real_root, is_dir=is_dir)
            if reason is not None:
                return reason
        return self._globs.reason(rel, ignores, is_dir=is_dir)


def is_candidate(
    root: str | os.PathLike[str],
    path: str | os.PathLike[str],
    options: SourceOptions | None = None,
) -> bool:
    """Whether a walk of `root` would pick `path` by its name and place (see `SourceRules`)."""
    return SourceRules(root, options).skip_reason(path) is None
