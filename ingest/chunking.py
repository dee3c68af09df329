"""Token-aware chunking with the embedding model's own tokenizer; respects paragraphs and EN/ZH sentences, and keeps
tables whole or splits them by rows under their header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from langchain_text_splitters import RecursiveCharacterTextSplitter

from kb_service.core.records import SECTION_JOINER, Chunk, ParsedDocument, Section, box_text, text_hash, union_box

# Coarse to fine: paragraphs, lines, sentences (Chinese full-width and Western), clauses, words, characters.
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", ". ", "! ", "? ", "; ", "，", ", ", "、", " ", ""]


class Chunker(Protocol):
    def split(self, doc: ParsedDocument, doc_id: str) -> list[Chunk]:
        """Chunks in document order, each within the embedding model's token limit, carrying page/heading."""


class TokenChunker:
    """RecursiveCharacterTextSplitter measured in model tokens, with a hard guarantee on the token limit."""

    def __init__(
        self, count_tokens: Callable[[str], int], *, chunk_size: int, chunk_overlap: int, max_tokens: int
    ) -> None:
        self.count_tokens = count_tokens
        self.chunk_size = min(chunk_size, max_tokens)
        if chunk_overlap >= self.chunk_size:
            raise ValueError(f"chunk_overlap ({chunk_overlap}) must be smaller than the chunk size ({self.chunk_size})")
        self.max_tokens = max_tokens
        self.splitter = RecursiveCharacterTextSplitter(
            separators=SEPARATORS,
            keep_separator="end",
            chunk_size=self.chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=count_tokens,
            strip_whitespace=True,
        )

    @classmethod
    def for_model(
        cls, count_tokens: Callable[[str], int], max_tokens: int, *, chunk_size: int, chunk_overlap: int
    ) -> TokenChunker:
        """A chunker for a model reading at most ``max_tokens``: the overlap capped at a quarter of the chunk."""
        overlap = min(chunk_overlap, max(0, min(chunk_size, max_tokens) // 4))
        return cls(count_tokens, chunk_size=chunk_size, chunk_overlap=overlap, max_tokens=max_tokens)

    def split(self, doc: ParsedDocument, doc_id: str) -> list[Chunk]:
        chunks: list[Chunk] = []
        base_meta = {**doc.metadata, "source": doc.source, "title": doc.title}
        offset = 0
        for section in self._packed(doc.sections):
            meta = {**base_meta, "bbox": box_text(section.box)} if section.box else base_meta
            spans = self._split_table(section) if section.kind == "table" else self._spans(section.text)
            for piece, start, end in spans:
                chunks.append(
                    Chunk(
                        id=f"{doc_id}:{len(chunks)}",
                        doc_id=doc_id,
                        ord=len(chunks),
                        text=piece,
                        hash=text_hash(piece),
                        page=section.page,
                        section=section.heading,
                        start=offset + start,
                        end=offset + end,
                        metadata=dict(meta),
                    )
                )
            offset += len(section.text) + len(SECTION_JOINER)
        return chunks

    def _packed(self, sections: list[Section]) -> list[Section]:
        """Neighbouring sections of one page (a PDF's paragraphs, headings and tables, a slide) share a chunk while
        together they fit, as a page's text would, but a table is never cut to do it: the paragraph that explains a
        table stays next to it. Without pages, a table and the text around it under one heading do the same. A table
        longer than a chunk stays alone, to be split by rows."""
        out: list[Section] = []
        for section in sections:
            last = out[-1] if out else None
            paged = last is not None and last.page is not None and last.page == section.page
            beside = last is not None and "table" in (last.kind, section.kind) and last.heading == section.heading
            if (
                last is not None
                and (paged or (beside and last.page == section.page))
                and not (section.kind == "table" and self.count_tokens(section.text) > self.chunk_size)
                and self.count_tokens(last.text + SECTION_JOINER + section.text) <= self.chunk_size
            ):
                boxes = [b for b in (last.box, section.box) if b]
                out[-1] = Section(
                    text=last.text + SECTION_JOINER + section.text,
                    page=last.page,
                    heading=last.heading or section.heading,
                    box=union_box(boxes) if boxes else None,
                )
            else:
                out.append(section)
        return out

    def _spans(self, text: str) -> list[tuple[str, int, int]]:
        spans, cursor = [], 0
        for piece in self._split_text(text):
            found = text.find(piece, cursor)
            start = found if found >= 0 else cursor
            cursor = start + 1
            spans.append((piece, start, start + len(piece)))
        return spans

    def _split_table(self, section: Section) -> list[tuple[str, int, int]]:
        """A table whole when it fits; else runs of whole rows, each under the caption and the header rows again.
        A row longer than a chunk on its own is cut like text (with the header before its first part)."""
        text = section.text
        if self.count_tokens(text) <= self.chunk_size:
            return [(text, 0, len(text))]
        lines = text.split("\n")
        n_head = (1 if section.caption else 0) + 2  # caption, header row, |---| row
        head = "\n".join(lines[:n_head])
        budget = self.chunk_size - self.count_tokens(head) - 1
        if budget < self.chunk_size // 4:  # a header as long as a chunk: rows go without it
            return self._spans(text)
        spans: list[tuple[str, int, int]] = []
        rows: list[str] = []
        start = pos = len(head) + 1
        for row in lines[n_head:]:
            if rows and self.count_tokens("\n".join([*rows, row])) > budget:
                spans.append((f"{head}\n" + "\n".join(rows), start, pos - 1))
                rows, start = [], pos
            if self.count_tokens(row) > budget:
                spans += [(f"{head}\n{part}", pos + s, pos + e) for part, s, e in self._spans(row)]
                start = pos = pos + len(row) + 1
                continue
            rows.append(row)
            pos += len(row) + 1
        if rows:
            spans.append((f"{head}\n" + "\n".join(rows), start, pos - 1))
        return spans

    def _split_text(self, text: str) -> list[str]:
        pieces = []
        for piece in self.splitter.split_text(text):
            # The splitter sums the token counts of pieces; re-check the joined text against the model limit.
            if self.count_tokens(piece) <= self.max_tokens:
                pieces.append(piece)
            else:
                pieces.extend(self._hard_split(piece))
        return [p for p in pieces if p.strip()]

    def _hard_split(self, text: str) -> list[str]:
        """Cut at character positions until every part fits the model limit (rare: long unbreakable runs)."""
        parts, rest = [], text
        while rest:
            n = self.count_tokens(rest)
            if n <= self.max_tokens:
                parts.append(rest)
                break
            cut = max(1, int(len(rest) * self.max_tokens / n * 0.9))
            while cut > 1 and self.count_tokens(rest[:cut]) > self.max_tokens:
                cut = int(cut * 0.9)
            parts.append(rest[:cut])
            rest = rest[cut:]
        return parts
