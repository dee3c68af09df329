"""Context compression: each source keeps only the sentences that bear on the question, with their neighbours for
coherence, so more of the prompt's budget goes to what answers it and more distinct sources fit. Sentences are
scored by cosine against the question with one embedding model for every source (the configured one); a source
keeps its ``KEEP`` best sentences, any other within ``MARGIN`` of the best sentence of all sources, and the
sentences next to those. Short sources stay whole. The kept pieces still point at their chunks and offsets
(generation.passages), so citations do too."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from kb_service.embeddings.base import Embedder
from kb_service.generation.claims import sentences
from kb_service.generation.passages import Passage
from kb_service.generation.prompt import detect_language

KEEP = 2  # best sentences every source keeps
MARGIN = 0.1  # other sentences kept: within this cosine of the best sentence of all sources
NEIGHBOURS = 1  # sentences kept on either side of a kept one
WHOLE_BELOW = 4  # sources of fewer sentences are kept whole


class Compressor:
    def __init__(self, embedder: Callable[[], Embedder]) -> None:
        """``embedder``: the scoring model, loaded on first use."""
        self._embedder = embedder

    def compress(self, question: str, passages: Sequence[Passage]) -> list[Passage]:
        lang = detect_language(question)
        spans = [[(s.start, s.end) for s in sentences(p.text, lang) if s.text.strip()] for p in passages]
        texts = [p.text[a:b] for p, found in zip(passages, spans, strict=True) for a, b in found]
        if not texts:
            return list(passages)
        embedder = self._embedder()
        q = embedder.embed_queries([question])[0]
        scores = embedder.embed_documents(texts) @ q
        best = float(scores.max())
        out: list[Passage] = []
        at = 0
        for passage, found in zip(passages, spans, strict=True):
            mine, at = scores[at : at + len(found)], at + len(found)
            if len(found) < WHOLE_BELOW:
                out.append(passage)
                continue
            keep = _kept(mine, best)
            if len(keep) == len(found):
                out.append(passage)
                continue
            out.append(passage.select(_runs(passage.text, found, keep)))
        return out


def _kept(scores: np.ndarray, best: float) -> set[int]:
    chosen = set(np.argsort(-scores)[:KEEP].tolist()) | {i for i, s in enumerate(scores) if s >= best - MARGIN}
    return {j for i in chosen for j in range(i - NEIGHBOURS, i + NEIGHBOURS + 1) if 0 <= j < len(scores)}


def _runs(text: str, spans: Sequence[tuple[int, int]], keep: set[int]) -> list[tuple[int, int]]:
    """The kept sentences as runs of consecutive ones, each stripped of surrounding whitespace."""
    runs: list[tuple[int, int]] = []
    for i in sorted(keep):
        start, end = spans[i]
        if runs and i - 1 in keep:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    out = []
    for start, end in runs:
        piece = text[start:end]
        lead, trail = len(piece) - len(piece.lstrip()), len(piece) - len(piece.rstrip())
        out.append((start + lead, end - trail))
    return out
