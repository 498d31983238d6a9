"""Small PDFs written byte by byte: text pages in Helvetica, nothing else.

Each page is a list of paragraphs; a paragraph's lines are drawn one below the other and
paragraphs are set apart by a wider gap. The file has a correct cross-reference table, so
a strict reader accepts it.
"""

from __future__ import annotations

__all__ = ["make_pdf"]

_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"


def _literal(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _content(paragraphs: list[str]) -> bytes:
    ops = ["BT /F1 11 Tf 72 740 Td 14 TL"]
    for number, paragraph in enumerate(paragraphs):
        if number:
            ops.append("0 -28 Td")
        ops += [("T* " if i else "") + _literal(line) + " Tj"
                for i, line in enumerate(paragraph.split("\n"))]
    ops.append("ET")
    data = "\n".join(ops).encode("latin-1")
    return b"<< /Length %d >>\nstream\n%s\nendstream" % (len(data), data)


def make_pdf(pages: list[list[str]]) -> bytes:
    """A PDF with one page per item of `pages`, each a list of paragraphs (`\\n` between lines)."""
    font = 3 + 2 * len(pages)
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>", font: _FONT}
    kids = []
    for index, paragraphs in enumerate(pages):
        page, content = 3 + 2 * index, 4 + 2 * index
        kids.append(b"%d 0 R" % page)
        objects[page] = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                         b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                         % (font, content))
        objects[content] = _content(paragraphs)
    objects[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(pages))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number in range(1, font + 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (font + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (font + 1, xref)
    return bytes(out)
