"""HTML (BeautifulSoup + lxml, encoding from the bytes/meta tags) and EPUB (its spine of XHTML chapters)."""

from __future__ import annotations

import posixpath
import re
import warnings

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag, XMLParsedAsHTMLWarning
from bs4.element import NavigableString
from lxml import etree

from kb_service.core.errors import CorruptDocument
from kb_service.core.records import ParsedDocument, Section
from kb_service.ingest.parsers.base import SectionBuilder, open_zip, stem

warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)
warnings.filterwarnings("ignore", category=MarkupResemblesLocatorWarning)

DROP = ("script", "style", "noscript", "template", "svg", "iframe", "head", "button", "form")
BLOCKS = {
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "section",
    "article",
    "pre",
    "blockquote",
    "dd",
    "dt",
    "dl",
    "br",
    "hr",
    "header",
    "footer",
    "nav",
    "aside",
    "main",
    "figure",
    "figcaption",
    "caption",
    "address",
}
HEADINGS = {f"h{i}": i for i in range(1, 7)}
SPACES = re.compile(r"[ \t\u00a0\u3000]+")


def html_sections(soup: BeautifulSoup | Tag) -> list[Section]:
    """Walk the tree in order, breaking sections at headings and lines at block elements."""
    out = SectionBuilder()
    line: list[str] = []

    def end_line() -> None:
        text = SPACES.sub(" ", "".join(line)).strip()
        if text:
            out.block(text)
        line.clear()

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:  # skips comments, CDATA, doctype
                    line.append(str(child))
            elif isinstance(child, Tag):
                name = child.name.lower() if child.name else ""
                if name in DROP:
                    continue
                if name in HEADINGS:
                    end_line()
                    text = SPACES.sub(" ", child.get_text(" ")).strip()
                    if text:
                        out.heading(HEADINGS[name], text)
                    continue
                if name == "table" and not child.find_parent("table"):
                    end_line()
                    caption = child.find("caption")
                    out.grid(_table_rows(child), caption=caption.get_text(" ").strip() if caption else "")
                    continue
                if name in ("td", "th"):
                    walk(child)
                    line.append(" | ")
                    continue
                if name in BLOCKS:
                    end_line()
                    walk(child)
                    end_line()
                else:
                    walk(child)

    walk(soup)
    end_line()
    out.flush()
    return out.sections


def _table_rows(table: Tag) -> list[list[str]]:
    """A table's grid: a cell spanning columns or rows (colspan, rowspan) has its text in each grid cell it covers; a
    nested table's text stays inside its cell."""
    rows: list[list[str]] = []
    below: dict[int, tuple[str, int]] = {}  # column → (text, rows still to cover) of cells spanning down
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table:
            continue
        row: list[str] = []

        started, own = [], 0
        for cell in tr.find_all(["td", "th"], recursive=False):
            _carry(row, below)
            text = SPACES.sub(" ", cell.get_text(" ")).strip()
            cols, down = _span(cell.get("colspan")), _span(cell.get("rowspan"))
            own += down == 1
            for _ in range(cols):
                if down > 1:
                    below[len(row)] = (text, down - 1)
                    started.append(len(row))
                row.append(text)
        _carry(row, below)
        if started and not own:  # a row of nothing but cells spanning down (a group label): no row of its own
            continue
        rows.append(row)
    return rows


def _carry(row: list[str], below: dict[int, tuple[str, int]]) -> None:
    """Fill the row's next columns with the cells from rows above that span down into it."""
    while len(row) in below:
        text, left = below.pop(len(row))
        if left > 1:
            below[len(row)] = (text, left - 1)
        row.append(text)


def _span(value: object) -> int:
    try:
        return max(1, min(int(str(value or 1)), 100))
    except ValueError:
        return 1


def parse_html(data: bytes, source: str) -> ParsedDocument:
    soup = BeautifulSoup(data, "lxml")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ").strip() if title_tag else ""
    body = soup.body or soup
    sections = html_sections(body)
    if not title:
        title = next((s.heading for s in sections if s.heading), "") or stem(source)
    encoding = getattr(soup, "original_encoding", None)
    meta = {"encoding": encoding} if encoding else {}
    return ParsedDocument(
        source=source, title=SPACES.sub(" ", title)[:300], format="html", sections=sections, metadata=meta
    )


OPF_NS = {"opf": "http://www.idpf.org/2007/opf", "dc": "http://purl.org/dc/elements/1.1/"}
CONTAINER_NS = {"c": "urn:oasis:names:tc:opendocument:xmlns:container"}


def parse_epub(data: bytes, source: str) -> ParsedDocument:
    archive = open_zip(data, source, "EPUB")
    try:
        container = etree.fromstring(archive.read("META-INF/container.xml"))
        opf_path = container.xpath("//c:rootfile/@full-path", namespaces=CONTAINER_NS)[0]
        opf = etree.fromstring(archive.read(opf_path))
    except (KeyError, IndexError, etree.XMLSyntaxError) as exc:
        raise CorruptDocument(source, f"not a valid EPUB (missing or broken package file: {exc})") from exc
    base = posixpath.dirname(opf_path)
    manifest = {
        item.get("id"): posixpath.normpath(posixpath.join(base, item.get("href", "")))
        for item in opf.xpath("//opf:manifest/opf:item", namespaces=OPF_NS)
    }
    sections: list[Section] = []
    for number, ref in enumerate(opf.xpath("//opf:spine/opf:itemref/@idref", namespaces=OPF_NS), start=1):
        path = manifest.get(ref)
        if path is None or path not in archive.namelist():
            continue
        for section in html_sections(BeautifulSoup(archive.read(path), "lxml")):
            section.page = number  # the chapter's position in the reading order
            sections.append(section)
    titles = opf.xpath("//dc:title/text()", namespaces=OPF_NS)
    title = titles[0].strip() if titles else stem(source)
    return ParsedDocument(source=source, title=title, format="epub", sections=sections)
