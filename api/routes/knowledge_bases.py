from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool

from kb_service.api.auth import PrincipalDep
from kb_service.api.deps import CatalogDep, StoreDep
from kb_service.api.schemas import KnowledgeBaseCreate, KnowledgeBasePublic

router = APIRouter(prefix="/v1/knowledge-bases", tags=["knowledge-bases"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_kb(body: KnowledgeBaseCreate, catalog: CatalogDep, principal: PrincipalDep) -> KnowledgeBasePublic:
    principal.check(body.name)
    kb = await run_in_threadpool(
        catalog.create, body.name, description=body.description, embedding_model=body.embedding_model
    )
    return KnowledgeBasePublic.of(kb, documents=0, chunks=0)


@router.get("")
async def list_kbs(catalog: CatalogDep, principal: PrincipalDep) -> list[KnowledgeBasePublic]:
    """The knowledge bases the caller's key may use."""
    kbs = await run_in_threadpool(catalog.list)
    return [KnowledgeBasePublic.of(kb) for kb in kbs if principal.allows(kb.name)]


@router.get("/{kb}")
async def get_kb(kb: str, catalog: CatalogDep, store: StoreDep) -> KnowledgeBasePublic:
    def load() -> KnowledgeBasePublic:
        found = catalog.get(kb)
        return KnowledgeBasePublic.of(found, documents=store.count_documents(found), chunks=store.count_chunks(found))

    return await run_in_threadpool(load)


@router.delete("/{kb}", status_code=status.HTTP_204_NO_CONTENT)
async def drop_kb(kb: str, catalog: CatalogDep) -> None:
    await run_in_threadpool(catalog.drop, kb)
