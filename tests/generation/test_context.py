"""Context expansion (a hit widened to its neighbouring chunks) and compression (a source cut to the sentences that
bear on the question): what the prompt shows, and citations that still point at the chunk and offsets their
evidence lies in. Real store (Milvus Lite), real model (MiniLM), extractive answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kb_service.client import ClientError, LocalClient
from kb_service.core.records import Chunk
from kb_service.generation.passages import GAP, Passage

pytestmark = pytest.mark.integration

# One section of several chunks (chunk_size 40): the answer's sentence lies in a neighbour of the chunk that best
# matches the question's words.
BOILER = (
    "# Boiler maintenance\n\n"
    "The boiler room holds two gas-fired boilers that heat the whole building in winter. "
    "Each boiler has a pressure gauge, a relief valve and a low-water cutoff on its front panel. "
    "The relief valve opens when the pressure passes its set point and vents steam to the drain. "
    "Technicians test the relief valve every month by lifting its lever for a few seconds. "
    "The annual inspection is carried out by a licensed inspector in September before the heating season. "
    "Inspectors also check the flue, the burner flame and the combustion air openings. "
)
LONG = (
    "# Visitor guide\n\n"
    "The museum opens at nine in the morning on weekdays. The cafe on the ground floor serves coffee and cake. "
    "Lockers for bags are next to the cloakroom. Guided tours start at the main staircase every hour. "
    "Photography without flash is allowed in most galleries. The gift shop sells prints of the collection. "
    "The sculpture garden closes at dusk. Wheelchairs can be borrowed at the information desk free of charge. "
    "School groups should book their visit two weeks ahead. The library is open to researchers by appointment. "
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalClient]:
    data = tmp_path_factory.mktemp("context")
    with LocalClient(data_dir=Path(data), chunk_size=40, chunk_overlap=8, llm_backend="none") as c:
        c.create_kb("plant")
        c.add_texts("plant", {"boiler.md": BOILER})
        c.create_kb("museum")
        c.add_texts("museum", {"guide.md": LONG})
        yield c


def chunks_of(client: LocalClient, kb: str, ids: list[str]) -> dict[str, Chunk]:
    return client.services.store.get_chunks(client.services.catalog.get(kb), ids)


def assert_citations_point_at_their_chunks(client: LocalClient, kb: str, answer) -> None:  # type: ignore[no-untyped-def]
    stored = chunks_of(client, kb, [c.chunk_id for c in answer.citations])
    for c in answer.citations:
        assert stored[c.chunk_id].text[c.evidence_start : c.evidence_end] == c.snippet, c


def test_a_hit_widened_to_its_neighbours_shows_them_and_cites_the_chunk_its_evidence_is_in(client: LocalClient) -> None:
    question = "When is the annual inspection of the boiler carried out?"
    plain = client.search("plant", question, top_k=1)
    wide = client.search("plant", question, top_k=1, expand=2, trace=True)
    hit = wide.hits[0]
    assert plain.hits[0].window == [] and len(hit.window) >= 2 and hit.chunk_id in hit.window
    ords = [int(cid.rsplit(":", 1)[1]) for cid in hit.window]
    assert ords == list(range(ords[0], ords[0] + len(ords)))  # neighbours, in document order
    assert wide.trace is not None and wide.trace.timings_ms["expand"] >= 0

    answer = client.ask("plant", "How often do technicians test the relief valve?", sources=1, expand=1)
    [source] = answer.sources
    assert "every month" in source.text and len(source.text.split("\n")) == 3  # the chunk and its two neighbours
    assert answer.citations and "every month" in answer.answer
    assert_citations_point_at_their_chunks(client, "plant", answer)
    with pytest.raises(ClientError, match="expand"):
        client.search("plant", question, expand=9)


def test_a_compressed_source_keeps_the_sentences_that_bear_on_the_question(client: LocalClient) -> None:
    question = "Can I borrow a wheelchair at the museum?"
    # widened to the whole guide first (several chunks), then compressed: the kept pieces span chunks
    whole = client.ask("museum", question, sources=1, expand=3)
    short = client.ask("museum", question, sources=1, expand=3, compress=True)
    assert "Wheelchairs can be borrowed" in short.sources[0].text and "Wheelchairs" in whole.sources[0].text
    assert len(short.sources[0].text) < len(whole.sources[0].text) / 2
    assert "The museum opens" in whole.sources[0].text and "The museum opens" not in short.sources[0].text
    assert short.citations and all("Wheelchairs" in c.snippet for c in short.citations)
    assert_citations_point_at_their_chunks(client, "museum", short)
    assert short.timings_ms["compress"] > 0


def test_passages_join_overlapping_chunks_once_and_locate_spans_in_them() -> None:
    doc = "alpha beta gamma delta epsilon"
    a = Chunk(id="d:0", doc_id="d", ord=0, text=doc[0:16], hash="", start=0, end=16)  # "alpha beta gamma"
    b = Chunk(id="d:1", doc_id="d", ord=1, text=doc[11:30], hash="", start=11, end=30)  # "gamma delta epsilon"
    passage = Passage.joined([a, b])
    assert passage.text == doc
    chunk, lo, hi = passage.locate(doc.index("delta"), doc.index("delta") + 5)
    assert chunk.id == "d:1" and chunk.text[lo:hi] == "delta"
    chunk, lo, hi = passage.locate(0, 5)
    assert chunk.id == "d:0" and chunk.text[lo:hi] == "alpha"
    picked = passage.select([(0, 5), (doc.index("epsilon"), len(doc))])
    assert picked.text == "alpha" + GAP + "epsilon"
    chunk, lo, hi = picked.locate(picked.text.index("epsilon"), len(picked.text))
    assert (chunk.id, chunk.text[lo:hi]) == ("d:1", "epsilon")
    apart = Passage.joined([a, Chunk(id="e:0", doc_id="e", ord=0, text="zeta", hash="", start=0, end=4)])
    assert apart.text == doc[0:16] + "\nzeta"
