"""Fixtures of the browser test: headless Chromium, the artifacts folder, a timing summary."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.browser import lab

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("DEEPSCOPE_ARTIFACTS", ROOT / "artifacts")) / "browser"
# CI sets this: there a missing browser is a failure, never a skip.
REQUIRED = os.environ.get("DEEPSCOPE_BROWSER_REQUIRED", "") not in ("", "0")
RESULTS: list[dict] = []


def pytest_report_header(config):
    return f"browser test artifacts (screenshots, logs): {ARTIFACTS}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """A clean folder for screenshots and logs of this run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    print(f"\nbrowser test artifacts: {ARTIFACTS}")
    return ARTIFACTS


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"DEEPSCOPE_BROWSER_REQUIRED is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    path, how = lab.find_chromium()
    if path is None:
        _unavailable(how)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package playwright is not installed (dev extra)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True,
                                              args=lab.CHROMIUM_ARGS)
        print(f"\n{path}: Chromium {chromium.version} ({how})")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def browser_results() -> list[dict]:
    return RESULTS


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("widgets in JupyterLab (headless Chromium)")
    for r in RESULTS:
        write(f"{r['notebook']}: {r['wall_s']:.1f} s in all (server {r['server_s']:.1f} s, "
              f"open {r['open_s']:.1f} s, run all {r['run_all_s']:.1f} s), "
              f"{r['views']} widget views")
        for e in r["explorers"]:
            write(f"    {e['explorer'] or 'explorer'}: moved {e['control']} ({e['type']}, "
                  f"{e['action']}) {e['from']} -> {e['to']}; output {e['before']} -> "
                  f"{e['after']} in {e['redraw_s']:.2f} s")
    total = sum(r["wall_s"] for r in RESULTS)
    write(f"{len(RESULTS)} notebooks, {total:.1f} s; screenshots and logs in {ARTIFACTS}")
    if ARTIFACTS.is_dir():
        (ARTIFACTS / "report.json").write_text(json.dumps(RESULTS, indent=1))
