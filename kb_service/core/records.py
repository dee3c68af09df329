"""Internal records passed between ingestion, stores and retrieval (dataclasses; pydantic stays at the edge)."""

from __future__ import annotations

import hashlib
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from kb_service.core.errors import InvalidInput

Metadata = dict[str, Any]

MAX_KB_NAME_CHARS = 128


class DocStatus(StrEnum):
    """Life cycle of a document; only READY documents are visible to retrieval."""

    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"


@dataclass(frozen=True)
class EmbeddingModelInfo:
    """Identity of an embedding model: a knowledge base is always queried with the model it was built with."""

    name: str
    dimension: int
    fingerprint: str
    max_tokens: int


@dataclass
class KnowledgeBase:
    name: str
    embedding: EmbeddingModelInfo
    description: str = ""
    created_at: float = field(default_factory=time.time)
    # This knowledge base's identity beyond its name: a KB dropped and created again under the same name is another
    # one, with other collections, so nothing still on its way to the old one (an ingest job) can land in the new.
    # Empty for knowledge bases created before it existed.
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    # Which of its indexes this is: a re-index builds the next one (another model or chunking) under another
    # ``index`` beside the one serving, then switches. Empty for the first.
    index: str = ""

    @property
    def home_key(self) -> str:
        """ASCII identifier of this knowledge base (its name and identity), the same across re-indexes: what is
        kept per knowledge base outside its index (original files, sync state) is kept under it."""
        return kb_key(f"{self.name}\x00{self.uid}" if self.uid else self.name)

    @property
    def key(self) -> str:
        """ASCII identifier of this index of the knowledge base, used for collection and table names."""
        return kb_key(f"{self.name}\x00{self.uid}\x00{self.index}") if self.index else self.home_key

    def same_index(self, other: KnowledgeBase) -> bool:
        """Whether ``other`` is this very index of this very knowledge base."""
        return (self.uid, self.index) == (other.uid, other.index)

    @property
    def registry_key(self) -> str:
        """The key of the name's registry row: one knowledge base per name at a time."""
        return kb_key(self.name)


@dataclass
class Section:
    """A contiguous piece of a parsed document sharing one page and one heading path."""

    text: str
    page: int | None = None
    heading: str | None = None
    kind: str = "text"  # "table": a Markdown table (after its caption line, when it has one)
    caption: str = ""  # a table's caption, the first line of its text
    box: tuple[float, float, float, float] | None = None  # x0, top, x1, bottom as fractions of the page


# Metadata keys the parsers derive from a file (a PDF's page count, a deck's slide count); every other key is the
# caller's and carries over when a document is replaced.
DERIVED_METADATA = frozenset(
    {"pages", "slides", "page_furniture", "ocr_pages", "ocr_confidence", "ocr_low_confidence_pages"}
)


@dataclass
class ParsedDocument:
    source: str
    title: str
    format: str
    sections: list[Section]
    metadata: Metadata = field(default_factory=dict)  # keys in DERIVED_METADATA

    @property
    def text(self) -> str:
        return SECTION_JOINER.join(s.text for s in self.sections)

    @property
    def content_hash(self) -> str:
        """SHA-256 of the normalised text: the document's identity inside a knowledge base."""
        return content_hash(self.text)


SECTION_JOINER = "\n\n"


def union_box(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    """The smallest box around all of ``boxes``."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def box_text(box: tuple[float, float, float, float]) -> str:
    """A box as chunk metadata keeps it: ``x0,top,x1,bottom`` as fractions of the page."""
    return ",".join(f"{v:.4f}" for v in box)


def box_of(metadata: Metadata) -> list[float] | None:
    """The box a chunk's metadata holds (``box_text``), or None."""
    raw = metadata.get("bbox")
    if not isinstance(raw, str):
        return None
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        return None
    return values if len(values) == 4 else None


@dataclass
class Chunk:
    id: str
    doc_id: str
    ord: int
    text: str
    hash: str
    page: int | None = None
    section: str | None = None
    start: int = 0
    end: int = 0
    metadata: Metadata = field(default_factory=dict)
    vector: np.ndarray | None = None


@dataclass
class Document:
    id: str
    source: str
    title: str
    format: str
    status: DocStatus = DocStatus.PENDING
    error: str = ""
    summary: str = ""
    chunk_count: int = 0
    n_chars: int = 0
    metadata: Metadata = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    summary_vector: np.ndarray | None = None


@dataclass
class ScoredChunk:
    """A chunk with its similarity score (cosine; higher is more relevant)."""

    chunk: Chunk
    score: float
    source: str = ""
    title: str = ""
    stages: dict[str, float] = field(default_factory=dict)  # per-stage scores (dense, lexical, gate, rerank …)
    kb: str = ""  # the knowledge base it was found in (set by the retriever)
    # the chunk with its neighbours in its section, in document order (``expand`` > 0); empty: the chunk alone
    window: tuple[Chunk, ...] = ()

    def provenance(self) -> dict[str, Any]:
        """The hit as the CLI and the API show it: scores, ids, file name, title, page, section, offsets, text."""
        c = self.chunk
        return {
            "score": self.score,
            "stages": self.stages,
            "knowledge_base": self.kb,
            "window": [w.id for w in self.window],
            "doc_id": c.doc_id,
            "chunk_id": c.id,
            "source": c.metadata.get("source", ""),
            "title": c.metadata.get("title", ""),
            "page": c.page,
            "bbox": box_of(c.metadata),
            "section": c.section,
            "start": c.start,
            "end": c.end,
            "text": c.text,
        }


@dataclass
class ScoredDocument:
    """A document with the cosine similarity of its summary to the query (higher is more relevant)."""

    document: Document
    score: float


# Control characters, and UTF-16 surrogate halves that no parser should leave (they cannot be encoded as UTF-8).
_CONTROLS = {c: None for c in range(32) if chr(c) not in "\t\n\r"} | {0x7F: None} | dict.fromkeys(range(0xD800, 0xE000))


def normalise_text(text: str) -> str:
    """Unicode NFC, unified line endings, control characters (NUL …) dropped, trailing spaces stripped:
    what identity, chunking and the stores see."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROLS)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def document_context(title: str, source: str) -> str:
    """What a chunk is indexed under with ``chunk_context=document``: its document's title and, when the file name
    says something (three letters or more, not only an id) that the title does not, the file name too."""
    stem = " ".join(PurePosixPath(source).stem.replace("_", " ").replace("-", " ").split())
    parts = [" ".join(title.split())]
    if sum(c.isalpha() for c in stem) >= 3 and stem.lower() not in parts[0].lower():
        parts.append(stem)
    return " · ".join(p for p in parts if p)


def indexed_text(context: str, text: str) -> str:
    """A chunk as it is indexed under ``chunk_context=document``: its document's context line, then its text."""
    return f"{context}\n{text}" if context and not text.startswith(context) else text


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_kb_name(name: str) -> str:
    """Return the NFC form of a knowledge-base name or raise InvalidInput saying what is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("knowledge base name must not be empty or only spaces")
    name = unicodedata.normalize("NFC", name)
    if len(name) > MAX_KB_NAME_CHARS:
        raise InvalidInput(f"knowledge base name is {len(name)} characters long; the limit is {MAX_KB_NAME_CHARS}")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise InvalidInput(f"knowledge base name {name!r} contains control characters {bad!r}")
    if "/" in name or "\\" in name:
        raise InvalidInput(f"knowledge base name {name!r} must not contain '/' or '\\'")
    if name.strip() in (".", ".."):
        raise InvalidInput(f"knowledge base name {name!r} is reserved")
    if name != name.strip():
        raise InvalidInput(f"knowledge base name {name!r} must not start or end with spaces")
    if unicodedata.category(name[0]).startswith("M"):
        raise InvalidInput(f"knowledge base name {name!r} must not start with a combining mark")
    if not any(_visible(c) for c in name):
        raise InvalidInput(f"knowledge base name {name!r} has no visible character")
    return name


# Characters that draw nothing though Unicode does not class them as spaces (Braille blank, Hangul fillers, …).
_INVISIBLE = frozenset("\u2800\u3164\u115f\u1160\uffa0\u180e\u034f")


def _visible(c: str) -> bool:
    category = unicodedata.category(c)
    return c not in _INVISIBLE and not category.startswith(("Z", "M", "C"))


MAX_DOC_ID_CHARS = 128


def possible_doc_id(doc_id: str) -> bool:
    """Whether a document could have this id (ids are content hashes: no control characters, at most 128
    characters): one that could not is absent without asking the store, where some characters (NUL) cannot even
    be sent."""
    return 0 < len(doc_id) <= MAX_DOC_ID_CHARS and not any(unicodedata.category(c) in ("Cc", "Cs") for c in doc_id)


def kb_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:24]
