"""Syncing from an S3-compatible bucket prefix through boto3, against a real S3 protocol server on loopback (moto's
server: the same HTTP API as AWS S3 or MinIO; no cloud is reachable here): objects added, overwritten and deleted
under the prefix reach the knowledge base, nothing outside it does, and unchanged objects are not downloaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kb_service.client import ClientError, LocalClient
from kb_service.core.config import Settings
from kb_service.sync import sources

pytestmark = pytest.mark.integration
boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency (make install)")
BUCKET = "kb-manuals"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # what a user sets for MinIO or any S3-compatible store: boto3 reads these itself
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "kb-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "kb-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = sources.S3Source.local

    def counting(self: sources.S3Source, entry: sources.Entry, spool: Path) -> Path:
        seen.append(entry.path)
        return real(self, entry, spool)

    monkeypatch.setattr(sources.S3Source, "local", counting)
    return seen


def put(s3: Any, key: str, text: str) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=text.encode("utf-8"))


def test_a_bucket_prefix_sync(s3: Any, downloads: list[str], tmp_path: Path) -> None:
    put(s3, "support/pumps.md", "# Pumps\n\nCentrifugal pumps move water with a spinning impeller.")
    put(s3, "support/valves.md", "# Valves\n\nA check valve lets fluid flow in one direction only.")
    put(s3, "support/zh/泵.txt", "离心泵依靠叶轮旋转输送液体。")
    put(s3, "support/drafts/", "")  # a "folder" marker
    put(s3, "support/.notes.md", "hidden")
    put(s3, "elsewhere/other.md", "# Other\n\nNot under the prefix.")
    source = f"s3://{BUCKET}/support"
    with LocalClient(Settings(data_dir=tmp_path / "data")) as client:
        client.create_kb("s3 docs")
        first = client.sync("s3 docs", source)
        assert first.source == f"s3://{BUCKET}/support/"
        assert (first.added, first.changed, first.deleted) == (["pumps.md", "valves.md", "zh/泵.txt"], [], [])
        assert {d.source for d in client.documents("s3 docs")} == {"pumps.md", "valves.md", "zh/泵.txt"}

        downloads.clear()
        again = client.sync("s3 docs", source)
        assert (again.added, again.changed, again.deleted, again.unchanged) == ([], [], [], 3)
        assert downloads == []  # same size and ETag: not downloaded

        # Overwritten within the same second (S3's times have one-second steps: the ETag tells), one deleted, one new.
        put(s3, "support/pumps.md", "# Pumps\n\nSubmersible pumps sit under water and push it up the pipe.")
        s3.delete_object(Bucket=BUCKET, Key="support/valves.md")
        put(s3, "support/gaskets.md", "# Gaskets\n\nReplace a cracked gasket before it leaks.")
        downloads.clear()
        report = client.sync("s3 docs", source)
        assert (report.added, report.changed, report.deleted) == (["gaskets.md"], ["pumps.md"], ["valves.md"])
        assert report.clean and report.failed == [] and sorted(downloads) == ["gaskets.md", "pumps.md"]
        docs = {d.source: d for d in client.documents("s3 docs")}
        assert set(docs) == {"pumps.md", "gaskets.md", "zh/泵.txt"}
        assert b"Submersible" in client.download("s3 docs", docs["pumps.md"].id)  # the original, kept
        assert client.audit("s3 docs").clean

        with pytest.raises(ClientError) as missing:
            client.sync("s3 docs", "s3://no-such-bucket/x")
        assert missing.value.status == 404 and "cannot be read" in str(missing.value)
