"""Markdown: the raw text is kept (tables and code stay readable); markdown-it finds the real headings."""

from __future__ import annotations

from markdown_it import MarkdownIt

from kb_service.core.records import ParsedDocument, Section
from kb_service.ingest.parsers.base import HeadingTracker, stem
from kb_service.ingest.parsers.text import decode_text

_MD = MarkdownIt("commonmark").enable("table")


def parse_markdown(data: bytes, source: str) -> ParsedDocument:
    text = decode_text(data, source)
    lines = text.splitlines()
    tokens = _MD.parse(text)
    # (first line, level, heading text) of every real heading: '#' inside code blocks is not one.
    heads = [
        (tok.map[0], int(tok.tag[1]), tokens[i + 1].content.strip())
        for i, tok in enumerate(tokens)
        if tok.type == "heading_open" and tok.map is not None
    ]
    tracker = HeadingTracker()
    sections: list[Section] = []
    starts = [0] + [h[0] for h in heads]
    ends = [h[0] for h in heads] + [len(lines)]
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if i > 0:
            _, level, heading_text = heads[i - 1]
            tracker.enter(level, heading_text)
        body = "\n".join(lines[start:end]).strip()
        if body:
            sections.append(Section(text=body, heading=tracker.heading))
    title = next((h[2] for h in heads if h[1] == 1), "") or (heads[0][2] if heads else "") or stem(source)
    return ParsedDocument(source=source, title=title, format="markdown", sections=sections)
