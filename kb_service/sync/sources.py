"""Where a synced knowledge base's files come from: a local folder, or an S3-compatible bucket prefix (through
boto3, so AWS S3, MinIO, Ceph, R2 … alike). A source lists its files with their size and version, and
gives a local path for a file's bytes (an object is downloaded into the sync's spool folder).

``s3://bucket/prefix`` names a prefix; the endpoint and credentials come from boto3's own configuration
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, or
``~/.aws/config``), as for every other S3 tool."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kb_service.core.errors import SyncSourceNotFound
from kb_service.ingest.sources import iter_paths

S3_SCHEME = "s3://"


@dataclass(frozen=True)
class Entry:
    """One file of a source: ``path`` inside it (the document's name), its size, and a version that changes
    whenever its bytes may have (a file's modification time in ns; an object's ETag, as S3's times are seconds)."""

    path: str
    size: int
    version: str


class Source(Protocol):
    name: str  # the source's identity in the sync state: an absolute folder, or s3://bucket/prefix

    def entries(self) -> Iterator[Entry]: ...

    def local(self, entry: Entry, spool: Path) -> Path:
        """A local file with the entry's bytes (the file itself, or a download into ``spool``)."""
        ...


class FolderSource:
    """Files under a folder, named by their path inside it; hidden files and folders are left out."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise SyncSourceNotFound(f"sync source {str(folder)!r} is not a folder")
        self.root = folder.resolve()
        self.name = str(self.root)

    def entries(self) -> Iterator[Entry]:
        for item in iter_paths([self.root]):
            try:
                stat = (self.root / item.name).stat()
            except FileNotFoundError:  # deleted while the folder was walked
                continue
            yield Entry(item.name, stat.st_size, str(stat.st_mtime_ns))

    def local(self, entry: Entry, spool: Path) -> Path:
        return self.root / entry.path


class S3Source:
    """Objects under a bucket prefix, named by their key after the prefix; "folder" markers and hidden names are
    left out, as in a folder."""

    def __init__(self, url: str, client: Any | None = None) -> None:
        bucket, _, prefix = url.removeprefix(S3_SCHEME).partition("/")
        if not bucket:
            raise SyncSourceNotFound(f"sync source {url!r} names no bucket: write s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.name = f"{S3_SCHEME}{bucket}/{self.prefix}"
        self.client = client if client is not None else _client()
        self._check()

    def _check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise SyncSourceNotFound(f"sync source {self.name} cannot be read: {exc}") from exc

    def entries(self) -> Iterator[Entry]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                path = obj["Key"][len(self.prefix) :]
                parts = path.split("/")  # a "folder" marker ends with "/"; "..", "." or "" parts name no file here
                if any(not p or p.startswith(".") for p in parts):
                    continue
                yield Entry(path, int(obj["Size"]), str(obj["ETag"]))

    def local(self, entry: Entry, spool: Path) -> Path:
        from botocore.exceptions import ClientError

        target = spool / entry.path  # entries() lets no "..", "." or empty part through
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self.prefix + entry.path, str(target))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(entry.path) from exc  # deleted since it was listed
            raise
        return target


def open_source(spec: str | Path) -> Source:
    """``s3://bucket/prefix`` or a folder."""
    text = str(spec)
    if text.startswith(S3_SCHEME):
        return S3Source(text)
    return FolderSource(Path(text))


def _client() -> Any:
    try:
        import boto3
    except ImportError as exc:  # pragma: no cover - boto3 is a dependency
        raise SyncSourceNotFound("syncing from S3 needs boto3: pip install boto3") from exc
    return boto3.client("s3")
