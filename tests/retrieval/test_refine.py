"""Query refinement: the LLM-free feedback terms (read from a real BM25 index), the parsing of a model's list of
queries, and refined searches end to end on Milvus Lite with the packaged embedding model: without an LLM
(keywords) and with the packaged SmolLM2 writing paraphrases, a hypothetical passage and sub-questions; the trace
shows every derived query and its hits."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_service.client import LocalClient
from kb_service.core.errors import InvalidInput
from kb_service.core.records import Chunk, ScoredChunk
from kb_service.generation.query_writer import lines
from kb_service.retrieval.lexical import LexicalIndex
from kb_service.retrieval.options import SearchOptions
from kb_service.retrieval.refine import feedback_terms

PASSAGES = [
    "Seismometers record the tremors of magma rising below a volcano days before an eruption.",
    "Gas sensors measure sulphur dioxide escaping from the crater; a rise warns of an eruption.",
    "Bread rises because yeast ferments the sugars in the dough.",
    "An eruption of a volcano sends ash and lava down its slopes.",
]


def _hit(n: int) -> ScoredChunk:
    return ScoredChunk(Chunk(id=f"c{n}", doc_id=f"d{n}", ord=0, text=PASSAGES[n], hash=str(n)), score=1.0)


@pytest.mark.unit
def test_feedback_terms_are_the_best_passages_rare_words_the_question_lacks() -> None:
    chunks = [_hit(n).chunk for n in range(len(PASSAGES))]
    index = LexicalIndex.build(chunks, "r1")
    terms = feedback_terms("how is an eruption predicted", [_hit(0), _hit(1)], index.idf, k=4)
    assert len(terms) == 4 and "eruption" not in {t.lower() for t in terms}  # the question's own word
    assert "Seismometers" in terms  # once in the best passage, nowhere else: rare
    assert not {"the", "of", "a"} & set(terms)  # stopwords are not indexed: no weight
    assert index.idf("seismometers") > index.idf("eruption") > 0 == index.idf("pumpernickel")
    assert feedback_terms("anything", [], index.idf) == []


@pytest.mark.unit
def test_a_models_list_of_queries_is_cleaned_of_numbers_bullets_and_quotes() -> None:
    text = '1. "volcano eruption warning signs"\n- seismometer tremor\n\nQuery 3: gas sensors crater\n4) a fourth'
    assert lines(text) == ["volcano eruption warning signs", "seismometer tremor", "gas sensors crater"]
    assert lines("（1）火山喷发的前兆\n2、地震仪") == ["火山喷发的前兆", "地震仪"]


@pytest.mark.unit
def test_refinements_are_validated() -> None:
    assert SearchOptions(refine=("keywords", "keywords", "hyde")).validate().refine == ("keywords", "hyde")
    with pytest.raises(InvalidInput, match="unknown refine 'rm3': use any of keywords, multi_query, hyde"):
        SearchOptions(refine=("rm3",)).validate()


DOCS = {
    "volcano.md": "# Volcano monitoring\n\nSeismometers record the tremors of magma rising below a volcano days "
    "before an eruption. Gas sensors measure sulphur dioxide escaping from the crater.",
    "bread.md": "# Bread\n\nBread rises because yeast ferments the sugars in the dough; it is baked at 220 degrees.",
    "tea.md": "# Tea\n\nGreen tea is made from unoxidised leaves; black tea is fully oxidised.",
    "quakes.md": "# Earthquakes\n\nTremors are recorded by seismometers; magnitudes are read from their traces.",
}
QUESTION = "how do scientists know a volcano will erupt"


@pytest.mark.integration
def test_keywords_refine_a_search_without_an_llm_and_the_trace_shows_them(tmp_path: Path) -> None:
    with LocalClient(data_dir=tmp_path, rerank_backend="none", llm_backend="none") as client:
        client.create_kb("geo")
        client.add_texts("geo", DOCS)
        plain = client.search("geo", QUESTION, top_k=3)
        refined = client.search("geo", QUESTION, top_k=3, refine=["keywords"], trace=True)
        assert refined.hits[0].source == plain.hits[0].source == "volcano.md"
        assert refined.trace is not None
        (step,) = refined.trace.refinements
        assert step.kind == "keywords" and len(step.queries) == 1 and step.queries[0].startswith(QUESTION)
        added = step.queries[0].removeprefix(QUESTION).split()
        assert added and all(w.lower() in DOCS["volcano.md"].lower() for w in added)  # the best passage's words
        assert step.hits[0][0].source == "volcano.md"
        assert "refine" in refined.hits[0].stages and refined.trace.timings_ms["refine"] > 0
        # the expanded query reaches the seismometer page the question never names
        assert "quakes.md" in {h.source for h in step.hits[0]}
        with pytest.raises(Exception, match="needs a language model"):
            client.search("geo", QUESTION, refine=["hyde"])
        with pytest.raises(Exception, match="refine"):
            client.search("geo", QUESTION, refine=["rm3"])
        answer = client.ask("geo", "what do seismometers record before an eruption", refine=["keywords"])
        assert answer.citations and answer.citations[0].source == "volcano.md"
        with pytest.raises(Exception, match="needs a language model"):  # the ask's retrieval is refined
            client.ask("geo", QUESTION, refine=["decompose"])


@pytest.mark.integration
def test_the_packaged_llm_writes_paraphrases_a_passage_and_sub_questions(tmp_path: Path) -> None:
    with LocalClient(data_dir=tmp_path, rerank_backend="none") as client:  # the default LLM: SmolLM2-135M
        client.create_kb("geo")
        client.add_texts("geo", DOCS)
        result = client.search("geo", QUESTION, top_k=3, refine=["multi_query", "hyde", "decompose"], trace=True)
        assert result.trace is not None
        steps = {r.kind: r for r in result.trace.refinements}
        assert list(steps) == ["multi_query", "hyde", "decompose"]
        for step in steps.values():
            assert 1 <= len(step.queries) <= 3 and len(step.hits) == len(step.queries)
            assert all(q.strip() and q.strip().lower() != QUESTION for q in step.queries)
        assert len(steps["hyde"].queries) == 1 and len(steps["hyde"].queries[0].split()) > 5  # a passage
        assert result.hits[0].source == "volcano.md"  # the question's own ranking weighs as much as all of them
