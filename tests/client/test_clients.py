"""The in-process and the HTTP client: the same calls give the same results and the same errors (real app under
uvicorn on loopback, real model, Milvus Lite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kb_service.api.schemas import AnswerPublic
from kb_service.client import ClientError, HTTPClient, KBClient, LocalClient, connect
from kb_service.core.config import Settings
from tests.live import live_server

pytestmark = pytest.mark.integration

TEXTS = {
    "pumps.md": "# Pumps\n\nCentrifugal pumps move water with a spinning impeller.",
    "valves.md": "# Valves\n\nA check valve lets fluid flow in one direction only.",
    "泵.txt": "离心泵依靠叶轮旋转输送液体。",
}


@pytest.fixture(scope="module", params=["local", "http"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KBClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp(f"client-{request.param}"), chunk_size=64, chunk_overlap=8)
    if request.param == "local":
        with LocalClient(settings) as local:
            yield local
    else:
        with live_server(settings) as (url, _app), HTTPClient(url, poll_interval=0.05) as remote:
            yield remote


def test_ingest_search_list_delete(client: KBClient, tmp_path: Path) -> None:
    kb = client.create_kb("手册 one")
    assert kb.name == "手册 one" and kb.dimension == 384
    assert "手册 one" in [k.name for k in client.list_kbs()]

    added = client.add_texts("手册 one", TEXTS, metadata={"team": "ops"})
    assert [o.outcome for o in added] == ["added"] * 3 and all(o.chunks >= 1 and o.doc_id for o in added)
    again = client.add_texts("手册 one", {"pumps.md": TEXTS["pumps.md"]})
    assert again[0].outcome == "unchanged"
    note = tmp_path / "note.html"
    note.write_text("<html><body><h1>Hoses</h1><p>Rubber hoses crack in frost.</p></body></html>")
    assert client.add_files("手册 one", [note])[0].outcome == "added"
    listed = next(k for k in client.list_kbs() if k.name == "手册 one")  # the API's listing carries the counts
    assert listed.documents == 4 and listed.chunks == sum(o.chunks for o in added) + 1

    response = client.search("手册 one", "which valve only allows one-way flow", top_k=2, trace=True)
    assert response.hits[0].source == "valves.md" and len(response.hits) <= 2
    assert response.trace is not None and response.trace.gated[0].source == "valves.md"
    assert response.trace.timings_ms["total"] > 0
    assert client.search("手册 one", "叶轮", mode="lexical").hits[0].source == "泵.txt"
    filtered = client.search("手册 one", "pumps valves", filters={"team": "ops", "source": "pumps.md"})
    assert {h.source for h in filtered.hits} == {"pumps.md"}

    answer = client.ask("手册 one", "Which valve lets fluid flow in one direction only?")
    assert answer.mode == "extractive" and "check valve" in answer.answer and not answer.refused
    assert answer.citations[0].source == "valves.md" and answer.citations[0].status == "verified"
    assert client.ask("手册 one", "Who painted the Mona Lisa?").refused

    docs = {d.source: d for d in client.documents("手册 one")}
    assert set(docs) == {*TEXTS, "note.html"} and docs["valves.md"].metadata["team"] == "ops"
    page = client.document_page("手册 one", status="ready", offset=1, limit=2)
    assert (page.total, page.offset, page.limit, len(page.documents)) == (4, 1, 2, 2)
    assert client.get_document("手册 one", docs["valves.md"].id) == docs["valves.md"]
    valves = docs["valves.md"].id
    assert not client.residue("手册 one", valves).clean  # still there
    assert client.download("手册 one", valves).startswith(b"# Valves")  # the original file, as it was given
    client.delete_document("手册 one", valves)
    assert client.residue("手册 one", valves).model_dump() == {
        "doc_id": valves,
        "document": None,
        "chunks": 0,
        "lexical_entries": 0,
        "original_files": 0,
        "clean": True,
    }
    assert "valves.md" not in {h.source for h in client.search("手册 one", "check valve one direction").hits}
    assert len(client.documents("手册 one")) == 3
    audit = client.audit("手册 one")
    assert audit.clean and audit.documents == {"ready": 3} and audit.leftover_chunks == 0
    assert client.get_kb("手册 one").documents == 3


def test_files_named_by_the_caller_and_heard_as_they_finish(client: KBClient, tmp_path: Path) -> None:
    client.create_kb("named files", description="ops manuals")
    assert client.get_kb("named files").description == "ops manuals"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "seals.md").write_text("# Seals\n\nMechanical seals stop a pump shaft from leaking.")
    (tmp_path / "b.md").write_text("# Bearings\n\nBearings carry the shaft.")
    heard: list[str] = []
    outcomes = client.add_files(
        "named files",
        {"a/seals.md": tmp_path / "a" / "seals.md", "bearings.md": tmp_path / "b.md"},
        on_outcome=lambda o: heard.append(o.source),
    )
    assert sorted(heard) == sorted(o.source for o in outcomes) and [o.outcome for o in outcomes] == ["added"] * 2
    sources = {d.source for d in client.documents("named files")}
    # the in-process client keeps the path inside a folder; the HTTP API keeps the file-name part of any name
    assert sources in ({"a/seals.md", "bearings.md"}, {"seals.md", "bearings.md"})

    (tmp_path / "b.md").write_text("# Bearings\n\nBearings carry the shaft and need grease.")
    [replaced] = client.add_files("named files", {"bearings.md": tmp_path / "b.md"})
    assert replaced.outcome == "replaced" and replaced.replaced == outcomes[1].doc_id

    question = "What stops a pump shaft from leaking?"
    events = list(client.ask_stream("named files", question))
    final = events[-1]
    assert isinstance(final, AnswerPublic) and all(isinstance(e, str) for e in events[:-1])
    assert "".join(events[:-1]) == final.answer == client.ask("named files", question).answer
    assert "seals" in final.answer.lower() and final.citations
    with pytest.raises(ClientError) as info:
        list(client.ask_stream("named files", "x", sources=0))
    assert info.value.status == 422
    client.drop_kb("named files")


def test_errors_are_the_apis(client: KBClient) -> None:
    cases = [
        (lambda: client.search("no such kb", "x"), 404, "KnowledgeBaseNotFound"),
        (lambda: client.search("手册 one", "x", top_k=0), 422, "ValidationError"),
        (lambda: client.ask("手册 one", "x", answer_mode="poem"), 422, "ValidationError"),
        (lambda: client.ask("no such kb", "x"), 404, "KnowledgeBaseNotFound"),
        (lambda: client.delete_document("手册 one", "0" * 64), 404, "DocumentNotFound"),
        (lambda: client.get_document("手册 one", "0" * 64), 404, "DocumentNotFound"),
        (lambda: client.get_kb("no such kb"), 404, "KnowledgeBaseNotFound"),
        (lambda: client.document_page("手册 one", limit=0), 422, "ValidationError"),
        (lambda: client.audit("no such kb"), 404, "KnowledgeBaseNotFound"),
        (lambda: client.create_kb("手册 one"), 409, "KnowledgeBaseExists"),
        (lambda: client.download("手册 one", "0" * 64), 404, "DocumentNotFound"),
        (lambda: client.page_image("手册 one", "0" * 64, 0), 422, "ValidationError"),
        (lambda: client.page_image("手册 one", client.documents("手册 one")[0].id, 1), 404, "PageNotFound"),
    ]
    for call, status, kind in cases:
        with pytest.raises(ClientError) as info:
            call()
        assert (info.value.status, info.value.type) == (status, kind), info.value
        assert info.value.message


def test_failed_documents_are_reported_not_raised(client: KBClient, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7 this is not really a pdf")
    client.create_kb("broken-files")
    [outcome] = client.add_files("broken-files", [broken])
    assert outcome.outcome == "failed" and outcome.reason and outcome.error
    assert client.documents("broken-files") == [] or all(d.status != "ready" for d in client.documents("broken-files"))
    client.drop_kb("broken-files")
    assert "broken-files" not in [k.name for k in client.list_kbs()]


def test_connect_picks_the_client(tmp_path: Path) -> None:
    remote = connect("http://127.0.0.1:9")
    assert isinstance(remote, HTTPClient)
    remote.close()
    with pytest.raises(Exception, match=r"(?i)connect"):
        HTTPClient("http://127.0.0.1:9", timeout=2).list_kbs()
    local = connect(data_dir=tmp_path)
    assert isinstance(local, LocalClient) and local.list_kbs() == []
    local.close()
