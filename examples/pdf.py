"""A minimal PDF writer: one or more A4 pages of plain text in Helvetica, enough for a document a
viewer opens and a DMP stores (real bytes with a real size and hash). No dependency, deterministic:
the same lines give the same bytes, so the documents' hashes never change between runs."""
from __future__ import annotations

from collections.abc import Sequence

LINES_PER_PAGE = 52
_TOP, _LEADING, _LEFT = 800, 14, 56


def _escape(text: str) -> bytes:
    """A PDF string literal in WinAnsiEncoding (cp1252 covers French accents and the euro sign)."""
    raw = text.encode("cp1252", "replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _page_stream(title: str, lines: Sequence[str]) -> bytes:
    ops = [b"BT", b"/F2 13 Tf", f"{_LEFT} {_TOP} Td".encode(), b"(" + _escape(title) + b") Tj",
           b"/F1 10 Tf", f"0 -{_LEADING * 2} Td".encode()]
    for line in lines:
        ops += [b"(" + _escape(line) + b") Tj", f"0 -{_LEADING} Td".encode()]
    ops.append(b"ET")
    return b"\n".join(ops)


def pdf(title: str, lines: Sequence[str]) -> bytes:
    """A PDF 1.4 file whose pages show ``title`` and then ``lines``."""
    pages = [list(lines[i:i + LINES_PER_PAGE]) for i in range(0, max(len(lines), 1), LINES_PER_PAGE)]
    # objects: 1 catalog, 2 page tree, 3-4 fonts, 5 info, then (page, content) per page
    kids = [6 + 2 * n for n in range(len(pages))]
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(f"{k} 0 R".encode() for k in kids) + b"] /Count "
        + str(len(pages)).encode() + b" >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Title (" + _escape(title) + b") /Producer (examples/pdf.py) >>",
    ]
    for n, page in enumerate(pages):
        stream = _page_stream(title if n == 0 else f"{title} (suite)", page)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {kids[n] + 1} 0 R "
                       "/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>".encode())
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 5 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
