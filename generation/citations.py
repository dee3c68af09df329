"""What an answer cites: the chunk behind each source number, and each citation's claim, support score and the
exact evidence span (character offsets into the chunk's text) that it quotes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ChunkRef:
    """Source ``number`` in a prompt → the chunk behind it: document, chunk, file name, title, page, section, box."""

    number: int
    doc_id: str
    chunk_id: str
    source: str
    title: str
    page: int | None
    section: str | None
    bbox: list[float] | None = None  # where the chunk's text is on its page: x0, top, x1, bottom as fractions
    knowledge_base: str = ""  # where the chunk was found (an answer over several knowledge bases names each)


@dataclass
class Citation(ChunkRef):
    """One claim of the answer citing one source. ``snippet`` is ``chunk.text[evidence_start:evidence_end]``,
    the span that supports the claim; ``support`` its score (0..1). ``status``: ``verified`` (the model cited it
    and it supports the claim), ``corrected`` (the model cited another source that does not; this one does) or
    ``inferred`` (the model cited nothing; this source supports the claim strongly)."""

    snippet: str = ""
    inferred: bool = False
    status: str = "verified"
    support: float = 0.0
    evidence_start: int = 0
    evidence_end: int = 0
    claim: str = ""


@dataclass
class UnsupportedClaim:
    """A claim of the answer that no source supports, with its offsets in the answer text."""

    text: str
    start: int
    end: int
