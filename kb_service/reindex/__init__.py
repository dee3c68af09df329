"""Re-indexing a knowledge base with another embedding model or chunking while it serves: ``Reindexer`` builds the
new index beside the old one and switches in one step; ``ReindexJobs`` runs re-indexes in the service's
background."""

from kb_service.reindex.engine import Reindexer, ReindexPlan, ReindexStatus
from kb_service.reindex.jobs import ReindexJobs

__all__ = ["ReindexJobs", "ReindexPlan", "ReindexStatus", "Reindexer"]
