"""Answer quality on RGB (Chen et al., 2024; "Benchmarking LLMs in Retrieval-Augmented Generation"): each question
gets a knowledge base of its own positive and negative (noise) passages. Reported: accuracy (RGB's rule: every gold
answer, or one of its alternatives, appears in the answer), the refusal rate when only the negative passages may
be retrieved, and latency."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from catalog import Catalog
from core.config import Settings
from evaluation.runner import ProgressFactory, no_progress
from generation.answer import Answer, Answerer
from generation.factory import ask_options
from ingest.pipeline import Ingestor
from ingest.sources import SourceItem
from retrieval.pipeline import SearchOptions

Gold = list[str | list[str]]


@dataclass
class RGBItem:
    id: int
    query: str
    answers: Gold
    positive: list[str]
    negative: list[str]


def load_rgb(path: Path, limit: int | None = None) -> list[RGBItem]:
    """RGB's JSON-lines file (``zh_refine.json``, ``en_refine.json``) or a folder holding one."""
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if len(files) != 1:
            raise ValueError(f"{path} must hold exactly one RGB .json file, found {[f.name for f in files]}")
        path = files[0]
    items = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                items.append(RGBItem(row["id"], row["query"], row["answer"], row["positive"], row["negative"]))
            if limit is not None and len(items) >= limit:
                break
    return items


def answer_correct(prediction: str, gold: Gold) -> bool:
    """RGB's check: each gold entry must appear (a list entry: any one of its alternatives), case-insensitive."""
    text = prediction.lower()
    return all(
        any(alt.lower() in text for alt in entry) if isinstance(entry, list) else entry.lower() in text
        for entry in gold
    )


@dataclass
class AnswerReport:
    per_question: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, float | None]:
        df = self.per_question
        return {
            "questions": len(df),
            "accuracy": float(df["correct"].mean()),
            "accuracy_generated_only": _mean(df.loc[df["mode"] == "generated", "correct"]),
            "gold_in_sources": float(df["gold_in_sources"].mean()),
            "refusal_rate_negative_only": float(df["refused_negative"].mean()),
            "false_refusal_rate": float(df["refused"].mean()),
            "citation_rate": float((df["citations"] > 0).mean()),
            "latency_mean_s": float(df["latency_s"].mean()),
            "latency_p50_s": float(df["latency_s"].median()),
            "latency_negative_mean_s": float(df["latency_negative_s"].mean()),
            "completion_tokens_mean": float(df["completion_tokens"].mean()),
        }

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary, "info": self.info, "per_question": self.per_question.to_dict("records")}


def run_rgb(
    items: list[RGBItem],
    *,
    settings: Settings,
    catalog: Catalog,
    answerer: Answerer,
    embedding_model: str,
    max_tokens: int | None = None,
    progress: ProgressFactory = no_progress,
) -> AnswerReport:
    """For each question: a fresh knowledge base of its passages; ask once over all of them and once with
    retrieval limited to the negatives. The knowledge bases are dropped afterwards."""
    rows = []
    with progress("questions", len(items)) as advance:
        for item in items:
            rows.append(_one(item, settings, catalog, answerer, embedding_model, max_tokens))
            advance(1)
    info = {
        "embedding_model": embedding_model,
        "llm": answerer.llm.name if answerer.llm is not None else None,
        "max_tokens": max_tokens or settings.max_tokens,
        "sources": settings.ask_top_k,
        "context_tokens": settings.context_tokens,
    }
    return AnswerReport(pd.DataFrame(rows), info)


def _one(
    item: RGBItem,
    settings: Settings,
    catalog: Catalog,
    answerer: Answerer,
    embedding_model: str,
    max_tokens: int | None,
) -> dict[str, Any]:
    name = f"rgb-{item.id}-{time.time_ns()}"
    kb = catalog.create(name, embedding_model=embedding_model)
    try:
        _, embedder = catalog.open(name)
        passages = [("positive", i, t) for i, t in enumerate(item.positive)]
        passages += [("negative", i, t) for i, t in enumerate(item.negative)]
        Ingestor.from_settings(settings, store=catalog.store, kb=kb, embedder=embedder).ingest(
            [SourceItem(f"{label}-{i}.txt", text=text, metadata={"label": label}) for label, i, text in passages]
        )
        everything = _ask(answerer, settings, kb, embedder, item.query, None, max_tokens)
        negative = _ask(answerer, settings, kb, embedder, item.query, {"label": "negative"}, max_tokens)
    finally:
        catalog.drop(name)
    answer, latency = everything
    return {
        "id": item.id,
        "query": item.query,
        "gold": json.dumps(item.answers, ensure_ascii=False),
        "answer": answer.text,
        "mode": answer.mode,
        "correct": answer_correct(answer.text, item.answers),
        "gold_in_sources": answer_correct("\n".join(s.text for s in answer.sources), item.answers),
        "refused": answer.refused,
        "citations": len(answer.citations),
        "completion_tokens": answer.usage.completion_tokens,
        "latency_s": latency,
        "answer_negative": negative[0].text,
        "refused_negative": negative[0].refused,
        "latency_negative_s": negative[1],
    }


def _ask(
    answerer: Answerer,
    settings: Settings,
    kb: Any,
    embedder: Any,
    question: str,
    filters: dict[str, str] | None,
    max_tokens: int | None,
) -> tuple[Answer, float]:
    options = ask_options(
        settings, search=SearchOptions.from_settings(settings, filters=filters), max_tokens=max_tokens
    )
    start = time.perf_counter()
    answer = answerer.ask(kb, embedder, question, options=options)
    return answer, time.perf_counter() - start


def _mean(values: pd.Series) -> float | None:
    """The mean, or None (JSON null) for no values."""
    return float(values.mean()) if len(values) else None
