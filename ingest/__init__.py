"""Ingestion: parse files, chunk, summarise, embed and store documents."""
