"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against a live service on
loopback with API keys on: key, create a knowledge base, upload two real files (one dropped, one chosen), watch
them to ready, list and audit, search and open the trace, ask and get a streamed cited answer, open a citation
(the evidence marked, the PDF's page rendered with the chunk's box), a follow-up turn, Chinese, a phone's width,
the keyboard, and drop the knowledge base. Every request the page makes stays on the service.

Screenshots of each screen go to ``KB_UI_SCREENSHOTS`` when it is set (docs/ui/ holds the latest)."""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kb_service.core.config import Settings
from tests.conftest import DOCUMENTS
from tests.fixtures import make_pdf
from tests.live import live_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (make install)")
CHROMIUM = os.environ.get("KB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed: `apt-get install -y chromium` (.ci/run installs it)",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parents[2]
MANUAL = ROOT / "examples" / "en" / "pump-manual.md"
MEMO = DOCUMENTS / "unstructured" / "pdf" / "fake-memo.pdf"  # a real one-page PDF (shared data, present in CI)
KEY = "ui-test-key-0123456789"
KB = "Support manuals"
TIMEOUT_MS = 180_000  # the first answer loads nothing more, but ingest embeds on 2 CPU cores
SHOTS = os.environ.get("KB_UI_SCREENSHOTS")


def _memo() -> tuple[str, bytes]:
    """The memo PDF; a clone without the shared data gets the same text as a PDF made here."""
    if MEMO.is_file():
        return MEMO.name, MEMO.read_bytes()
    text = (
        "May 5, 2023\nTo Whom it May Concern:\nThere were 20,000 bottles of water, 10,000 blankets, and 200 laptops\n"
        "delivered on January 23, 2023. A total of 3 trucks were used for 15 hours.\nBest Regards,\nMallori"
    )
    return "fake-memo.pdf", make_pdf([text])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ui"),
        api_keys=[{"key": KEY, "name": "support"}],  # type: ignore[list-item]
        chunk_size=96,
        chunk_overlap=16,
        rerank_backend="auto",  # the shipped default (the suite's others run without it): the trace shows it
    )
    with live_server(settings) as (url, _app):
        yield url


class Browser:
    """One page of a headless Chromium, with every request, console error and page error it saw."""

    def __init__(self, page: Any, out: Path) -> None:
        self.page = page
        self.out = out
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.streams: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        page.on("response", self._response)

    def _response(self, response: Any) -> None:
        if response.url.endswith("/ask"):
            self.streams.append(response.headers.get("content-type", ""))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.out / f"{name}.png"), full_page=True)
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        try:
            yield Browser(page, tmp_path)
        finally:
            context.close()
            chromium.close()


def _drop_file(page: Any, selector: str, name: str, data: bytes, mime: str) -> None:
    """Drag a file from the desktop onto the drop zone: a real drop event with a DataTransfer holding the file."""
    transfer = page.evaluate_handle(
        """([name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""",
        [name, base64.b64encode(data).decode(), mime],
    )
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_a_support_person_uses_the_page_end_to_end(service: str, browser: Browser) -> None:
    page = browser.page
    expect = playwright_api.expect
    expect.set_options(timeout=TIMEOUT_MS)

    # The page is served without a key and says a key is needed; with the key the (empty) list shows.
    page.goto(service + "/")
    expect(page).to_have_url(service + "/ui/")
    expect(page.get_by_role("alert")).to_contain_text("needs an API key")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_text("No knowledge base yet")).to_be_visible()

    # Create a knowledge base, choosing the embedding model the service offers.
    page.get_by_label("Name").fill(KB)
    page.get_by_label("Description").fill("Manuals and memos for the support team")
    expect(page.get_by_label("Embedding model")).to_have_value("sentence-transformers/all-MiniLM-L6-v2")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(KB)
    expect(page.get_by_role("link", name="Documents")).to_have_attribute("aria-current", "page")

    # Two real files: the manual dropped onto the zone, the memo PDF chosen in the file dialog.
    _drop_file(page, "#dropzone", MANUAL.name, MANUAL.read_bytes(), "text/markdown")
    memo_name, memo = _memo()
    page.set_input_files("#file-input", files=[{"name": memo_name, "mimeType": "application/pdf", "buffer": memo}])
    for name in (MANUAL.name, memo_name):
        row = page.locator(f'.upload[data-name="{name}"]')
        expect(row).to_have_attribute("data-status", "ready")
        expect(row.locator(".detail")).to_contain_text("added")
    rows = page.locator("table.documents tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("table.documents .status.ready")).to_have_count(2)
    expect(page.locator("#kb-summary")).to_contain_text("documents: 2")
    page.get_by_role("button", name="Check the knowledge base").click()
    expect(page.locator(".audit")).to_contain_text("Clean")
    browser.shot("1-documents")

    # A refused upload says why, and the page goes on.
    page.set_input_files(
        "#file-input", files=[{"name": "tool.exe", "mimeType": "application/x-dosexec", "buffer": b"MZ\x90\x00" * 64}]
    )
    refused = page.locator('.upload[data-name="tool.exe"]')
    expect(refused).to_have_attribute("data-status", "failed")
    expect(refused.locator(".detail")).not_to_be_empty()

    # Search, with the trace open: gate, candidates before and after rerank, timings.
    page.get_by_role("link", name="Search").first.click()
    page.get_by_label("Query").fill("How do I reset the pump when the light blinks red?")
    page.get_by_role("button", name="Search", exact=True).click()
    hits = page.locator("ol.hits > li")
    expect(hits.first).to_contain_text("reset button")
    expect(hits.first.locator(".chip").first).to_be_visible()  # stage scores
    page.locator("#trace summary").click()
    expect(page.locator("#trace")).to_have_attribute("open", "")
    expect(page.locator("#trace .timings li").first).to_be_visible()
    expect(page.locator("#trace table.candidates tbody tr").first).to_be_visible()
    expect(page.locator("#trace table.reranked tbody tr").first).to_be_visible()
    expect(page.locator("#trace table.gated tbody tr").first).to_contain_text("pump")
    browser.shot("2-search-trace")

    # Bad filters get a clear message, not a request.
    page.get_by_label("Filters (JSON)").fill("source = memo")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".toast.error")).to_contain_text("JSON object")
    page.get_by_label("Filters (JSON)").fill("")

    # Chat: a streamed answer with citations; the citation opens the memo's evidence and its page with the box.
    page.get_by_role("link", name="Chat").first.click()
    question = page.get_by_label("Ask a question about the documents…")
    question.fill("How many laptops were delivered on January 23, 2023?")
    page.keyboard.press("Enter")
    answer = page.locator(".message.assistant").first
    expect(answer.locator(".answer")).to_contain_text("200 laptops")
    expect(answer.locator(".badge.mode")).to_be_visible()
    assert int(answer.get_attribute("data-deltas") or 0) >= 1
    assert browser.streams and all(s.startswith("text/event-stream") for s in browser.streams)
    marker = answer.locator("button.cite").first
    expect(marker).to_be_visible()
    marker.focus()
    page.keyboard.press("Enter")  # the keyboard opens a citation as a click does
    dialog = page.locator("dialog#citation")
    expect(dialog).to_be_visible()
    expect(dialog.locator("p.muted").first).to_contain_text(memo_name)  # the cited file (its title heads it)
    expect(dialog.locator(".evidence mark")).to_contain_text("200 laptops")
    expect(dialog.locator(".badge").first).to_have_text("verified")
    image = dialog.locator(".page-frame img")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth > 0")
    box = dialog.locator(".bbox")
    expect(box).to_be_visible()
    frame_box, mark_box = dialog.locator(".page-frame").bounding_box(), box.bounding_box()
    assert frame_box and mark_box and mark_box["width"] > 0 and mark_box["y"] >= frame_box["y"]
    browser.shot("3-chat-citation")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    # A second turn, about the other document.
    question.fill("How often should the inlet filter be cleaned?")
    page.get_by_role("button", name="Ask").click()
    second = page.locator(".message.assistant").nth(1)
    expect(second.locator(".answer")).to_contain_text("3 months")
    expect(second.locator("button.cite").first).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()  # shown only while an answer streams
    browser.shot("4-chat")

    # A phone's width: nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    browser.shot("5-phone-chat")
    page.get_by_role("link", name="Documents").first.click()
    expect(page.locator("table.documents tbody tr")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    browser.shot("6-phone-documents")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Chinese, and back.
    page.get_by_role("button", name="Switch the page to Chinese").click()
    expect(page.get_by_role("link", name="文档")).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("button", name="检查知识库")).to_be_visible()
    browser.shot("7-chinese-documents")
    page.get_by_role("button", name="将页面切换为英文").click()

    # The keyboard alone: the skip link comes first and leads to the content.
    page.reload()
    expect(page.locator("table.documents tbody tr")).to_have_count(2)
    page.keyboard.press("Tab")
    expect(page.locator("#skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    expect(page).to_have_url(re.compile(r"#/kb/Support%20manuals/documents$"))

    # The status filter, then a new version of the manual: replaced in place, still two documents.
    page.get_by_label("Status").select_option("failed")
    expect(page.get_by_text("No documents here.")).to_be_visible()
    page.get_by_label("Status").select_option("")
    edited = MANUAL.read_bytes().replace(b"every 3 months", b"every 6 months")
    replace = page.locator(f'tr[data-source="{MANUAL.name}"] input[type=file]')
    replace.set_input_files(files=[{"name": MANUAL.name, "mimeType": "text/markdown", "buffer": edited}])
    replaced = page.locator(f'.upload[data-name="{MANUAL.name} ← {MANUAL.name}"]')
    expect(replaced).to_have_attribute("data-status", "ready")
    expect(replaced.locator(".detail")).to_contain_text("replaced the old version")
    expect(page.locator("table.documents tbody tr")).to_have_count(2)

    # Delete one document: its residue check is clean.
    page.get_by_role("button", name=f"Delete {MANUAL.name}").click()
    page.locator("dialog.confirm").get_by_role("button", name="Delete").click()
    expect(page.locator(".toast")).to_contain_text("nothing of it is left")
    expect(page.locator("table.documents tbody tr")).to_have_count(1)

    # Re-index with another model: followed to its end; then the knowledge base's line names the new model.
    page.locator("#reindex-model").select_option("intfloat/multilingual-e5-small")
    page.get_by_role("button", name="Re-index", exact=True).click()
    expect(page.locator("#reindex-status")).to_contain_text("Done", timeout=180_000)
    expect(page.locator(".toast")).to_contain_text("now served by intfloat/multilingual-e5-small")
    expect(page.locator("#kb-summary")).to_contain_text("multilingual-e5-small")
    browser.shot("8-reindexed")

    # Drop the knowledge base: only after typing its name.
    page.get_by_role("link", name="Knowledge bases").first.click()
    page.get_by_role("button", name=f"Drop {KB}").click()
    confirm = page.locator("dialog.confirm")
    drop = confirm.get_by_role("button", name="Drop for good")
    expect(drop).to_be_disabled()
    confirm.get_by_role("textbox").fill(KB)
    drop.click()
    expect(page.get_by_text("No knowledge base yet")).to_be_visible()

    # Nothing left the service: no CDN, no font, no analytics.
    outside = [u for u in browser.requests if not u.startswith((service + "/", "blob:", "data:"))]
    assert outside == []
    # The only errors were the refusals the test provoked (the first 401, the .exe's 415).
    unexpected = [e for e in browser.errors if "status of 401" not in e and "status of 415" not in e]
    assert unexpected == []
