"""Typed dependencies handed to routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.embeddings import EmbedderPool
from kb_service.filesearch.responses import ResponseLog
from kb_service.filesearch.service import FileSearch
from kb_service.generation.answer import Answerer
from kb_service.jobs import JobManager
from kb_service.retrieval.federated import Federation
from kb_service.retrieval.pipeline import Retriever
from kb_service.stores.base import VectorStore


def _catalog(request: Request) -> Catalog:
    return request.app.state.catalog  # type: ignore[no-any-return]


def _store(request: Request) -> VectorStore:
    return request.app.state.store  # type: ignore[no-any-return]


def _embedders(request: Request) -> EmbedderPool:
    return request.app.state.embedders  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _retriever(request: Request) -> Retriever:
    return request.app.state.retriever  # type: ignore[no-any-return]


def _federation(request: Request) -> Federation:
    return request.app.state.federation  # type: ignore[no-any-return]


def _answerer(request: Request) -> Answerer:
    return request.app.state.answerer  # type: ignore[no-any-return]


def _jobs(request: Request) -> JobManager:
    return request.app.state.jobs  # type: ignore[no-any-return]


CatalogDep = Annotated[Catalog, Depends(_catalog)]
StoreDep = Annotated[VectorStore, Depends(_store)]
EmbeddersDep = Annotated[EmbedderPool, Depends(_embedders)]
SettingsDep = Annotated[Settings, Depends(_settings)]
RetrieverDep = Annotated[Retriever, Depends(_retriever)]
FederationDep = Annotated[Federation, Depends(_federation)]
AnswererDep = Annotated[Answerer, Depends(_answerer)]
JobsDep = Annotated[JobManager, Depends(_jobs)]


def _file_search(request: Request) -> FileSearch:
    return request.app.state.file_search  # type: ignore[no-any-return]


FileSearchDep = Annotated[FileSearch, Depends(_file_search)]


def _responses(request: Request) -> ResponseLog:
    return request.app.state.responses  # type: ignore[no-any-return]


ResponseLogDep = Annotated[ResponseLog, Depends(_responses)]
