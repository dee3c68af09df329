"""The composition root: every component of the service, built from one Settings object. The API's lifespan, the
CLI and the in-process client all build through it (the API eagerly, the others on first use)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.records import KnowledgeBase
from kb_service.embeddings import EmbedderPool
from kb_service.embeddings.base import Embedder
from kb_service.filesearch.registry import FileRegistry
from kb_service.filesearch.responses import ResponseLog
from kb_service.filesearch.service import FileSearch
from kb_service.generation.answer import Answerer
from kb_service.generation.compress import Compressor
from kb_service.generation.factory import build_answerer, build_llm, build_summarizer
from kb_service.generation.llm import LLM
from kb_service.generation.query_writer import LLMQueryWriter
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.summarize import Summarizer
from kb_service.jobs import JobJournal, JobManager
from kb_service.jobs.journal import Payloads
from kb_service.reindex import Reindexer, ReindexJobs
from kb_service.retrieval.factory import build_federation, build_rerank_warmer, build_retriever, lexical_indexes
from kb_service.retrieval.federated import Federation
from kb_service.retrieval.lexical import LexicalIndexes
from kb_service.retrieval.pipeline import Retriever
from kb_service.retrieval.rerank_warmer import RerankWarmer
from kb_service.stores.base import VectorStore
from kb_service.stores.factory import open_store
from kb_service.stores.originals import Originals
from kb_service.stores.recovery import recover
from kb_service.sync import Syncer, SyncState


class Services:
    """Each component is built on first use (models load only when needed) and kept for later calls."""

    def __init__(self, overrides: dict[str, Any] | None = None, *, settings: Settings | None = None) -> None:
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        if settings is not None:
            self.__dict__["settings"] = settings

    def close(self) -> None:
        """Stop what was started, in reverse order: the warmer, the jobs, the retriever's background work, then
        the store (its connection pool's threads must not outlive it)."""
        built = self.__dict__
        if (warmer := built.get("rerank_warmer")) is not None:
            warmer.close()
        if (reindex := built.get("reindex")) is not None:
            reindex.close()
        if (jobs := built.get("jobs")) is not None:
            jobs.close()
        if (files := built.get("file_search")) is not None:
            files.registry.close()
        if (responses := built.get("responses")) is not None:
            responses.close()
        if (federation := built.get("federation")) is not None:
            federation.close()
        if (retriever := built.get("retriever")) is not None:
            retriever.close()
        if (sync := built.get("sync")) is not None:
            sync.state.close()
        if (store := built.get("store")) is not None:
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
        return Catalog(self.store, self.embedders, self.originals)

    @cached_property
    def originals(self) -> Originals:
        return Originals(self.settings.data_dir / "originals", keep=self.settings.ingest.keep_originals)

    @cached_property
    def retriever(self) -> Retriever:
        return build_retriever(self.settings, self.store, self.embedders, writer=lambda: self.query_writer)

    @cached_property
    def query_writer(self) -> LLMQueryWriter | None:
        """The LLM writing refined queries (multi_query, hyde, decompose); loads the LLM. None without one."""
        llm, _ = self.llm
        return LLMQueryWriter(llm) if llm is not None else None

    @cached_property
    def federation(self) -> Federation:
        """Search over several knowledge bases at once (a router, then one merged ranking)."""
        return build_federation(self.retriever, self.embedders)

    @cached_property
    def sync(self) -> Syncer:
        """Folder syncs; their state (what each file was when last synced) in <data_dir>/sync.sqlite3."""
        return Syncer(self.catalog, self._lexical, SyncState(self.settings.data_dir / "sync.sqlite3"), self.ingestor)

    def forget(self, kb: KnowledgeBase) -> None:
        """Remove what was derived from a dropped knowledge base (or a removed index of one) here: its lexical
        index, in memory and on disk."""
        self._lexical.forget(kb)

    @property
    def _lexical(self) -> LexicalIndexes:
        built = self.__dict__.get("retriever")
        return built.lexical if built is not None else lexical_indexes(self.settings, self.store)

    @cached_property
    def reindexer(self) -> Reindexer:
        """Re-indexes (another embedding model or chunking) built beside the serving index, then switched to."""
        warm = self._lexical.get if self.settings.search.mode != "dense" else None
        return Reindexer(self.settings, self.catalog, warm=warm, forget=self.forget)

    @cached_property
    def reindex(self) -> ReindexJobs:
        """The re-indexes running in this process's background (the API's)."""
        return ReindexJobs(self.reindexer)

    @cached_property
    def llm(self) -> tuple[LLM | None, str]:
        """The configured LLM (a local model loads now), or None and why (answers are then extractive)."""
        return build_llm(self.settings)

    @cached_property
    def answerer(self) -> Answerer:
        llm, why = self.llm
        return build_answerer(self.settings, self.retriever, llm, why, compressor=Compressor(self.embedders.get))

    def summarizer(self, embedder: Embedder) -> Summarizer | None:
        """The LLM summarizer when configured (loading the LLM), else None: the extractive default."""
        if self.settings.ingest.summary_backend != "llm":
            return None
        return build_summarizer(self.settings, self.llm[0], embedder)

    def ingestor(self, kb: KnowledgeBase, embedder: Embedder) -> Ingestor:
        """An ingestor into ``kb`` with its own embedder and the configured summaries."""
        return Ingestor.from_settings(
            self.settings,
            store=self.store,
            kb=kb,
            embedder=embedder,
            summarizer=self.summarizer(embedder),
            originals=self.originals,
        )

    def recover(self) -> None:
        """After a crash: remove the documents it left half-written (their rows, chunks, original files) and the
        folders of knowledge bases dropped by a process that died before removing them. With a job queue, what a
        worker may be writing now (its job's lease is live) is left alone."""
        settings, store = self.settings, self.store
        kbs = store.list_kbs()
        for kb in kbs:
            recover(
                store,
                kb,
                grace_s=settings.ingest.recovery_grace_s,
                originals=self.originals,
                leased=self.jobs.lease_check(kb),
            )
        self.originals.sweep_dropped(kbs, older_than_s=settings.ingest.recovery_grace_s)

    @cached_property
    def jobs(self) -> JobManager:
        """Background ingestion jobs, journaled in the data directory (resumed by ``jobs.resume()``); with a job
        queue, sent to the workers and journaled in PostgreSQL."""
        settings = self.settings
        if settings.ingest.queue_url is not None:
            from kb_service.jobs.pg_journal import PgJobJournal
            from kb_service.jobs.queue import JobQueue
            from kb_service.stores.pgvector import PgvectorStore

            assert isinstance(self.store, PgvectorStore)  # the settings allow a queue with pgvector only
            return JobManager(
                settings,
                self.catalog,
                summarizer_for=self.summarizer,
                journal=PgJobJournal(self.store.pool, Payloads(settings.data_dir / "jobs" / "payloads")),
                queue=JobQueue(settings.ingest.queue_url),
            )
        return JobManager(
            settings,
            self.catalog,
            summarizer_for=self.summarizer,
            journal=JobJournal(settings.data_dir / "jobs"),
            # The lexical index is brought up to date once the uploads into a knowledge base are done, not by its next
            # search.
            after_ingest=self.retriever.lexical.get if settings.search.mode != "dense" else None,
        )

    @cached_property
    def file_search(self) -> FileSearch:
        """OpenAI's Files and Vector Stores over the knowledge bases; uploads kept in <data_dir>/files."""
        return FileSearch(FileRegistry(self.settings.data_dir / "files"), self.catalog, self.jobs)

    @cached_property
    def responses(self) -> ResponseLog:
        """Stored responses of the Responses API, for follow-ups (``previous_response_id``)."""
        return ResponseLog(self.settings.data_dir / "files" / "responses.sqlite")

    @cached_property
    def rerank_warmer(self) -> RerankWarmer | None:
        """The background warmer of an embedding reranker's stored vectors (not started), where configured."""
        return build_rerank_warmer(self.settings, self.retriever)
