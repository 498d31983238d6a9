"""PDF chunking: each page on its own, its paragraphs packed to the token budget.

The text is what `lampstand.indexer.pdf.pdf_text` extracts: pages separated by a line
holding a single `PAGE_BREAK`. A chunk never spans two pages and its `context` is
`("page N",)` (1-based, counting empty pages), so a citation can name the page; its lines
are those of the extracted text, exactly, break lines excluded. Paragraphs are runs of
non-blank lines, cut at lines, sentences and words when one is over the budget.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..chunks import Chunk
from ..pdf import PAGE_BREAK
from .budget import TokenBudget
from .packing import Document
from .sections import ChunkTarget, chunk_blocks, paragraphs

__all__ = ["chunk_pdf", "page_spans"]


def page_spans(doc: Document) -> Iterator[tuple[int, int, int]]:
    """`(page, first, last)` line spans of each page with at least one line."""
    page, first = 1, 1
    for number in range(1, doc.n_lines + 2):
        if number > doc.n_lines or doc.line(number) == PAGE_BREAK:
            if first < number:
                yield page, first, number - 1
            page, first = page + 1, number + 1


def chunk_pdf(path: str, text: str, language: str, budget: TokenBudget) -> list[Chunk]:
    """Chunks of a PDF's extracted text, each with `("page N",)` as its context."""
    doc = Document(text, budget.count)
    target = ChunkTarget(path, language, "pdf")
    chunks: list[Chunk] = []
    for page, first, last in page_spans(doc):
        blocks = paragraphs(doc, first, last)
        chunks += chunk_blocks(doc, blocks, target, budget, (f"page {page}",))
    return chunks
