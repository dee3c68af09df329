"""kb-service: a RAG knowledge-base service.

One import namespace. ``kb_service.ingest``, ``.retrieval``, ``.generation`` and ``.api`` live in the repository's
top-level folders of those names (mapped by ``pyproject.toml``); the foundations and the other interfaces live here.
"""
