"""Open every page of the built book in headless Chromium, as a reader would.

Run by `make browser-test` (after `make book`). For every page: no console error from
our own content, every image loaded with alt text and a caption, math typeset, no
traceback or warning in any cell output. Screenshots of the landing page and one
chapter land in build/browser/.
"""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "build" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-quic"]

# Errors raised by the book framework itself, not by our content: jupyter-book 1.0
# declares sphinx-thebe's inline config twice on every page, and pydata-sphinx-theme
# logs an error when a fresh browser profile has no stored colour mode.
UPSTREAM_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",
                   "Got invalid theme mode", "favicon.ico")

pytestmark = [
    pytest.mark.skipif(not (HTML / "book" / "index.html").exists(),
                       reason="no built book: run `make book` first"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]
PAGES = sorted(p.relative_to(HTML).as_posix() for p in (HTML / "book").glob("*.html"))


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=HTML)
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def visit(browser, url):
    """Load `url`; return the page and the console errors raised by our own origin."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    origin = url.split("/book/")[0]
    page.on("console", lambda m: m.type == "error" and errors.append(
        f"{m.text} @ {m.location.get('url', '')}"))
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(url, wait_until="networkidle")
    page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    ours = [e for e in errors if (origin in e or "page error" in e)
            and not any(u in e for u in UPSTREAM_ERRORS)]
    return page, ours


@pytest.mark.parametrize("page_path", PAGES)
def test_page_reads_cleanly(server, browser, page_path):
    page, errors = visit(browser, f"{server}/{page_path}")
    assert not errors, f"console errors on {page_path}: {errors}"
    broken = page.evaluate("""() => Array.from(document.images)
        .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)""")
    assert not broken, f"images that did not load: {broken}"
    # every figure of our content says what it shows, to a screen reader too
    no_alt = page.evaluate("""() => Array.from(document.querySelectorAll('article img'))
        .filter(i => !(i.alt || '').trim()).map(i => i.src)""")
    assert not no_alt, f"images without alt text: {no_alt}"
    uncaptioned = page.evaluate("""() => Array.from(
        document.querySelectorAll('article .cell_output img'))
        .filter(i => !i.closest('figure') || !i.closest('figure').querySelector(
            'figcaption')).map(i => i.src)""")
    assert not uncaptioned, f"figures without a caption: {uncaptioned}"
    n_math = page.locator(".math").count()
    if n_math:
        assert page.locator("mjx-container").count() >= n_math, "math not typeset"
    outputs = page.evaluate("""() => Array.from(
        document.querySelectorAll('.cell_output')).map(o => o.innerText)""")
    for text in outputs:
        assert "Traceback (most recent call last)" not in text, text[:500]
        assert "Warning:" not in text and "Warning " not in text, text[:500]
    assert page.locator(".output.stderr").count() == 0, "stderr output on the page"
    if page_path in ("book/index.html", "book/03_mixed_op.html"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / page_path.replace("/", "_").replace(
            ".html", ".png")), full_page=False)
    page.close()
