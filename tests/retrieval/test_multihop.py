"""Iterative multi-hop retrieval without an LLM: the names a passage bridges to, the fusion of the hops, and a real
knowledge base (Milvus Lite, the packaged embedding model) where the answer's document is reached only through an
entity the first hop's passage names; the trace shows every hop."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kb_service.client import LocalClient
from kb_service.core.errors import InvalidInput
from kb_service.core.records import Chunk, ScoredChunk
from kb_service.retrieval.multihop import bridges, fuse, names
from kb_service.retrieval.options import SearchOptions


def _hit(cid: str, text: str = "") -> ScoredChunk:
    return ScoredChunk(Chunk(id=cid, doc_id=cid, ord=0, text=text, hash=cid), score=1.0)


@pytest.mark.unit
def test_names_are_runs_of_capitalised_words_not_sentence_starts_or_dates() -> None:
    text = (
        "Teutberga( died 11 November 875) was a queen of Lotharingia by marriage to Lothair II. She was a daughter "
        "of Bosonid Boso the Elder and sister of Hucbert, the lay- abbot of St. Maurice's Abbey."
    )
    assert names(text) == [
        "Teutberga",
        "Lotharingia",
        "Lothair II",
        "Bosonid Boso the Elder",
        "Hucbert",
        "St Maurice's Abbey",
    ]
    assert names("The film was directed by Ludwig van Beethoven's nephew.") == [
        "Ludwig van Beethoven"
    ]  # the possessive dropped


@pytest.mark.unit
def test_bridges_are_what_the_best_passages_name_and_the_question_does_not() -> None:
    hits = [
        _hit("a", "Zephyr Dawn is a 1999 film directed by Marta Kowalczyk and produced by Polfilm."),
        _hit("b", "Marta Kowalczyk also wrote Zephyr Dawn. Its music is by Jan Nowak."),
    ]
    asked: set[str] = set()
    chosen = bridges("Who is the mother of the director of Zephyr Dawn?", hits, asked, k=2)
    assert [name for name, _ in chosen] == ["Marta Kowalczyk", "Polfilm"]  # named twice, in the best passage
    assert chosen[0][1] == 1.0 and 0 < chosen[1][1] < 1
    assert asked == {"marta kowalczyk", "polfilm"}
    assert [n for n, _ in bridges("Who is the mother of the director of Zephyr Dawn?", hits, asked, k=2)] == [
        "Jan Nowak"
    ]
    titled = [replace(hits[0], title="Marta Kowalczyk")]  # a passage's own subject is no bridge
    assert "Marta Kowalczyk" not in dict(bridges("Who directed Zephyr Dawn?", titled, set(), k=3))
    zh = [_hit("c", "《晨风》是一部1999年的电影，导演是李明华。李明华的母亲是王秀英。")]
    assert bridges("《晨风》导演的母亲是谁？", zh, set(), k=3)  # Chinese text: jieba's keywords


@pytest.mark.unit
def test_fusion_ranks_each_hops_best_beside_the_questions_best() -> None:
    question = [_hit("a"), _hit("x"), _hit("y")]
    bridge = [_hit("b"), _hit("a")]
    fused = fuse([(question, 1.0), (bridge, 1.0)], k=20, top_k=3)
    assert [h.chunk.id for h in fused] == ["a", "b", "x"]  # a in both lists first; b, first of its hop, before x
    assert fused[0].stages["hops"] == pytest.approx(1 / 21 + 1 / 22)
    weak = fuse([(question, 1.0), (bridge, 0.5)], k=20, top_k=3)
    assert [h.chunk.id for h in weak] == ["a", "x", "y"]  # a weak bridge's page ranks below the question's hits
    with pytest.raises(InvalidInput, match="hops must be an integer between 1 and 4, got 9"):
        SearchOptions(hops=9).validate()


DOCS = {
    "zephyr.md": "# Zephyr Dawn\n\nZephyr Dawn is a 1999 drama film directed by Marta Kowalczyk, shot in Gdansk.",
    "kowalczyk.md": "# Marta Kowalczyk\n\nMarta Kowalczyk (born 1960) is a film maker. Her mother was the painter "
    "Anna Wisniewska.",
    "storm.md": "# Northern Storm\n\nNorthern Storm is a 2004 drama film directed by Piotr Lis about a fishing town.",
    "harbour.md": "# Harbour Lights\n\nHarbour Lights is a 1995 drama film about a lighthouse keeper and his mother.",
    "lis.md": "# Piotr Lis\n\nPiotr Lis (born 1971) is a director. His mother was the singer Ewa Lis.",
}


@pytest.mark.integration
def test_a_second_hop_reaches_the_document_the_first_ones_passage_names(tmp_path: Path) -> None:
    with LocalClient(data_dir=tmp_path, rerank_backend="none", llm_backend="none") as client:
        client.create_kb("films")
        client.add_texts("films", DOCS)
        question = "Who was the mother of the director of the film Zephyr Dawn?"
        one = client.search("films", question, top_k=2, gate=False)
        many = client.search("films", question, top_k=2, gate=False, hops=2, trace=True)
        assert one.hits[0].source == "zephyr.md" and many.hits[0].source == "zephyr.md"
        assert "kowalczyk.md" in {h.source for h in many.hits}  # reached through the name zephyr.md holds
        trace = many.trace
        assert trace is not None and [len(h.queries) for h in trace.hops][0] == 1
        assert trace.hops[0].queries == [question] and "Marta Kowalczyk" in trace.hops[1].queries
        found = dict(zip(trace.hops[1].queries, trace.hops[1].hits, strict=True))
        assert found["Marta Kowalczyk"][0].source == "kowalczyk.md"
        assert trace.timings_ms["hops"] > 0 and trace.timings_ms["total"] >= trace.timings_ms["hops"]
        budget = client.search("films", question, top_k=2, gate=False, hops=3, trace=True)
        assert 2 <= len(budget.trace.hops) <= 3  # type: ignore[union-attr]
        with pytest.raises(Exception, match="hops"):
            client.search("films", question, hops=0)
        with pytest.raises(Exception, match="hop_strategy 'llm' needs a language model"):
            client.search("films", question, hops=2, hop_strategy="llm")


@pytest.mark.integration
def test_the_llm_writes_the_next_hops_queries(tmp_path: Path) -> None:
    with LocalClient(data_dir=tmp_path, rerank_backend="none") as client:  # the packaged SmolLM2-135M
        client.create_kb("films")
        client.add_texts("films", DOCS)
        question = "Who was the mother of the director of the film Zephyr Dawn?"
        result = client.search("films", question, top_k=3, gate=False, hops=2, hop_strategy="llm", trace=True)
        trace = result.trace
        assert trace is not None and trace.hops[0].queries == [question]
        assert len(trace.hops) == 2, "the model wrote no query for the second hop"
        queries = trace.hops[1].queries
        assert 1 <= len(queries) <= 3 and all(q.strip() and q.lower() != question.lower() for q in queries)
        assert len(trace.hops[1].hits) == len(queries)
        assert "kowalczyk.md" in {h.source for h in result.hits}  # the director's page, through the model's queries
