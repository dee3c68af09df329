from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool

from kb_service.api.auth import PrincipalDep
from kb_service.api.deps import CatalogDep, FileSearchDep, RetrieverDep, StoreDep
from kb_service.api.schemas import KnowledgeBaseCreate, KnowledgeBasePublic

router = APIRouter(prefix="/v1/knowledge-bases", tags=["knowledge-bases"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_kb(body: KnowledgeBaseCreate, catalog: CatalogDep, principal: PrincipalDep) -> KnowledgeBasePublic:
    principal.check(body.name)
    catalog.embedders.check_allowed(body.embedding_model)
    kb = await run_in_threadpool(
        catalog.create, body.name, description=body.description, embedding_model=body.embedding_model
    )
    return KnowledgeBasePublic.of(kb, documents=0, chunks=0)


@router.get("")
async def list_kbs(catalog: CatalogDep, principal: PrincipalDep) -> list[KnowledgeBasePublic]:
    """The knowledge bases the caller's key may use, with their document and chunk counts."""

    def load() -> list[KnowledgeBasePublic]:
        return [KnowledgeBasePublic.counted(kb, catalog.store) for kb in catalog.list() if principal.allows(kb.name)]

    return await run_in_threadpool(load)


@router.get("/{kb}")
async def get_kb(kb: str, catalog: CatalogDep, store: StoreDep) -> KnowledgeBasePublic:
    def load() -> KnowledgeBasePublic:
        return KnowledgeBasePublic.counted(catalog.get(kb), store)

    return await run_in_threadpool(load)


@router.delete("/{kb}", status_code=status.HTTP_204_NO_CONTENT)
async def drop_kb(kb: str, catalog: CatalogDep, retriever: RetrieverDep, files: FileSearchDep) -> None:
    dropped = await run_in_threadpool(catalog.drop, kb)
    await run_in_threadpool(retriever.lexical.forget, dropped)  # its lexical index, in memory and on disk
    await run_in_threadpool(files.forget, dropped)  # its files' attachments (the files stay)
