"""The retrieval-quality notebook: stored without outputs, and it runs top to bottom headless (nbclient) as shipped
(on the repository's own labelled sample, no ../shared), its plots rendering, no warnings, its HTTP section talking
to a live service on loopback."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from kb_service.client import LocalClient
from kb_service.core.config import Settings
from tests.live import live_server

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "retrieval_quality.ipynb"


@pytest.mark.unit
def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.integration
def test_notebook_runs_headless_and_renders_its_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = Settings(data_dir=tmp_path / "service", chunk_size=64, chunk_overlap=8)
    with LocalClient(service) as local:
        local.create_kb("abstracts")
        local.add_texts("abstracts", {"a.txt": "Vitamin D deficiency is common in elderly people in winter."})
    for name, value in {
        "KB_NOTEBOOK_DATA_DIR": str(tmp_path / "notebook"),
        "KB_RERANK_BACKEND": "none",
    }.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with live_server(service) as (url, _app):
        monkeypatch.setenv("KB_URL", url)
        resources = {"metadata": {"path": str(NOTEBOOK.parent)}}
        NotebookClient(nb, timeout=900, kernel_name="python3", resources=resources).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "Warning" not in stderr and "Traceback" not in stderr, stderr
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the bar chart, the gate-recall curve, the latency box plots
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    html = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "sample-beir: 20 queries, 24 documents" in text and "nDCG@10" in text and "default pipeline" in text
    assert "gate recall" in text and "lost at" in text
    assert "#d4f4dd" in html  # relevant rows highlighted in the trace
    assert "abstracts" in text and "SERVICE_URL is not set" not in text  # the HTTP section ran
