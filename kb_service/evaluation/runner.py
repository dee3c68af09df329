"""One evaluation run from settings: build (or reuse) the knowledge base of a labelled corpus, warm the reranker,
run every configuration. Used by ``kb eval`` and from Python (notebooks) alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.records import KnowledgeBase
from kb_service.embeddings.base import Embedder
from kb_service.evaluation.harness import (
    EvalDataset,
    EvalReport,
    cached_kb_ready,
    default_configs,
    eval_kb_name,
    evaluate,
    named_only,
)
from kb_service.ingest.pipeline import Ingestor, Outcome
from kb_service.reindex import Reindexer, ReindexPlan, ReindexStatus
from kb_service.retrieval.pipeline import Retriever, SearchOptions
from kb_service.retrieval.rerank import EmbeddingReranker

# progress(label, total) -> a context manager yielding advance(n)
ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]


@contextmanager
def no_progress(_label: str, _total: int) -> Iterator[Callable[[int], None]]:
    yield lambda _n: None


@dataclass
class EvalRun:
    """What an evaluation needs, already built (the CLI's runtime, or a notebook's objects)."""

    settings: Settings
    catalog: Catalog
    retriever: Retriever

    def prepare_kb(
        self, dataset: EvalDataset, *, embedding_model: str | None = None, progress: ProgressFactory = no_progress
    ) -> tuple[KnowledgeBase, Embedder, float, bool]:
        """The dataset's knowledge base (cached by corpus content, model and chunking), its embedder, the
        seconds spent ingesting and whether a cached one was reused."""
        s = self.settings
        model = embedding_model or s.embedding.model
        chunking = f"{s.ingest.chunk_size}/{s.ingest.chunk_overlap}"
        if s.ingest.chunk_context != "none":  # chunks indexed under another context are another index
            chunking += f"/{s.ingest.chunk_context}"
        name = eval_kb_name(dataset, model, chunking)
        store = self.catalog.store
        kb = cached_kb_ready(store, name, dataset.unique_documents)
        if kb is not None:
            return kb, self.catalog.open(name)[1], 0.0, True
        kb, _ = self.catalog.get_or_create(name, embedding_model=model)
        _, embedder = self.catalog.open(name)
        ingestor = Ingestor.from_settings(s, store=store, kb=kb, embedder=embedder)
        items = list(dataset.corpus.values())
        started = time.perf_counter()
        with progress("ingest", len(items)) as advance:
            results = ingestor.ingest(items, on_result=lambda _r: advance(1))
        failed = [r for r in results if r.outcome == Outcome.FAILED]
        if failed:
            raise RuntimeError(f"{len(failed)} corpus documents failed, e.g. {failed[0].source}: {failed[0].error}")
        return kb, embedder, time.perf_counter() - started, False

    def warm_reranker(self, kb: KnowledgeBase, *, progress: ProgressFactory = no_progress) -> int:
        """Embed every chunk with an embedding reranker once, in large batches, cached on disk, so reranking is
        measured warm, as a long-running service sees it. Returns how many passages were embedded now."""
        reranker = self.retriever.reranker
        if not isinstance(reranker, EmbeddingReranker):
            return 0
        cache = self.settings.data_dir / "cache" / "rerank" / f"{reranker.embedder.info.fingerprint}-{kb.key}.npz"
        reranker.load_cache(cache)
        texts = [c.text for batch in self.catalog.store.iter_chunks(kb) for c in batch]
        missing = [t for t in texts if not reranker.has(t)]
        if missing:
            with progress("rerank cache", len(missing)) as advance:
                for i in range(0, len(missing), 256):
                    part = missing[i : i + 256]
                    reranker.passage_vectors(part)
                    advance(len(part))
            reranker.save_cache(cache)
        return len(missing)


def run_eval(
    run: EvalRun,
    dataset: EvalDataset,
    *,
    embedding_model: str | None = None,
    configs: list[str] | None = None,
    warm_rerank: bool = True,
    progress: ProgressFactory = no_progress,
) -> EvalReport:
    """Evaluate ``dataset`` on the configured store: every configuration (or the named ones)."""
    kb, embedder, ingest_seconds, cached = run.prepare_kb(dataset, embedding_model=embedding_model, progress=progress)
    report = _evaluate(run, kb, embedder, dataset, configs, warm_rerank=warm_rerank, progress=progress)
    report.ingest_seconds = ingest_seconds
    report.info["cached_kb"] = cached
    return report


def compare_reindex(
    run: EvalRun,
    dataset: EvalDataset,
    plan: ReindexPlan,
    *,
    embedding_model: str | None = None,
    configs: list[str] | None = None,
    warm_rerank: bool = True,
    progress: ProgressFactory = no_progress,
) -> tuple[EvalReport, EvalReport, ReindexStatus]:
    """Evaluate ``dataset`` on its knowledge base as it is, then re-index that knowledge base by ``plan`` without
    switching (the new index is built beside, or found built by an earlier comparison) and evaluate the new index
    the same way: the reports of both, and the re-index's status (its seconds against the first ingest's)."""
    current = run_eval(
        run, dataset, embedding_model=embedding_model, configs=configs, warm_rerank=warm_rerank, progress=progress
    )
    name = current.info["knowledge_base"]
    reindexer = Reindexer(run.settings, run.catalog)
    with progress("re-index", dataset.unique_documents) as advance:
        done = [0]

        def report(status: ReindexStatus) -> None:
            now = status.copied + status.kept
            advance(now - done[0])
            done[0] = now

        status = reindexer.run(name, plan, switch=False, report=report)
    recorded = reindexer.recorded(name)
    if status.state != "built" or recorded is None:
        raise RuntimeError(f"the re-index of {name!r} did not build: {status.state} {status.error}")
    embedder = run.catalog.embedders.get(plan.embedding_model)
    reindexed = _evaluate(run, recorded.kb, embedder, dataset, configs, warm_rerank=warm_rerank, progress=progress)
    reindexed.ingest_seconds = status.seconds
    reindexed.info.update({"index": recorded.kb.index, "chunking": recorded.params})
    return current, reindexed, status


def _evaluate(
    run: EvalRun,
    kb: KnowledgeBase,
    embedder: Embedder,
    dataset: EvalDataset,
    configs: list[str] | None,
    *,
    warm_rerank: bool,
    progress: ProgressFactory,
) -> EvalReport:
    if warm_rerank:
        run.warm_reranker(kb, progress=progress)
    chosen = default_configs(SearchOptions.from_settings(run.settings), has_reranker=run.retriever.reranker is not None)
    if configs:
        unknown = [n for n in configs if n not in chosen]
        if unknown:
            raise ValueError(f"unknown configuration(s) {unknown}; choose from {list(chosen)}")
        chosen = {n: chosen[n] for n in configs}
    else:
        chosen = {n: options for n, options in chosen.items() if not named_only(n)}

    def per_config(name: str) -> Callable[[list], Iterator]:  # type: ignore[type-arg]
        def wrap(items: list) -> Iterator:  # type: ignore[type-arg]
            with progress(name, len(items)) as advance:
                for item in items:
                    yield item
                    advance(1)

        return wrap

    report = evaluate(
        run.retriever, kb, embedder, dataset, chosen, backend=run.settings.store.backend, progress=per_config
    )
    report.info.update(
        {
            "knowledge_base": kb.name,
            "embedding_model": kb.embedding.name,
            "reranker": getattr(run.retriever.reranker, "name", None),
        }
    )
    return report
