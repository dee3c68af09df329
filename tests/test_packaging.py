"""The project installs as one import namespace, ``kb_service``, and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages_on_disk() -> set[str]:
    found = set()
    for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            sub = [part for part in rel.parts if part != "."]
            # a folder mapped by its own entry (kb_service.ingest) is not a subfolder of kb_service/
            if not any(f"{name}.{part}" in PYPROJECT["tool"]["setuptools"]["package-dir"] for part in sub[:1]):
                found.add(".".join([name, *sub]))
    return found


def test_every_package_folder_is_listed() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = _packages_on_disk()
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == set(), "these are listed in pyproject.toml but have no __init__.py"


def test_the_wheel_adds_one_top_level_package(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: building leaves build/ and *.egg-info behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        env={"PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin"},
    )
    (wheel,) = tmp_path.glob("kb_service-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"kb_service"}
    for module in (
        "ingest/pipeline.py",
        "retrieval/pipeline.py",
        "generation/answer.py",
        "api/app.py",
        "core/config.py",
        "api/ui/index.html",  # the web page's static files are package data
        "api/ui/app.js",
    ):
        assert f"kb_service/{module}" in names
    assert not any("tests/" in name or "bench/" in name for name in names)
