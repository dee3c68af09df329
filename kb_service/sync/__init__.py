"""Keeping a knowledge base in step with a source (a folder, an S3 prefix): ``Syncer`` plans and applies the
changes, the ``SyncState`` remembers what each file was when it was last synced."""

from kb_service.sync.sources import Entry, FolderSource, S3Source, Source, open_source
from kb_service.sync.state import FileState, SyncState
from kb_service.sync.syncer import Syncer, SyncPlan, SyncReport, configured_source

__all__ = [
    "Entry",
    "FileState",
    "FolderSource",
    "S3Source",
    "Source",
    "SyncPlan",
    "SyncReport",
    "SyncState",
    "Syncer",
    "configured_source",
    "open_source",
]
