"""The web page's files as the service serves them: public (no key) while the API stays closed, self-contained
(nothing fetched from elsewhere, a CSP that forbids it), and every text it shows present in English and Chinese."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kb_service.api.app import create_app
from kb_service.api.routes.ui import UI_DIR
from kb_service.core.config import Settings

KEY = "assets-test-key-0123456789"
ASSETS = sorted(p.name for p in UI_DIR.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ui"),
        llm_backend="none",
        api_keys=[{"key": KEY, "name": "ops"}],  # type: ignore[list-item]
    )
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.integration
def test_the_page_is_public_and_the_api_is_not(client: TestClient) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    assert client.get("/v1/knowledge-bases").status_code == 401  # the page's own calls need the key
    assert client.get("/v1/knowledge-bases", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/ui/missing.js").status_code == 404


@pytest.mark.integration
@pytest.mark.parametrize("name", ASSETS)
def test_every_file_is_served_with_a_policy_that_keeps_the_page_on_the_service(client: TestClient, name: str) -> None:
    response = client.get(f"/ui/{name}")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    # no address elsewhere: no CDN, web font or analytics (the w3.org name of the SVG namespace is not a request)
    assert re.findall(r"https?://(?!www\.w3\.org/2000/svg)", response.text) == []


@pytest.mark.integration
def test_the_page_can_be_turned_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm_backend="none", api_ui=False)
    with TestClient(create_app(settings)) as c:
        assert c.get("/ui/").status_code == 404 and c.get("/").status_code == 404


def _messages(language: str) -> set[str]:
    source = (UI_DIR / "i18n.js").read_text()
    block = source.split(f"  {language}: {{", 1)[1].split("\n  },", 1)[0]
    return set(re.findall(r'^\s*"([\w.]+)":', block, flags=re.M))


@pytest.mark.unit
def test_every_text_the_page_shows_is_in_english_and_chinese() -> None:
    en, zh = _messages("en"), _messages("zh")
    assert en and zh
    plural = {k for k in en if k.endswith(".one")}  # English singulars; Chinese has one form
    assert en - plural == zh
    used: set[str] = set()
    for script in set(UI_DIR.glob("*.js")) - {UI_DIR / "i18n.js"}:
        text = script.read_text()
        used |= set(re.findall(r'\bt\("([\w.]+)"', text))
        for prefix in re.findall(r"\bt\(`([\w.]+)\.\$\{", text):  # t(`job.${status}`): some key of that family
            assert any(k.startswith(prefix + ".") for k in en), prefix
    assert used and used <= en, sorted(used - en)


@pytest.mark.unit
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (it only checks the syntax)")
@pytest.mark.parametrize("name", [n for n in ASSETS if n.endswith(".js")])
def test_every_script_parses(name: str) -> None:
    result = subprocess.run(
        ["node", "--input-type=module", "--check"], input=(UI_DIR / name).read_text(), text=True, capture_output=True
    )
    assert result.returncode == 0, result.stderr
