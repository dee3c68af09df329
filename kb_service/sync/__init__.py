"""Keeping a knowledge base in step with a source folder: ``FolderSync`` plans and applies the changes, the
``SyncState`` remembers what each file was when it was last synced."""

from kb_service.sync.state import FileState, SyncState
from kb_service.sync.syncer import FolderSync, SyncPlan, SyncReport, configured_source

__all__ = ["FileState", "FolderSync", "SyncPlan", "SyncReport", "SyncState", "configured_source"]
