"""The knowledge-base catalog: create, find, open (with the KB's own embedding model) and drop."""

from kb_service.catalog.catalog import Catalog

__all__ = ["Catalog"]
