"""Synthesis modes with the packaged model (SmolLM2-135M, greedy) on Milvus Lite: refine and map_reduce run their
steps over groups of sources that keep their citation numbers, and the final answer's citations are verified
against every source like a compact answer's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kb_service.client import LocalClient
from kb_service.core.errors import InvalidInput
from kb_service.evaluation.answers import mode_options
from kb_service.generation.factory import ask_options
from kb_service.generation.synthesis import groups

pytestmark = pytest.mark.integration

DOCS = {
    "eiffel.md": "# Eiffel Tower\n\nThe Eiffel Tower is a wrought-iron lattice tower in Paris. It is 330 metres tall.",
    "history.md": "# Eiffel Tower history\n\nThe Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "designer.md": "# Gustave Eiffel\n\nGustave Eiffel's company designed and built the Eiffel Tower.",
    "visitors.md": "# Eiffel Tower visitors\n\nAbout seven million people visit the Eiffel Tower every year.",
}
QUESTION = "When was the Eiffel Tower completed and how tall is it?"


def test_refine_and_map_reduce_answer_group_by_group_with_verified_citations(tmp_path: Path) -> None:
    with LocalClient(data_dir=tmp_path, rerank_backend="none") as client:  # the default LLM: SmolLM2-135M
        client.create_kb("paris")
        client.add_texts("paris", DOCS)
        services = client.services
        answerer = services.answerer
        search = answerer.retriever.on(*services.catalog.open("paris"))

        def ask(synthesis: str):  # type: ignore[no-untyped-def]
            settings = services.settings
            options = ask_options(
                settings, answer_mode="generated", fallback=False, sources=4, max_tokens=48, synthesis=synthesis
            )
            return answerer.ask(search, QUESTION, options=options)

        compact = ask("compact")
        assert compact.synthesis == "compact" and compact.synthesis_steps == []
        n_groups = math.ceil(len(compact.sources) / 2)
        assert n_groups >= 2
        for synthesis, steps in (("map_reduce", n_groups), ("refine", n_groups - 1)):
            answer = ask(synthesis)
            assert answer.mode == "generated" and answer.synthesis == synthesis
            assert len(answer.synthesis_steps) == steps and all(s.strip() for s in answer.synthesis_steps)
            assert answer.usage.prompt_tokens > compact.usage.prompt_tokens  # the steps' prompts count too
            assert answer.timings_ms["synthesis"] > 0 and answer.text.strip()
            shown = {s.number: s.text for s in answer.sources}
            for citation in answer.citations:  # verified against the source it names, as in a compact answer
                assert citation.snippet and citation.snippet in shown[citation.number]


@pytest.mark.unit
def test_groups_follow_retrieval_order_and_modes_parse() -> None:
    class S:
        def __init__(self, rank: int) -> None:
            self.rank = rank

    parts = groups([S(3), S(1), S(5), S(2), S(4)])  # type: ignore[list-item]
    assert [[s.rank for s in p] for p in parts] == [[1, 2], [3, 4], [5]]
    assert mode_options("generated+map_reduce+expand1") == ({"answer_mode": "generated", "synthesis": "map_reduce"}, 1)
    with pytest.raises(InvalidInput, match="unknown addition 'refine'"):
        mode_options("extractive+refine")  # an extractive answer has no model steps
    with pytest.raises(InvalidInput, match="unknown answer mode 'quoted'"):
        mode_options("quoted")
