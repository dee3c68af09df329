"""OpenAI's Vector Stores API over knowledge bases: a vector store is a knowledge base (its id is the knowledge
base's name, so one created either way is visible both ways); its files are the knowledge base's documents, put in
from uploaded files by ordinary ingestion jobs; search is our retrieval (two-stage, hybrid, reranked)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from kb_service.api.auth import Principal, PrincipalDep
from kb_service.api.deps import CatalogDep, FileSearchDep, RetrieverDep, SettingsDep
from kb_service.api.filesearch_schemas import (
    MAX_PAGE,
    BatchCreate,
    BatchObject,
    Deleted,
    FileAttach,
    FileCounts,
    SearchResult,
    SearchResultPage,
    VectorStoreCreate,
    VectorStoreFileList,
    VectorStoreFileObject,
    VectorStoreList,
    VectorStoreObject,
    VectorStoreSearch,
    VectorStoreUpdate,
    page_of,
)
from kb_service.api.routes.files import owned
from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.errors import BatchNotFound, InvalidInput, KBError
from kb_service.core.records import KnowledgeBase, validate_kb_name
from kb_service.filesearch import filters
from kb_service.filesearch.service import FileSearch, StoreFile, check_attributes
from kb_service.retrieval.pipeline import SearchOptions

router = APIRouter(prefix="/v1/vector_stores", tags=["vector-stores"])
Order = Literal["asc", "desc"]
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
FileStatus = Literal["in_progress", "completed", "failed", "cancelled"]


@dataclass
class FilePaging:
    """OpenAI's paging of a vector store's files, with its status filter."""

    limit: PageLimit = 20
    order: Order = "desc"
    after: str | None = None
    before: str | None = None
    filter: Annotated[FileStatus | None, Query()] = None

    def page(self, found: list[StoreFile], vector_store_id: str) -> VectorStoreFileList:
        kept = [f for f in found if self.filter is None or f.status == self.filter]
        page, more = page_of(kept, after=self.after, before=self.before, limit=self.limit, order=self.order)
        data = [VectorStoreFileObject.of(f, vector_store_id) for f in page]
        return VectorStoreFileList(data=data, has_more=more, first_id=_first(data), last_id=_last(data))


def _kb(catalog: Catalog, vector_store_id: str, principal: Principal) -> KnowledgeBase:
    principal.check(vector_store_id)
    return catalog.get(vector_store_id)


def _public(files: FileSearch, kb: KnowledgeBase) -> VectorStoreObject:
    counts = files.counts(kb)
    usage = files.usage_bytes(kb)
    return VectorStoreObject(
        id=kb.name,
        created_at=int(kb.created_at),
        name=kb.name,
        description=kb.description,
        usage_bytes=usage,
        file_counts=FileCounts(**counts),
        status="in_progress" if counts["in_progress"] else "completed",
        metadata=files.registry.metadata(kb.uid),
    )


@router.post("")
async def create_vector_store(
    body: VectorStoreCreate, catalog: CatalogDep, files: FileSearchDep, principal: PrincipalDep
) -> VectorStoreObject:
    """A new knowledge base named ``name`` (without one: a generated ``vs_…`` id), with ``file_ids`` attached."""
    name = validate_kb_name(body.name) if body.name else f"vs_{secrets.token_hex(12)}"
    principal.check(name)

    def create() -> VectorStoreObject:
        stored = [owned(files, file_id, principal) for file_id in body.file_ids]  # all exist before anything is made
        kb = catalog.create(name, description=body.description)
        files.registry.set_metadata(kb.uid, body.metadata or {})
        for f in stored:
            files.attach(kb.name, f, {})
        return _public(files, kb)

    return await run_in_threadpool(create)


@router.get("")
async def list_vector_stores(
    catalog: CatalogDep,
    files: FileSearchDep,
    principal: PrincipalDep,
    limit: PageLimit = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
) -> VectorStoreList:
    def load() -> VectorStoreList:
        kbs = sorted((kb for kb in catalog.list() if principal.allows(kb.name)), key=lambda kb: kb.created_at)
        page, more = page_of([_Named(kb.name, kb) for kb in kbs], after=after, before=before, limit=limit, order=order)
        data = [_public(files, p.kb) for p in page]
        return VectorStoreList(data=data, has_more=more, first_id=_first(data), last_id=_last(data))

    return await run_in_threadpool(load)


@router.get("/{vector_store_id}")
async def retrieve_vector_store(
    vector_store_id: str, catalog: CatalogDep, files: FileSearchDep, principal: PrincipalDep
) -> VectorStoreObject:
    return await run_in_threadpool(lambda: _public(files, _kb(catalog, vector_store_id, principal)))


@router.post("/{vector_store_id}")
async def modify_vector_store(
    vector_store_id: str, body: VectorStoreUpdate, catalog: CatalogDep, files: FileSearchDep, principal: PrincipalDep
) -> VectorStoreObject:
    """Its metadata; its name is its id and cannot change."""

    def modify() -> VectorStoreObject:
        kb = _kb(catalog, vector_store_id, principal)
        if body.name is not None and body.name != kb.name:
            raise InvalidInput(f"a vector store's name is its id and cannot change (it is {kb.name!r})")
        if body.metadata is not None:
            files.registry.set_metadata(kb.uid, body.metadata)
        return _public(files, kb)

    return await run_in_threadpool(modify)


@router.delete("/{vector_store_id}")
async def delete_vector_store(
    vector_store_id: str, catalog: CatalogDep, files: FileSearchDep, retriever: RetrieverDep, principal: PrincipalDep
) -> Deleted:
    """The knowledge base and all its documents; the files it was made from stay in the Files API."""

    def drop() -> None:
        principal.check(vector_store_id)
        dropped = catalog.drop(vector_store_id)
        retriever.lexical.forget(dropped)
        files.forget(dropped)

    await run_in_threadpool(drop)
    return Deleted(id=vector_store_id, object="vector_store.deleted")


@router.post("/{vector_store_id}/files")
async def attach_file(
    vector_store_id: str, body: FileAttach, catalog: CatalogDep, files: FileSearchDep, principal: PrincipalDep
) -> VectorStoreFileObject:
    """Ingest an uploaded file into the vector store: ``in_progress`` until its job ends (poll the file)."""

    def attach() -> StoreFile:
        kb = _kb(catalog, vector_store_id, principal)
        attributes = check_attributes(body.attributes)
        return files.attach(kb.name, owned(files, body.file_id, principal), attributes)

    return VectorStoreFileObject.of(await run_in_threadpool(attach), vector_store_id)


@router.get("/{vector_store_id}/files")
async def list_vector_store_files(
    vector_store_id: str,
    catalog: CatalogDep,
    files: FileSearchDep,
    principal: PrincipalDep,
    paging: Annotated[FilePaging, Depends()],
) -> VectorStoreFileList:
    def load() -> VectorStoreFileList:
        kb = _kb(catalog, vector_store_id, principal)
        return paging.page(files.files(kb.name), vector_store_id)

    return await run_in_threadpool(load)


@router.get("/{vector_store_id}/files/{file_id}")
async def retrieve_vector_store_file(
    vector_store_id: str, file_id: str, catalog: CatalogDep, files: FileSearchDep, principal: PrincipalDep
) -> VectorStoreFileObject:
    def load() -> StoreFile:
        kb = _kb(catalog, vector_store_id, principal)
        return files.file(kb.name, file_id)

    return VectorStoreFileObject.of(await run_in_threadpool(load), vector_store_id)


@router.delete("/{vector_store_id}/files/{file_id}")
async def delete_vector_store_file(
    vector_store_id: str, file_id: str, catalog: CatalogDep, files: FileSearchDep, principal: PrincipalDep
) -> Deleted:
    """Take the file out of the vector store (its document is deleted); the file stays in the Files API."""

    def detach() -> None:
        kb = _kb(catalog, vector_store_id, principal)
        files.file(kb.name, file_id)  # 404 for a file that is not in it
        files.detach(kb.name, file_id)

    await run_in_threadpool(detach)
    return Deleted(id=file_id, object="vector_store.file.deleted")


@router.post("/{vector_store_id}/file_batches")
async def create_file_batch(
    vector_store_id: str, body: BatchCreate, catalog: CatalogDep, files: FileSearchDep, principal: PrincipalDep
) -> BatchObject:
    """Attach several files at once: ``file_ids`` (with the batch's ``attributes``) or ``files`` (each with its own)."""
    if (body.file_ids is None) == (body.files is None):
        raise InvalidInput("give either file_ids or files, not both and not neither")
    wanted = body.files or [FileAttach(file_id=f, attributes=body.attributes) for f in body.file_ids or []]

    def create() -> BatchObject:
        kb = _kb(catalog, vector_store_id, principal)
        checked = [(owned(files, w.file_id, principal), check_attributes(w.attributes)) for w in wanted]
        for stored, attributes in checked:
            files.attach(kb.name, stored, attributes)
        batch = files.registry.add_batch(kb.uid, [stored.id for stored, _ in checked])
        return _batch(files, kb, batch.id)

    return await run_in_threadpool(create)


@router.get("/{vector_store_id}/file_batches/{batch_id}")
async def retrieve_file_batch(
    vector_store_id: str, batch_id: str, catalog: CatalogDep, files: FileSearchDep, principal: PrincipalDep
) -> BatchObject:
    return await run_in_threadpool(lambda: _batch(files, _kb(catalog, vector_store_id, principal), batch_id))


@router.get("/{vector_store_id}/file_batches/{batch_id}/files")
async def list_file_batch_files(
    vector_store_id: str,
    batch_id: str,
    catalog: CatalogDep,
    files: FileSearchDep,
    principal: PrincipalDep,
    paging: Annotated[FilePaging, Depends()],
) -> VectorStoreFileList:
    def load() -> VectorStoreFileList:
        kb = _kb(catalog, vector_store_id, principal)
        return paging.page(_batch_files(files, kb, batch_id), vector_store_id)

    return await run_in_threadpool(load)


@router.post("/{vector_store_id}/search")
async def search_vector_store(
    vector_store_id: str,
    body: VectorStoreSearch,
    catalog: CatalogDep,
    files: FileSearchDep,
    retriever: RetrieverDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> SearchResultPage:
    """The best chunks for the query, each under its file, with the file's attributes. ``filters``: OpenAI's
    comparison and compound filters on attributes. ``ranking_options.ranker: none`` turns the reranker off."""
    queries = body.queries()
    if not queries:
        raise InvalidInput("query must not be empty")
    where = filters.parse(body.filters)

    def run() -> SearchResultPage:
        _kb(catalog, vector_store_id, principal)
        kb, embedder = catalog.open(vector_store_id)
        hits = files.search(retriever, kb, embedder, queries, options=search_options(settings, body), where=where)
        return SearchResultPage(search_query=queries, data=[SearchResult.of(h) for h in hits])

    return await run_in_threadpool(run)


def search_options(settings: Settings, body: VectorStoreSearch) -> SearchOptions:
    rerank = None if body.ranking_options is None or body.ranking_options.ranker != "none" else False
    return SearchOptions.from_settings(settings, top_k=body.max_num_results, rerank=rerank)


class _Named:
    def __init__(self, id_: str, kb: KnowledgeBase) -> None:
        self.id, self.kb = id_, kb


def _batch_files(files: FileSearch, kb: KnowledgeBase, batch_id: str) -> list[StoreFile]:
    batch = files.registry.batch(kb.uid, batch_id)
    if batch is None:
        raise BatchNotFound(f"file batch {batch_id!r} not found in vector store {kb.name!r}")
    out = []
    for file_id in batch.file_ids:
        try:
            out.append(files.file(kb.name, file_id))
        except KBError:  # detached or deleted since
            continue
    return out


def _batch(files: FileSearch, kb: KnowledgeBase, batch_id: str) -> BatchObject:
    found = _batch_files(files, kb, batch_id)
    counts: dict[str, Any] = {
        s: sum(f.status == s for f in found) for s in ("in_progress", "completed", "failed", "cancelled")
    }
    batch = files.registry.batch(kb.uid, batch_id)
    assert batch is not None
    return BatchObject(
        id=batch_id,
        created_at=int(batch.created_at),
        vector_store_id=kb.name,
        status="in_progress" if counts["in_progress"] else "completed",
        file_counts=FileCounts(**counts, total=len(found)),
    )


def _first(data: list[Any]) -> str | None:
    return data[0].id if data else None


def _last(data: list[Any]) -> str | None:
    return data[-1].id if data else None
