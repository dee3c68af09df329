"""The original file of every document, kept beside the index so that it can be downloaded, its pages rendered and
the knowledge base rebuilt from it.

A file lives at ``<root>/<kb key>/<doc id[:2]>/<doc id>/<sha256 of its bytes>``: addressed by its content inside the
folder of its document (a document's id is the hash of its text, so two files with one text are one document and
keep one file). Writes go to a temporary name and are renamed into place, so a reader never sees half a file. The
document's row is the reference: :func:`sweep` removes files whose document is gone (after a crash between the two).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kb_service.core.records import KnowledgeBase, possible_doc_id

_HEX = frozenset("0123456789abcdef")
COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class Original:
    doc_id: str
    sha256: str
    size: int
    path: Path


class Originals:
    """Original files by knowledge base and document. ``keep=False`` stores nothing new (deletes still work, so
    files kept before the setting changed still go with their documents)."""

    def __init__(self, root: Path, *, keep: bool = True) -> None:
        self.root = root
        self.keep = keep

    def put(self, kb: KnowledgeBase, doc_id: str, data: bytes) -> Original | None:
        """Store ``data`` as the document's original (idempotent; None when originals are not kept)."""
        return self._store(kb, doc_id, iter((data,)))

    def put_file(self, kb: KnowledgeBase, doc_id: str, path: Path) -> Original | None:
        """Copy the file at ``path`` in as the document's original (streamed, never whole in memory)."""
        if not self.keep:
            return None
        with path.open("rb") as src:
            return self._store(kb, doc_id, iter(lambda: src.read(COPY_BLOCK), b""))

    def _store(self, kb: KnowledgeBase, doc_id: str, blocks: Iterator[bytes]) -> Original | None:
        if not self.keep:
            return None
        folder = self._folder(kb, doc_id)
        folder.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                for block in blocks:
                    digest.update(block)
                    size += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            os.replace(tmp, folder / sha)  # the same bytes again: the same name, atomically
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for other in self._files(folder):  # one original per document: an earlier one (other bytes) goes
            if other.name != sha:
                other.unlink(missing_ok=True)
        return Original(doc_id, sha, size, folder / sha)

    def get(self, kb: KnowledgeBase, doc_id: str) -> Original | None:
        if not possible_doc_id(doc_id) or not _safe(doc_id):
            return None
        for path in self._files(self._folder(kb, doc_id)):
            return Original(doc_id, path.name, path.stat().st_size, path)
        return None

    def delete(self, kb: KnowledgeBase, doc_id: str) -> bool:
        """Remove the document's original; whether there was one."""
        if not possible_doc_id(doc_id) or not _safe(doc_id):
            return False
        folder = self._folder(kb, doc_id)
        existed = folder.is_dir()
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # the shard folder, once empty
        return existed

    def drop(self, kb: KnowledgeBase) -> None:
        """Remove every original of a knowledge base."""
        shutil.rmtree(self.root / kb.home_key, ignore_errors=True)

    def doc_ids(self, kb: KnowledgeBase) -> set[str]:
        """Ids of the documents of ``kb`` with an original kept."""
        base = self.root / kb.home_key
        if not base.is_dir():
            return set()
        return {d.name for shard in base.iterdir() if shard.is_dir() for d in shard.iterdir() if any(self._files(d))}

    def sweep(self, kb: KnowledgeBase, live: Iterable[str], *, older_than_s: float = 0.0) -> int:
        """Remove the originals of ``kb`` whose document is not among ``live`` (left by a crash between the file and
        the row, or by a delete that stopped half-way) and unchanged for ``older_than_s``; returns how many."""
        keep, cutoff, removed = set(live), time.time() - older_than_s, 0
        for doc_id in self.doc_ids(kb) - keep:
            folder = self._folder(kb, doc_id)
            if all(f.stat().st_mtime <= cutoff for f in self._files(folder)) and self.delete(kb, doc_id):
                removed += 1
        return removed

    def sweep_dropped(self, live: Iterable[KnowledgeBase], *, older_than_s: float = 0.0) -> int:
        """Remove the folders of knowledge bases that no longer exist (dropped by a process that died before it
        removed them) and are unchanged for ``older_than_s``; returns how many."""
        if not self.root.is_dir():
            return 0
        keys, cutoff = {kb.home_key for kb in live}, time.time() - older_than_s
        gone = [d for d in self.root.iterdir() if d.is_dir() and d.name not in keys and d.stat().st_mtime <= cutoff]
        for folder in gone:
            shutil.rmtree(folder, ignore_errors=True)
        return len(gone)

    def _folder(self, kb: KnowledgeBase, doc_id: str) -> Path:
        return self.root / kb.home_key / doc_id[:2] / doc_id

    @staticmethod
    def _files(folder: Path) -> Iterator[Path]:
        if folder.is_dir():
            yield from (p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


def _safe(doc_id: str) -> bool:
    """Document ids are SHA-256 hex digests; anything else names no file (and never a path outside the root)."""
    return len(doc_id) == 64 and set(doc_id) <= _HEX
