"""Re-indexing a knowledge base from all-MiniLM-L6-v2 to multilingual-e5-small (both real, packaged models) on both
stores while it serves: searches never fail nor come back empty, an upload and a delete made during the re-index are
in the new index afterwards, a re-index killed with SIGKILL leaves the old index serving and resumes, a cancelled one
leaves the knowledge base as it was, and re-chunking reads the kept original files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kb_service.client import ClientError, HTTPClient, LocalClient
from kb_service.core.config import Settings
from kb_service.core.records import DocStatus
from kb_service.reindex import ReindexPlan, ReindexStatus
from kb_service.stores.base import Reindexable
from kb_service.stores.recovery import audit
from tests.live import kb_serve, live_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
E5 = "intfloat/multilingual-e5-small"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CORPUS = [json.loads(line) for line in (ROOT / "examples" / "sample-beir" / "corpus.jsonl").open(encoding="utf-8")]
TEXTS = {f"{d['_id']}.md": f"# {d['title']}\n\n{d['text']}" for d in CORPUS}
QUERIES = ["how do I reset the pump", "what voltage does the pump need", "warranty period", "clean the filter"]


@pytest.fixture(params=["milvus", "pgvector"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    store = {"backend": request.param}
    if request.param == "pgvector":
        store["pg_dsn"] = request.getfixturevalue("pg_dsn")
    # Small batches: the re-index takes many steps, so the changes below land in the middle of it.
    return Settings(data_dir=tmp_path / "data", ingest_batch_chunks=4, reindex_retire_s=1, **store)


def _searches(client: HTTPClient | LocalClient, kb: str, stop: threading.Event, seen: list[str]) -> None:
    """Search in a loop until ``stop``; what went wrong goes into ``seen`` ("ok" for each good answer)."""
    i = 0
    while not stop.is_set():
        query = QUERIES[i % len(QUERIES)]
        i += 1
        try:
            hits = client.search(kb, query, top_k=3).hits
            seen.append("ok" if hits else f"empty: {query}")
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            seen.append(f"failed: {exc}")


def test_a_reindex_under_searches_uploads_and_deletes(settings: Settings) -> None:
    with LocalClient(settings) as client:
        services = client.services
        client.create_kb("手册", embedding_model=MINILM)
        client.add_texts("手册", TEXTS)
        before = client.get_kb("手册")
        doomed = next(d for d in client.documents("手册") if d.source == "pump-reset.md")
        seen: list[str] = []
        stop = threading.Event()
        searcher = threading.Thread(target=_searches, args=(client, "手册", stop, seen))
        searcher.start()
        changed: list[str] = []

        def during(status: ReindexStatus) -> None:  # in the middle of the first pass: an upload and a delete
            if status.copied > 0 and not changed:
                changed.append("done")
                new = client.add_texts("手册", {"late.md": "# Late arrival\n\nThe descaler kit ships in spring."})
                assert new[0].outcome == "added"
                client.delete_document("手册", doomed.id)

        try:
            status = services.reindexer.run("手册", ReindexPlan(E5), report=during)
            time.sleep(2.5)  # the old index is removed after reindex_retire_s while the searches go on
        finally:
            stop.set()
            searcher.join()
        assert changed and status.state == "ready", status
        assert status.passes >= 2  # the changes made during the first pass were copied by another
        assert seen.count("ok") == len(seen) > 10, sorted(set(seen) - {"ok"})

        after = client.get_kb("手册")
        assert (after.embedding_model, after.dimension) == (E5, 384) and after.index != before.index
        assert after.fingerprint != before.fingerprint
        sources = {d.source for d in client.documents("手册")}
        assert sources == (set(TEXTS) - {"pump-reset.md"}) | {"late.md"}
        assert client.search("手册", "When does the descaler kit ship?", top_k=1).hits[0].source == "late.md"
        assert client.residue("手册", doomed.id).clean
        report = client.audit("手册")
        assert report.clean and report.chunks == report.chunks_of_ready
        store = services.store
        assert isinstance(store, Reindexable)
        kb = services.catalog.get("手册")
        assert store.reindex_of(kb) is None and store.retired_indexes(kb) == []


def test_a_reindex_killed_mid_way_leaves_the_old_index_serving_and_resumes(settings: Settings, tmp_path: Path) -> None:
    with LocalClient(settings) as client:
        client.create_kb("docs", embedding_model=MINILM)
        client.add_texts("docs", TEXTS)
        chunks = client.audit("docs").chunks
    env = {**os.environ, **_env(settings)}
    cmd = [sys.executable, "-m", "kb_service.cli.main", "reindex", "docs", "--embedding-model", E5, "--json"]
    with (tmp_path / "kill.log").open("w") as log:
        victim = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_some_copied(settings, victim)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)

    with LocalClient(settings) as client:
        kb = client.services.catalog.get("docs")
        assert kb.embedding.name == MINILM  # the old index still serves, whole
        assert client.search("docs", "how do I reset the pump", top_k=1).hits[0].source == "pump-reset.md"
        assert client.audit("docs").clean and client.audit("docs").chunks == chunks
        assert client.reindex_status("docs").state == "interrupted"
        with pytest.raises(ClientError) as other:  # another plan is refused while this one is recorded
            client.reindex("docs", E5, chunk_size=64)
        assert other.value.status == 422 and "cancel" in other.value.message

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout)
    assert status["state"] == "ready" and status["kept"] > 0 and status["kept"] + status["copied"] == len(TEXTS)
    with LocalClient(settings) as client:
        services = client.services
        kb = services.catalog.get("docs")
        assert kb.embedding.name == E5 and client.audit("docs").clean and client.audit("docs").chunks == chunks
        assert client.search("docs", "how do I reset the pump", top_k=1).hits[0].source == "pump-reset.md"
        store = services.store
        assert isinstance(store, Reindexable) and store.reindex_of(kb) is None and store.retired_indexes(kb) == []


def _env(settings: Settings) -> dict[str, str]:
    env = {
        "KB_DATA_DIR": str(settings.data_dir),
        "KB_BACKEND": settings.store.backend,
        "KB_INGEST_BATCH_CHUNKS": "2",
        "KB_REINDEX_RETIRE_S": "0",
    }
    if settings.store.pg_dsn is not None:
        env["KB_PG_DSN"] = settings.store.pg_dsn.get_secret_value()
    return env


def _wait_for_some_copied(settings: Settings, process: subprocess.Popen[bytes]) -> None:
    """Until the re-index running in ``process`` has written a document into its new index."""
    with LocalClient(settings) as client:
        services = client.services
        store = services.store
        assert isinstance(store, Reindexable)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert process.poll() is None, "the re-index ended before it could be killed"
            kb = services.catalog.get("docs")
            shadow = store.reindex_of(kb)
            if shadow is not None and store.count_documents(shadow.kb, status=DocStatus.READY) > 0:
                return
            time.sleep(0.05)
    raise AssertionError("the re-index wrote nothing in 300 s")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[HTTPClient]:
    settings = Settings(data_dir=tmp_path / "data", reindex_retire_s=0, ingest_batch_chunks=2)
    with live_server(settings) as (url, _app), HTTPClient(url) as client:
        client.create_kb("kb", embedding_model=MINILM)
        client.add_texts("kb", TEXTS)
        yield client


def test_the_api_reindexes_cancels_and_refuses_bad_plans(service: HTTPClient) -> None:
    client = service
    before = client.get_kb("kb")
    for body, status in (
        ({"embedding_model": MINILM}, 422),  # the model it has, and no new chunking
        ({"embedding_model": "no/such-model"}, 422),  # not allowed on this service
        ({"embedding_model": MINILM, "chunk_size": 64, "chunk_overlap": 64}, 422),
        ({"embedding_model": E5, "chunk_sise": 64}, 422),  # a misspelt field is not silently ignored
        ({}, 422),
    ):
        response = client.http.post("/v1/knowledge-bases/kb/reindex", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["message"]
    assert client.http.post("/v1/knowledge-bases/nope/reindex", json={"embedding_model": E5}).status_code == 404
    assert client.http.get("/v1/knowledge-bases/kb/reindex").status_code == 404

    started = client.http.post("/v1/knowledge-bases/kb/reindex", json={"embedding_model": E5})
    assert started.status_code == 202 and started.json()["state"] == "building"
    again = client.http.post("/v1/knowledge-bases/kb/reindex", json={"embedding_model": E5})
    assert again.status_code == 409
    cancelled = client.cancel_reindex("kb")
    assert cancelled.state == "cancelled"
    assert client.get_kb("kb").model_dump() == before.model_dump()
    assert client.reindex_status("kb").state == "cancelled"

    # Built beside, not switched: the knowledge base still serves its old index; started again, it switches.
    built = client.reindex("kb", E5, switch=False, poll_s=0.2)
    assert built.state == "built" and built.copied == len(TEXTS) and client.get_kb("kb").embedding_model == MINILM
    done = client.reindex("kb", E5, poll_s=0.2)
    assert done.state == "ready" and done.kept == len(TEXTS) and done.copied == 0
    after = client.get_kb("kb")
    assert (after.embedding_model, after.documents, after.chunks) == (E5, before.documents, before.chunks)
    assert client.search("kb", "how do I reset the pump", top_k=1).hits[0].source == "pump-reset.md"


def test_rechunking_reads_the_original_files(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", reindex_retire_s=0)
    with LocalClient(settings) as client:
        services = client.services
        client.create_kb("kb", embedding_model=MINILM)
        manual = ROOT / "examples" / "en" / "pump-manual.md"
        client.add_files("kb", [manual])
        before = client.get_kb("kb")
        status = client.reindex("kb", MINILM, chunk_size=48, chunk_overlap=8)
        assert status.state == "ready" and status.copied == 1
        after = client.get_kb("kb")
        assert after.fingerprint == before.fingerprint and after.index != before.index
        assert after.chunks > before.chunks  # smaller chunks: more of them
        embedder = services.embedders.get(MINILM)
        kb = services.catalog.get("kb")
        chunks = [c for batch in services.store.iter_chunks(kb) for c in batch]
        assert max(embedder.count_tokens(c.text) for c in chunks) <= 48
        assert client.search("kb", "how do I reset the pump", top_k=1).hits[0].source == "pump-manual.md"
        assert client.download("kb", client.documents("kb")[0].id) == manual.read_bytes()
        assert audit(services.store, kb, services.originals).clean


def test_a_service_killed_during_a_reindex_resumes_it_when_it_starts_again(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_INGEST_BATCH_CHUNKS": "2",
        "KB_REINDEX_RETIRE_S": "0",
    }
    with kb_serve(env, tmp_path / "first.log", stop=signal.SIGKILL) as url, HTTPClient(url) as client:
        client.create_kb("kb", embedding_model=MINILM)
        client.add_texts("kb", TEXTS)
        assert client.http.post("/v1/knowledge-bases/kb/reindex", json={"embedding_model": E5}).status_code == 202
        deadline = time.monotonic() + 300
        while (status := client.reindex_status("kb")).copied == 0:
            assert status.state == "building" and time.monotonic() < deadline, status
            time.sleep(0.05)
    # SIGKILLed mid-way; started again, the service resumes the re-index by itself.
    with kb_serve(env, tmp_path / "second.log") as url, HTTPClient(url) as client:
        deadline = time.monotonic() + 300
        while (status := client.reindex_status("kb")).state != "ready":
            assert status.state in ("building", "switching") and time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status.kept > 0 and status.kept + status.copied == len(TEXTS)
        kb = client.get_kb("kb")
        assert (kb.embedding_model, kb.documents) == (E5, len(TEXTS))
        assert client.audit("kb").clean
        assert client.search("kb", "how do I reset the pump", top_k=1).hits[0].source == "pump-reset.md"
