"""Reciprocal rank fusion (Cormack et al., 2009): score(c) = Σ_lists weight / (k + rank_c), ranks from 1."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

RRF_K = 60


def rrf(rankings: Sequence[Sequence[K]], *, k: int = RRF_K, weights: Sequence[float] | None = None) -> dict[K, float]:
    """Fused scores of every key in any ranking (higher is better); each ranking lists keys best first."""
    weights = weights or [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict[K, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
    return fused
