"""PDF sources: real PDFs written byte by byte (and encrypted by pypdf), read, chunked by page."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pytest
from crafted_pdf import make_pdf
from pypdf import PdfReader, PdfWriter

from lampstand.indexer.chunking import DEFAULT_BUDGET, TokenBudget, chunk_file
from lampstand.indexer.pdf import PAGE_BREAK, join_pages, pdf_text
from lampstand.indexer.sources import SkipReason, SourceOptions, scan_sources

PAGES = [
    ["Lampstand reads PDF files.\nEach page is chunked on its own.", "A second paragraph."],
    [],  # an empty page keeps its number
    ["Page three (with parentheses) and a backslash \\ here."],
]
TEXT = (
    "Lampstand reads PDF files.\nEach page is chunked on its own.\nA second paragraph.\n"
    "\f\n\f\nPage three (with parentheses) and a backslash \\ here.\n"
)

FINE = make_pdf([["Still indexed."]])


def encrypted(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password, owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def inflating(pages: int, megabytes: int) -> bytes:
    """A small file whose one content stream inflates to `megabytes` of text."""
    squeeze = zlib.compressobj(1)
    body = squeeze.compress(b"BT /F1 11 Tf 72 740 Td (")
    body += b"".join(squeeze.compress(b"A" * 1_000_000) for _ in range(megabytes))
    body += squeeze.compress(b") Tj ET") + squeeze.flush()
    data = make_pdf([["x"]] * pages)
    start = data.index(b"<< /Length")
    end = data.index(b"endstream") + len(b"endstream")
    stream = b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(body), body)
    return data[:start] + stream + data[end:]  # offsets now wrong: the reader recovers them


def lines_of(text: str, first: int, last: int) -> str:
    return "\n".join(text.split("\n")[first - 1 : last])


def test_the_hand_written_file_is_a_valid_pdf() -> None:
    reader = PdfReader(io.BytesIO(make_pdf(PAGES)), strict=True)
    assert len(reader.pages) == 3


def test_pages_are_joined_by_break_lines() -> None:
    assert pdf_text(make_pdf(PAGES)) == TEXT


def test_break_characters_inside_a_page_cannot_fake_a_page() -> None:
    assert join_pages(["a\fb\r\nc\x00", "", "d\re"]) == "ab\nc\n\f\n\f\nd\ne\n"


def test_a_pdf_in_a_folder_is_a_source_of_kind_pdf(tmp_path: Path) -> None:
    (tmp_path / "manual.pdf").write_bytes(make_pdf(PAGES))
    (only,) = scan_sources([tmp_path], SourceOptions(max_bytes=10)).files  # text cap: not PDFs
    assert (only.rel_path, only.language, only.kind, only.text) == ("manual.pdf", "pdf", "pdf", TEXT)
    assert only.size == (tmp_path / "manual.pdf").stat().st_size


def test_chunks_carry_their_page_and_exact_lines() -> None:
    chunks = chunk_file("manual.pdf", TEXT, "pdf", "pdf")
    assert [(c.context, c.start_line, c.end_line) for c in chunks] == [
        (("page 1",), 1, 3),
        (("page 3",), 6, 6),
    ]
    assert all(c.text == lines_of(TEXT, c.start_line, c.end_line) for c in chunks)
    assert {c.kind for c in chunks} == {"pdf"}


def test_long_pages_are_cut_within_the_budget_and_never_across_pages() -> None:
    sentence = "The quick brown fox jumps over the lazy dog number {}."
    long_page = ["\n".join(sentence.format(i) for i in range(k, k + 8)) for k in range(0, 80, 8)]
    text = pdf_text(make_pdf([long_page, ["Short last page."]]))
    budget = TokenBudget(max_tokens=64, overlap_tokens=8)
    chunks = chunk_file("long.pdf", text, "pdf", "pdf", budget)
    pages = [c.context for c in chunks]
    assert pages.count(("page 1",)) > 5 and pages[-1] == ("page 2",)
    for chunk in chunks:
        assert budget.count(chunk.text) <= budget.max_tokens
        assert chunk.text == lines_of(text, chunk.start_line, chunk.end_line)
        assert PAGE_BREAK not in chunk.text
    covered = {n for c in chunks if c.context == ("page 1",)
               for n in range(c.start_line, c.end_line + 1)}
    assert covered == set(range(1, 81))  # every line of page 1, some twice (overlap)


@pytest.mark.parametrize(
    ("name", "data", "options", "reason"),
    [
        ("empty", b"", SourceOptions(), SkipReason.UNREADABLE),
        ("header-only", b"%PDF-1.7\n", SourceOptions(), SkipReason.UNREADABLE),
        ("not-a-pdf", bytes(range(256)) * 16, SourceOptions(), SkipReason.UNREADABLE),
        ("truncated", make_pdf(PAGES)[:300], SourceOptions(), SkipReason.UNREADABLE),
        ("cyclic-pages",
         make_pdf(PAGES).replace(b"/Kids [3 0 R", b"/Kids [2 0 R 3 0 R"),
         SourceOptions(), SkipReason.UNREADABLE),
        ("inflates-past-the-parser-limit", inflating(1, 80), SourceOptions(),
         SkipReason.UNREADABLE),
        ("needs-a-password", encrypted(make_pdf(PAGES), "secret"), SourceOptions(),
         SkipReason.ENCRYPTED),
        ("too-many-pages", make_pdf([["p"]] * 4), SourceOptions(max_pdf_pages=3),
         SkipReason.TOO_LARGE),
        ("too-many-bytes", make_pdf(PAGES), SourceOptions(max_pdf_bytes=len(FINE)),
         SkipReason.TOO_LARGE),
    ],
)
def test_bad_pdfs_are_skipped_with_a_reason(
    tmp_path: Path, name: str, data: bytes, options: SourceOptions, reason: SkipReason
) -> None:
    (tmp_path / f"{name}.pdf").write_bytes(data)
    (tmp_path / "fine.pdf").write_bytes(FINE)
    scan = scan_sources([tmp_path], options)
    assert [f.rel_path for f in scan.files] == ["fine.pdf"]
    assert dict(scan.skipped.files) == {reason: 1}


def test_a_pdf_locked_only_by_an_owner_password_is_read(tmp_path: Path) -> None:
    (tmp_path / "restricted.pdf").write_bytes(encrypted(make_pdf(PAGES), ""))
    (only,) = scan_sources([tmp_path]).files
    assert only.text == TEXT


def test_the_default_budget_chunks_a_pdf_without_empty_chunks() -> None:
    text = pdf_text(make_pdf([[], [" "], ["Only page three has words."], []]))
    chunks = chunk_file("sparse.pdf", text, "pdf", "pdf", DEFAULT_BUDGET)
    assert [(c.context, c.text) for c in chunks] == [(("page 3",), "Only page three has words.")]
