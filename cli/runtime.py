"""What a CLI invocation needs, built lazily from the global options (and KB_* environment variables)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from functools import cached_property
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from catalog import Catalog
from core.config import Settings
from embeddings import EmbedderPool
from embeddings.base import Embedder
from generation.answer import Answerer
from generation.factory import build_answerer, build_llm, build_summarizer
from ingest.summarize import Summarizer
from retrieval.factory import build_retriever
from retrieval.pipeline import Retriever
from stores import VectorStore, open_store

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
err_console = Console(stderr=True)
out_console = Console()


class Runtime:
    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = {k: v for k, v in overrides.items() if v is not None}

    def close(self) -> None:
        """Close the store if this invocation opened one (its connection pool's threads must not outlive it)."""
        store = self.__dict__.get("store")
        if store is not None:
            store.close()

    @cached_property
    def settings(self) -> Settings:
        return Settings(**self.overrides)

    @cached_property
    def store(self) -> VectorStore:
        return open_store(self.settings)

    @cached_property
    def embedders(self) -> EmbedderPool:
        return EmbedderPool(self.settings)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.store, self.embedders)

    @cached_property
    def retriever(self) -> Retriever:
        return build_retriever(self.settings, self.store, self.embedders)

    def summarizer(self, embedder: Embedder) -> Summarizer | None:
        """The LLM summarizer when configured (loading the LLM), else None: the extractive default."""
        if self.settings.summary_backend != "llm":
            return None
        return build_summarizer(self.settings, self.answerer.llm, embedder)

    @cached_property
    def answerer(self) -> Answerer:
        llm, why = build_llm(self.settings)
        return build_answerer(self.settings, self.retriever, llm, why)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2, default=_default) + "\n")


def _default(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(str(c) for c in row))
    out_console.print(t)


def fail(message: str, *, as_json: bool, code: int = 2) -> NoReturn:
    if as_json:
        emit_json({"error": message})
    else:
        err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def rt_from(ctx: typer.Context, as_json: bool) -> Runtime:
    """The invocation's Runtime, with configuration errors reported as a clean failure."""
    rt: Runtime = ctx.obj
    try:
        _ = rt.settings
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        fail(f"invalid configuration: {problems}", as_json=as_json)
    return rt
