"""What can be ingested: a file on disk, uploaded bytes, or a text; and how to walk folders."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kb_service.core.metadata import check_metadata
from kb_service.core.records import Metadata, ParsedDocument
from kb_service.ingest.parsers import parse_bytes, parse_file
from kb_service.ingest.parsers.ocr import OcrOptions


@dataclass
class SourceItem:
    """One document to ingest. ``name`` identifies it inside the KB: a changed file under the same name
    replaces the old version."""

    name: str
    path: Path | None = None
    data: bytes | None = None
    text: str | None = None
    title: str | None = None
    metadata: Metadata = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metadata = check_metadata(self.metadata)  # InvalidInput before any job exists

    def parse(self, *, max_bytes: int | None = None, ocr: OcrOptions | None = None) -> ParsedDocument:
        if self.text is not None:
            doc = parse_bytes(
                self.text.encode("utf-8"), self.name if "." in self.name else f"{self.name}.txt", max_bytes=max_bytes
            )
            doc.source = self.name
        elif self.data is not None:
            doc = parse_bytes(self.data, self.name, max_bytes=max_bytes, ocr=ocr)
        elif self.path is not None:
            doc = parse_file(self.path, source=self.name, max_bytes=max_bytes, ocr=ocr)
        else:
            raise ValueError(f"source {self.name!r} has neither text, data nor path")
        if self.title:
            doc.title = self.title
        doc.metadata.update(self.metadata)
        return doc


def iter_paths(paths: Sequence[Path]) -> Iterator[SourceItem]:
    """Files given directly keep their file name; files found in a folder are named by their path relative
    to that folder, so equal file names in different sub-folders stay distinct documents."""
    for root in paths:
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root))):
                yield SourceItem(name=path.relative_to(root).as_posix(), path=path)
        elif root.is_file():
            yield SourceItem(name=root.name, path=root)
        else:
            raise FileNotFoundError(f"no such file or folder: {root}")


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)
