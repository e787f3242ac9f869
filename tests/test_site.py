"""The static book (tools/build_site.py): it builds, its links resolve, explorers keep their state.

The build is tested on the preface (one notebook, about ten seconds) to keep the unit stage fast;
`python3 book.py lab --site` builds every chapter with the same code.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from tools import build_site as B
from tools import site_assets as S

ROOT = Path(__file__).resolve().parents[1]
PREFACE = "chapters/00_preface/00_01_how_to_use_this_book"


@pytest.fixture(scope="module")
def preface_site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as patch:  # a private checkpoint cache, as every test
        patch.setenv("DEEPSCOPE_CACHE", str(folder / "cache"))
        report = B.build_site(["00_preface/00_01"], folder / "site", folder / "executed",
                              workers=1)
    print(f"\npreface site: {report['seconds']:.1f} s, {report['files']} files, "
          f"{report['bytes'] / 1e6:.2f} MB")
    return report


def _widget_state(page: str) -> dict:
    match = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">\s*(.*?)'
                      r"\s*</script>", page, re.S)
    assert match, "the page embeds no widget state"
    return json.loads(match[1])["state"]


def test_the_preface_site_builds_and_every_link_resolves(preface_site):
    site = preface_site["site"]
    [result] = preface_site["results"]
    assert result["error"] is None and result["page"] == PREFACE + ".html"
    assert preface_site["broken"] == [] and B.broken_links(site) == []
    index = (site / "index.html").read_text()
    assert f'href="{PREFACE}.html"' in index
    assert 'href="chapters/00_preface/index.html"' in index
    assert "How to use this book" in index and ">ok<" in index
    chapter = (site / "chapters/00_preface/index.html").read_text()
    assert "<table>" in chapter and "00_01_how_to_use_this_book" in chapter
    # Every chapter has its page, also in this partial build (the site and its search are whole).
    for folder in sorted((ROOT / "chapters").glob("[0-9][0-9]_*")):
        assert (site / "chapters" / folder.name / "index.html").is_file(), folder.name
    assert "Not built in this build" in index
    page = (site / f"{PREFACE}.html").read_text()
    assert 'href="../../index.html"' in page and 'href="index.html"' in page  # the nav bar
    assert page.count("data:image/png;base64,") >= 4  # the notebook's figures are images


def test_the_explorer_keeps_its_last_output(preface_site):
    page = (preface_site["site"] / f"{PREFACE}.html").read_text()
    state = _widget_state(page)
    sliders = [m for m in state.values() if m["model_name"] == "IntSliderModel"]
    outputs = [m for m in state.values() if m["model_name"] == "OutputModel"]
    assert len(sliders) == 1 and sliders[0]["state"]["value"] > 0  # the notebook moved it
    [figure] = [o["data"]["image/png"] for m in outputs for o in m["state"]["outputs"]
                if "image/png" in o.get("data", {})]
    views = re.findall(r'<script type="application/vnd.jupyter.widget-view\+json">\s*(.*?)\s*'
                       r"</script>", page, re.S)
    assert any(json.loads(v)["model_id"] in state for v in views)
    fallback = re.search(r'<div class="ds-widget-fallback"[^>]*>.*?</div>', page, re.S)[0]
    assert f"data:image/png;base64,{figure.strip()}" in fallback


def test_broken_links_are_reported(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.html").write_text('<h2 id="top">x</h2><a href="#top">self</a>'
                                           '<a href="#nowhere">bad anchor</a>')
    (tmp_path / "index.html").write_text(
        '<a href="a/x.html">ok</a> <a href="a/x.html#top">ok anchor</a> '
        '<a href="a/x.html#missing">bad anchor</a> <a href="a/gone.html">missing</a> '
        '<a href="https://example.org/x">external</a> <img src="data:image/png;base64,AA"> '
        '<a href="../outside.html">outside</a> <a href="b/later.html">not built</a> '
        '<a href="/abs.html">absolute</a> <a href="mailto:a@b.c">mail</a>')
    broken = B.broken_links(tmp_path, allowed={"b/later.html"})
    assert sorted(broken) == sorted([("a/x.html", "#nowhere"), ("index.html", "a/x.html#missing"),
                                     ("index.html", "a/gone.html"),
                                     ("index.html", "../outside.html"),
                                     ("index.html", "/abs.html")])


def test_links_are_rewritten_to_the_site():
    page = ('<a href="01_other.ipynb#Summary">n</a> <a href="../01_x/README.md">r</a> '
            '<a href="../../data/README.md">d</a> <a href="https://a.org/b.ipynb">e</a> '
            '<a href="#Top">t</a> <img src="../../no/such/file.png">')
    copies: set[str] = set()
    out = B.rewrite_links(page, PurePosixPath("chapters/00_preface/p.html"), copies)
    assert 'href="01_other.html#Summary"' in out and 'href="../01_x/index.html"' in out
    assert 'href="https://a.org/b.ipynb"' in out and 'href="#Top"' in out
    assert 'href="../../data/README.md"' in out and copies == {"data/README.md"}
    assert 'src="../../no/such/file.png"' in out  # left for the link check to report


def test_widget_fallback_shows_the_outputs_of_nested_output_widgets():
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_row",
                                                                  "IPY_MODEL_out"]}},
        "row": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_slider"]}},
        "slider": {"model_name": "IntSliderModel", "state": {"value": 3}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "data": {"image/png": "QUJD\n", "text/plain": "f"}},
            {"output_type": "stream", "name": "stdout", "text": "a < b"}]}},
    }
    view = ('<div class="jupyter-widgets jp-OutputArea-output" id="u">\n<script type="text/'
            'javascript">\nvar element = 1;\n</script>\n<script type="application/vnd.jupyter.'
            'widget-view+json">\n{"model_id": "%s", "version_major": 2}\n</script>\n</div>')
    page = "<body>" + view % "box" + view % "slider" + view % "unknown" + "</body>"
    out = B.add_widget_fallbacks(page, state)
    assert out.count('class="ds-widget-fallback"') == 1 and out.count("</script>\n</div>") == 2
    assert 'src="data:image/png;base64,QUJD"' in out and "<pre>a &lt; b</pre>" in out
    assert out.count("<script>") == 1  # the script that hides fallbacks once widgets render
    assert B.add_widget_fallbacks("<body>plain</body>", state) == "<body>plain</body>"


def test_a_folder_the_tool_did_not_build_is_never_wiped(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit, match="is not a site this tool built"):
        B.build_site(["00_preface/00_01"], tmp_path, tmp_path / "executed")
    with pytest.raises(SystemExit, match="no notebook matches"):
        B.build_site(["no-such-notebook"], tmp_path / "site", tmp_path / "executed")
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_the_kernel_environment_is_restored():
    before = dict(os.environ)
    with B.kernel_environment(workers=2):
        assert os.environ["MPLBACKEND"] == B.INLINE_BACKEND
    assert dict(os.environ) == before


def test_a_chapter_without_readme_gets_a_page_listing_its_notebooks(tmp_path):
    folder = ROOT / "chapters" / "99_made_up_topic"  # no README.md there
    result = {"source": "chapters/99_made_up_topic/99_01_x.ipynb", "title": "An <idea>",
              "page": "chapters/99_made_up_topic/99_01_x.html"}
    copies: set[str] = set()
    assert B.chapter_page(folder, [result], tmp_path, copies) == \
        "chapters/99_made_up_topic/index.html"
    page = (tmp_path / "chapters/99_made_up_topic/index.html").read_text()
    assert "<h1>Made up topic</h1>" in page and '<a href="99_01_x.html">An &lt;idea&gt;</a>' in page
    assert 'href="../../index.html"' in page and copies == set()


# ---------------------------------------------------------------------------------------------
# Offline assets and search (tools/site_assets.py)

EXTERNAL_LOAD = re.compile(
    r"""<(?:script|img|iframe|source|audio|video|embed)\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//"""
    r"""|\b(?:import|fetch)\(\s*["'`](?:https?:)?//"""
    r"""|widgetRendererSrc\s*=\s*["'](?:https?:)?//""", re.I)


def test_no_page_loads_anything_from_the_network(preface_site):
    site = preface_site["site"]
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 8
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not EXTERNAL_LOAD.search(text), (page, EXTERNAL_LOAD.search(text)[0])
    notebook = (site / f"{PREFACE}.html").read_text()
    for url in ('src="../../_static/requirejs/require.js"',
                "'../../_static/html-manager/dist/embed-amd.js'",
                'src="../../_static/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/deepscope"'):
        assert url in notebook, url
    for path in ("_static/requirejs/require.js", "_static/html-manager/dist/embed-amd.js",
                 "_static/mathjax/MathJax.js", "pagefind/pagefind-ui.js", "search.html"):
        assert (site / path).is_file(), path
    assert preface_site["assets"]["@jupyter-widgets/html-manager"] == S.HTML_MANAGER.version
    # The control: the scan finds what nbconvert writes by default.
    assert EXTERNAL_LOAD.search('<script src="https://cdnjs.cloudflare.com/r.js"></script>')
    assert EXTERNAL_LOAD.search("var widgetRendererSrc = 'https://unpkg.com/@j/embed-amd.js';")


def test_the_search_index_covers_every_page(preface_site):
    # index, search (ignored), one notebook, one page per chapter: all but search.html
    chapters = len(list((ROOT / "chapters").glob("[0-9][0-9]_*")))
    assert preface_site["search"]["pages"] == 2 + chapters
    entry = json.loads((preface_site["site"] / "pagefind" / "pagefind-entry.json").read_text())
    assert "en" in entry["languages"]


def test_caret_ranges_and_the_pinned_widget_renderer():
    assert S.satisfies_caret("1.0.15", "^1.0.1") and S.satisfies_caret("1.2.0", "^1.0.1")
    assert not S.satisfies_caret("2.0.0", "^1.0.1") and not S.satisfies_caret("1.0.0", "^1.0.1")
    assert S.satisfies_caret("0.20.3", "^0.20.0") and not S.satisfies_caret("0.21.0", "^0.20.0")
    assert S.satisfies_caret("1.0.15", "1.0.15") and not S.satisfies_caret("1.0.14", "1.0.15")
    assert S.check_html_manager_version()  # the installed ipywidgets accepts the pinned one
    with pytest.raises(S.AssetError, match="requires @jupyter-widgets/html-manager \\^2.0.0"):
        S.check_html_manager_version("^2.0.0")


def _tarball(members: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def test_a_tarball_is_verified_and_unpacked_only_inside_its_folder(tmp_path, monkeypatch):
    good = _tarball({"package": None, "package/dist/a.js": b"a", "package/dist/b.woff2": b"b",
                     "package/dist/c.map": b"c", "package/package.json": b"{}"})
    (tmp_path / "x-1.0.0.tgz").write_bytes(good)
    pkg = S.NpmPackage("x", "1.0.0", S.sri_sha512(tmp_path / "x-1.0.0.tgz"),
                       ("dist/a.js", "dist/*.woff2", "package.json"))
    monkeypatch.setattr(S.shutil, "which", lambda name: None)  # no npm: the cache must do
    tarball = S.fetch_npm(pkg, tmp_path)
    assert S.unpack(tarball, tmp_path / "out", pkg.keep) == ["dist/a.js", "dist/b.woff2",
                                                             "package.json"]
    assert not (tmp_path / "out" / "dist" / "c.map").exists()
    # A tampered file is refused, whatever it holds.
    (tmp_path / "x-1.0.0.tgz").write_bytes(_tarball({"package/dist/a.js": b"evil"}))
    with pytest.raises(S.AssetError, match="has integrity sha512-.*expected"):
        S.fetch_npm(pkg, tmp_path)
    # Hostile members are refused before anything is written.
    for name, members, links in [
            ("dotdot", {"package/../../escape.js": b"x"}, None),
            ("absolute", {"/tmp/escape.js": b"x"}, None),
            ("outside", {"elsewhere/a.js": b"x"}, None),
            ("link", {"package/dist/a.js": b"a"}, {"package/dist/b.woff2": "/etc/passwd"})]:
        bad = tmp_path / f"{name}.tgz"
        bad.write_bytes(_tarball(members, links))
        with pytest.raises(S.AssetError, match="holds (a link|an unsafe path)"):
            S.unpack(bad, tmp_path / name, ("dist/*.woff2", "dist/a.js"))
        assert not (tmp_path / name).exists()
    assert not (tmp_path.parent / "escape.js").exists()
    # A tarball without a file the site needs is refused.
    with pytest.raises(S.AssetError, match="lacks \\['dist/embed-amd.js'\\]"):
        S.unpack(tarball, tmp_path / "partial", ("dist/embed-amd.js",))


def test_a_missing_npm_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: None)
    with pytest.raises(S.AssetError, match="`npm` is not installed.*requirejs-2.3.8.tgz"):
        S.fetch_npm(S.REQUIRE_JS, tmp_path)


def test_npm_pack_output_is_verified_before_it_enters_the_cache(tmp_path, monkeypatch):
    """A fake `npm` stands in for the registry: a good tarball is cached, a tampered one or a
    failing npm is refused and leaves nothing behind."""
    good = _tarball({"package/dist/a.js": b"a"})
    payload = tmp_path / "payload.tgz"
    payload.write_bytes(good)
    pkg = S.NpmPackage("x", "1.0.0", S.sri_sha512(payload), ("dist/a.js",))
    npm = tmp_path / "npm"
    npm.write_text('#!/bin/sh\n[ -n "$FAIL" ] && { echo "registry says no" >&2; exit 1; }\n'
                   f'for a; do d="$a"; done\ncp {payload} "$d/x-1.0.0.tgz"\n')
    npm.chmod(0o755)
    monkeypatch.setattr(S.shutil, "which", lambda name: str(npm))
    cache = tmp_path / "cache"
    payload.write_bytes(_tarball({"package/dist/a.js": b"tampered"}))
    with pytest.raises(S.AssetError, match="has integrity"):
        S.fetch_npm(pkg, cache)
    assert list(cache.iterdir()) == []  # nothing cached, no temporary folder left
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(S.AssetError, match="`npm pack x@1.0.0` failed \\(exit 1\\): registry"):
        S.fetch_npm(pkg, cache)
    monkeypatch.delenv("FAIL")
    payload.write_bytes(good)
    assert S.fetch_npm(pkg, cache) == cache / "x-1.0.0.tgz"
    assert [p.name for p in cache.iterdir()] == ["x-1.0.0.tgz"]
