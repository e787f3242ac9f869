"""Feedback files for students: one Markdown and one HTML page per graded submission.

    deepscope grade submissions/01_saliency --feedback feedback/   # feedback/alice.md, .html

Each page has the points table, and for every question what failed: the check, its message and
its hint, the notes (which cells were graded, which helper stood in) and why a question could
not run. Everything that came from a submission (messages of its exceptions, what it printed)
is text, never markup: control and bidirectional-override characters are removed, Markdown
puts it in code fences no content can close, and HTML escapes it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from .batch import safe_name
from .report import Report

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: str) -> str:
    """Remove control characters (but newlines and tabs) and bidirectional overrides."""
    return _CONTROL.sub("", str(text))


def _fmt(points: float) -> str:
    return f"{points:g}"


def _fence(text: str) -> str:
    """A Markdown code block that the text itself cannot close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _cell(text: str) -> str:
    return clean(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _heading(report: Report) -> tuple[str, str]:
    who = report.id or Path(report.submission).stem
    graded = f"graded {report.started} by {report.grader}" if report.started else ""
    seed = f", grading seed {report.seed}" if report.seed is not None else ""
    return who, f"{graded}{seed}"


def markdown(report: Report) -> str:
    """Return the feedback page of one report as Markdown."""
    who, graded = _heading(report)
    lines = [f"# {_cell(report.assignment or 'Assignment')}: feedback for {_cell(who)}", ""]
    if report.title:
        lines.append(f"{_cell(report.title)}  ")
    lines += [f"**{_fmt(report.points)} / {_fmt(report.max_points)} points** ({graded})", ""]
    if report.error:
        lines += ["**Your notebook could not be graded:**", "", _fence(clean(report.error)), ""]
    lines += ["| # | Question | Points |", "|---|---|---|"]
    for q in report.questions:
        lines.append(f"| {q.number} | {_cell(q.title)} (`{_cell(q.function)}`) | "
                     f"{_fmt(q.points)} / {_fmt(q.max_points)} |")
    lines += [f"| | **Total** | **{_fmt(report.points)} / {_fmt(report.max_points)}** |", ""]
    for q in report.questions:
        failed = [c for c in q.checks if not c.passed]
        lines += [f"## {q.number}. {_cell(q.title)}: {_fmt(q.points)} / {_fmt(q.max_points)}",
                  ""]
        if q.problem:
            lines += ["The question could not run to the end:", "", _fence(clean(q.problem)),
                      ""]
        if not failed:
            lines += ["Every check passed.", ""]
        once = _shared_message(q)
        for c in q.checks:
            mark = "passed" if c.passed else "**failed**"
            private = " (a check of your teacher's)" if c.private else ""
            lines.append(f"- {mark}: {_cell(c.name)}{private} ({_fmt(c.points)} / "
                         f"{_fmt(c.max_points)})")
            if not c.passed and c.message and c.message != q.problem and not once:
                lines += ["", _indent(_fence(clean(c.message))), ""]
        if once:
            lines += ["", "Each failed with:", "", _fence(clean(once)), ""]
        if q.warnings:
            lines += ["", "Notes:", ""] + [f"- {_cell(w)}" for w in q.warnings]
        lines.append("")
    for w in report.warnings:
        lines.append(f"> Note: {_cell(w)}")
    return "\n".join(lines).rstrip() + "\n"


def _shared_message(q) -> str:
    """The message every failed check of a question shares (e.g. "not implemented yet"), if
    there are several and they are all the same; else ""."""
    messages = {c.message for c in q.checks if not c.passed}
    failed = sum(not c.passed for c in q.checks)
    return messages.pop() if failed > 1 and len(messages) == 1 and not q.problem else ""


def _indent(block: str) -> str:
    return "\n".join(f"  {line}" if line else line for line in block.splitlines())


_STYLE = """body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;
color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem}
td.pts{text-align:right}.failed{color:#a40000}.passed{color:#2a6a00}pre{background:#f5f5f5;
padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere}"""


def html_page(report: Report) -> str:
    """Return the feedback page of one report as a self-contained HTML document."""
    e = lambda text: html.escape(clean(text))  # noqa: E731 - every interpolation is escaped
    who, graded = _heading(report)
    title = f"{report.assignment or 'Assignment'}: feedback for {who}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{e(title)}</h1>", f"<p>{e(report.title)}<br><strong>{_fmt(report.points)} / "
           f"{_fmt(report.max_points)} points</strong> ({e(graded)})</p>"]
    if report.error:
        out.append(f"<p><strong>Your notebook could not be graded:</strong></p>"
                   f"<pre>{e(report.error)}</pre>")
    out.append("<table><tr><th>#</th><th>Question</th><th>Points</th></tr>")
    for q in report.questions:
        out.append(f"<tr><td>{q.number}</td><td>{e(q.title)} (<code>{e(q.function)}</code>)"
                   f"</td><td class=pts>{_fmt(q.points)} / {_fmt(q.max_points)}</td></tr>")
    out.append(f"<tr><td></td><td><strong>Total</strong></td><td class=pts><strong>"
               f"{_fmt(report.points)} / {_fmt(report.max_points)}</strong></td></tr></table>")
    for q in report.questions:
        out.append(f"<h2>{q.number}. {e(q.title)}: {_fmt(q.points)} / {_fmt(q.max_points)}</h2>")
        if q.problem:
            out.append(f"<p>The question could not run to the end:</p><pre>{e(q.problem)}</pre>")
        out.append("<ul>")
        once = _shared_message(q)
        for c in q.checks:
            status = "passed" if c.passed else "failed"
            private = " (a check of your teacher's)" if c.private else ""
            item = (f"<li><span class={status}>{status}</span>: {e(c.name)}{e(private)} "
                    f"({_fmt(c.points)} / {_fmt(c.max_points)})")
            if not c.passed and c.message and c.message != q.problem and not once:
                item += f"<pre>{e(c.message)}</pre>"
            out.append(item + "</li>")
        out.append("</ul>")
        if once:
            out.append(f"<p>Each failed with:</p><pre>{e(once)}</pre>")
        if q.warnings:
            out.append("<p>Notes:</p><ul>" + "".join(f"<li>{e(w)}</li>" for w in q.warnings)
                       + "</ul>")
    for w in report.warnings:
        out.append(f"<p><em>Note: {e(w)}</em></p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_feedback(reports: Sequence[Report], folder: str | Path) -> list[Path]:
    """Write ``<id>.md`` and ``<id>.html`` for every report into ``folder``; return the paths.
    Ids become safe file names; two ids that become the same name get ``-2``, ``-3``, ..."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for report in reports:
        base = safe_name(report.id or Path(report.submission).stem)
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        for suffix, render in ((".md", markdown), (".html", html_page)):
            path = folder / f"{name}{suffix}"
            path.write_text(render(report), encoding="utf-8")
            written.append(path)
    return written
