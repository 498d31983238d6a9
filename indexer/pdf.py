"""Reading PDFs: the text of every page, in one string whose lines say where pages begin.

`pdf_text` extracts each page's text with `pypdf` (pure Python, imported only when a PDF is
read) and joins the pages with a line holding a single form feed (`PAGE_BREAK`) between
them, so that line numbers in the joined text are the same on every read and a chunker can
tell the page of any line by counting the breaks above it. Inside a page, line ends are
`\\n` and control characters (form feeds included) are removed, so the breaks are
unambiguous; an empty page still has its break, keeping page numbers true.

A PDF is hostile input: the page count is capped, the file size is capped by the caller,
and any failure of the parser, whatever it raises, makes the file unreadable rather than
ending the scan. Encrypted files are read only when they open with the empty password
(restrictions without a password, as many generators write them).

This module reads bytes it is given and never chunks or stores anything.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pypdf import PdfReader

__all__ = [
    "DEFAULT_MAX_PDF_BYTES",
    "DEFAULT_MAX_PDF_PAGES",
    "PAGE_BREAK",
    "PdfEncrypted",
    "PdfProblem",
    "PdfTooLong",
    "PdfUnreadable",
    "join_pages",
    "pdf_text",
]

DEFAULT_MAX_PDF_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PDF_PAGES = 2000
PAGE_BREAK = "\f"
"""The whole line between two pages of the joined text."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class PdfProblem(Exception):
    """Why a PDF's text cannot be had."""


class PdfUnreadable(PdfProblem):
    """The parser failed on the file: damaged, truncated, or not a PDF at all."""


class PdfEncrypted(PdfProblem):
    """The file needs a password to be read."""


class PdfTooLong(PdfProblem):
    """The file has more pages than the cap."""


def _clean(page: str) -> str:
    """A page's text with `\\n` line ends, no control characters and a final newline."""
    text = _CONTROL.sub("", page.replace("\r\n", "\n").replace("\r", "\n")).rstrip()
    return text + "\n" if text else ""


def join_pages(pages: Iterable[str]) -> str:
    """Page texts as one text, a `PAGE_BREAK` line between consecutive pages."""
    return f"{PAGE_BREAK}\n".join(_clean(page) for page in pages)


def _open(data: bytes) -> PdfReader:
    """A `pypdf.PdfReader` over the bytes, decrypted with the empty password if need be."""
    from pypdf import PasswordType, PdfReader

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except Exception as exc:  # an unsupported algorithm, or a missing crypto package
            raise PdfEncrypted(str(exc)) from exc
        if opened == PasswordType.NOT_DECRYPTED:
            raise PdfEncrypted("a password is needed")
    return reader


def _page_texts(data: bytes, max_pages: int) -> list[str]:
    pages = _open(data).pages
    if len(pages) > max_pages:
        raise PdfTooLong(f"{len(pages)} pages, more than {max_pages}")
    return [page.extract_text() or "" for page in pages]


def pdf_text(data: bytes, max_pages: int = DEFAULT_MAX_PDF_PAGES) -> str:
    """The text of a PDF's pages joined by `PAGE_BREAK` lines.

    Raises `PdfEncrypted`, `PdfTooLong` or, for any other failure of the parser,
    `PdfUnreadable`.
    """
    try:
        return join_pages(_page_texts(data, max_pages))
    except PdfProblem:
        raise
    except Exception as exc:  # a hostile file can make the parser raise anything
        raise PdfUnreadable(f"{type(exc).__name__}: {exc}") from exc
