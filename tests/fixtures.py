"""Small real files the tests generate themselves (no shared data needed)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path


def make_pdf(pages: list[str]) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.setTitle("Generated report")
    for text in pages:
        y = 800
        for line in text.split("\n"):
            c.drawString(50, y, line)
            y -= 14
        c.showPage()
    c.save()
    return buf.getvalue()


def text_image(lines: list[str], size: int = 36, *, fmt: str = "PNG") -> bytes:
    """An image of ``lines`` in black on white (a scan without a text layer), as ``fmt`` bytes."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    image = Image.new("RGB", (1400, 120 + 70 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((60, 60 + 70 * i), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def make_docx(blocks: list[tuple[str, str]]) -> bytes:
    """``blocks``: (style, text) with style 'h1', 'h2' or 'p'."""
    import docx

    document = docx.Document()
    for style, text in blocks:
        if style.startswith("h"):
            document.add_heading(text, level=int(style[1]))
        else:
            document.add_paragraph(text)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "metric", "value"
    table.cell(1, 0).text, table.cell(1, 1).text = "latency", "12 ms"
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


HTML = """<!doctype html><html><head><title>Pump manual</title><style>p{color:red}</style>
<script>var secret = "do not index";</script></head><body>
<h1>Pump manual</h1><p>The pump moves <b>water</b> uphill.</p>
<h2>Maintenance</h2><p>Replace the seal every 500 hours.</p>
<table><tr><th>part</th><th>interval</th></tr><tr><td>seal</td><td>500 h</td></tr></table>
</body></html>"""


def zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"\0" * (600 * 1024 * 1024))
    return buf.getvalue()


def write_corpus(folder: Path) -> dict[str, Path]:
    """A tiny mixed-format corpus on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "report.pdf": make_pdf(["Solar panels convert sunlight into electricity.", "Page two covers batteries."]),
        "guide.docx": make_docx(
            [
                ("h1", "Gardening guide"),
                ("p", "Tomatoes need six hours of sun."),
                ("h2", "Watering"),
                ("p", "Water deeply twice a week."),
            ]
        ),
        "manual.html": HTML.encode(),
        "notes.md": b"# Notes\n\nThe capital of France is Paris.\n\n## Rivers\n\nThe Seine flows through Paris.\n",
        "zh.txt": "长城是中国古代的军事防御工程。它有两千多年的历史！".encode(),
    }
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    return paths
