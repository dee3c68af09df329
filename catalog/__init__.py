"""The knowledge-base catalog: create, find, open (with the KB's own embedding model) and drop."""

from catalog.catalog import Catalog

__all__ = ["Catalog"]
