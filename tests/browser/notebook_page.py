"""Drive one notebook in JupyterLab in a real browser, as a reader would, and check its widgets.

`check_notebook` opens a notebook, runs all cells through the Run menu, waits for the kernel to
finish, then for every explorer the notebook shows (a `deepscope.widgets.explorer` box: it has
``.controls``, ``.output`` and ``.state``): waits for its view, moves one control with the mouse or
keyboard, and waits until the output's image bytes or text change. The kernel is asked (in a
private namespace, outside the notebook's history) which widget views are alive and which boxes
are explorers; it tags their DOM nodes with CSS classes so that the browser finds exactly those
views. What the page shows is then checked in the page; the kernel only confirms the redraw.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# Text that ipywidgets and JupyterLab show when a widget cannot be displayed.
WIDGET_ERRORS = ("Failed to load model class", "Error displaying widget",
                 "Error rendering widget", "Could not create a view", "Could not create view",
                 "Could not create a model", "Model not found", "Error creating widget",
                 "No version of module", "Click to show javascript error")
MARK = "@@deepscope-browser@@"

# Runs in the kernel, in a fresh namespace (globals IDS and MARK are given).
TAG_CODE = r'''
import json
import re
from ipywidgets.widgets.widget import _instances

def _walk(w, seen):
    if id(w) in seen:
        return
    seen.add(id(w))
    yield w
    for child in getattr(w, "children", None) or ():
        yield from _walk(child, seen)

def _plain(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)

def _control(name, c):
    info = {"name": name, "id": c.model_id, "type": type(c).__name__, "value": _plain(c.value)}
    for key in ("min", "max", "step", "base", "index", "disabled"):
        if hasattr(c, key):
            info[key] = _plain(getattr(c, key))
    if hasattr(c, "options"):
        info["options"] = len(c.options)
    return info

views, explorers, seen = [], [], set()
for mid in IDS:
    w = _instances.get(mid)
    if w is None:  # closed since it was shown (e.g. a finished progress bar)
        continue
    views.append({"id": mid, "type": type(w).__name__})
    if hasattr(w, "add_class"):
        w.add_class("ds-view-" + mid)
    for v in _walk(w, seen):
        controls = v.__dict__.get("controls")
        if isinstance(controls, dict) and "state" in v.__dict__ and "output" in v.__dict__:
            v.add_class("ds-exp-" + v.model_id)
            v.output.add_class("ds-out-" + v.output.model_id)
            for c in controls.values():
                c.add_class("ds-ctl-" + c.model_id)
            title = [re.sub("<[^>]+>", "", c.value) for c in v.children
                     if type(c).__name__ == "HTML"]
            explorers.append({"id": v.model_id, "output": v.output.model_id,
                              "title": title[0] if title else "",
                              "renders": v.state.get("renders"),
                              "controls": [_control(n, c) for n, c in controls.items()]})
print(MARK + json.dumps({"views": views, "explorers": explorers}))
'''

STATE_CODE = r'''
import json
from ipywidgets.widgets.widget import _instances

def _plain(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)

box = _instances[ID]
print(MARK + json.dumps({"renders": box.state.get("renders"),
                         "values": {n: _plain(c.value) for n, c in box.controls.items()}}))
'''

FIND_PANEL_JS = """(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return false;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path && w.sessionContext) {
      window.__dsPanel = w;
      return true;
    }
  }
  return false;
}"""

KERNEL_IDLE_JS = """() => {
  const p = window.__dsPanel, s = p && p.sessionContext;
  if (!s || !s.isReady || !s.session || !s.session.kernel) return false;
  const bar = Array.from(document.querySelectorAll('.jp-StatusBar-Widget'))
                   .map(e => e.innerText).join(' ');
  return s.session.kernel.status === 'idle' && bar.includes('| Idle');
}"""

NOTEBOOK_STATE_JS = """(mime) => {
  const p = window.__dsPanel;
  const cells = [];
  p.content.widgets.forEach((cell, index) => {
    const m = cell.model;
    if (m.type !== 'code') return;
    const outputs = [];
    for (let k = 0; k < m.outputs.length; k++) {
      const o = m.outputs.get(k).toJSON();
      const view = o.data && o.data[mime];
      outputs.push({type: o.output_type, ename: o.ename || null, evalue: o.evalue || null,
                    widget: view ? view.model_id : null});
    }
    const source = m.sharedModel.getSource();
    cells.push({index, count: m.executionCount, tags: m.getMetadata('tags') || [],
                empty: source.trim() === '', head: source.trim().split('\\n')[0].slice(0, 80),
                outputs});
  });
  const kernel = p.sessionContext.session && p.sessionContext.session.kernel;
  return {cells, kernel: kernel ? kernel.status : null};
}"""

RUN_IN_KERNEL_JS = """async (code) => {
  const kernel = window.__dsPanel.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  let text = '';
  future.onIOPub = (msg) => {
    const c = msg.content;
    if (msg.header.msg_type === 'stream') text += c.text;
    if (msg.header.msg_type === 'error') text += '\\nKERNEL ERROR ' + c.ename + ': ' + c.evalue;
  };
  await future.done;
  return text;
}"""

SNAPSHOT_JS = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  return {images: Array.from(el.querySelectorAll('img')).map(i => i.getAttribute('src') || ''),
          text: el.innerText.trim()};
}"""


class NotebookFailure(AssertionError):
    """The notebook or one of its widgets misbehaved in the browser."""


def _wait(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise NotebookFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def run_in_kernel(page, code: str, **names) -> dict:
    """Execute ``code`` in the notebook's kernel in a fresh namespace; return its JSON answer."""
    namespace = {"MARK": MARK, **names}
    wrapped = (f"exec(compile({code!r}, '<deepscope-browser-check>', 'exec'), "
               f"{{'__name__': '__deepscope_check__', **{namespace!r}}})")
    text = page.evaluate(RUN_IN_KERNEL_JS, wrapped)
    if MARK not in text:
        raise NotebookFailure(f"the kernel did not answer the check: {text[-2000:]}")
    return json.loads(text.split(MARK, 1)[1].strip().splitlines()[0])


ERROR_WIDGETS_JS = """() => Array.from(document.querySelectorAll('.jupyter-widgets-error-widget'))
  .map(el => { el.click(); return el.innerText.trim(); })"""  # a click reveals the message


def page_widget_errors(page, console: list[str] = ()) -> list[str]:
    """Widget errors in the page: error views (ipywidgets draws one where a widget failed),
    known error messages in its text, and the same messages in the browser console."""
    errors = [f"error view: {_short(text)}" for text in page.evaluate(ERROR_WIDGETS_JS)]
    text = page.evaluate("() => document.body.innerText")
    errors += [line.strip() for line in text.splitlines()
               if any(err in line for err in WIDGET_ERRORS)]
    errors += [f"console {_short(line)}" for line in console
               if any(err in line for err in WIDGET_ERRORS)]
    return list(dict.fromkeys(errors))


def _short(message: str) -> str:
    """A message without its JavaScript stack trace."""
    return " | ".join(line.strip() for line in message.splitlines()
                      if line.strip() and not line.strip().startswith("at "))[:400]


def _digest(snapshot: dict | None) -> str:
    if not snapshot:
        return "missing"
    blob = json.dumps([snapshot["images"], snapshot["text"]]).encode()
    return (f"{len(snapshot['images'])} img, {len(snapshot['text'])} chars, "
            f"sha {hashlib.sha256(blob).hexdigest()[:12]}")


def _has_content(snapshot: dict | None) -> bool:
    return bool(snapshot and (any(snapshot["images"]) or snapshot["text"]))


def _accept_dialogs(page) -> None:
    """Accept a kernel-selection (or any) dialog JupyterLab may raise on opening a notebook."""
    button = page.locator(".jp-Dialog .jp-mod-accept")
    if button.count():
        button.first.click()


def open_notebook(page, server, relpath: str, timeout: float = 120) -> None:
    """Open ``relpath`` in JupyterLab and wait until its kernel is idle."""
    page.goto(server.notebook_url(relpath))
    _wait(lambda: page.evaluate(FIND_PANEL_JS, relpath), timeout, "the notebook panel")

    def idle():
        _accept_dialogs(page)
        return page.evaluate(KERNEL_IDLE_JS)

    _wait(idle, timeout, "the kernel to be idle ('| Idle' in the status bar)")


def run_all(page, timeout: float) -> dict:
    """Run all cells from the Run menu; wait until they ran; return the notebook's state."""
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li[data-command='runmenu:run-all']")
    stable = {"n": 0}

    def finished():
        state = page.evaluate(NOTEBOOK_STATE_JS, WIDGET_MIME)
        pending = [c for c in state["cells"] if c["count"] is None and not c["empty"]]
        failed = any(o["type"] == "error" and "raises-exception" not in c["tags"]
                     for c in state["cells"] for o in c["outputs"])
        done = state["kernel"] == "idle" and (not pending or failed)
        stable["n"] = stable["n"] + 1 if done else 0
        return state if stable["n"] >= 3 else None  # idle at three polls in a row

    return _wait(finished, timeout, "all cells to run", interval=0.5)


def _control_moves(control: dict) -> list[tuple[str, str | int]]:
    """Ways to move ``control`` in the page: (action, argument) pairs, most natural first."""
    kind, value = control["type"], control["value"]
    if kind.endswith("RangeSlider"):  # move the lower handle
        if kind == "SelectionRangeSlider":
            at_start = (control.get("index") or [0])[0] == 0
        else:
            at_start = value[0] <= control["min"]
        return [("key", "ArrowRight" if at_start else "ArrowLeft")]
    if kind.endswith("Slider"):
        if kind == "SelectionSlider":
            at_end = control.get("index") == control.get("options", 1) - 1
        elif kind == "FloatLogSlider":
            at_end = value >= control.get("base", 10) ** control["max"]
        else:
            at_end = value >= control["max"]
        return [("key", "ArrowLeft" if at_end else "ArrowRight")]
    if kind in ("Dropdown", "Select"):
        n = control.get("options", 0)
        return [("select", ((control.get("index") or 0) + 1) % n)] if n > 1 else []
    if kind in ("ToggleButtons", "RadioButtons"):
        n = control.get("options", 0)
        return [("choose", ((control.get("index") or 0) + 1) % n)] if n > 1 else []
    if kind in ("Checkbox", "ToggleButton"):
        return [("click", 0)]
    if kind in ("IntText", "FloatText", "BoundedIntText", "BoundedFloatText"):
        step = control.get("step") or 1
        new = value + step if control.get("max") is None or value + step <= control["max"] \
            else value - step
        return [("type", str(new))]
    if kind in ("Text", "Textarea"):
        return [("type", f"{value}x")]
    return []


def _part(node, selector: str, nth: int = 0):
    """The ``nth`` element matching ``selector`` in a control's view, or the view itself when it
    matches (a ToggleButton's view is its button)."""
    element = node.evaluate_handle(
        "(el, [sel, n]) => el.matches(sel) ? el : (el.querySelectorAll(sel)[n] || null)",
        [selector, nth]).as_element()
    if element is None:
        raise NotebookFailure(f"no {selector!r} (number {nth}) in the control's view")
    return element


def move_control(page, control: dict) -> str:
    """Move ``control`` through the page as a user would; return what was done."""
    node = page.locator(f".ds-ctl-{control['id']}").first
    node.scroll_into_view_if_needed()
    for action, argument in _control_moves(control):
        if action == "key":
            node.locator(".noUi-handle").first.focus()
            page.keyboard.press(argument)
        elif action == "select":
            _part(node, "select").select_option(index=argument)
        elif action == "choose":
            _part(node, "button, input[type=radio]", argument).click()
        elif action == "click":
            _part(node, "input[type=checkbox], button").click()
        elif action == "type":
            field = _part(node, "input, textarea")
            field.fill(argument)
            field.press("Enter")
        return f"{action} {argument}"
    raise NotebookFailure(f"no way to move control {control['name']!r} ({control['type']})")


def _movable(explorer: dict) -> dict:
    for control in explorer["controls"]:
        if not control.get("disabled") and _control_moves(control):
            return control
    kinds = [f"{c['name']} ({c['type']})" for c in explorer["controls"]]
    raise NotebookFailure(f"explorer {explorer['title']!r} has no control this test can move: "
                          f"{kinds}; teach tests/browser/notebook_page.py its widget type")


def check_explorer(page, explorer: dict, screenshot: Path, timeout: float) -> dict:
    """Move one control of ``explorer``; assert its output changed; save a screenshot."""
    out = f".ds-out-{explorer['output']}"
    view = page.locator(f".ds-exp-{explorer['id']}").first
    view.scroll_into_view_if_needed()
    before = _wait(lambda: (s := page.evaluate(SNAPSHOT_JS, out)) and _has_content(s) and s,
                   timeout, f"the output of explorer {explorer['title']!r} to show something")
    control = _movable(explorer)
    start = time.perf_counter()
    action = move_control(page, control)
    last = {"snapshot": None, "same": 0}

    def changed():
        snap = page.evaluate(SNAPSHOT_JS, out)
        if snap is None or not _has_content(snap) or snap == before:
            last["same"] = 0
            return None
        last["same"] = last["same"] + 1 if snap == last["snapshot"] else 0
        last["snapshot"] = snap
        return snap if last["same"] >= 2 else None  # settled: equal at three polls

    try:
        after = _wait(changed, timeout, f"the output of explorer {explorer['title']!r} to change "
                      f"after moving {control['name']!r} ({action})")
    except NotebookFailure:
        view.screenshot(path=str(screenshot.with_name(screenshot.stem + "-unchanged.png")))
        raise
    seconds = time.perf_counter() - start
    state = run_in_kernel(page, STATE_CODE, ID=explorer["id"])
    if not state["renders"] or state["renders"] <= explorer["renders"]:
        raise NotebookFailure(f"the page changed but the kernel did not redraw explorer "
                              f"{explorer['title']!r}: renders {explorer['renders']} -> "
                              f"{state['renders']}")
    if state["values"][control["name"]] == control["value"]:
        raise NotebookFailure(f"control {control['name']!r} kept its value {control['value']!r}")
    view.screenshot(path=str(screenshot))
    return {"explorer": explorer["title"], "control": control["name"], "type": control["type"],
            "action": action, "from": control["value"], "to": state["values"][control["name"]],
            "before": _digest(before), "after": _digest(after), "redraw_s": round(seconds, 2),
            "screenshot": str(screenshot)}


def check_notebook(page, server, relpath: str, artifacts: Path, run_timeout: float = 600,
                   widget_timeout: float = 60, console: list[str] | None = None) -> dict:
    """Open, run and check every explorer of one notebook; return what was measured.

    ``console`` (if given) receives the browser's console messages and page errors.
    """
    console = [] if console is None else console
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    start = time.perf_counter()
    open_notebook(page, server, relpath)
    opened = time.perf_counter()
    state = run_all(page, run_timeout)
    ran = time.perf_counter()
    for cell in state["cells"]:
        for output in cell["outputs"]:
            if output["type"] == "error" and "raises-exception" not in cell["tags"]:
                raise NotebookFailure(f"cell {cell['index'] + 1} ({cell['head']!r}) raised "
                                      f"{output['ename']}: {output['evalue']}")
    skipped = [c["index"] + 1 for c in state["cells"] if c["count"] is None and not c["empty"]]
    if skipped:
        raise NotebookFailure(f"cells {skipped} did not run")
    shown = list(dict.fromkeys(o["widget"] for c in state["cells"] for o in c["outputs"]
                               if o["widget"]))
    found = run_in_kernel(page, TAG_CODE, IDS=shown)
    for view in found["views"]:
        node = page.locator(f".ds-view-{view['id']}").first
        try:
            node.wait_for(state="visible", timeout=widget_timeout * 1000)
        except Exception as err:
            raise NotebookFailure(f"widget view {view['type']} {view['id']} did not render; "
                                  f"widget errors: {page_widget_errors(page, console)}") from err
        if node.evaluate("el => el.matches('.jupyter-widgets-error-widget') || "
                         "!!el.querySelector('.jupyter-widgets-error-widget')"):
            raise NotebookFailure(f"widget view {view['type']} {view['id']} rendered as an "
                                  f"error; widget errors: {page_widget_errors(page, console)}")
    errors = page_widget_errors(page, console)
    if errors:
        raise NotebookFailure(f"widget errors in the page: {errors}")
    if not found["explorers"]:
        raise NotebookFailure(f"the notebook shows no explorer (widget views alive: "
                              f"{found['views']})")
    stem = Path(relpath).stem
    checks = [check_explorer(page, explorer, artifacts / f"{stem}__{k}.png", widget_timeout)
              for k, explorer in enumerate(found["explorers"])]
    errors = page_widget_errors(page, console)
    if errors:
        raise NotebookFailure(f"widget errors in the page after moving controls: {errors}")
    return {"notebook": relpath, "open_s": round(opened - start, 1),
            "run_all_s": round(ran - opened, 1), "total_s": round(time.perf_counter() - start, 1),
            "views": len(found["views"]), "explorers": checks}
