"""The static book site (tools/build_site.py) in headless Chromium with the network blocked.

The preface is built (executed, converted, its scripts vendored into ``_static/``, indexed by
Pagefind) and served on loopback. Every request that is not to loopback or a local file is
aborted and recorded; each test asserts that none was attempted. Then, as a reader would see it:
the math is typeset by MathJax, the explorer's embedded widget state is drawn as live controls,
and a search for a term returns the page of the right chapter. Screenshots land in the artifacts
folder. The same pages opened from the file system (``file://``) must also draw math and widgets.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tools import build_site as B

pytestmark = pytest.mark.browser

PREFACE = "chapters/00_preface/00_01_how_to_use_this_book.html"
LOCAL_SCHEMES = ("file", "data", "blob", "about", "chrome-error")
LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("offline-site")
    start = time.perf_counter()
    with pytest.MonkeyPatch.context() as patch:  # a private checkpoint cache, as every test
        patch.setenv("DEEPSCOPE_CACHE", str(folder / "cache"))
        report = B.build_site(["00_preface/00_01"], folder / "site", folder / "executed",
                              workers=1)
    print(f"\noffline site: built in {time.perf_counter() - start:.1f} s, {report['files']} "
          f"files, {report['bytes'] / 1e6:.1f} MB, search index of {report['search']['pages']} "
          "pages")
    [result] = report["results"]
    assert result["error"] is None and report["broken"] == []
    return report["site"]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def served(site):
    """The site on a loopback HTTP server (search reads its index with fetch, not file://)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture()
def offline(browser):
    """A browser context in which only loopback and local files can load; yields (page, leaks)."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000},
                                  service_workers="block")
    leaks: list[str] = []

    def is_local(url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in LOCAL_SCHEMES or (parts.hostname or "") in LOOPBACK

    def guard(route):
        if is_local(route.request.url):
            route.continue_()
        else:
            leaks.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", guard)
    context.on("request", lambda request: None if is_local(request.url)
               else leaks.append(request.url))
    page = context.new_page()
    try:
        yield page, leaks
    finally:
        context.close()


def _math_rendered(page) -> dict:
    page.wait_for_function("window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 "
                           "&& document.querySelectorAll('.MathJax, .MathJax_Display').length > 0",
                           timeout=60_000)
    return page.evaluate("""() => ({
        rendered: document.querySelectorAll('.MathJax, .MathJax_Display').length,
        errors: document.querySelectorAll('.MathJax_Error, merror').length,
        sources: document.querySelectorAll('script[type^="math/tex"]').length})""")


def _explorer_drawn(page, site) -> dict:
    """Wait for the embedded slider; return what it shows and what the embedded state says."""
    html = (site / PREFACE).read_text()
    state = json.loads(re.search(r'<script type="application/vnd.jupyter.widget-state\+json">'
                                 r"\s*(.*?)\s*</script>", html, re.S)[1])["state"]
    [slider] = [m["state"] for m in state.values() if m["model_name"] == "IntSliderModel"]
    page.wait_for_selector(".jupyter-widgets .widget-slider", state="visible", timeout=60_000)
    readout = page.locator(".jupyter-widgets .widget-readout").first.inner_text(timeout=10_000)
    fallback_hidden = page.evaluate("""() => [...document.querySelectorAll('.ds-widget-fallback')]
        .every(e => getComputedStyle(e).display === 'none')""")
    return {"readout": readout.strip(), "value": slider["value"],
            "fallback_hidden": fallback_hidden,
            "errors": page.locator("text=Error displaying widget").count()}


def test_math_and_the_explorer_render_with_the_network_blocked(site, served, offline, artifacts):
    page, leaks = offline
    page.goto(f"{served}/{PREFACE}", wait_until="load")
    math = _math_rendered(page)
    assert math["rendered"] >= 1 and math["errors"] == 0, math
    # MathJax 2 keeps each formula's TeX in a script element once it has typeset it.
    assert math["sources"] >= 1, math
    widget = _explorer_drawn(page, site)
    assert widget["readout"] == str(widget["value"]) and widget["errors"] == 0, widget
    page.wait_for_function("""() => [...document.querySelectorAll('.ds-widget-fallback')]
        .every(e => getComputedStyle(e).display === 'none')""", timeout=30_000)
    page.screenshot(path=str(artifacts / "site-preface.png"), full_page=True)
    assert leaks == [], leaks


def _search(page, served, term) -> list[dict]:
    """Search the site for ``term``; return each result's link and highlighted words."""
    page.goto(f"{served}/search.html?q={term}", wait_until="load")
    # The message ("3 results for ...") comes first; each result loads its page data after it.
    page.wait_for_function("""term => {
        const message = (document.querySelector('.pagefind-ui__message') || {}).innerText || '';
        if (!message.includes('for ' + term)) return false;
        const shown = [...document.querySelectorAll('.pagefind-ui__result')];
        const loading = document.querySelectorAll('.pagefind-ui__loading').length;
        return message.startsWith('No results') || (shown.length > 0 && !loading
            && shown.every(r => r.querySelector('.pagefind-ui__result-link')));
    }""", arg=term, timeout=30_000)
    return page.evaluate("""() => [...document.querySelectorAll('.pagefind-ui__result')].map(r => ({
        href: r.querySelector('.pagefind-ui__result-link').getAttribute('href'),
        marks: [...r.querySelectorAll('mark')].map(m => m.innerText.toLowerCase())}))""")


def test_a_search_returns_the_page_of_the_right_chapter(served, offline, artifacts):
    page, leaks = offline
    # Words found on one page only: the preface notebook, the chapter pages of chapters 5 and 2
    # (written from their READMEs also when, as here, their notebooks are not built).
    cases = {"distractor": PREFACE, "Hoffmann": "chapters/05_scaling_laws/index.html",
             "Bezier": "chapters/02_loss_landscapes/index.html"}
    for term, expected in cases.items():
        results = _search(page, served, term)
        assert results, term
        # Pagefind links a folder's index.html as the folder itself.
        assert urlsplit(results[0]["href"]).path.lstrip("/") == \
            expected.removesuffix("index.html"), (term, results)
        assert any(m.startswith(term.lower()) for m in results[0]["marks"]), (term, results)
    page.screenshot(path=str(artifacts / "site-search.png"), full_page=True)
    # Control: a word that is nowhere in the book is found nowhere (Pagefind may still offer
    # near misses, which highlight other words).
    results = _search(page, served, "zqxjvwk")
    assert not any("zqxjvwk" in m for r in results for m in r["marks"]), results
    assert leaks == [], leaks


def test_pages_opened_from_the_file_system_work_too(site, offline):
    page, leaks = offline
    page.goto((site / PREFACE).as_uri(), wait_until="load")
    assert _math_rendered(page)["rendered"] >= 1
    widget = _explorer_drawn(page, site)
    assert widget["readout"] == str(widget["value"]), widget
    page.goto((site / "index.html").as_uri(), wait_until="load")
    assert page.locator("#search-offline").is_visible()  # says why search needs a server
    assert leaks == [], leaks


def test_the_guard_sees_a_request_that_leaves_the_machine(site, offline, tmp_path):
    """Control: a page that asks for an outside script is caught (so an empty list means none)."""
    page, leaks = offline
    probe = tmp_path / "probe.html"
    probe.write_text('<script src="https://cdn.example.org/x.js"></script><p>probe</p>')
    page.goto(probe.as_uri(), wait_until="load")
    assert leaks == ["https://cdn.example.org/x.js"] * len(leaks) and leaks, leaks
