"""Folder sync against re-ingesting: what ``kb sync`` saves by skipping unchanged files unread, measured side by side
in one run on a copy of real documents (the shared data's ~100 files of many formats; ``--quick``: the repository's
examples).

- ``first_sync_s``: every file new (parse, chunk, embed, store);
- ``unchanged_sync_s``: nothing changed (each file's size and modification time checked, none read);
- ``reingest_unchanged_s``: the same folder through ``kb ingest`` (every file parsed to find that it is unchanged);
- ``touched_sync_s``: every file's time changed, bytes not (each file hashed, none parsed);
- ``one_edit_sync_s``: one file edited (hashed and re-ingested, the rest skipped).

    python bench/sync.py --json [--quick] [--backend milvus|pgvector]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kb_service.client import LocalClient  # noqa: E402
from kb_service.core.config import Settings  # noqa: E402
from kb_service.ingest.sources import iter_paths  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "documents"
KB = "sync-bench"


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - started, 3)


def run(corpus: Path, backend: str, work: Path) -> dict[str, Any]:
    folder = work / "corpus"
    shutil.copytree(corpus, folder)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared copy is read-only: this one is edited
    files = {item.name: item.path for item in iter_paths([folder]) if item.path is not None}
    settings = Settings(data_dir=work / "data", backend=backend)
    if backend == "pgvector":
        import pgserver

        server = pgserver.get_server(work / "pg", cleanup_mode="stop")
        settings = Settings(data_dir=work / "data", backend=backend, pg_dsn=server.get_uri())
    with LocalClient(settings) as client:
        client.create_kb(KB)
        first, first_s = timed(lambda: client.sync(KB, folder))
        unchanged, unchanged_s = timed(lambda: client.sync(KB, folder))
        outcomes, reingest_s = timed(lambda: client.add_files(KB, files))
        for path in files.values():
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
        touched, touched_s = timed(lambda: client.sync(KB, folder))
        edited = next(p for p in files.values() if p.suffix in (".md", ".txt"))
        edited.write_text(edited.read_text(encoding="utf-8") + "\n\nOne more paragraph, added later.\n")
        edit, edit_s = timed(lambda: client.sync(KB, folder))
        audit = client.audit(KB)
    return {
        "backend": backend,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files.values()),
        "first_sync": {"added": len(first.added), "failed": len(first.failed), "seconds": first_s},
        "unchanged_sync_s": unchanged_s,
        "unchanged_files": unchanged.unchanged,
        "reingest_unchanged_s": reingest_s,
        "reingest_outcomes": sorted({o.outcome for o in outcomes}),
        "reingest_over_unchanged_sync": round(reingest_s / unchanged_s, 1) if unchanged_s else None,
        "touched_sync_s": touched_s,
        "touched_changes": len(touched.added) + len(touched.changed) + len(touched.deleted),
        "reingest_over_touched_sync": round(reingest_s / touched_s, 1) if touched_s else None,
        "one_edit_sync_s": edit_s,
        "one_edit_changed": edit.changed,
        "audit_clean": audit.clean,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the repository's examples instead of the shared files")
    parser.add_argument("--backend", default="milvus", choices=["milvus", "pgvector"])
    parser.add_argument("--json", action="store_true", help="JSON only")
    args = parser.parse_args()
    corpus = ROOT / "examples" if args.quick or not SHARED.is_dir() else SHARED
    with tempfile.TemporaryDirectory(prefix="kb-sync-bench-") as work:
        report = run(corpus, args.backend, Path(work))
    report["corpus"] = str(corpus.relative_to(ROOT.parent) if corpus.is_relative_to(ROOT.parent) else corpus)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(f"{report['files']} files ({report['corpus']}, {report['backend']})")
    for key in ("unchanged_sync_s", "reingest_unchanged_s", "touched_sync_s", "one_edit_sync_s"):
        print(f"  {key:<24} {report[key]:>8.3f}")
    print(
        f"  first sync {report['first_sync']['seconds']:.1f}s; re-ingest / unchanged sync "
        f"{report['reingest_over_unchanged_sync']}x, / touched sync {report['reingest_over_touched_sync']}x"
    )


if __name__ == "__main__":
    main()
