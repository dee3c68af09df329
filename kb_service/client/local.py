"""The in-process client: the service's components in this Python process (a notebook, a script), no server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kb_service.api.errors import describe_problems, status_of
from kb_service.api.schemas import (
    SAMPLING,
    AnswerPublic,
    AskRequest,
    DocumentPublic,
    KnowledgeBasePublic,
    SearchRequest,
    SearchResponse,
)
from kb_service.client.base import ClientError, IngestOutcome, Scalar
from kb_service.core.config import Settings
from kb_service.core.errors import KBError
from kb_service.evaluation.harness import EvalDataset, EvalReport
from kb_service.evaluation.runner import EvalRun, ProgressFactory, no_progress, run_eval
from kb_service.generation.factory import ask_options
from kb_service.generation.llm import Message
from kb_service.ingest.pipeline import IngestResult
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.pipeline import SearchOptions
from kb_service.services import Services

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

    def create_kb(self, name: str, *, embedding_model: str | None = None) -> KnowledgeBasePublic:
        with _errors():
            return KnowledgeBasePublic.of(self.services.catalog.create(name, embedding_model=embedding_model))

    def list_kbs(self) -> list[KnowledgeBasePublic]:
        with _errors():
            return [KnowledgeBasePublic.counted(kb, self.services.store) for kb in self.services.catalog.list()]

    def drop_kb(self, name: str) -> None:
        with _errors():
            self.services.catalog.drop(name)

    def add_texts(
        self, kb: str, texts: Mapping[str, str], *, metadata: Mapping[str, Scalar] | None = None
    ) -> list[IngestOutcome]:
        items = [SourceItem(name=name, text=text, metadata=dict(metadata or {})) for name, text in texts.items()]
        return self._ingest(kb, items)

    def add_files(self, kb: str, paths: Sequence[Path]) -> list[IngestOutcome]:
        return self._ingest(kb, [SourceItem(name=Path(p).name, path=Path(p)) for p in paths])

    def _ingest(self, kb: str, items: list[SourceItem]) -> list[IngestOutcome]:
        s = self.services
        with _errors():
            knowledge_base, embedder = s.catalog.open(kb)
            return [_outcome(r) for r in s.ingestor(knowledge_base, embedder).ingest(items)]

    def documents(self, kb: str) -> list[DocumentPublic]:
        with _errors():
            knowledge_base = self.services.catalog.get(kb)
            store, docs, offset = self.services.store, [], 0
            while page := store.list_documents(knowledge_base, offset=offset, limit=PAGE):
                docs += page
                offset += len(page)
        return [DocumentPublic.of(d) for d in docs]

    def delete_document(self, kb: str, doc_id: str) -> None:
        with _errors():
            self.services.store.delete_document(self.services.catalog.get(kb), doc_id)

    def search(self, kb: str, query: str, **options: Any) -> SearchResponse:
        with _errors():
            body = SearchRequest(query=query, **options)
            knowledge_base, embedder = self.services.catalog.open(kb)
            result = self.services.retriever.search(knowledge_base, embedder, body.query, body.options(self.settings))
        return SearchResponse.of(result, trace=body.trace)

    def ask(self, kb: str, question: str, **options: Any) -> AnswerPublic:
        with _errors():
            body = AskRequest(question=question, **options)
            knowledge_base, embedder = self.services.catalog.open(kb)
            ask = ask_options(
                self.settings,
                search=SearchOptions.from_settings(self.settings, filters=body.filters),
                sources=body.sources,
                rewrite=body.rewrite,
                answer_mode=body.answer_mode,
                stop=body.stop,
                **body.model_dump(include=SAMPLING),
            )
            history: list[Message] = [{"role": m.role, "content": m.content} for m in body.history]
            answer = self.services.answerer.ask(knowledge_base, embedder, body.question, history=history, options=ask)
        return AnswerPublic.of(answer)

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
        progress: ProgressFactory = no_progress,
    ) -> EvalReport:
        """The evaluation harness on ``dataset`` (its knowledge base is built once and cached by content)."""
        return run_eval(self.eval_run, dataset, configs=configs, embedding_model=embedding_model, progress=progress)


def _outcome(result: IngestResult) -> IngestOutcome:
    return IngestOutcome(
        source=result.source,
        outcome=result.outcome.value,
        doc_id=result.doc_id,
        chunks=result.chunks,
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
