"""What one search is asked to do (``SearchOptions``) and what it returns (``SearchResult`` with its
``SearchTrace``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from kb_service.core.config import Settings
from kb_service.core.errors import InvalidInput
from kb_service.core.limits import MAX_CANDIDATES, MAX_EXPAND, MAX_HOPS, MAX_KNOWLEDGE_BASES, MAX_TOP_K
from kb_service.core.records import ScoredChunk, ScoredDocument
from kb_service.stores.filters import Filter, FilterInput

Mode = Literal["dense", "lexical", "hybrid"]
# Query refinements (retrieval/refine.py): keywords needs no LLM; the others are written by the configured LLM.
RefineKind = Literal["keywords", "multi_query", "hyde", "decompose"]
REFINE_KINDS: tuple[RefineKind, ...] = ("keywords", "multi_query", "hyde", "decompose")
HOP_STRATEGIES = ("entities", "llm")  # a later hop looks up the names its passages give, or what the LLM asks for
MAX_QUERY_CHARS = 4_000


@dataclass(frozen=True)
class SearchOptions:
    """How one search runs. Defaults come from Settings (``SearchOptions.from_settings``)."""

    top_k: int = 10
    mode: Mode = "hybrid"
    gate: bool = True  # stage 1: pick documents by their summaries first
    gate_docs: int = 20  # N documents kept by the gate
    fallback: bool = True  # merge a global chunk search so a wrong gate cannot hide the answer
    candidates: int = 50  # chunks fetched per retriever (dense, lexical) before fusion
    rerank: bool = True
    rerank_candidates: int = 30  # M fused candidates re-scored by the reranker
    rerank_fusion: bool = True  # add the reranker's RRF term to the first-stage score instead of replacing it
    rerank_weight: float = 2.0  # weight of that term (one first-stage signal weighs 1)
    rrf_k: int = 20  # measured on SciFact dev, two-stage nDCG@10: k=60 0.714, k=20 0.724, k=10 0.726
    filters: Filter | FilterInput | None = None  # the JSON form is parsed by ``validate``
    trace: bool = False
    hops: int = 1  # > 1: iterative multi-hop retrieval (retrieval/multihop.py), at most this many rounds
    hop_budget_ms: float = 2000.0  # no new round starts after this long
    hop_strategy: str = "entities"  # what a later hop looks up: the names its passages give, or the LLM's queries
    expand: int = 0  # > 0: each hit widened to this many neighbouring chunks on either side, within its section
    refine: tuple[str, ...] = ()  # query refinements, each searched and fused with the question's ranking
    # Over several knowledge bases (retrieval/federated.py): rank them by their best document summaries and search
    # only the best ``route_kbs`` of them, those within ``route_margin`` of the best router score.
    route: bool = True
    route_kbs: int = 3
    route_margin: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> SearchOptions:
        """The configured defaults; ``overrides`` that are None keep the default."""
        base = cls(
            top_k=settings.search.top_k,
            mode=settings.search.mode,
            gate=settings.search.gate,
            gate_docs=settings.search.gate_docs,
            fallback=settings.search.gate_fallback,
            candidates=settings.search.candidates,
            rerank=settings.rerank.backend != "none",  # without a loaded reranker this is a no-op
            rerank_candidates=settings.rerank.candidates,
            rerank_fusion=settings.rerank.fusion,
            rerank_weight=settings.rerank.weight,
            rrf_k=settings.search.rrf_k,
            hops=settings.search.hops,
            hop_budget_ms=settings.search.hop_budget_ms,
            hop_strategy=settings.search.hop_strategy,
            expand=settings.search.expand,
            refine=tuple(settings.search.refine),
            route=settings.search.route,
            route_kbs=settings.search.route_kbs,
            route_margin=settings.search.route_margin,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    def validate(self) -> SearchOptions:
        for name in ("top_k", "gate_docs", "candidates", "rerank_candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= MAX_CANDIDATES:
                raise InvalidInput(f"{name} must be an integer between 1 and {MAX_CANDIDATES}, got {value!r}")
        if not isinstance(self.rerank_weight, int | float) or not 0 < self.rerank_weight <= 100:
            raise InvalidInput(f"rerank_weight must be a number in (0, 100], got {self.rerank_weight!r}")
        if self.top_k > MAX_TOP_K:
            raise InvalidInput(f"top_k must be at most {MAX_TOP_K}, got {self.top_k}")
        if not isinstance(self.hops, int) or not 1 <= self.hops <= MAX_HOPS:
            raise InvalidInput(f"hops must be an integer between 1 and {MAX_HOPS}, got {self.hops!r}")
        if self.hop_strategy not in HOP_STRATEGIES:
            raise InvalidInput(f"hop_strategy must be 'entities' or 'llm', got {self.hop_strategy!r}")
        if not isinstance(self.expand, int) or not 0 <= self.expand <= MAX_EXPAND:
            raise InvalidInput(f"expand must be an integer between 0 and {MAX_EXPAND}, got {self.expand!r}")
        if not isinstance(self.route_kbs, int) or not 1 <= self.route_kbs <= MAX_KNOWLEDGE_BASES:
            raise InvalidInput(
                f"route_kbs must be an integer between 1 and {MAX_KNOWLEDGE_BASES}, got {self.route_kbs!r}"
            )
        if not isinstance(self.route_margin, int | float) or not 0 <= self.route_margin <= 2:
            raise InvalidInput(f"route_margin must be a number in [0, 2], got {self.route_margin!r}")
        if self.mode not in ("dense", "lexical", "hybrid"):
            raise InvalidInput(f"mode must be 'dense', 'lexical' or 'hybrid', got {self.mode!r}")
        refine = (self.refine,) if isinstance(self.refine, str) else tuple(self.refine)
        if unknown := [k for k in refine if k not in REFINE_KINDS]:
            raise InvalidInput(f"unknown refine {unknown[0]!r}: use any of {', '.join(REFINE_KINDS)}")
        return replace(self, filters=Filter.parse(self.filters), refine=tuple(dict.fromkeys(refine)))

    @property
    def where(self) -> Filter | None:
        """The validated filter (``validate`` parses the JSON form)."""
        return Filter.parse(self.filters)


@dataclass
class Hop:
    """One round of a multi-hop search: the queries it searched, the chunks each found (best first), its time."""

    queries: list[str]
    hits: list[list[ScoredChunk]] = field(default_factory=list)
    ms: float = 0.0


@dataclass
class Refinement:
    """One query refinement of a search: its kind, the queries it searched, the chunks each found, its time."""

    kind: str
    queries: list[str]
    hits: list[list[ScoredChunk]] = field(default_factory=list)
    ms: float = 0.0


@dataclass
class Route:
    """The router's view of one knowledge base in a search over several: its score (the best of its top document
    summaries, scored against the query by one model for all of them), whether it was searched, and the documents
    whose summaries were scored, best first."""

    knowledge_base: str
    score: float | None  # None: it has no ready document
    searched: bool
    documents: list[str] = field(default_factory=list)


@dataclass
class SearchTrace:
    gated: list[ScoredDocument] = field(default_factory=list)  # filled in a trace (SearchOptions.trace)
    candidates: list[ScoredChunk] = field(default_factory=list)  # fused, before rerank
    reranked: list[ScoredChunk] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    hops: list[Hop] = field(default_factory=list)  # a multi-hop search's rounds, the question's first
    routes: list[Route] = field(default_factory=list)  # a search over several knowledge bases: each one, best first
    refinements: list[Refinement] = field(default_factory=list)  # the derived queries of a refined search


@dataclass
class SearchResult:
    query: str
    hits: list[ScoredChunk]
    trace: SearchTrace


def validate_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
    return query.strip()
