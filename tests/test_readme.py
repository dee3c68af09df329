"""The README's code blocks run as written, in order, against a service started the way the README starts it: in a
fresh working folder that holds the repository's examples/ and .venv, with ``kb serve`` on the same data directory as
the commands beside it. Only the service's port differs (a free one instead of 8000). A block that cannot run here
is listed in SKIPPED with the reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import kb_serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIPPED = {  # the first line of a block → why this test does not run it
    "make run": "the set-up itself: this test runs inside what it sets up",
    '{"answer": "根据资料': "an answer shown, not a command",
    "KB_LLM_API_BASE=http://localhost:11434/v1": "needs an Ollama or vLLM server",
    "kb eval-answers ../shared": "long evaluations on ../shared (docs/BENCHMARKS.md has their numbers)",
    "from kb_service.adapters.langchain": "a sketch around the user's own LLM (my_llm); the adapters are tested",
    "python bench/ingest.py": "benchmarks (bench/, tests/test_bench.py)",
    "docker compose up -d": "no Docker engine here (tests/test_config_and_deploy.py checks the compose files)",
}
PARTLY = {"kb eval examples/sample-beir": "only its first line: the others evaluate ../shared sets for minutes"}


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_every_block_is_run_or_skipped_for_a_reason() -> None:
    firsts = [body.splitlines()[0] for _, body in blocks()]
    for known in (*SKIPPED, *PARTLY):
        assert any(f.startswith(known) for f in firsts), f"no README block starts with {known!r} any more"


def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("examples", ".venv"):
        (work / name).symlink_to(ROOT / name)
    env = {**os.environ, "KB_DATA_DIR": str(work / "data"), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    env.pop("KB_BACKEND", None)
    with kb_serve(env, tmp_path / "serve.log", cwd=work) as url:
        port = url.rsplit(":", 1)[1]
        for lang, body in blocks():
            first = body.splitlines()[0]
            if any(first.startswith(k) for k in SKIPPED) or lang not in ("bash", "python"):
                continue
            if any(first.startswith(k) for k in PARTLY):
                body = first + "\n"
            body = body.replace("localhost:8000", f"localhost:{port}")
            command = ["bash", "-euo", "pipefail", "-c", body] if lang == "bash" else [sys.executable, "-c", body]
            done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)
            out = done.stdout + done.stderr
            assert done.returncode == 0, f"README block failed:\n{body}\n--- output ---\n{out}"
            for noise in ("Traceback", "WARNING"):
                assert noise not in out, f"README block printed {noise!r}:\n{body}\n--- output ---\n{out}"
            refused = re.search(r'\{"error":\s*\{"type":\s*"(\w+)"', out)  # an API error body
            assert refused is None, (
                f"README block was refused ({refused and refused[1]}):\n{body}\n--- output ---\n{out}"
            )
