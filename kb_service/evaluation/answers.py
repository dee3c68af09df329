"""Answer quality: ``kb eval-answers``.

Datasets:
- a BEIR folder with ``answers.jsonl`` (``{"_id", "answer", "aliases"?}``), e.g. 2WikiMultihopQA: one knowledge base
  of the corpus, the qrels are the gold documents;
- SQuAD-style JSON (CMRC 2018): one knowledge base of the paragraphs, a question's own paragraph is its gold one;
- RGB JSON lines (Chen et al., 2024): a knowledge base per question of its positive and negative passages.

For every question and every answer mode it records: exact match and token F1 against the answer and its aliases
(SQuAD's normalisation; characters for Chinese, as CMRC's own scorer does), whether a gold answer occurs in the
answer text (RGB's rule), the citations and whether each one's source supports its claim (generation.support,
re-checked on the shown text, so every mode is judged the same way) and is a gold document, unsupported claims,
repeated sentences, refusal, latency and tokens. It also asks with retrieval limited to non-gold passages, where
declining is the right answer."""

from __future__ import annotations

import json
import re
import string
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.errors import InvalidInput
from kb_service.core.records import KnowledgeBase
from kb_service.embeddings.base import Embedder
from kb_service.evaluation.harness import EvalDataset, load_dataset
from kb_service.evaluation.runner import EvalRun, ProgressFactory, no_progress
from kb_service.generation.answer import Answer, Answerer, SourceRef
from kb_service.generation.claims import cited_numbers, claims, strip_markers
from kb_service.generation.extractive import rank_sentences
from kb_service.generation.factory import ask_options
from kb_service.generation.guard import _key
from kb_service.generation.prompt import REFUSAL, detect_language
from kb_service.generation.support import is_substantive, support
from kb_service.generation.verify import MIN_SUPPORT, Verifier, is_refusal
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.pipeline import SearchOptions

Gold = list[str | list[str]]  # RGB: every entry must occur; a list entry: any one of its alternatives
NEGATIVE_POOL = 20  # retrieved passages from which the gold ones are removed for the negatives-only ask
MODES: dict[str, dict[str, Any]] = {  # name → ask options
    "extractive": {"answer_mode": "extractive"},
    "generated": {"answer_mode": "generated"},
    "unverified": {"answer_mode": "generated", "verify": False, "fallback": False},
}
# A mode may add context shaping ("extractive+compress", "generated+expand1", "extractive+expand2+compress"), and a
# generated one a synthesis ("generated+map_reduce", "generated+refine").
_EXPAND = re.compile(r"expand(\d)")
ADDITIONS = "+compress, +expand<N>, +refine or +map_reduce"


def mode_options(mode: str) -> tuple[dict[str, Any], int]:
    """The ask options of a mode name and its ``expand`` width (InvalidInput for an unknown one)."""
    base, *extras = mode.split("+")
    if base not in MODES:
        raise InvalidInput(f"unknown answer mode {mode!r}: choose from {', '.join(MODES)}, each optionally with "
                           f"{ADDITIONS}")  # fmt: skip
    options, expand = dict(MODES[base]), 0
    for extra in extras:
        if extra == "compress":
            options["compress"] = True
        elif extra in ("refine", "map_reduce") and base != "extractive":
            options["synthesis"] = extra
        elif match := _EXPAND.fullmatch(extra):
            expand = int(match.group(1))
        else:
            raise InvalidInput(f"unknown addition {extra!r} in answer mode {mode!r}: {ADDITIONS} (a model's mode)")
    return options, expand


@dataclass
class QAItem:
    id: str
    question: str
    answers: list[str]  # the answer and its aliases
    gold_sources: set[str]  # corpus ids (source names) of the gold documents
    rgb_gold: Gold | None = None


@dataclass
class QASet:
    name: str
    kind: str  # beir | squad | rgb
    items: list[QAItem]
    dataset: EvalDataset | None = None  # the corpus, for beir and squad
    rgb: list[dict[str, Any]] = field(default_factory=list)


def load_qa(path: Path, limit: int | None = None) -> QASet:
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"no such dataset: {path}")
    if path.is_dir() and (path / "corpus.jsonl").exists():
        if not (path / "answers.jsonl").exists():
            raise InvalidInput(f"{path} is a BEIR folder without answers.jsonl ({{'_id', 'answer', 'aliases'}} lines)")
        dataset = load_dataset(path, "test")
        answers = {}
        for line in (path / "answers.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                answers[str(row["_id"])] = [str(row["answer"]), *[str(a) for a in row.get("aliases") or []]]
        items = [
            QAItem(qid, q, answers[qid], set(dataset.qrels.get(qid, {})))
            for qid, q in dataset.queries.items()
            if qid in answers
        ][:limit]
        return QASet(path.name, "beir", items, dataset)
    rgb_file = _rgb_file(path)
    if rgb_file is not None:
        rows = [json.loads(line) for line in rgb_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = rows[:limit]
        items = [QAItem(str(r["id"]), r["query"], _flatten(r["answer"]), set(), r["answer"]) for r in rows]
        return QASet(rgb_file.stem, "rgb", items, rgb=rows)
    dataset = load_dataset(path, "test")  # SQuAD-style JSON
    squad = path if path.is_file() else sorted(path.glob("*.json"))[0]
    answers = {
        str(qa["id"]): [a["text"] for a in qa.get("answers", []) if a.get("text")]
        for article in json.loads(squad.read_text(encoding="utf-8"))["data"]
        for para in article["paragraphs"]
        for qa in para["qas"]
    }
    items = [
        QAItem(qid, q, answers[qid], set(dataset.qrels[qid])) for qid, q in dataset.queries.items() if answers.get(qid)
    ][:limit]
    return QASet(dataset.name, "squad", items, dataset)


def _rgb_file(path: Path) -> Path | None:
    files = [path] if path.is_file() else sorted(path.glob("*.json")) if path.is_dir() else []
    for f in files[:1]:
        with f.open(encoding="utf-8") as fh:
            first = fh.readline().strip()
        if first.startswith("{") and '"positive"' in first and '"negative"' in first:
            return f
    return None


def _flatten(gold: Gold) -> list[str]:
    return [a for entry in gold for a in (entry if isinstance(entry, list) else [entry])]


# --- answer metrics (SQuAD v1.1's normalisation; CMRC's character level for Chinese) -------------------------

_PUNCT = set(string.punctuation) | set("，。！？、；：“”‘’（）《》【】…—·「」")


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for word in _normalise(text).split():
        if re.search(r"[\u3400-\u9fff]", word):
            out.extend(ch for ch in word)  # Chinese: characters
        else:
            out.append(word)
    return out


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    return any(_normalise(strip_markers(prediction)) == _normalise(a) for a in answers)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    pred = _tokens(strip_markers(prediction))
    best = 0.0
    for answer in answers:
        gold = _tokens(answer)
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best


def contains_answer(prediction: str, answers: Sequence[str], rgb_gold: Gold | None = None) -> bool:
    text = _normalise(strip_markers(prediction))
    if rgb_gold is not None:  # RGB's rule: every entry, or one of its alternatives
        return all(
            any(_normalise(a) in text for a in entry) if isinstance(entry, list) else _normalise(entry) in text
            for entry in rgb_gold
        )
    return any(_normalise(a) and _normalise(a) in text for a in answers)


@dataclass
class Audit:
    """The shown answer re-checked claim by claim against the sources it was given."""

    claims: int = 0
    unsupported: int = 0  # no source given supports it
    uncited: int = 0
    citations: int = 0
    supported_citations: int = 0
    gold_citations: int = 0
    cites_gold: bool = False
    degenerate: bool = False


def audit(answer: Answer, gold_sources: set[str]) -> Audit:
    lang = detect_language(answer.question)
    by_number: dict[int, SourceRef] = {s.number: s for s in answer.sources}
    sources = Verifier(answer.sources, lang, refusal=REFUSAL[lang])  # type: ignore[arg-type]  # for .prepared
    out = Audit()
    seen: set[str] = set()

    for span in claims(answer.text, lang):
        key = _key(span.text)
        if len(key) >= 4:
            out.degenerate |= key in seen
            seen.add(key)
        body = strip_markers(span.text).strip()
        if not body or is_refusal(body, sources.refusal) or not is_substantive(body):
            continue
        out.claims += 1
        supported = False
        cited = [n for n in cited_numbers(span.text) if n in by_number]
        for n in cited:
            out.citations += 1
            ok = support(body, sources.prepared(n)).score >= MIN_SUPPORT
            out.supported_citations += ok
            supported |= ok
            if by_number[n].source in gold_sources:
                out.gold_citations += 1
                out.cites_gold = True
        if not cited:  # uncited: unsupported only if no source given supports it
            supported = any(support(body, sources.prepared(n)).score >= MIN_SUPPORT for n in by_number)
            out.uncited += 1
        out.unsupported += not supported
    return out


@dataclass
class AnswerReport:
    dataset: str
    per_question: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, float | None]]:
        return {mode: _summary(df) for mode, df in self.per_question.groupby("mode_requested", sort=False)}

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "summary": self.summary,
            "info": self.info,
            "per_question": self.per_question.to_dict("records"),
        }


def _summary(df: pd.DataFrame) -> dict[str, float | None]:
    answered = df[~df["refused"]]
    has_gold = df["gold_known"]
    return {
        "questions": float(len(df)),
        "exact_match": _mean(df["em"]),
        "token_f1": _mean(df["f1"]),
        "answer_in_text": _mean(df["contains"]),
        "citation_precision": _ratio(df["supported_citations"].sum(), df["citations"].sum()),
        "citation_precision_gold": _ratio(
            df.loc[has_gold, "gold_citations"].sum(), df.loc[has_gold, "citations"].sum()
        ),
        "citation_recall_gold": _mean(answered.loc[answered["gold_known"], "cites_gold"]),
        "unsupported_claim_rate": _ratio(df["unsupported"].sum(), df["claims"].sum()),
        "answers_with_unsupported": _mean(df["unsupported"] > 0),
        "uncited_claim_rate": _ratio(df["uncited"].sum(), df["claims"].sum()),
        "refusal_rate": _mean(df["refused"]),
        "refusal_rate_negative_only": _mean(df["refused_negative"].dropna().astype(bool)),
        "degenerate_rate": _mean(df["degenerate"]),
        "extractive_share": _mean(df["mode"] == "extractive"),
        "sources_mean": _mean(df["sources"]),
        "source_chars_mean": _mean(df["source_chars"]),
        "answer_in_sources": _mean(df["answer_in_sources"]),
        "gold_in_sources": _mean(df["gold_in_sources"].dropna().astype(bool)),
        "latency_p50_s": _quantile(df["latency_s"], 0.5),
        "latency_p95_s": _quantile(df["latency_s"], 0.95),
        "prompt_tokens_mean": _mean(df["prompt_tokens"]),
        "completion_tokens_mean": _mean(df["completion_tokens"]),
    }


def _mean(values: pd.Series) -> float | None:
    return round(float(values.astype(float).mean()), 4) if len(values) else None


def _ratio(num: float, den: float) -> float | None:
    return round(float(num) / float(den), 4) if den else None


def _quantile(values: pd.Series, q: float) -> float | None:
    return round(float(np.quantile(values, q)), 3) if len(values) else None


def run_answers(
    qa: QASet,
    *,
    run: EvalRun,
    answerer: Answerer,
    modes: Sequence[str],
    embedding_model: str | None = None,
    max_tokens: int | None = None,
    negatives: bool = True,
    progress: ProgressFactory = no_progress,
) -> AnswerReport:
    for mode in modes:
        mode_options(mode)
    rows: list[dict[str, Any]] = []
    if qa.kind == "rgb":
        with progress("questions", len(qa.items)) as advance:
            for item, row in zip(qa.items, qa.rgb, strict=True):
                rows.extend(_rgb_question(item, row, run, answerer, modes, embedding_model, max_tokens, negatives))
                advance(1)
    else:
        assert qa.dataset is not None
        kb, embedder, _, _ = run.prepare_kb(qa.dataset, embedding_model=embedding_model, progress=progress)
        with progress("questions", len(qa.items)) as advance:
            for item in qa.items:
                others = _nearest_negatives(run, kb, embedder, item) if negatives else None
                for mode in modes:
                    rows.append(_row(item, mode, run.settings, answerer, kb, embedder, None, others, max_tokens))
                advance(1)
    info = {
        "kind": qa.kind,
        "embedding_model": embedding_model or run.settings.embedding.model,
        "llm": answerer.llm.name if answerer.llm is not None else None,
        "max_tokens": max_tokens or run.settings.generation.max_tokens,
        "sources": run.settings.answer.top_k,
        "modes": list(modes),
    }
    return AnswerReport(qa.name, pd.DataFrame(rows), info)


def _nearest_negatives(run: EvalRun, kb: KnowledgeBase, embedder: Embedder, item: QAItem) -> list[str]:
    """The corpus ids of the passages retrieval ranks highest for the question once its gold documents are
    taken out: what the knowledge base would offer if it lacked the answer (the hardest negatives)."""
    options = replace(SearchOptions.from_settings(run.settings), top_k=NEGATIVE_POOL)
    hits = run.retriever.search(kb, embedder, item.question, options).hits
    return [
        s for s in dict.fromkeys(str(h.chunk.metadata.get("source", "")) for h in hits) if s not in item.gold_sources
    ]


def _rgb_question(
    item: QAItem,
    row: dict[str, Any],
    run: EvalRun,
    answerer: Answerer,
    modes: Sequence[str],
    embedding_model: str | None,
    max_tokens: int | None,
    negatives: bool,
) -> list[dict[str, Any]]:
    catalog: Catalog = run.catalog
    name = f"rgb-{item.id}-{time.time_ns()}"
    kb = catalog.create(name, embedding_model=embedding_model or "intfloat/multilingual-e5-small")
    try:
        _, embedder = catalog.open(name)
        docs = [
            SourceItem(f"{label}-{i}.txt", text=t, metadata={"label": label})
            for label in ("positive", "negative")
            for i, t in enumerate(row[label])
        ]
        Ingestor.from_settings(run.settings, store=catalog.store, kb=kb, embedder=embedder).ingest(docs)
        item.gold_sources = {d.name for d in docs if d.name.startswith("positive")}
        negative_filter = {"label": "negative"} if negatives else None
        return [
            _row(item, mode, run.settings, answerer, kb, embedder, None, negative_filter, max_tokens) for mode in modes
        ]
    finally:
        catalog.drop(name)


def _row(
    item: QAItem,
    mode: str,
    settings: Settings,
    answerer: Answerer,
    kb: KnowledgeBase,
    embedder: Embedder,
    filters: dict[str, Any] | None,
    negative: dict[str, Any] | list[str] | None,
    max_tokens: int | None,
) -> dict[str, Any]:
    answer, latency = _ask(answerer, settings, kb, embedder, item.question, mode, filters, max_tokens)
    checked = audit(answer, item.gold_sources)
    refused_negative = negative_score = None
    if negative is not None:
        negative_filters = negative if isinstance(negative, dict) else {"source": negative}
        neg, _ = _ask(answerer, settings, kb, embedder, item.question, mode, negative_filters, max_tokens)
        refused_negative, negative_score = neg.refused, _question_coverage(neg)
    return {
        "id": item.id,
        "mode_requested": mode,
        "question": item.question,
        "gold": item.answers[0] if item.answers else "",
        "answer": answer.text,
        "mode": answer.mode,
        "finish_reason": answer.finish_reason,
        "em": exact_match(answer.text, item.answers),
        "f1": token_f1(answer.text, item.answers),
        "contains": contains_answer(answer.text, item.answers, item.rgb_gold),
        "gold_known": bool(item.gold_sources),
        "claims": checked.claims,
        "unsupported": checked.unsupported,
        "uncited": checked.uncited,
        "citations": checked.citations,
        "supported_citations": checked.supported_citations,
        "gold_citations": checked.gold_citations,
        "cites_gold": checked.cites_gold,
        "degenerate": checked.degenerate,
        "refused": answer.refused,
        "refused_negative": refused_negative,
        "coverage": _question_coverage(answer),  # the extractive composer's best sentence score (its decline test)
        "coverage_negative": negative_score,
        "sources": len(answer.sources),
        "source_chars": sum(len(source.text) for source in answer.sources),
        # what the answer could have been written from: the gold answer in the sources shown, a gold document shown
        "answer_in_sources": contains_answer(" ".join(s.text for s in answer.sources), item.answers, item.rgb_gold),
        "gold_in_sources": any(s.source in item.gold_sources for s in answer.sources) if item.gold_sources else None,
        "latency_s": latency,
        "prompt_tokens": answer.usage.prompt_tokens,
        "completion_tokens": answer.usage.completion_tokens,
    }


def _question_coverage(answer: Answer) -> float:
    picks = rank_sentences(answer.question, answer.sources, detect_language(answer.question))  # type: ignore[arg-type]
    return round(picks[0].score, 4) if picks else 0.0


def _ask(
    answerer: Answerer,
    settings: Settings,
    kb: KnowledgeBase,
    embedder: Embedder,
    question: str,
    mode: str,
    filters: dict[str, Any] | None,
    max_tokens: int | None,
) -> tuple[Answer, float]:
    given, expand = mode_options(mode)
    search = SearchOptions.from_settings(settings, filters=filters, expand=expand)
    options = ask_options(settings, search=search, max_tokens=max_tokens, **given)
    start = time.perf_counter()
    answer = answerer.ask(answerer.retriever.on(kb, embedder), question, options=options)
    return answer, time.perf_counter() - start
