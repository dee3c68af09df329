"""What a CLI invocation needs, built lazily from the global options (and KB_* environment variables)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from functools import cached_property
from http import HTTPStatus
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from kb_service.client import ClientError, KBClient, LocalClient
from kb_service.core.config import describe_errors
from kb_service.services import Services

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
err_console = Console(stderr=True)
out_console = Console()


class Runtime(Services):
    """What one CLI invocation builds, from the global options (and KB_* environment variables). Commands go
    through ``client``, the in-process client, and print the REST API's schemas."""

    @cached_property
    def client(self) -> LocalClient:
        return LocalClient(services=self)


EXIT_SOME_FAILED = 3  # some files failed, the others went in (kb ingest, kb sync)


def ensure_kb(client: KBClient, kb: str, *, embedding_model: str | None) -> None:
    """Create ``kb`` with ``embedding_model`` unless it exists (what ``kb ingest`` and ``kb sync`` do first)."""
    try:
        client.create_kb(kb, embedding_model=embedding_model)
    except ClientError as exc:
        if exc.status != HTTPStatus.CONFLICT or exc.type != "KnowledgeBaseExists":
            raise


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


@contextmanager
def reported(*, as_json: bool) -> Iterator[None]:
    """A refused request ends the command with its message (exit status 2)."""
    try:
        yield
    except ClientError as exc:
        fail(exc.message, as_json=as_json)


def rt_from(ctx: typer.Context, as_json: bool) -> Runtime:
    """The invocation's Runtime, with configuration errors reported as a clean failure."""
    rt: Runtime = ctx.obj
    try:
        _ = rt.settings
    except ValidationError as exc:
        fail(f"invalid configuration: {describe_errors(exc)}", as_json=as_json)
    return rt
