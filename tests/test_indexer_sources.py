"""File discovery for the indexer: real trees on disk, every skip counted with its reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lampstand.indexer.sources import (
    SkipCounts,
    SkipReason,
    SourceFile,
    SourceOptions,
    SourceRules,
    file_type,
    is_candidate,
    iter_sources,
    scan_sources,
)


def write(root: Path, rel: str, content: str | bytes = "hello\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A notes-and-code folder with one case of every skip reason."""
    root = tmp_path / "root"
    write(root, "notes/a.md", "# A\n\ntext\n")
    write(root, "notes/b.txt")
    write(root, "docs/guide.rst", "Guide\n=====\n")
    write(root, "src/app.py", "def main():\n    pass\n")
    write(root, "src/lib.js", "function f() {}\n")
    write(root, "src/web/view.tsx", "export const V = () => null;\n")
    write(root, ".hidden.md")  # hidden file
    write(root, ".git/config")  # hidden folder, not entered
    write(root, ".gitignore", "build/\n*.log\nsecret.md\n*.txt\n")
    write(root, "build/out.py")  # folder ignored by the root .gitignore
    write(root, "debug.log")  # ignored by pattern
    write(root, "secret.md")  # ignored by name
    write(root, "sub/.gitignore", "!keep.txt\nlocal_*.py\n")  # nested: re-include, add
    write(root, "sub/keep.txt")  # re-included by the deeper .gitignore
    write(root, "sub/drop.txt")  # still ignored by the root .gitignore
    write(root, "sub/local_settings.py")  # ignored by the nested .gitignore
    write(root, "sub/deeper/local_x.py")  # nested patterns apply below their folder too
    write(root, "data.py", b"x = 1\n\x00\x01\x02")  # NUL byte: binary
    write(root, "latin1.md", "café\n".encode("latin-1"))  # not UTF-8
    write(root, "big.md", "word " * 400)  # 2000 bytes, over the test's cap
    write(root, "image.png", b"\x89PNG\r\n")  # unknown extension
    write(root, "Makefile", "all:\n")  # no extension
    outside = write(tmp_path, "outside/far.md", "# far\n")
    os.symlink(outside, root / "link_out.md")  # file symlink leaving the root
    os.symlink(outside.parent, root / "dir_out")  # folder symlink leaving the root
    os.symlink(root / "src", root / "src_alias")  # folder symlink inside: not entered
    os.symlink(root / "missing.md", root / "broken.md")  # dangling symlink
    return root


OPTIONS = SourceOptions(max_bytes=1000)

EXPECTED_FILE_SKIPS = {
    SkipReason.HIDDEN: 3,  # .hidden.md, .gitignore, sub/.gitignore
    SkipReason.GITIGNORED: 6,  # debug.log, secret.md, notes/b.txt, drop.txt, 2 local_*.py
    SkipReason.BINARY: 1,
    SkipReason.NOT_UTF8: 1,
    SkipReason.TOO_LARGE: 1,
    SkipReason.UNKNOWN_TYPE: 2,
    SkipReason.SYMLINK_OUTSIDE: 1,
    SkipReason.UNREADABLE: 1,
}
EXPECTED_DIR_SKIPS = {
    SkipReason.HIDDEN: 1,  # .git
    SkipReason.GITIGNORED: 1,  # build/
    SkipReason.SYMLINK_OUTSIDE: 1,  # dir_out
    SkipReason.DUPLICATE: 1,  # src_alias
}


def test_every_skip_is_counted_with_its_reason(tree: Path) -> None:
    scan = scan_sources([tree], OPTIONS)
    assert dict(scan.skipped.files) == EXPECTED_FILE_SKIPS
    assert dict(scan.skipped.dirs) == EXPECTED_DIR_SKIPS
    assert [f.rel_path for f in scan.files] == [
        "docs/guide.rst",
        "notes/a.md",
        "src/app.py",
        "src/lib.js",
        "src/web/view.tsx",
        "sub/keep.txt",
    ]


def test_files_carry_text_type_and_root_relative_paths(tree: Path) -> None:
    files = {f.rel_path: f for f in iter_sources([tree], OPTIONS)}
    app = files["src/app.py"]
    assert (app.language, app.kind) == ("python", "code")
    assert app.text == "def main():\n    pass\n"
    assert app.path == tree / "src" / "app.py"
    assert app.root == tree and app.size == len(app.text)
    assert (files["src/web/view.tsx"].language, files["docs/guide.rst"].kind) == ("tsx", "rst")


def test_iter_sources_fills_the_given_counter(tree: Path) -> None:
    skipped = SkipCounts()
    files = list(iter_sources([tree], OPTIONS, skipped))
    assert len(files) == 6
    assert skipped.total_files == sum(EXPECTED_FILE_SKIPS.values())
    assert skipped.as_dict()["dirs"]["gitignored"] == 1


@pytest.mark.parametrize(
    ("options", "found", "files", "dirs"),
    [
        (
            SourceOptions(include=("*.md",)),
            ["notes/a.md"],
            {SkipReason.NOT_INCLUDED: 8, SkipReason.NOT_UTF8: 1, SkipReason.TOO_LARGE: 1},
            {},
        ),
        (
            SourceOptions(include=("src/**/*.tsx", "docs/")),
            ["docs/guide.rst", "src/web/view.tsx"],  # `docs/` takes the folder's files
            {SkipReason.NOT_INCLUDED: 9},
            {},
        ),
        (
            SourceOptions(exclude=("src/",)),
            ["docs/guide.rst", "notes/a.md", "sub/keep.txt"],
            {},
            {SkipReason.EXCLUDED: 1},
        ),
        (
            SourceOptions(exclude=("*.py", "notes/a.md")),
            ["docs/guide.rst", "src/lib.js", "src/web/view.tsx", "sub/keep.txt"],
            {SkipReason.EXCLUDED: 3},  # app.py, data.py, notes/a.md
            {},
        ),
        (
            SourceOptions(use_gitignore=False, exclude=("*.txt", "local_*", "build/")),
            ["docs/guide.rst", "notes/a.md", "secret.md", "src/app.py", "src/lib.js",
             "src/web/view.tsx"],
            {SkipReason.EXCLUDED: 5, SkipReason.GITIGNORED: 0, SkipReason.UNKNOWN_TYPE: 3},
            {SkipReason.EXCLUDED: 1, SkipReason.GITIGNORED: 0},
        ),
    ],
    ids=["include-md", "include-nested-glob", "exclude-dir", "exclude-files", "no-gitignore"],
)
def test_include_and_exclude_globs(
    tree: Path,
    options: SourceOptions,
    found: list[str],
    files: dict[SkipReason, int],
    dirs: dict[SkipReason, int],
) -> None:
    options = SourceOptions(
        include=options.include,
        exclude=options.exclude,
        use_gitignore=options.use_gitignore,
        max_bytes=OPTIONS.max_bytes,
    )
    scan = scan_sources([tree], options)
    assert [f.rel_path for f in scan.files] == found
    for reason, count in files.items():
        assert scan.skipped.files[reason] == count
    for reason, count in dirs.items():
        assert scan.skipped.dirs[reason] == count


def test_hidden_files_can_be_included(tree: Path) -> None:
    scan = scan_sources([tree], SourceOptions(include_hidden=True, max_bytes=1000))
    assert ".hidden.md" in [f.rel_path for f in scan.files]
    assert scan.skipped.files[SkipReason.HIDDEN] == 0
    assert scan.skipped.dirs[SkipReason.HIDDEN] == 0  # .git is entered, its config unknown


def test_size_cap_defaults_to_two_mebibytes(tmp_path: Path) -> None:
    write(tmp_path, "fits.md", "x" * (2 * 1024 * 1024))
    write(tmp_path, "over.md", "x" * (2 * 1024 * 1024 + 1))
    scan = scan_sources([tmp_path])
    assert [f.rel_path for f in scan.files] == ["fits.md"]
    assert dict(scan.skipped.files) == {SkipReason.TOO_LARGE: 1}


def test_overlapping_roots_and_inner_symlinks_yield_each_file_once(tmp_path: Path) -> None:
    write(tmp_path, "notes/a.md")
    write(tmp_path, "notes/inner/b.md")
    os.symlink(tmp_path / "notes" / "a.md", tmp_path / "notes" / "z_alias.md")
    scan = scan_sources([tmp_path / "notes", tmp_path / "notes" / "inner"])
    assert [f.rel_path for f in scan.files] == ["a.md", "inner/b.md"]
    assert dict(scan.skipped.files) == {SkipReason.DUPLICATE: 2}  # alias, inner/b.md again


def test_a_utf8_bom_is_not_part_of_the_text(tmp_path: Path) -> None:
    write(tmp_path, "bom.md", "\ufeff# Title\n".encode("utf-8"))
    (only,) = scan_sources([tmp_path]).files
    assert only.text == "# Title\n"


@pytest.mark.parametrize(
    ("name", "language", "kind"),
    [
        ("a.md", "markdown", "markdown"),
        ("a.markdown", "markdown", "markdown"),
        ("a.txt", "text", "text"),
        ("a.rst", "rst", "rst"),
        ("a.py", "python", "code"),
        ("a.js", "javascript", "code"),
        ("a.mjs", "javascript", "code"),
        ("a.cjs", "javascript", "code"),
        ("a.jsx", "javascript", "code"),
        ("a.ts", "typescript", "code"),
        ("a.tsx", "tsx", "code"),
        ("a.go", "go", "code"),
        ("a.rs", "rust", "code"),
        ("A.JAVA", "java", "code"),
        ("a.c", "c", "code"),
        ("a.h", "c", "code"),
        ("a.cc", "cpp", "code"),
        ("a.cpp", "cpp", "code"),
        ("a.cxx", "cpp", "code"),
        ("a.hpp", "cpp", "code"),
        ("a.hh", "cpp", "code"),
        ("a.sh", "bash", "code"),
        ("a.bash", "bash", "code"),
        ("A.PDF", "pdf", "pdf"),
    ],
)
def test_extension_table(name: str, language: str, kind: str) -> None:
    found = file_type(name)
    assert found is not None
    assert (found.language, found.kind) == (language, kind)


@pytest.mark.parametrize("name", ["a.png", "Makefile", "a.docx", "a.md.bak", "a"])
def test_unknown_extensions(name: str) -> None:
    assert file_type(name) is None


def test_a_file_can_be_a_root(tree: Path) -> None:
    scan = scan_sources([tree / "secret.md", tree / "notes" / "a.md", tree / "image.png"])
    assert [(f.rel_path, f.root) for f in scan.files] == [
        ("secret.md", tree),  # named explicitly: the root .gitignore does not apply
        ("a.md", tree / "notes"),
    ]
    assert dict(scan.skipped.files) == {SkipReason.UNKNOWN_TYPE: 1}


def test_a_missing_root_is_counted_not_raised(tmp_path: Path) -> None:
    scan = scan_sources([tmp_path / "nowhere"])
    assert scan.files == []
    assert dict(scan.skipped.dirs) == {SkipReason.UNREADABLE: 1}


# -- one path at a time ------------------------------------------------------------------


def all_files(root: Path) -> list[Path]:
    """Every file and file symlink under `root`, entering every folder but symlinked ones."""
    found = []
    for folder, dirs, names in os.walk(root):
        found += [Path(folder, n) for n in names]
        found += [Path(folder, d) for d in dirs if Path(folder, d).is_symlink()]
    return sorted(found)


@pytest.mark.parametrize(
    "options",
    [OPTIONS, SourceOptions(include=("*.md", "src/"), max_bytes=1000),
     SourceOptions(exclude=("sub/", "*.js"), use_gitignore=False, max_bytes=1000),
     SourceOptions(include_hidden=True, max_bytes=1000)],
    ids=["default", "include", "exclude-no-gitignore", "hidden"],
)
def test_path_rules_agree_with_the_walk(tree: Path, options: SourceOptions) -> None:
    rules = SourceRules(tree, options)
    loaded = [rules.load(p) for p in all_files(tree)]
    picked = [f.rel_path for f in loaded if isinstance(f, SourceFile)]
    assert picked == [f.rel_path for f in scan_sources([tree], options).files]
    walked = {f.rel_path: f for f in iter_sources([tree], options)}
    assert all(walked[f.rel_path] == f for f in loaded if isinstance(f, SourceFile))


@pytest.mark.parametrize(
    ("rel", "is_dir", "reason"),
    [
        ("notes/a.md", False, None),
        ("notes/new/deep.md", False, None),  # does not exist yet: judged by name and place
        ("src/gone.py", False, None),
        (".hidden.md", False, SkipReason.HIDDEN),
        ("notes/.draft.md", False, SkipReason.HIDDEN),
        (".git/x.md", False, SkipReason.HIDDEN),  # below a hidden folder
        ("build/out.py", False, SkipReason.GITIGNORED),  # below an ignored folder
        ("build", True, SkipReason.GITIGNORED),
        ("debug.log", False, SkipReason.GITIGNORED),
        ("sub/keep.txt", False, None),  # re-included by the deeper .gitignore
        ("sub/deeper/local_x.py", False, SkipReason.GITIGNORED),
        ("image.png", False, SkipReason.UNKNOWN_TYPE),
        ("Makefile", False, SkipReason.UNKNOWN_TYPE),
        ("src", True, None),
        ("link_out.md", False, SkipReason.SYMLINK_OUTSIDE),
        ("dir_out/far.md", False, SkipReason.SYMLINK_OUTSIDE),
        ("src_alias/app.py", False, SkipReason.DUPLICATE),  # reached through its real path
        ("src_alias", True, SkipReason.DUPLICATE),
    ],
)
def test_path_skip_reasons(tree: Path, rel: str, is_dir: bool, reason: SkipReason | None) -> None:
    assert SourceRules(tree, OPTIONS).skip_reason(tree / rel, is_dir=is_dir) == reason
    if not is_dir:
        assert is_candidate(tree, tree / rel, OPTIONS) is (reason is None)


def test_loading_one_path_checks_content_too(tree: Path) -> None:
    rules = SourceRules(tree, OPTIONS)
    assert rules.load(tree / "big.md") == SkipReason.TOO_LARGE
    assert rules.load(tree / "data.py") == SkipReason.BINARY
    assert rules.load(tree / "notes" / "gone.md") == SkipReason.UNREADABLE
    os.mkfifo(tree / "pipe.md")
    assert rules.load(tree / "pipe.md") == SkipReason.UNKNOWN_TYPE  # never opened
    app = rules.load(tree / "src" / "app.py")
    assert isinstance(app, SourceFile) and (app.rel_path, app.root) == ("src/app.py", tree)


def test_paths_outside_the_root_are_refused(tree: Path) -> None:
    rules = SourceRules(tree)
    for path in (tree.parent / "outside" / "far.md", tree):
        with pytest.raises(ValueError):
            rules.skip_reason(path)


def test_ignore_files_are_kept_until_forgotten(tree: Path) -> None:
    rules = SourceRules(tree, OPTIONS)
    assert rules.skip_reason(tree / "notes" / "a.md") is None
    write(tree, "notes/.gitignore", "a.md\n")
    assert rules.skip_reason(tree / "notes" / "a.md") is None  # the old answer, cached
    rules.forget_ignores()
    assert rules.skip_reason(tree / "notes" / "a.md") == SkipReason.GITIGNORED
