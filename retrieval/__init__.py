"""Retrieval: two-stage summary→chunk search, hybrid fusion and reranking (see the retrieval issue)."""
