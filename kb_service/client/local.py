"""The in-process client: the service's components in this Python process (a notebook, a script), no server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kb_service.api import queries
from kb_service.api.errors import describe_problems, status_of
from kb_service.api.schemas import (
    SAMPLING,
    AnswerPublic,
    AskRequest,
    AuditPublic,
    DocumentPage,
    DocumentPublic,
    DocumentQuery,
    KnowledgeBasePublic,
    MultiAskRequest,
    MultiSearchRequest,
    PageQuery,
    ReindexRequest,
    ReindexStatusPublic,
    ResiduePublic,
    SearchRequest,
    SearchResponse,
    SyncReportPublic,
)
from kb_service.client.base import ClientError, Files, IngestOutcome, KBs, OnOutcome, OnStage, Scalar, named_files
from kb_service.core.config import Settings
from kb_service.core.errors import KBError
from kb_service.evaluation.answers import AnswerReport, QASet, run_answers
from kb_service.evaluation.harness import EvalDataset, EvalReport
from kb_service.evaluation.runner import EvalRun, ProgressFactory, compare_reindex, no_progress, run_eval
from kb_service.generation.answer import Answer
from kb_service.generation.factory import ask_options
from kb_service.generation.llm import Delta, Message
from kb_service.ingest.pipeline import IngestResult
from kb_service.ingest.sources import SourceItem
from kb_service.services import Services
from kb_service.stores.base import all_documents
from kb_service.stores.recovery import recover
from kb_service.sync import configured_source

PAGE = 1000


class LocalClient:
    """Same calls and return types as :class:`client.http.HTTPClient`; errors are :class:`ClientError` with the
    status the API would answer. Also runs the evaluation harness (``evaluate``), which needs the components."""

    def __init__(self, settings: Settings | None = None, *, services: Services | None = None, **overrides: Any) -> None:
        """``services``: components built already (the CLI's), shared instead of built anew."""
        self.services = services or Services(overrides, settings=settings)

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.services.close()

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def create_kb(self, name: str, *, embedding_model: str | None = None, description: str = "") -> KnowledgeBasePublic:
        with _errors():
            created = self.services.catalog.create(name, description=description, embedding_model=embedding_model)
            return KnowledgeBasePublic.of(created, documents=0, chunks=0)

    def get_kb(self, name: str) -> KnowledgeBasePublic:
        with _errors():
            return KnowledgeBasePublic.counted(self.services.catalog.get(name), self.services.store)

    def list_kbs(self) -> list[KnowledgeBasePublic]:
        with _errors():
            return [KnowledgeBasePublic.counted(kb, self.services.store) for kb in self.services.catalog.list()]

    def drop_kb(self, name: str) -> None:
        with _errors():
            self.services.forget(self.services.catalog.drop(name))

    def add_texts(
        self, kb: str, texts: Mapping[str, str], *, metadata: Mapping[str, Scalar] | None = None
    ) -> list[IngestOutcome]:
        items = [SourceItem(name=name, text=text, metadata=dict(metadata or {})) for name, text in texts.items()]
        return self._ingest(kb, items)

    def add_files(
        self, kb: str, files: Files, *, on_outcome: OnOutcome | None = None, on_stage: OnStage | None = None
    ) -> list[IngestOutcome]:
        """Plain paths are named by their file name; a mapping names each document (a path inside a folder)."""
        items = [SourceItem(name=name, path=path) for name, path in named_files(files)]
        return self._ingest(kb, items, on_outcome, on_stage)

    def _ingest(
        self,
        kb: str,
        items: list[SourceItem],
        on_outcome: OnOutcome | None = None,
        on_stage: OnStage | None = None,
    ) -> list[IngestOutcome]:
        s = self.services
        hear = (lambda result: on_outcome(_outcome(result))) if on_outcome is not None else None
        with _errors():
            knowledge_base, embedder = s.catalog.open(kb)
            ingestor = s.ingestor(knowledge_base, embedder)
            if on_stage is not None:
                ingestor.on_stage = lambda source, stage, chunks: on_stage(source, stage.value, chunks)
            return [_outcome(r) for r in ingestor.ingest(items, on_result=hear)]

    def documents(self, kb: str) -> list[DocumentPublic]:
        with _errors():
            docs = all_documents(self.services.store, self.services.catalog.get(kb), page=PAGE)
        return [DocumentPublic.of(d) for d in docs]

    def document_page(self, kb: str, *, status: str | None = None, offset: int = 0, limit: int = 100) -> DocumentPage:
        with _errors():
            q = DocumentQuery.model_validate({"status": status, "offset": offset, "limit": limit})
            return queries.document_page(self.services.catalog, kb, status=q.status, offset=q.offset, limit=q.limit)

    def get_document(self, kb: str, doc_id: str) -> DocumentPublic:
        with _errors():
            return DocumentPublic.of(self.services.catalog.document(kb, doc_id)[1])

    def delete_document(self, kb: str, doc_id: str) -> None:
        with _errors():
            self.services.catalog.delete_document(kb, doc_id)

    def download(self, kb: str, doc_id: str) -> bytes:
        with _errors():
            return queries.original(self.services.catalog, kb, doc_id)[1].path.read_bytes()

    def page_image(self, kb: str, doc_id: str, page: int, *, width: int = 1000) -> bytes:
        with _errors():
            q = PageQuery.model_validate({"page": page, "width": width})
            return queries.page_image(self.services.catalog, kb, doc_id, q.page, q.width)

    def residue(self, kb: str, doc_id: str) -> ResiduePublic:
        with _errors():
            return queries.document_residue(self.services.catalog, self.services.retriever.lexical, kb, doc_id)

    def audit(self, kb: str) -> AuditPublic:
        with _errors():
            return queries.kb_audit(self.services.catalog, kb)

    def repair(self, kb: str) -> dict[str, Any]:
        """Remove what a crash left unfinished in ``kb`` (the service does this at start-up; in-process only)."""
        with _errors():
            return asdict(
                recover(self.services.store, self.services.catalog.get(kb), originals=self.services.originals)
            )

    def sync(
        self,
        kb: str,
        source: str | Path | None = None,
        *,
        dry_run: bool = False,
        on_outcome: OnOutcome | None = None,
    ) -> SyncReportPublic:
        """Mirror ``source``, a folder or ``s3://bucket/prefix`` (default: the one ``KB_SYNC_SOURCES`` names for
        ``kb``), into ``kb``."""
        hear = (lambda result: on_outcome(_outcome(result))) if on_outcome is not None else None
        with _errors():
            if source is None:
                source = configured_source(self.settings.ingest.sync_sources, kb)
            return SyncReportPublic.of(self.services.sync.run(kb, source, dry_run=dry_run, on_result=hear))

    def reindex(
        self,
        kb: str,
        embedding_model: str,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        switch: bool = True,
        on_progress: Callable[[ReindexStatusPublic], None] | None = None,
    ) -> ReindexStatusPublic:
        """Re-index ``kb`` with ``embedding_model`` (and, given a chunking, re-chunked from the original files),
        here and now; the old index keeps answering searches that started on it for ``reindex_retire_s`` after the
        switch, then it is removed (this call waits for that). A recorded re-index of the same plan is resumed."""
        with _errors():
            body = ReindexRequest(
                embedding_model=embedding_model, chunk_size=chunk_size, chunk_overlap=chunk_overlap, switch=switch
            )
            hear = (lambda s: on_progress(ReindexStatusPublic.of(s))) if on_progress is not None else lambda _s: None
            reindexer = self.services.reindexer
            status = reindexer.run(kb, body.plan(), report=hear, switch=switch, retire_later=False)
            if status.state == "ready":
                time.sleep(self.settings.ingest.reindex_retire_s)
                reindexer.retire(self.services.catalog.get(kb))
            return ReindexStatusPublic.of(status)

    def reindex_status(self, kb: str) -> ReindexStatusPublic:
        """The re-index recorded for ``kb`` (none runs in this process between calls: ``interrupted`` or
        ``built``); 404 when there is none."""
        with _errors():
            return ReindexStatusPublic.of(self.services.reindex.status(kb))

    def cancel_reindex(self, kb: str) -> ReindexStatusPublic:
        """Discard the re-index recorded for ``kb``: it stays as it was."""
        with _errors():
            return ReindexStatusPublic.of(self.services.reindex.cancel(kb))

    def search(self, kb: KBs, query: str, **options: Any) -> SearchResponse:
        s = self.services
        with _errors():
            if isinstance(kb, str):
                body = SearchRequest(query=query, **options)
                result = s.retriever.search(*s.catalog.open(kb), body.query, body.options(self.settings))
            else:
                body = MultiSearchRequest(query=query, knowledge_bases=list(kb), **options)
                targets = queries.open_targets(s.catalog, body.knowledge_bases)
                result = s.federation.search(targets, body.query, body.options(self.settings))
        return SearchResponse.of(result, trace=body.trace)

    def ask(self, kb: KBs, question: str, **options: Any) -> AnswerPublic:
        answer = None
        for event in self.ask_stream(kb, question, **options):
            if isinstance(event, AnswerPublic):
                answer = event
        assert answer is not None  # every answer stream ends with the answer
        return answer

    def ask_stream(self, kb: KBs, question: str, **options: Any) -> Iterator[str | AnswerPublic]:
        s = self.services
        with _errors():
            body: AskRequest
            if isinstance(kb, str):
                body = AskRequest(question=question, **options)
                search = s.retriever.on(*s.catalog.open(kb))
            else:
                body = MultiAskRequest(question=question, knowledge_bases=list(kb), **options)
                search = s.federation.on(queries.open_targets(s.catalog, body.knowledge_bases))
            ask = ask_options(
                self.settings,
                search=body.search_options(self.settings),
                compress=body.compress,
                synthesis=body.synthesis,
                sources=body.sources,
                rewrite=body.rewrite,
                answer_mode=body.answer_mode,
                stop=body.stop,
                **body.model_dump(include=SAMPLING),
            )
            history: list[Message] = [{"role": m.role, "content": m.content} for m in body.history]
            for event in s.answerer.stream(search, body.question, history=history, options=ask):
                if isinstance(event, Answer):
                    yield AnswerPublic.of(event)
                elif isinstance(event, Delta) and event.content:
                    yield event.content

    @property
    def eval_run(self) -> EvalRun:
        s = self.services
        return EvalRun(settings=s.settings, catalog=s.catalog, retriever=s.retriever)

    def evaluate(
        self,
        dataset: EvalDataset,
        *,
        configs: list[str] | None = None,
        embedding_model: str | None = None,
        warm_rerank: bool = True,
        progress: ProgressFactory = no_progress,
    ) -> EvalReport:
        """The retrieval harness on ``dataset`` (its knowledge base is built once and cached by content);
        ``warm_rerank``: an embedding reranker embeds every chunk first (cached on disk)."""
        return run_eval(
            self.eval_run,
            dataset,
            configs=configs,
            embedding_model=embedding_model,
            warm_rerank=warm_rerank,
            progress=progress,
        )

    def compare_reindex(
        self,
        dataset: EvalDataset,
        new_model: str,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        configs: list[str] | None = None,
        embedding_model: str | None = None,
        warm_rerank: bool = True,
        progress: ProgressFactory = no_progress,
    ) -> tuple[EvalReport, EvalReport, ReindexStatusPublic]:
        """The retrieval harness on ``dataset``'s knowledge base, then on a re-index of it with ``new_model`` (and
        the chunking, if given) built beside it and not switched to: both reports, and the re-index's status."""
        plan = ReindexRequest(embedding_model=new_model, chunk_size=chunk_size, chunk_overlap=chunk_overlap).plan()
        with _errors():
            current, reindexed, status = compare_reindex(
                self.eval_run,
                dataset,
                plan,
                embedding_model=embedding_model,
                configs=configs,
                warm_rerank=warm_rerank,
                progress=progress,
            )
        return current, reindexed, ReindexStatusPublic.of(status)

    def evaluate_answers(
        self,
        qa: QASet,
        *,
        modes: Sequence[str],
        embedding_model: str | None = None,
        max_tokens: int | None = None,
        negatives: bool = True,
        progress: ProgressFactory = no_progress,
    ) -> AnswerReport:
        """The answer harness on ``qa``, per answer mode (``kb eval-answers``)."""
        return run_answers(
            qa,
            run=self.eval_run,
            answerer=self.services.answerer,
            modes=modes,
            embedding_model=embedding_model,
            max_tokens=max_tokens,
            negatives=negatives,
            progress=progress,
        )


def _outcome(result: IngestResult) -> IngestOutcome:
    return IngestOutcome(
        source=result.source,
        outcome=result.outcome.value,
        doc_id=result.doc_id,
        chunks=result.chunks,
        replaced=result.replaced,
        reason=result.reason,
        error=result.error,
    )


@contextmanager
def _errors() -> Iterator[None]:
    """KBError and invalid fields → ClientError with the status the REST API would answer."""
    try:
        yield
    except KBError as exc:
        raise ClientError(status_of(exc), type(exc).__name__, str(exc)) from exc
    except ValidationError as exc:
        raise ClientError(422, "ValidationError", describe_problems(exc.errors())) from exc
