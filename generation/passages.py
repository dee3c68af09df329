"""What a source shows the model: its text, made of pieces of stored chunks. A hit alone is its chunk's text; a hit
widened to its neighbours (``expand``) joins their texts (the chunks' overlap once); a compressed one keeps some of
its sentences. Each piece remembers the chunk and the offset it came from, so a citation's evidence span, found in
the shown text, is reported in the chunk it lies in, at that chunk's own offsets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kb_service.core.records import Chunk, ScoredChunk

GAP = " … "  # between pieces that do not follow each other in the document


@dataclass(frozen=True)
class Piece:
    """``text[start:end]`` of the passage is ``chunk.text[offset:offset + end - start]``."""

    start: int
    end: int
    chunk: Chunk
    offset: int


@dataclass(frozen=True)
class Passage:
    text: str
    pieces: tuple[Piece, ...]

    @classmethod
    def of(cls, hit: ScoredChunk) -> Passage:
        """The hit's chunk, or its window of neighbouring chunks joined, each overlap shown once."""
        return cls.joined(hit.window or (hit.chunk,))

    @classmethod
    def joined(cls, chunks: Sequence[Chunk]) -> Passage:
        text = ""
        pieces: list[Piece] = []
        previous: Chunk | None = None
        for chunk in chunks:
            skip = _overlap(previous, chunk) if previous is not None else 0
            if previous is not None and not skip:
                text += "\n"
            piece = chunk.text[skip:]
            pieces.append(Piece(len(text), len(text) + len(piece), chunk, skip))
            text += piece
            previous = chunk
        return cls(text, tuple(pieces))

    def select(self, spans: Sequence[tuple[int, int]]) -> Passage:
        """The passage of these spans of ``text`` (in order, not overlapping), joined by ``GAP``."""
        text = ""
        pieces: list[Piece] = []
        for k, (start, end) in enumerate(spans):
            if k:
                text += GAP
            for p in self.pieces:
                lo, hi = max(start, p.start), min(end, p.end)
                if lo < hi:
                    at = len(text) + lo - start
                    pieces.append(Piece(at, at + hi - lo, p.chunk, p.offset + lo - p.start))
            text += self.text[start:end]
        return Passage(text, tuple(pieces))

    @property
    def chunk(self) -> Chunk:
        """The chunk most of the passage comes from (the hit's own when it is not widened)."""
        return max(self.pieces, key=lambda p: p.end - p.start).chunk

    def locate(self, start: int, end: int) -> tuple[Chunk, int, int]:
        """The chunk holding most of ``text[start:end]``, and that span clipped to it, in the chunk's offsets."""
        best = max(self.pieces, key=lambda p: (min(end, p.end) - max(start, p.start), -p.start))
        lo, hi = max(start, best.start), min(end, best.end)
        if hi <= lo:  # nothing of the span in any piece (it lies in a gap): the nearest piece's edge
            lo = hi = min(max(start, best.start), best.end)
        return best.chunk, best.offset + lo - best.start, best.offset + hi - best.start


def _overlap(previous: Chunk, chunk: Chunk) -> int:
    """Characters at the start of ``chunk`` that end ``previous`` (the chunker's overlap), by their document
    offsets, checked against the texts; 0 when the chunks do not overlap or their texts are not slices."""
    shared = previous.end - chunk.start
    if chunk.doc_id != previous.doc_id or shared <= 0 or shared > len(chunk.text):
        return 0
    return shared if previous.text.endswith(chunk.text[:shared]) else 0
