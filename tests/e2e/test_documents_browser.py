"""The vault in a real browser: hostile titles, names and text stay inert.

Every page (list, upload, detail with an image preview, share, search with highlighted
snippets) renders under the strict CSP with zero violations, no console error and no
dialog; a Unicode file name reaches the browser's download intact.
"""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import Dialog, expect

from tests.data.uploads.make_corpus import ACCEPT
from tests.e2e.conftest import LiveServer, Watch
from tests.e2e.test_accounts import sign_in

pytestmark = pytest.mark.e2e

XSS_TITLE = "<img src=x onerror=alert('title')><script>alert('t')</script>"
XSS_NAME = "<svg onload=alert('name')>.png"
XSS_TEXT = b"needle <script>alert('text')</script> <img src=x onerror=alert(2)> haystack"


def upload(watch: Watch, name: str, data: bytes, mime: str, title: str = "") -> None:
    page = watch.page
    page.get_by_role("link", name="Upload").first.click()
    page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}])
    if title:
        page.get_by_label("Title (optional)").fill(title)
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"/documents/[A-Za-z0-9_-]{22}$"))


def test_hostile_documents_render_inert(live_server: LiveServer, watch: Watch) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page = watch.page
    page.on("dialog", on_dialog)
    email = f"vault-{secrets.token_hex(4)}@example.com"
    live_server.create_user(email)
    page.goto(live_server.url + "/documents/")
    sign_in(watch, email)
    expect(page.get_by_role("heading", level=1)).to_have_text("My documents")

    upload(watch, "notes.txt", XSS_TEXT, "text/plain", title=XSS_TITLE)
    expect(page.get_by_role("heading", level=1)).to_have_text(XSS_TITLE)
    upload(watch, XSS_NAME, ACCEPT["pixel.png"], "image/svg+xml")
    # The preview <img> loaded (img-src 'self'); the image itself is served sandboxed.
    preview = page.locator("figure img")
    expect(preview).to_be_visible()
    assert preview.evaluate("img => img.complete && img.naturalWidth") == 2

    page.get_by_role("link", name="Share or stop sharing").click()
    page.get_by_label("Email address").fill("someone@example.com")
    page.get_by_role("button", name="Share").click()
    expect(page.get_by_role("status")).to_contain_text("Shared with someone@example.com")

    page.goto(live_server.url + "/documents/")
    expect(page.get_by_role("link", name=XSS_TITLE)).to_be_visible()
    page.goto(live_server.url + "/documents/search?q=needle")
    expect(page.locator("ol.results mark").first).to_have_text("needle")
    expect(page.locator("ol.results li")).to_have_count(1)
    page.goto(live_server.url + "/documents/search?q=" + "%27%20OR%201%3D1%20--")
    expect(page.get_by_text("No documents match.")).to_be_visible()

    assert dialogs == []
    assert page.locator("script:not([nonce])").count() == 0
    watch.assert_clean()


def test_a_unicode_name_reaches_the_download_intact(live_server: LiveServer, watch: Watch) -> None:
    page = watch.page
    email = f"vault-{secrets.token_hex(4)}@example.com"
    live_server.create_user(email)
    page.goto(live_server.url + "/documents/upload")
    sign_in(watch, email)
    upload(watch, "отчёт за год.pdf", ACCEPT["report.pdf"], "application/pdf")

    with page.expect_download() as started:
        page.get_by_role("link", name="Download").click()
    download = started.value
    assert download.suggested_filename == "отчёт за год.pdf"
    path = download.path()
    assert path.read_bytes() == ACCEPT["report.pdf"]
    watch.assert_clean()
