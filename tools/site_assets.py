"""What makes the static site work offline: vendored scripts and a full-text search index.

Three scripts every notebook page needs are copied into the site's ``_static/`` folder, so a page
makes no network request:

- ``require.js`` (the AMD loader the widget renderer needs): npm package ``requirejs``;
- the widget renderer ``embed-amd.js`` with its fonts: npm package
  ``@jupyter-widgets/html-manager``, pinned, and checked against the version the installed
  ipywidgets requires (``ipywidgets._version.__html_manager_version__``);
- MathJax 2 (the version nbconvert's templates are written for): the static files of the Python
  package ``jupyter-server-mathjax`` (a dev dependency), so no download at all.

The npm packages are fetched once at build time with the ordinary ``npm pack`` client into a cache
folder (``.cache/site-assets/``), checked against the pinned sha512 integrity below, and unpacked
with every member checked (no absolute paths, no ``..``, no links). Then `index_site` runs
Pagefind (the ``pagefind[bin]`` wheel, offline) over the written pages; ``search.html`` holds its
search box. Pagefind loads its index with ``fetch``, which browsers refuse on ``file://`` pages:
search works on the served site (``python -m http.server -d _build/site``), everything else also
from the file system.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

STATIC = "_static"
SEARCH_DIR = "pagefind"
# nbconvert's configuration, then ours (config/local/deepscope.js, written by `install_assets`).
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe,local/deepscope"
# jupyter-server-mathjax ships the STIX-Web fonts only (MathJax's default web font is TeX, whose
# files it lacks): without this every page asks for a missing TeX font file first.
MATHJAX_LOCAL_CONFIG = """MathJax.Hub.Config({
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/deepscope.js");
"""


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package: name, exact version, the sha512 integrity npm publishes, and the
    files of it (paths inside the tarball's ``package/``) the site needs."""

    name: str
    version: str
    integrity: str
    keep: tuple[str, ...]

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:  # the file name `npm pack` writes
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


HTML_MANAGER = NpmPackage(
    "@jupyter-widgets/html-manager", "1.0.15",
    "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
    # The AMD embedder (it loads the fonts below relative to itself); package.json and the
    # bundled licence notices record the licences.
    ("dist/embed-amd.js", "dist/*.woff2", "dist/*.woff", "dist/*.ttf", "dist/*.eot",
     "dist/*.svg", "dist/*.LICENSE.txt", "package.json"),
)
REQUIRE_JS = NpmPackage(
    "requirejs", "2.3.8",
    "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
    ("require.js", "package.json"),
)


class AssetError(RuntimeError):
    """A site asset is missing, cannot be fetched or is not what was pinned."""


# ---------------------------------------------------------------------------------------------
# Versions


def _version_tuple(version: str, fn: str) -> tuple[int, ...]:
    core = version.strip().lstrip("^~=v").split("-")[0]
    try:
        return tuple(int(p) for p in core.split("."))
    except ValueError:
        raise AssetError(f"{fn}: cannot read the version {version!r}") from None


def satisfies_caret(version: str, requirement: str) -> bool:
    """Whether ``version`` satisfies an npm caret (or exact) ``requirement`` such as ``^1.0.1``.

    ``^M.m.p`` (M > 0) allows ``>= M.m.p`` and ``< (M+1).0.0``; ``^0.m.p`` allows ``< 0.(m+1).0``.
    """
    have, want = _version_tuple(version, "satisfies_caret"), \
        _version_tuple(requirement, "satisfies_caret")
    have, want = have + (0,) * (3 - len(have)), want + (0,) * (3 - len(want))
    if not requirement.strip().startswith("^"):
        return have == want
    if have < want:
        return False
    return have[0] == want[0] if want[0] > 0 else have[:2] == want[:2]


def check_html_manager_version(required: str | None = None) -> str:
    """Return the html-manager requirement of the installed ipywidgets after checking that the
    pinned `HTML_MANAGER` satisfies it (raise `AssetError` naming both otherwise)."""
    if required is None:
        from ipywidgets._version import __html_manager_version__ as required
    if not satisfies_caret(HTML_MANAGER.version, required):
        raise AssetError(
            f"site assets: the installed ipywidgets requires @jupyter-widgets/html-manager "
            f"{required}, but the site pins {HTML_MANAGER.version}; update HTML_MANAGER in "
            "tools/site_assets.py (version and integrity: `npm view <spec> dist.integrity`)")
    return required


# ---------------------------------------------------------------------------------------------
# Fetching and unpacking


def sri_sha512(path: Path) -> str:
    """The subresource-integrity string (``sha512-<base64>``) npm publishes for a tarball."""
    digest = hashlib.sha512(Path(path).read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def fetch_npm(package: NpmPackage, cache: Path) -> Path:
    """Return the verified tarball of ``package`` in ``cache``, fetching it with ``npm pack``."""
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / package.tarball
    if not tarball.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise AssetError(
                f"site assets: {package.spec} is not in {cache} and `npm` is not installed. "
                f"Install Node.js (npm), or put the file {package.tarball} (from `npm pack "
                f"{package.spec}` on a machine with npm) in that folder")
        # Into a private folder first, then renamed: a concurrent build never reads half a file.
        with tempfile.TemporaryDirectory(dir=cache, prefix=".npm-pack-") as tmp:
            run = subprocess.run([npm, "pack", package.spec, "--json", "--pack-destination",
                                  tmp], capture_output=True, text=True, timeout=300)
            fetched = Path(tmp) / package.tarball
            if run.returncode != 0 or not fetched.is_file():
                raise AssetError(f"site assets: `npm pack {package.spec}` failed (exit "
                                 f"{run.returncode}): {(run.stderr or run.stdout)[-800:]}")
            _verify(fetched, package)  # a bad download never enters the cache
            os.replace(fetched, tarball)
    _verify(tarball, package)
    return tarball


def _verify(tarball: Path, package: NpmPackage) -> None:
    actual = sri_sha512(tarball)
    if actual != package.integrity:
        raise AssetError(
            f"site assets: {tarball} has integrity {actual}, expected {package.integrity} "
            f"(the pinned {package.spec}); delete the file to fetch it again")


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(PurePosixPath(path).match(p) and path.count("/") == p.count("/")
               for p in patterns)


def unpack(tarball: Path, target: Path, keep: tuple[str, ...]) -> list[str]:
    """Extract the members of an npm tarball matching ``keep`` into ``target``; return them.

    Every member is checked before anything is written: regular files and folders only, under
    ``package/``, with no absolute path and no ``..`` (a hostile tarball cannot write elsewhere).
    """
    with tarfile.open(tarball, "r:gz") as archive:
        members = archive.getmembers()
        for member in members:
            name = PurePosixPath(member.name)
            if (name.is_absolute() or ".." in name.parts or not name.parts
                    or name.parts[0] != "package" or not (member.isfile() or member.isdir())):
                kind = "a link" if member.issym() or member.islnk() else "an unsafe path"
                raise AssetError(f"site assets: {tarball.name} holds {kind}: {member.name!r}")
        written = []
        for member in members:
            inside = "/".join(PurePosixPath(member.name).parts[1:])
            if not member.isfile() or not _matches(inside, keep):
                continue
            out = target / inside
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(out, "wb") as sink:
                shutil.copyfileobj(source, sink)
            written.append(inside)
    missing = [p for p in keep if not any(_matches(w, (p,)) for w in written)
               and "*" not in p]
    if missing:
        raise AssetError(f"site assets: {tarball.name} lacks {missing}")
    return sorted(written)


def mathjax_folder() -> Path:
    """The MathJax 2 files of the installed ``jupyter-server-mathjax`` package."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise AssetError("site assets: MathJax comes from the Python package "
                         "jupyter-server-mathjax (dev extra): pip install jupyter-server-mathjax"
                         ) from None
    folder = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (folder / "MathJax.js").is_file():
        raise AssetError(f"site assets: {folder} has no MathJax.js")
    return folder


def install_assets(site: Path, cache: Path) -> dict[str, str]:
    """Copy require.js, the widget renderer and MathJax into ``site/_static``; return what each
    is (name -> version), also written to ``_static/assets.json``."""
    check_html_manager_version()
    static = site / STATIC
    static.mkdir(parents=True, exist_ok=True)
    unpack(fetch_npm(REQUIRE_JS, cache), static / "requirejs", REQUIRE_JS.keep)
    unpack(fetch_npm(HTML_MANAGER, cache), static / "html-manager", HTML_MANAGER.keep)
    shutil.copytree(mathjax_folder(), static / "mathjax", dirs_exist_ok=True)
    local = static / "mathjax" / "config" / "local"
    local.mkdir(parents=True, exist_ok=True)
    (local / "deepscope.js").write_text(MATHJAX_LOCAL_CONFIG)
    from importlib.metadata import version

    assets = {REQUIRE_JS.name: REQUIRE_JS.version, HTML_MANAGER.name: HTML_MANAGER.version,
              "jupyter-server-mathjax (MathJax 2)": version("jupyter-server-mathjax")}
    (static / "assets.json").write_text(json.dumps(assets, indent=1) + "\n")
    return assets


def asset_urls(depth: int) -> dict[str, str]:
    """nbconvert's URL settings for a page ``depth`` folders below the site root.

    Mermaid's URLs are emptied: nbconvert would import it from a CDN for a notebook with a
    Mermaid diagram (no notebook of the book has one; such a diagram shows as its source).
    """
    up = "../" * depth + STATIC
    return {"require_js_url": f"{up}/requirejs/require.js",
            "widget_renderer_url": f"{up}/html-manager/dist/embed-amd.js",
            "mathjax_url": f"{up}/mathjax/MathJax.js?config={MATHJAX_CONFIG}",
            "mermaid_js_url": "", "mermaid_layout_elk_js_url": ""}


# ---------------------------------------------------------------------------------------------
# Search


SEARCH_BOX = """<link href="{up}pagefind/pagefind-ui.css" rel="stylesheet">
<script src="{up}pagefind/pagefind-ui.js"></script>
<div id="search"></div>
<p id="search-offline" hidden><em>Search reads its index over HTTP, which browsers refuse to
pages opened from the file system: serve the site with
<code>python -m http.server -d _build/site</code> and open http://127.0.0.1:8000/.</em></p>
<script>
window.addEventListener('DOMContentLoaded', function () {
  if (location.protocol === 'file:') {
    document.getElementById('search-offline').hidden = false;
    return;
  }
  // Result links relative to this page's folder (the site root), so the site works in a
  // sub-folder of a web server too.
  var base = location.pathname.replace(/[^/]*$/, '');
  var ui = new PagefindUI({element: '#search', showSubResults: true, showImages: false,
                           baseUrl: base});
  var q = new URLSearchParams(location.search).get('q');
  if (q) ui.triggerSearch(q);
});
</script>"""


def search_box(depth: int) -> str:
    """The Pagefind search box (with a note where search cannot work: ``file://`` pages)."""
    return SEARCH_BOX.replace("{up}", "../" * depth)


def index_site(site: Path) -> dict:
    """Build the Pagefind index of every page in ``site`` (offline); return its statistics."""
    site = Path(site)
    cmd = [sys.executable, "-m", "pagefind", "--site", str(site), "--output-subdir", SEARCH_DIR,
           "--exclude-selectors", ".ds-nav", "--exclude-selectors", "#search",
           "--exclude-selectors", "a.anchor-link"]  # the heading links' pilcrows
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:  # pragma: no cover - sys.executable always exists
        raise AssetError("site search: cannot run Pagefind") from None
    if run.returncode != 0 or not (site / SEARCH_DIR / "pagefind-ui.js").is_file():
        hint = ("; install it: pip install 'pagefind[bin]' (dev extra)"
                if "No module named pagefind" in run.stderr else "")
        raise AssetError(f"site search: Pagefind failed (exit {run.returncode}){hint}: "
                         f"{(run.stderr or run.stdout)[-800:]}")
    entry = json.loads((site / SEARCH_DIR / "pagefind-entry.json").read_text())
    pages = sum(language.get("page_count", 0) for language in entry.get("languages", {}).values())
    return {"pages": pages, "version": entry.get("version", "?")}
