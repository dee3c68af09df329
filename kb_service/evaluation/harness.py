"""The evaluation harness: ingest a labelled corpus, run every query through each retrieval configuration and
report nDCG@10, recall@k and MRR@10 (computed by ir-measures, i.e. trec_eval), gate recall and per-stage latency.

Datasets: any BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) and SQuAD-style JSON (CMRC 2018), where
each question's relevant passage is its own paragraph.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kb_service.core.errors import InvalidInput, KnowledgeBaseNotFound
from kb_service.core.records import DocStatus, EmbeddingModelInfo, KnowledgeBase, ScoredChunk
from kb_service.embeddings.base import Embedder
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.options import REFINE_KINDS
from kb_service.retrieval.pipeline import Retriever, SearchOptions, SearchResult
from kb_service.stores.base import VectorStore

BEIR_MEASURES = ("nDCG@10", "R@10", "R@100", "RR@10")
QA_MEASURES = ("R@1", "R@5", "R@10", "RR@10", "nDCG@10")
RUN_DEPTH = 100


@dataclass
class EvalDataset:
    name: str
    corpus: dict[str, SourceItem]  # corpus id -> item whose name is the corpus id
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    measures: tuple[str, ...] = BEIR_MEASURES
    fingerprint: str = ""

    @property
    def unique_documents(self) -> int:
        """Documents the corpus yields in a knowledge base: identical texts are one document there."""
        return len({item.text for item in self.corpus.values()})

    def limit(self, max_queries: int | None) -> EvalDataset:
        if not max_queries or max_queries >= len(self.queries):
            return self
        keep = dict(list(self.queries.items())[:max_queries])
        return replace(self, queries=keep, qrels={q: self.qrels[q] for q in keep})

    def sample(self, max_queries: int, max_documents: int) -> EvalDataset:
        """A smaller dataset for quick looks: the first ``max_queries`` queries, every document judged for them,
        and the first other corpus documents as distractors up to ``max_documents`` in all."""
        small = self.limit(max_queries)
        judged = {d for rels in small.qrels.values() for d in rels if d in self.corpus}
        distractors = [d for d in self.corpus if d not in judged][: max(0, max_documents - len(judged))]
        keep = judged | set(distractors)
        corpus = {d: item for d, item in self.corpus.items() if d in keep}
        return replace(small, corpus=corpus, fingerprint=_fingerprint(corpus))


def load_beir(folder: Path, split: str) -> EvalDataset:
    """A BEIR folder; only queries with judgements in ``qrels/<split>.tsv`` are kept."""
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not path.is_file():
            splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
            raise InvalidInput(
                f"{path} not found: a BEIR folder has corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
                + (f" (splits here: {', '.join(splits)})" if splits else "")
            )
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                continue  # the header line, blank lines
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    corpus: dict[str, SourceItem] = {}
    for record in _jsonl(folder / "corpus.jsonl"):
        cid, title = str(record["_id"]), (record.get("title") or "").strip()
        text = f"{title}\n\n{record.get('text', '')}".strip() if title else str(record.get("text", "")).strip()
        corpus[cid] = SourceItem(name=cid, text=text, title=title or None)
    queries = {
        str(r["_id"]): r["text"]
        for r in _jsonl(folder / "queries.jsonl")
        if str(r["_id"]) in qrels and str(r.get("text", "")).strip()
    }
    qrels = {q: rel for q, rel in qrels.items() if q in queries}
    return EvalDataset(name=folder.name, corpus=corpus, queries=queries, qrels=qrels, fingerprint=_fingerprint(corpus))


def load_squad(path: Path) -> EvalDataset:
    """SQuAD-style JSON (CMRC 2018): paragraphs are the corpus; each question's own paragraph is relevant."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    corpus: dict[str, SourceItem] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for article in data["data"]:
        for i, para in enumerate(article["paragraphs"]):
            pid = str(para.get("id") or f"{article.get('id', len(corpus))}_{i}")
            corpus[pid] = SourceItem(name=pid, text=para["context"], title=article.get("title") or None)
            for qa in para["qas"]:
                if not qa["question"].strip():
                    continue  # CMRC 2018 trial has an empty question; it cannot be searched
                queries[str(qa["id"])] = qa["question"]
                qrels[str(qa["id"])] = {pid: 1}
    return EvalDataset(
        name=Path(path).stem,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        measures=QA_MEASURES,
        fingerprint=_fingerprint(corpus),
    )


def load_dataset(path: Path, split: str) -> EvalDataset:
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"no dataset at {path}: give a BEIR folder (corpus.jsonl …) or SQuAD-style JSON")
    if path.is_dir() and (path / "corpus.jsonl").exists():
        return load_beir(path, split)
    squad = [path] if path.is_file() else sorted(path.glob("*.json")) if path.is_dir() else []
    if squad:
        return load_squad(squad[0])
    raise InvalidInput(f"{path} is neither a BEIR folder (corpus.jsonl …) nor SQuAD-style JSON")


def default_configs(full: SearchOptions, *, has_reranker: bool) -> dict[str, SearchOptions]:
    """The configurations the report compares, each stage added to the previous one."""
    base = replace(full, top_k=RUN_DEPTH, candidates=max(full.candidates, RUN_DEPTH), trace=True)
    configs = {
        "dense": replace(base, mode="dense", gate=False, rerank=False),
        "lexical": replace(base, mode="lexical", gate=False, rerank=False),
        "hybrid": replace(base, mode="hybrid", gate=False, rerank=False),
        "two-stage strict": replace(base, mode="hybrid", gate=True, fallback=False, rerank=False),
        "two-stage": replace(base, mode="hybrid", gate=True, fallback=True, rerank=False),
    }
    if has_reranker:
        configs["two-stage + rerank"] = replace(base, mode="hybrid", gate=True, fallback=True, rerank=True)
    configs["default pipeline"] = base
    configs["default + multi-hop"] = replace(base, hops=max(2, full.hops))
    # run only when named (``--configs``): the LLM's refinements need a configured model
    for kind in REFINE_KINDS:
        configs[f"default + {kind}"] = replace(base, refine=(kind,))
    configs["default + multi-hop + keywords"] = replace(base, hops=max(2, full.hops), refine=("keywords",))
    configs["default + multi-hop (llm)"] = replace(base, hops=max(2, full.hops), hop_strategy="llm")
    return configs


def named_only(name: str) -> bool:
    """Whether a configuration of ``default_configs`` runs only when asked for by name."""
    return name.startswith("default + ") and name != "default + multi-hop"


@dataclass
class EvalReport:
    dataset: str
    backend: str
    n_queries: int
    n_documents: int
    n_chunks: int
    summary: pd.DataFrame  # one row per configuration: metrics, gate recall
    latency: pd.DataFrame  # one row per configuration and stage: p50 / p95 in ms
    per_query: pd.DataFrame  # one row per configuration and query: measures, first relevant rank, where it was lost
    timings: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per configuration, query and stage (ms)
    ingest_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> str:
        """The configuration with the highest value of the first measure (nDCG@10 for BEIR)."""
        return str(self.summary[self.summary.columns[0]].idxmax())

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "backend": self.backend,
            "queries": self.n_queries,
            "documents": self.n_documents,
            "chunks": self.n_chunks,
            "ingest_seconds": round(self.ingest_seconds, 1),
            "best": self.best,
            "summary": json.loads(self.summary.round(4).to_json(orient="index")),
            "latency_ms": {
                cfg: json.loads(g.drop(columns="config").set_index("stage").round(1).to_json(orient="index"))
                for cfg, g in self.latency.groupby("config", sort=False)
            },
            **self.info,
        }


def run_queries(
    retriever: Retriever,
    kb: KnowledgeBase,
    embedder: Embedder,
    dataset: EvalDataset,
    options: SearchOptions,
    *,
    progress: Callable[[list[Any]], Iterable[Any]] = lambda x: x,
) -> dict[str, SearchResult]:
    queries = list(dataset.queries.items())
    return {qid: retriever.search(kb, embedder, text, options) for qid, text in progress(queries)}


def doc_run(results: dict[str, SearchResult]) -> dict[str, dict[str, float]]:
    """Chunk hits → document ids (a document takes its best chunk's rank); scores are descending ranks so
    trec_eval's tie-breaking never reorders them."""
    run: dict[str, dict[str, float]] = {}
    for qid, result in results.items():
        ranked: dict[str, float] = {}
        for hit in result.hits:
            cid = _corpus_id(hit)
            if cid not in ranked:
                ranked[cid] = float(RUN_DEPTH * 10 - len(ranked))
        run[qid] = ranked
    return run


ALL_GOLD_DEPTHS = (5, 10)


def all_gold_recall(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """``R_all@k``: the share of queries with every relevant document in the top k, for datasets where some
    query has several (a multi-hop question needs all of its documents, not one); empty otherwise."""
    if not any(sum(rel > 0 for rel in docs.values()) > 1 for docs in qrels.values()):
        return {}
    out = {}
    for k in ALL_GOLD_DEPTHS:
        hits = 0
        for qid, docs in qrels.items():
            top = sorted(run.get(qid, {}), key=lambda d: -run[qid][d])[:k]
            hits += {d for d, rel in docs.items() if rel > 0} <= set(top)
        out[f"R_all@{k}"] = hits / len(qrels) if qrels else 0.0
    return out


def gate_recall(results: dict[str, SearchResult], qrels: dict[str, dict[str, int]]) -> float | None:
    """Share of queries for which at least one relevant document passed stage 1 (None without a gate)."""
    gated = [r for r in results.values() if r.trace.gated]
    if not gated:
        return None
    hits = 0
    for qid, result in results.items():
        passed = {d.document.source for d in result.trace.gated}
        hits += any(rel > 0 and cid in passed for cid, rel in qrels.get(qid, {}).items())
    return hits / len(results)


def score(dataset: EvalDataset, run: dict[str, dict[str, float]]) -> tuple[dict[str, float], pd.DataFrame]:
    import ir_measures

    measures = [ir_measures.parse_measure(m) for m in dataset.measures]
    qrels = [ir_measures.Qrel(q, d, rel) for q, docs in dataset.qrels.items() for d, rel in docs.items()]
    # Queries with no hits still count (as zeros): trec_eval would silently skip them.
    run_rows = [ir_measures.ScoredDoc(q, d, s) for q, docs in run.items() for d, s in docs.items()]
    per_query = pd.DataFrame(
        [
            {"query": m.query_id, "measure": str(m.measure), "value": m.value}
            for m in ir_measures.iter_calc(measures, qrels, run_rows)
        ]
    )
    table = per_query.pivot(index="query", columns="measure", values="value") if len(per_query) else pd.DataFrame()
    table = table.reindex(list(dataset.queries)).fillna(0.0)
    # A measure with no rows at all (an empty run) is 0 for every query.
    means = {str(m): float(table[str(m)].mean()) if str(m) in table else 0.0 for m in measures}
    return means, table


def timing_rows(name: str, results: dict[str, SearchResult]) -> list[dict[str, Any]]:
    """Every query's time per stage (ms): the raw samples behind the p50/p95 table (and the notebook's box plot)."""
    return [
        {"config": name, "query": qid, "stage": stage, "ms": ms}
        for qid, result in results.items()
        for stage, ms in result.trace.timings_ms.items()
    ]


def latency_table(timings: pd.DataFrame) -> pd.DataFrame:
    """p50 / p95 per configuration and stage, in the order the stages ran."""
    if timings.empty:
        return pd.DataFrame(columns=["config", "stage", "p50", "p95"])
    grouped = timings.groupby(["config", "stage"], sort=False)["ms"]
    return pd.DataFrame({"p50": grouped.quantile(0.5), "p95": grouped.quantile(0.95)}).reset_index()


LOST_AT = ("found", "ranking", "rerank", "retrieval")


def diagnose(results: dict[str, SearchResult], qrels: dict[str, dict[str, int]], *, k: int = 10) -> pd.DataFrame:
    """Per query: the rank of the first relevant document in the final list (NaN when absent), whether stage 1
    let a relevant document through, and where the relevant documents were lost when none is in the top ``k``:
    ``retrieval`` (not even among the fused first-stage candidates), ``rerank`` (in the top k before reranking,
    pushed out by it) or ``ranking`` (among the candidates, ranked below k); ``found`` otherwise."""
    rows = []
    for qid, result in results.items():
        relevant = {d for d, rel in qrels.get(qid, {}).items() if rel > 0}
        ranked = list(doc_run({qid: result})[qid])
        first = next((i for i, d in enumerate(ranked, start=1) if d in relevant), None)
        trace = result.trace
        in_gate = any(d.document.source in relevant for d in trace.gated) if trace.gated else None
        candidates = [_corpus_id(c) for c in trace.candidates]
        if first is not None and first <= k:
            lost = "found"
        elif not relevant.intersection(candidates):
            lost = "retrieval"
        elif trace.reranked and relevant.intersection(list(dict.fromkeys(candidates))[:k]):
            lost = "rerank"
        else:
            lost = "ranking"
        rows.append({"query": qid, "first relevant rank": first, "in gate": in_gate, "lost at": lost})
    return pd.DataFrame(rows).set_index("query") if rows else pd.DataFrame()


def _corpus_id(hit: ScoredChunk) -> str:
    """Evaluation corpora store each corpus id as the document's source name."""
    return str(hit.chunk.metadata.get("source", hit.chunk.doc_id))


class PrecomputedQueries:
    """The knowledge base's embedder with every evaluation query embedded once, in one batch: each
    configuration reuses the vectors, so the per-query "embed" stage is measured separately (batch time / n)."""

    def __init__(self, embedder: Embedder, queries: list[str]) -> None:
        self.inner = embedder
        started = time.perf_counter()
        vectors = embedder.embed_queries(queries) if queries else np.zeros((0, embedder.info.dimension), np.float32)
        self.ms_per_query = (time.perf_counter() - started) * 1000 / max(1, len(queries))
        self._vectors = dict(zip(queries, vectors, strict=True))

    @property
    def info(self) -> EmbeddingModelInfo:
        return self.inner.info

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_documents(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if all(t in self._vectors for t in texts):
            return np.stack([self._vectors[t] for t in texts])
        return self.inner.embed_queries(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def evaluate(
    retriever: Retriever,
    kb: KnowledgeBase,
    embedder: Embedder,
    dataset: EvalDataset,
    configs: dict[str, SearchOptions],
    *,
    backend: str,
    progress: Callable[[str], Callable[[list[Any]], Iterable[Any]]] | None = None,
) -> EvalReport:
    rows, timings, per_query = [], [], []
    # The retriever strips queries before embedding them: precompute exactly those texts.
    embedder = PrecomputedQueries(embedder, [q.strip() for q in dataset.queries.values() if q.strip()])
    for name, options in configs.items():
        wrap = progress(name) if progress else (lambda x: x)
        results = run_queries(retriever, kb, embedder, dataset, options, progress=wrap)
        run = doc_run(results)
        means, table = score(dataset, run)
        means |= all_gold_recall({q: dataset.qrels.get(q, {}) for q in dataset.queries}, run)
        recall = gate_recall(results, dataset.qrels)
        rows.append({"config": name, **means, "gate recall": np.nan if recall is None else recall})
        timings += timing_rows(name, results)
        table = table.join(diagnose(results, dataset.qrels))
        per_query.append(table.assign(config=name).reset_index())
    store = retriever.store
    timing_frame = pd.DataFrame(timings)
    return EvalReport(
        dataset=dataset.name,
        backend=backend,
        n_queries=len(dataset.queries),
        n_documents=store.count_documents(kb, status=DocStatus.READY),
        n_chunks=store.count_chunks(kb),
        summary=pd.DataFrame(rows).set_index("config"),
        latency=latency_table(timing_frame),
        timings=timing_frame,
        per_query=pd.concat(per_query, ignore_index=True) if per_query else pd.DataFrame(),
        info={"query_embedding_ms_per_query": round(embedder.ms_per_query, 2)},
    )


def eval_kb_name(dataset: EvalDataset, embedding_model: str, chunking: str) -> str:
    """Knowledge bases built for evaluation are cached by corpus content, model and chunking."""
    digest = hashlib.sha256(f"{dataset.fingerprint}|{embedding_model}|{chunking}".encode()).hexdigest()[:12]
    return f"eval-{dataset.name}-{digest}"


def cached_kb_ready(store: VectorStore, name: str, n_docs: int) -> KnowledgeBase | None:
    try:
        kb = store.get_kb(name)
    except KnowledgeBaseNotFound:
        return None
    return kb if store.count_documents(kb, status=DocStatus.READY) >= n_docs else None


def _fingerprint(corpus: dict[str, SourceItem]) -> str:
    digest = hashlib.sha256()
    for cid, item in corpus.items():
        digest.update(cid.encode())
        digest.update(b"\0")
        digest.update((item.text or "").encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
