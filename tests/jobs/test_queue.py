"""Ingestion scaled out on a real broker (RabbitMQ) and a real PostgreSQL: two API replicas and two `kb worker`
processes share one pgvector store, the job journal and the data directory. Uploads go through replica A, every job
is polled to the end through replica B, one worker is SIGKILLed in the middle of a job, and the other finishes it:
afterwards every file is one ready document, nothing is left half-written and every job ended ready once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from kb_service.core.config import Settings
from kb_service.core.errors import QueueUnavailable
from kb_service.core.records import DocStatus, Document
from kb_service.ingest.sources import SourceItem
from kb_service.jobs import Job, JobStatus
from kb_service.jobs.journal import Payloads
from kb_service.jobs.pg_journal import PgJobJournal
from kb_service.services import Services
from kb_service.stores.base import all_documents
from kb_service.stores.pgvector import PgvectorStore
from tests.broker import needs_rabbitmq, rabbitmq
from tests.conftest import SHARED_DATA, needs_shared
from tests.live import kb_serve, live_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIG = "filings/APPLE_2022_10K.pdf"  # long enough to be killed in the middle of
SMALL = [
    "documents/unstructured/norwich-city.txt",
    "documents/unstructured/example-10k-1p.html",
    "documents/unstructured/example-steelJIS-datasheet.html",
    "documents/unstructured/ideas-page.html",
    "documents/unstructured/book-war-and-peace-1p.txt",
    "documents/unstructured/simple-table.md",
    "documents/unstructured/language-docs/eng_spa_mult.md",
    "documents/unstructured/example-list-items-multiple.docx",
    "documents/unstructured/fake-doc-emphasized-text.docx",
    "documents/unstructured/page-breaks.docx",
    "documents/unstructured/handbook-1p.docx",
    "documents/unstructured/docx-tables.docx",
    "documents/chatchat_zh/test.txt",
    "documents/chatchat_zh/分布式训练技术原理.md",
    "documents/chatchat_zh/大模型应用技术原理.md",
    "documents/chatchat_zh/大模型指令对齐训练原理.md",
    "documents/chatchat_zh/大模型推理优化策略.md",
    "documents/docling/html/groundtruth_md/wiki_duck.html.md",
    "documents/docling/pdf/groundtruth_md/normal_4pages.md",
]
FINISHED = ("ready", "failed")


def test_the_pg_journal_shares_jobs_and_keeps_uploads_until_they_finish(pg_dsn: str, tmp_path: Path) -> None:
    stores = [PgvectorStore(pg_dsn), PgvectorStore(pg_dsn)]  # two replicas, each with its own pool
    journal = PgJobJournal(stores[0].pool, Payloads(tmp_path / "payloads"))
    other = PgJobJournal(stores[1].pool, Payloads(tmp_path / "payloads"))
    try:
        job = Job(id=f"job-{tmp_path.name}", kb="kb", source="a.txt", kb_uid="u1")
        journal.add(job, SourceItem(name="a.txt", text="hello", metadata={"team": "x"}))
        assert other.get(job.id) == job
        item = other.item(job.id)
        assert item is not None and item.text == "hello" and item.metadata == {"team": "x"}
        running = Job(**{**job.__dict__, "status": JobStatus.EMBEDDING, "worker": "host:1", "chunks": 3})
        other.update(running)
        assert journal.get(job.id) == running and journal.item(job.id) is not None  # the upload is kept
        journal.update(Job(**{**running.__dict__, "status": JobStatus.READY, "outcome": "added"}))
        seen = other.get(job.id)
        assert seen is not None and seen.status == JobStatus.READY and seen.worker == "host:1"
        assert not (tmp_path / "payloads" / job.id).exists()  # finished: the upload is gone
        assert journal.get("no-such-job") is None and journal.item("no-such-job") is None
    finally:
        for store in stores:
            store.close()


def test_a_queue_needs_postgres_and_an_unreachable_broker_fails_the_jobs_it_could_not_send(
    pg_dsn: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="KB_QUEUE_URL needs KB_BACKEND=pgvector"):
        Settings(data_dir=tmp_path, queue_url="amqp://guest@127.0.0.1:1//")
    settings = Settings(data_dir=tmp_path, backend="pgvector", pg_dsn=pg_dsn, queue_url="amqp://guest:x@127.0.0.1:1//")
    services = Services(settings=settings)
    kb = f"unsent-{tmp_path.name[-10:]}"
    try:
        services.catalog.create(kb)
        with pytest.raises(QueueUnavailable, match="KB_QUEUE_URL cannot be reached"):
            services.jobs.submit(kb, [SourceItem(name="a.txt", text="one"), SourceItem(name="b.txt", text="two")])
        assert services.jobs.journal is not None
        rows = [job for job, _ in services.jobs.journal.load(10_000) if job.kb == kb]
        assert len(rows) == 2 and all(j.status == JobStatus.FAILED and j.reason == "queue_unavailable" for j in rows)
        assert list((tmp_path / "jobs" / "payloads").iterdir()) == []  # nothing waits for a worker that never comes
    finally:
        services.close()


def test_an_upload_while_the_broker_is_down_is_a_503_that_says_so(pg_dsn: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, backend="pgvector", pg_dsn=pg_dsn, queue_url="amqp://kb:kb@127.0.0.1:1//", llm_backend="none"
    )
    kb = f"down-{tmp_path.name[-10:]}"
    with live_server(settings) as (url, _app), httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/knowledge-bases", json={"name": kb}).status_code == 201
        r = client.post(f"/v1/knowledge-bases/{kb}/documents", json={"name": "a.txt", "text": "Alpha."})
        assert r.status_code == 503 and "KB_QUEUE_URL cannot be reached" in r.json()["error"]["message"], r.text
        assert client.get(f"/v1/knowledge-bases/{kb}/documents").json()["documents"] == []


def test_recovery_leaves_what_a_live_job_holds_and_removes_what_a_lapsed_one_left(pg_dsn: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, backend="pgvector", pg_dsn=pg_dsn, queue_url="amqp://kb:kb@127.0.0.1:1//")
    services = Services(settings=settings)
    name = f"leases-{tmp_path.name[-10:]}"
    try:
        kb = services.catalog.create(name)
        journal = services.jobs.journal
        assert journal is not None
        hour_ago = time.time() - 3600
        for source in ("held.txt", "lapsed.txt", "no-job.txt"):  # what workers leave half-written
            services.store.put_documents(
                kb,
                [
                    Document(
                        id=f"{source}-id",
                        source=source,
                        title=source,
                        format="txt",
                        status=DocStatus.PROCESSING,
                        created_at=hour_ago,
                        updated_at=hour_ago,
                    )
                ],
            )
        held = Job(id=f"held-{name}", kb=name, source="held.txt", kb_uid=kb.uid, status=JobStatus.EMBEDDING)
        lapsed = Job(
            id=f"lapsed-{name}",
            kb=name,
            source="lapsed.txt",
            kb_uid=kb.uid,
            status=JobStatus.EMBEDDING,
            updated_at=time.time() - 600,  # its worker stopped renewing ten minutes ago
        )
        for job in (held, lapsed):
            journal.add(job, SourceItem(name=job.source, text="x"))
        services.recover()
        assert [d.source for d in all_documents(services.store, kb)] == ["held.txt"]
        journal.update(replace(held, updated_at=time.time() - 600))  # its worker died too
        services.recover()
        assert all_documents(services.store, kb) == []
    finally:
        services.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with rabbitmq(tmp_path_factory.mktemp("rabbitmq")) as url:
        yield url


@needs_rabbitmq
def test_a_message_delivered_again_runs_only_what_is_unfinished(broker: str, pg_dsn: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, backend="pgvector", pg_dsn=pg_dsn, queue_url=broker, llm_backend="none")
    services = Services(settings=settings)
    kb = f"again-{tmp_path.name[-10:]}"
    try:
        services.catalog.create(kb)
        jobs = services.jobs.submit(
            kb, [SourceItem(name="a.txt", text="Alpha particles are helium nuclei."), SourceItem(name="b.txt", text="")]
        )
        ids = [j.id for j in jobs]
        assert [services.jobs.get(j).status for j in ids] == [JobStatus.QUEUED] * 2  # sent, not run here
        services.jobs.run_jobs(ids)  # what a worker does with the message
        first = [services.jobs.get(j) for j in ids]
        assert [(j.status, j.outcome, j.reason) for j in first] == [
            (JobStatus.READY, "added", ""),
            (JobStatus.FAILED, "failed", "empty"),
        ]
        assert all(j.worker for j in first)
        services.jobs.run_jobs([*ids, "no-such-job"])  # delivered again: finished jobs stay as they were
        assert [services.jobs.get(j) for j in ids] == first
        assert services.store.count_documents(services.catalog.get(kb)) == 1
        assert not list((tmp_path / "jobs" / "payloads").iterdir())
    finally:
        services.close()


@contextmanager
def kb_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kb_service.cli.main", "worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # a warm shutdown
            proc.wait(120)


def _poll(client: httpx.Client, ids: list[str], until: float) -> list[dict]:
    while True:
        jobs = [client.get(f"/v1/jobs/{j}").json() for j in ids]
        if all(j["status"] in FINISHED for j in jobs) or time.monotonic() > until:
            return jobs
        time.sleep(0.5)


@needs_shared
@needs_rabbitmq
@pytest.mark.slow
def test_two_replicas_two_workers_one_killed_mid_job_every_document_published_once(
    broker: str, pg_dsn: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "KB_BACKEND": "pgvector",
        "KB_PG_DSN": pg_dsn,
        "KB_QUEUE_URL": broker,
        "KB_DATA_DIR": str(tmp_path / "shared"),  # the volume replicas and workers share
        "KB_LLM_BACKEND": "none",
        "KB_INGEST_BATCH_CHUNKS": "64",
    }
    kb = f"scale-{tmp_path.name[-10:]}"
    paths = [BIG, *SMALL]
    with (
        kb_serve(env, tmp_path / "a.log", cwd=ROOT) as a_url,
        kb_serve(env, tmp_path / "b.log", cwd=ROOT) as b_url,
        kb_worker(env, tmp_path / "w1.log") as w1,
        kb_worker(env, tmp_path / "w2.log") as w2,
        httpx.Client(base_url=a_url, timeout=60) as a,
        httpx.Client(base_url=b_url, timeout=60) as b,
    ):
        assert a.post("/v1/knowledge-bases", json={"name": kb}).status_code == 201
        upload = f"/v1/knowledge-bases/{kb}/documents"
        files = [("files", (Path(p).name, (SHARED_DATA / p).read_bytes())) for p in paths]
        r = a.post(upload, files=files[:1])  # the long one first: a worker takes it at once
        assert r.status_code == 202, r.text
        big = r.json()["jobs"][0]["id"]
        r = a.post(upload, files=files[1:])
        assert r.status_code == 202, r.text
        ids = [big] + [j["id"] for j in r.json()["jobs"]]
        workers = {proc.pid: proc for proc in (w1, w2)}
        deadline = time.monotonic() + 300
        while True:  # kill the worker that runs the long job once it is under way
            job = b.get(f"/v1/jobs/{big}").json()
            if job["worker"] and job["status"] in ("parsing", "chunking", "embedding", "storing"):
                break
            assert job["status"] not in FINISHED and time.monotonic() < deadline, job
            for log in ("w1.log", "w2.log"):
                assert w1.poll() is None and w2.poll() is None, (tmp_path / log).read_text()
            time.sleep(0.1)
        killed = int(job["worker"].rsplit(":", 1)[1])
        workers[killed].send_signal(signal.SIGKILL)
        workers[killed].wait()
        jobs = _poll(b, ids, time.monotonic() + 900)
        assert [j["status"] for j in jobs] == ["ready"] * len(paths), jobs
        assert all(j["outcome"] == "added" for j in jobs), [(j["source"], j["outcome"]) for j in jobs]
        redone = jobs[0]
        assert redone["worker"] and int(redone["worker"].rsplit(":", 1)[1]) != killed  # the other worker ran it
        survivor = next(p for pid, p in workers.items() if pid != killed)
        assert survivor.poll() is None
        docs = b.get(upload, params={"limit": 100}).json()["documents"]
        assert sorted(d["source"] for d in docs) == sorted(Path(p).name for p in paths)
        assert len({d["id"] for d in docs}) == len(paths) and {d["status"] for d in docs} == {"ready"}
        audit = b.get(f"/v1/knowledge-bases/{kb}/audit").json()
        assert audit["clean"] and audit["leftover_chunks"] == 0, audit
        assert audit["chunks"] == sum(d["chunk_count"] for d in docs), audit
        hits = b.post(f"/v1/knowledge-bases/{kb}/search", json={"query": "iPhone net sales", "top_k": 3}).json()
        assert hits["hits"][0]["source"] == Path(BIG).name
        survivor.send_signal(signal.SIGTERM)  # a warm shutdown: it exits cleanly, having nothing in hand
        assert survivor.wait(120) == 0
        log = next(tmp_path / f"w{i}.log" for i, p in enumerate((w1, w2), 1) if p is survivor).read_text()
        assert "Traceback" not in log, log
        print(f"\nqueue: {len(paths)} files, worker {killed} SIGKILLed mid-job, {audit}")


def test_kb_worker_without_a_queue_says_what_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")} | {"KB_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "kb_service.cli.main", "worker"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "KB_QUEUE_URL" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2, done.stderr  # one line (wrapped by the terminal width)
