"""Build the book as a static HTML site: execute every chapter, convert each notebook to HTML.

    python -m tools.build_site [PATTERN ...] [--workers 2] [--out _build/site]
    python3 book.py lab --site [PATTERN ...]        # the same, after the usual set-up

Notebooks are executed by `tools.execute_book.run` (nbclient on private kernels, never hanging;
the executed copies also land in ``--executed``) and converted by nbconvert's ``lab`` HTML
template. nbclient stores the state of every widget in the notebook, and the template embeds
it, so in the site each explorer shows its controls at their last values and the figure they
last drew (rendered by the ``@jupyter-widgets/html-manager`` script; moving a control needs a
kernel, so it does nothing there). The site makes no network request: require.js, the widget
renderer and MathJax are copied into ``_static/`` (see `tools.site_assets`), and Pagefind
indexes every page for the search box (``search.html``; search needs the site served, e.g.
``python -m http.server -d _build/site``). The site mirrors the repository's layout:

    index.html                         the chapter table (every notebook, its run time and
                                       status) and the search box
    search.html                        the search box alone (search.html?q=term)
    chapters/NN_topic/index.html       the chapter's README (every chapter, also in a partial
                                       build)
    chapters/NN_topic/NN_MM_title.html one page per executed notebook
    _static/                           require.js, the widget renderer, MathJax
    pagefind/                          the search index and its user interface

Relative links are rewritten to the site (``x.ipynb`` -> ``x.html``, a chapter's ``README.md``
-> its ``index.html``); other repository files a page links to are copied beside it. The build
ends by checking that every relative link of the site resolves and exits non-zero when a notebook
failed or a link is broken (the site is still written, failures marked in the index).
"""

from __future__ import annotations

import argparse
import contextlib
import html
import os
import re
import shutil
import sys
import time
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from tools import site_assets
from tools.execute_book import ROOT, Result, execute, notebooks
from tools.execute_book import run as run_notebooks

CHAPTERS = ROOT / "chapters"
MARKER = ".deepscope-site"  # marks a folder this tool may wipe and rebuild
ASSETS_CACHE = ROOT / ".cache" / "site-assets"  # the npm tarballs, fetched once
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.6rem; text-align: left; }
td.num { text-align: right; white-space: nowrap; } .failed { color: #b00020; font-weight: bold; }
code { background: #f3f3f3; padding: 0 0.2rem; } a { color: #0b5cad; }
"""
NAV_STYLE = ("<style>.ds-nav { font: 14px system-ui, sans-serif; padding: 0.5rem 1rem; "
             "border-bottom: 1px solid #ddd; background: #fafafa; } "
             ".ds-search { float: right; }</style>")


# ---------------------------------------------------------------------------------------------
# Links


LINK = re.compile(r'(?P<attr>\b(?:href|src))="(?P<url>[^"]*)"')


def _is_external(url: str) -> bool:
    return not url or url.startswith(("#", "//")) or bool(re.match(r"^[a-zA-Z][\w+.-]*:", url))


def rewrite_links(page: str, page_path: PurePosixPath, copies: set[str]) -> str:
    """Point the relative links of a page (site path ``page_path``) at the site's files.

    ``copies`` collects repository files (paths relative to the root) to copy into the site.
    """
    folder = page_path.parent

    def fix(match: re.Match) -> str:
        url = html.unescape(match["url"])
        if _is_external(url):
            return match[0]
        parts = urlsplit(url)
        target = PurePosixPath(os.path.normpath((folder / unquote(parts.path)).as_posix()))
        new = parts.path
        if target.suffix == ".ipynb":
            new = parts.path[: -len(".ipynb")] + ".html"
        elif target.name == "README.md" and target.parts[:1] == ("chapters",):
            new = parts.path[: -len("README.md")] + "index.html"
        elif not target.as_posix().startswith("..") and (ROOT / target).is_file():
            copies.add(target.as_posix())
        rebuilt = new + (f"?{parts.query}" if parts.query else "") + \
            (f"#{parts.fragment}" if parts.fragment else "")
        return f'{match["attr"]}="{html.escape(rebuilt, quote=True)}"'

    return LINK.sub(fix, page)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)
            elif name in ("id", "name") and value:
                self.ids.add(value)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def broken_links(site: Path, allowed: set[str] = frozenset()) -> list[tuple[str, str]]:
    """Every relative link (href/src) of the site's HTML pages that does not resolve.

    A link resolves when its file exists in the site and, for ``page.html#anchor``, the page
    has an element with that id. ``allowed`` lists site paths that count as present (pages of
    notebooks a partial build left out). Returns (page, link) pairs.
    """
    site = Path(site)
    parsed = {p: _parse(p) for p in sorted(site.rglob("*.html"))}
    broken = []
    for page, info in parsed.items():
        for url in info.links:
            if _is_external(url) and not url.startswith("#"):
                continue
            parts = urlsplit(url)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            relative = os.path.relpath(target, site.resolve())
            if relative.startswith("..") or not (target.is_file() or relative in allowed):
                if relative not in allowed:
                    broken.append((str(page.relative_to(site)), url))
                continue
            if parts.fragment and target.suffix == ".html" and target.is_file():
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if parts.fragment not in ids and unquote(parts.fragment) not in ids:
                    broken.append((str(page.relative_to(site)), url))
    return broken


# ---------------------------------------------------------------------------------------------
# Pages


def notebook_title(nb) -> str:
    """The first level-one heading of a notebook (or its file name's words)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def chapter_title(folder: Path) -> str:
    readme = folder / "README.md"
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return folder.name.split("_", 1)[-1].replace("_", " ").capitalize()


def _nav(depth: int, chapter: Path) -> str:
    up = "../" * depth
    return (f'<nav class="ds-nav"><a href="{up}index.html">deepscope</a> &rsaquo; '
            f'<a href="index.html">{html.escape(chapter_title(chapter))}</a>'
            f'<a class="ds-search" href="{up}search.html">Search</a></nav>')


def build_page(path: Path, executed: Path, site: Path, run: Result | None = None) -> dict:
    """Write the HTML page of one executed notebook (executing it first unless ``run``, the
    result of its execution, is given); return what the index needs."""
    import nbformat

    name, seconds, error = run if run is not None else execute(path, executed)
    error = re.sub(r"\x1b\[[0-9;]*m", "", error) if error else error  # no terminal colours
    nb = nbformat.read(executed / path.relative_to(CHAPTERS), as_version=4)
    page_path = PurePosixPath(path.relative_to(ROOT).with_suffix(".html").as_posix())
    title = notebook_title(nb) or path.stem
    copies: set[str] = set()
    body = notebook_html(nb, page_path, path.parent, title, copies)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    target = site / page_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    return {"source": name, "page": page_path.as_posix(), "title": title, "seconds": seconds,
            "error": error, "copies": sorted(copies), "widget_models": len(state)}


def notebook_html(nb, page_path: PurePosixPath, chapter: Path, title: str,
                  copies: set[str]) -> str:
    """Convert an executed notebook to its page: nbconvert's ``lab`` template with require.js,
    the widget renderer and MathJax loaded from the site's ``_static/`` (never a CDN), the nav
    bar, links rewritten to the site, and a static fallback inside each widget view."""
    from nbconvert import HTMLExporter

    depth = len(page_path.parts) - 1
    exporter = HTMLExporter(template_name="lab", **site_assets.asset_urls(depth))
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    body = rewrite_links(body, page_path, copies)
    nav = _nav(depth, chapter)
    body = re.sub(r"(<body[^>]*>)", lambda m: m[1] + NAV_STYLE + nav, body, count=1)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return add_widget_fallbacks(body, state)


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = re.compile(
    r'(<div (?=[^>]*class="jupyter-widgets jp-OutputArea-output)[^>]*>\s*'
    r'<script type="text/javascript">.*?</script>\s*'
    r'<script type="application/vnd.jupyter.widget-view\+json">\s*(?P<view>.*?)\s*</script>)'
    r'\s*</div>', re.S)
# Hide a fallback once the widget manager (from _static/) has drawn the live view beside it.
FALLBACK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var tries = 0, timer = setInterval(function () {
    document.querySelectorAll('.ds-widget-fallback').forEach(function (fallback) {
      if (fallback.parentElement.querySelector('.lm-Widget, .widget-container, .widget-output')) {
        fallback.style.display = 'none';
      }
    });
    if (++tries > 120) clearInterval(timer);
  }, 500);
});
</script>"""


def widget_outputs(model_id: str, state: dict) -> list[dict]:
    """The outputs held by the Output widgets inside widget ``model_id`` (children first)."""
    found, todo, seen = [], [model_id], set()
    while todo:
        mid = todo.pop(0)
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        model = state[mid]
        if model.get("model_name") == "OutputModel":
            found += model["state"].get("outputs", [])
        for child in model["state"].get("children", []):
            if isinstance(child, str) and child.startswith("IPY_MODEL_"):
                todo.append(child[len("IPY_MODEL_"):])
    return found


def add_widget_fallbacks(page: str, state: dict) -> str:
    """Inside each widget view, show the last figure/text its Output widgets held (static).

    The embedded state lets the widget manager redraw the live controls from a CDN; offline
    the page still shows what the explorer last drew.
    """
    import json

    def fallback(match: re.Match) -> str:
        try:
            model_id = json.loads(html.unescape(match["view"]))["model_id"]
        except (ValueError, KeyError):
            return match[0]
        parts: list[str] = []
        for output in widget_outputs(model_id, state):
            data = output.get("data", {})
            if "image/png" in data:
                parts.append(f'<img alt="last figure of the explorer" '
                             f'src="data:image/png;base64,{data["image/png"].strip()}">')
            elif output.get("output_type") == "stream":
                parts.append(f"<pre>{html.escape(output.get('text', ''))}</pre>")
        if not parts:
            return match[0]
        return (match[1] + '<div class="ds-widget-fallback" data-model-id="'
                f'{html.escape(model_id)}"><p><em>The explorer as the notebook left it (run the '
                "notebook to move its controls):</em></p>" + "".join(parts) + "</div></div>")

    page, count = WIDGET_VIEW.subn(fallback, page)
    return page.replace("</body>", FALLBACK_SCRIPT + "</body>", 1) if count else page


def _document(title: str, body: str, depth: int) -> str:
    home = "../" * depth + "index.html"
    nav = "" if depth == 0 else f'<p><a href="{home}">&larr; deepscope</a></p>'
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{nav}{body}</body></html>\n")


def chapter_page(folder: Path, results: list[dict], site: Path, copies: set[str]) -> str:
    """Write a chapter's index.html: its README.md and links to all its notebooks' pages (those a
    partial build left out are marked so)."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    readme = folder / "README.md"
    page_path = PurePosixPath(folder.relative_to(ROOT).as_posix()) / "index.html"
    body = (markdown2html_mistune(readme.read_text(encoding="utf-8")) if readme.is_file()
            else f"<h1>{html.escape(chapter_title(folder))}</h1>")
    built = {Path(r["source"]).stem: r for r in results}
    stems = sorted(set(built) | {p.stem for p in folder.glob("*.ipynb")})
    items = "".join(
        f'<li><a href="{html.escape(stem)}.html">{html.escape(built[stem]["title"])}</a> '
        f"(<code>{html.escape(stem)}</code>)</li>" if stem in built else
        f"<li><code>{html.escape(stem)}</code> (not built in this build)</li>"
        for stem in stems)
    body = rewrite_links(body + f"<h2>Notebooks</h2><ul>{items}</ul>", page_path, copies)
    target = site / page_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_document(chapter_title(folder), body, len(page_path.parts) - 1),
                      encoding="utf-8")
    return page_path.as_posix()


def index_page(results: list[dict], chapter_pages: dict[str, str], seconds: float) -> str:
    """The site's front page: the search box, then one table per chapter linking each executed
    notebook (a chapter this build left out links its page only)."""
    rows_by_chapter: dict[str, list[dict]] = {c: [] for c in chapter_pages}
    for r in results:
        rows_by_chapter.setdefault(str(Path(r["source"]).parent), []).append(r)
    parts = ["<h1>deepscope: the science of deep learning, measured in front of you</h1>",
             "<p>Every notebook of the book, executed. Each claim a notebook makes is an "
             "<code>assert</code> with a calibrated margin; the explorers show the state they "
             "were left in (run the notebook in JupyterLab to move them: "
             "<code>python3 book.py lab</code>). Nothing on these pages loads from the network."
             "</p>", site_assets.search_box(0)]
    for chapter, rows in sorted(rows_by_chapter.items()):
        folder = ROOT / chapter
        title = html.escape(chapter_title(folder))
        parts.append(f'<h2><a href="{chapter_pages[chapter]}">{title}</a></h2>')
        if not rows:
            parts.append("<p>Not built in this build (<code>python3 book.py lab --site</code> "
                         "builds every chapter).</p>")
            continue
        parts.append("<table><tr><th>Notebook</th><th>Title</th><th>Run time</th>"
                     "<th>Status</th></tr>")
        for r in rows:
            status = ("ok" if r["error"] is None else
                      f'<span class="failed">failed</span>: {html.escape(r["error"])}')
            parts.append(f'<tr><td><a href="{r["page"]}">{Path(r["source"]).stem}</a></td>'
                         f'<td>{html.escape(r["title"])}</td>'
                         f'<td class="num">{r["seconds"]:.1f} s</td><td>{status}</td></tr>')
        parts.append("</table>")
    parts.append(f"<p>Built in {seconds:.0f} s on {time.strftime('%Y-%m-%d')}.</p>")
    return _document("deepscope", "\n".join(parts), 0)


def search_page() -> str:
    """``search.html``: the search box alone (``search.html?q=term`` searches at once)."""
    return _document("deepscope: search", '<div data-pagefind-ignore="all"><p><a href="index.html">'
                     "&larr; deepscope</a></p><h1>Search the book</h1>"
                     + site_assets.search_box(0) + "</div>", 0)


# ---------------------------------------------------------------------------------------------
# The build


@contextlib.contextmanager
def kernel_environment(workers: int):
    """Set the environment the kernels inherit, restore it after: figures as inline images (the
    test runner's Agg backend would turn every figure into text), threads split by workers."""
    saved = dict(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = os.environ.get("DEEPSCOPE_THREADS") or str(max(1, (cores or 1) // workers))
    os.environ.update(MPLBACKEND=INLINE_BACKEND, DEEPSCOPE_THREADS=threads,
                      OMP_NUM_THREADS=threads, PYDEVD_DISABLE_FILE_VALIDATION="1")
    os.environ.setdefault("DEEPSCOPE_CACHE", str(ROOT / ".cache" / "models"))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def site_size(site: Path) -> tuple[int, int]:
    files = [p for p in site.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def build_site(patterns: list[str], site: Path, executed: Path, workers: int = 2, *,
               search: bool = True, assets_cache: Path = ASSETS_CACHE) -> dict:
    """Execute the notebooks matching ``patterns`` (all if none) and write the site, with its
    scripts vendored in ``_static/`` and (``search``) a Pagefind index."""
    paths = notebooks(patterns)
    if not paths:
        raise SystemExit(f"build_site: no notebook matches {patterns}")
    site = Path(site)
    if site.exists():
        if not (site / MARKER).exists():
            raise SystemExit(f"build_site: {site} exists and is not a site this tool built; "
                             "choose another --out or remove it")
        shutil.rmtree(site)
    site.mkdir(parents=True)
    (site / MARKER).write_text("built by tools/build_site.py; rebuilt from scratch each time\n")
    start = time.perf_counter()
    # The offline assets first: a build that cannot be made offline fails before executing.
    assets = site_assets.install_assets(site, Path(assets_cache))
    # Execute first (tools.execute_book: private kernels, cell timeouts, nothing left behind
    # on Ctrl-C), then convert each executed notebook in this process.
    with kernel_environment(workers):
        runs = run_notebooks(paths, executed, workers=workers, env=dict(os.environ))
    results = [build_page(path, executed, site, run) for path, run in zip(paths, runs)]
    copies = {c for r in results for c in r["copies"]}
    # Every chapter gets its page (a partial build too), so the site and its search are whole.
    every = notebooks([])
    by_chapter: dict[str, list[dict]] = {str(p.parent.relative_to(ROOT)): [] for p in every}
    for r in results:
        by_chapter.setdefault(str(Path(r["source"]).parent), []).append(r)
    pages = {c: chapter_page(ROOT / c, rows, site, copies) for c, rows in by_chapter.items()}
    for relative in sorted(copies):
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, site / relative)
    seconds = time.perf_counter() - start
    (site / "index.html").write_text(index_page(results, pages, seconds), encoding="utf-8")
    (site / "search.html").write_text(search_page(), encoding="utf-8")
    search = site_assets.index_site(site) if search else None
    # Pages of notebooks this (partial) build left out are not broken links; without a search
    # index, neither are the search box's files.
    unbuilt = {p.relative_to(ROOT).with_suffix(".html").as_posix() for p in every} \
        - {r["page"] for r in results}
    if search is None:
        unbuilt |= {f"{site_assets.SEARCH_DIR}/pagefind-ui.{ext}" for ext in ("js", "css")}
    files, size = site_size(site)
    return {"results": results, "broken": broken_links(site, allowed=unbuilt),
            "seconds": seconds, "files": files, "bytes": size, "site": site,
            "assets": assets, "search": search}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="substrings of notebook paths to build")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "site")
    parser.add_argument("--executed", type=Path, default=ROOT / "_build" / "executed",
                        help="where the executed notebooks are written")
    parser.add_argument("--no-search", action="store_true",
                        help="skip the Pagefind search index (e.g. where its binary is missing)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)  # book.py lab --site -- ...
    try:
        report = build_site(args.patterns, args.out, args.executed, args.workers,
                            search=not args.no_search)
    except site_assets.AssetError as err:
        print(f"build_site: {err}", file=sys.stderr)
        return 2
    failed = [r for r in report["results"] if r["error"]]
    for r in report["results"]:
        print(f"{r['seconds']:7.1f} s  {'ok    ' if r['error'] is None else 'FAILED'}  "
              f"{r['source']}")
        if r["error"]:
            print(f"           {r['error']}")
    for page, link in report["broken"]:
        print(f"broken link in {page}: {link}")
    print(f"{report['seconds']:7.1f} s  site of {len(report['results'])} notebooks, "
          f"{report['files']} files, {report['bytes'] / 1e6:.1f} MB: "
          f"{report['site'] / 'index.html'}")
    assets = ", ".join(f"{k} {v}" for k, v in report["assets"].items())
    print(f"offline assets in _static/: {assets}")
    if report["search"]:
        print(f"search: Pagefind {report['search']['version']} indexed "
              f"{report['search']['pages']} pages; search needs the site served over HTTP: "
              f"python -m http.server -d {report['site']}  (then open http://127.0.0.1:8000/)")
    return 1 if failed or report["broken"] else 0


if __name__ == "__main__":
    sys.exit(main())
