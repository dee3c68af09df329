"""The file registry: files survive a restart byte for byte, a blob without its row is swept, attachments and
batches are per knowledge base identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_service.core.errors import FileNotFound
from kb_service.filesearch.registry import Attachment, FileRegistry

pytestmark = pytest.mark.unit


def test_files_survive_a_restart_and_deletes_remove_the_blob(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path)
    kept = registry.add(filename="报告.pdf", purpose="assistants", data=b"%PDF-1.7 ...", owner="team-a")
    gone = registry.add(filename="b.md", purpose="user_data", data=b"# b", owner="admin")
    registry.remove(gone.id)
    (tmp_path / "blobs" / "file-orphan").write_bytes(b"a crash between the blob and its row")
    registry.close()

    again = FileRegistry(tmp_path)
    assert again.get(kept.id) == kept and again.content(kept.id) == b"%PDF-1.7 ..."
    assert [f.id for f in again.files()] == [kept.id] and again.files(purpose="user_data") == []
    with pytest.raises(FileNotFound, match=gone.id):
        again.get(gone.id)
    assert sorted(p.name for p in (tmp_path / "blobs").iterdir()) == [kept.id]


def test_attachments_batches_and_metadata_are_per_knowledge_base_identity(tmp_path: Path) -> None:
    registry = FileRegistry(tmp_path)
    f = registry.add(filename="a.md", purpose="assistants", data=b"# a", owner="admin")
    old = Attachment(kb="kb", kb_uid="uid-1", file_id=f.id, job_id="j1", attributes={"team": "x"})
    registry.put(old)
    registry.put(Attachment(kb="kb", kb_uid="uid-2", file_id=f.id, job_id="j2", status="completed", doc_id="d"))
    batch = registry.add_batch("uid-1", [f.id])
    registry.set_metadata("uid-1", {"owner": "ops"})
    assert registry.attachment("uid-1", f.id) == old
    assert registry.attachments_of_docs("uid-2", ["d", "other"]) == {"d": registry.attachment("uid-2", f.id)}
    assert [a.kb_uid for a in registry.attachments_of_file(f.id)] == ["uid-1", "uid-2"]
    registry.forget_kb("uid-1")  # dropped: its attachments, batches and metadata; the file stays
    assert registry.attachment("uid-1", f.id) is None and registry.batch("uid-1", batch.id) is None
    assert registry.metadata("uid-1") == {} and registry.get(f.id) == f
    assert registry.attachment("uid-2", f.id) is not None
