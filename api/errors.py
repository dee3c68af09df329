"""The one place where domain errors become HTTP statuses; every error body is {"error": {type, message}}."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kb_service.core import errors

STATUS: list[tuple[type[errors.KBError], int]] = [
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.KnowledgeBaseNotFound, 404),
    (errors.DocumentNotFound, 404),
    (errors.JobNotFound, 404),
    (errors.OriginalNotFound, 404),
    (errors.PageNotFound, 404),
    (errors.SyncSourceNotFound, 404),
    (errors.ReindexNotFound, 404),
    (errors.FileNotFound, 404),
    (errors.BatchNotFound, 404),
    (errors.ResponseNotFound, 404),
    (errors.KnowledgeBaseExists, 409),
    (errors.EmbeddingModelMismatch, 409),
    (errors.SyncInProgress, 409),
    (errors.ReindexInProgress, 409),
    (errors.ReindexCancelled, 409),
    (errors.IndexSwitched, 409),
    (errors.FileInUse, 409),
    (errors.FileTooLarge, 413),
    (errors.UnsupportedFormat, 415),
    (errors.ParseError, 422),
    (errors.InvalidInput, 422),
    (errors.UnusableOutput, 422),
    (errors.EmbeddingModelUnavailable, 422),
    (errors.EmbeddingError, 502),
    (errors.LLMTimeout, 504),
    (errors.LLMUnavailable, 502),
    (errors.StoreError, 503),
    (errors.QueueUnavailable, 503),
]


def status_of(exc: errors.KBError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 400)


def describe_problems(problems: Sequence[Any]) -> str:
    """Pydantic validation errors as one line: ``loc: message; …`` (``body`` for whole-body errors)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in problems)


def error_body(kind: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"type": kind, "message": message}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.KBError)
    async def _domain(_: Request, exc: errors.KBError) -> JSONResponse:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("ValidationError", describe_problems(exc.errors())), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body("HTTPError", str(exc.detail)), status_code=exc.status_code)
