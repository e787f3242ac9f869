"""The wire protocol between the grader and one sandboxed question, and the grader's checks of
everything that comes back.

The sandbox's harness (`_child`) writes *frames* to a pipe: a 4-byte big-endian length, then a
payload made of one kind byte and a body. Only the harness writes before the student's code
runs; once it runs, the student's code can write anything to that pipe. So the grader trusts
nothing after the first frame: `Conversation` accepts frames only in the order the harness sends
them, only of the expected kinds and sizes, and counts every byte of every frame (and of the
printed output) against the question's caps. Nothing a frame says changes a time limit, the
report's ``sandbox`` field, a timing or a problem text: the grader writes those itself.

Order of frames (anything else is malformed, and the grader stops the question):

    R                         ready: isolation applied, job loaded; the time limit starts now
  | G text                    the sandbox could not be set up (the grader's failure, not the
                              student's); the child ends
    P {"cell": k}  [E {...}]  for each answer cell, in order: about to run it; its top-level error
    P {"call": i}  C body     for each call, in order: about to call; its outputs or its error
    D                         done

An ``E`` frame with ``"cell": null`` (an error of the harness itself) may come once, anywhere.
A ``C`` body is an 8-byte big-endian header length, a JSON header ``{"index": i, "ok": value}``
or ``{"index": i, "error": {"type", "message", "where"}}``, then a safetensors blob holding the
value's tensors. `decode_call` turns it back into tensors, arrays and plain numbers, refusing
anything deeper, larger or of another kind than `encode` produces.

Everything text-like that came from the sandbox passes through `clean_text`: no terminal escape
sequence, control character or bidirectional override reaches a teacher's screen.

This module is loaded by file path inside the sandbox too (no ``deepscope`` import there), so
it imports only the standard library, NumPy, torch and safetensors.
"""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import torch
from safetensors.torch import load as _load_tensors
from safetensors.torch import save as _save_tensors

#: Caps on what one frame may hold.
MAX_TEXT_FRAME = 16 * 2**10
MAX_HEADER = 2**20
MAX_MESSAGE = 4000
MAX_DEPTH = 6
MAX_NODES = 10_000
MAX_TENSORS = 512
_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}


class ProtocolError(ValueError):
    """The child wrote something the harness never writes (the question is stopped)."""


class LimitExceeded(ValueError):
    """The child sent more than a cap allows; ``kind`` is ``"output"`` or ``"result"``."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


# ---------------------------------------------------------------------------------------------
# Text hygiene

_ESCAPES = re.compile(r"""
      \x1b\[[0-?]*[ -/]*[@-~]?              # CSI: colours, cursor moves, screen clears
    | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?    # OSC: window titles, hyperlinks
    | \x1b[PX^_][^\x1b]*(?:\x1b\\)?         # DCS, SOS, PM, APC strings
    | \x1b.?                                # any other escape
    | \x9b[0-?]*[ -/]*[@-~]?                # 8-bit CSI
""", re.VERBOSE)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(text, limit: int | None = MAX_MESSAGE) -> str:
    """Return ``text`` without terminal escape sequences, control characters (newlines and tabs
    stay) or bidirectional overrides, cut to ``limit`` characters."""
    text = str(text)
    if limit is not None:
        text = text[: 4 * limit]  # escapes removed below may shorten it
    text = _CONTROLS.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n")))
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


# ---------------------------------------------------------------------------------------------
# The child's side: writing frames and encoding returned values


class Channel:
    """Frames written straight to a file descriptor (no pickling, no buffering)."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, kind: bytes, body: bytes = b"") -> None:
        payload = kind + body
        view = memoryview(struct.pack(">I", len(payload)) + payload)
        while view:
            view = view[os.write(self.fd, view):]

    def send_json(self, kind: bytes, obj) -> None:
        self.send(kind, json.dumps(obj).encode())


def encode(value, tensors: dict, depth: int = 0):
    """Turn a returned value into a JSON-able tree; tensors go into ``tensors`` (on the CPU).

    Tensors keep their dtype; their device is recorded so the grader can check that it was
    kept. NumPy arrays become tensors (marked as such); anything else is named, not sent.
    """
    if depth > MAX_DEPTH:
        raise ValueError("the returned value is nested too deeply")
    if isinstance(value, torch.Tensor):
        if len(tensors) >= MAX_TENSORS:
            raise ValueError(f"the returned value holds more than {MAX_TENSORS} tensors")
        key = str(len(tensors))
        tensor = torch.Tensor.detach(value)
        device = str(tensor.device)
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        tensors[key] = tensor.to("cpu").contiguous().clone()
        return {"tensor": key, "device": device}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError("the returned NumPy array has dtype object")
        key = str(len(tensors))
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value)).clone()
        return {"tensor": key, "device": "numpy"}
    if value is None or isinstance(value, bool):
        return {"value": value}
    if isinstance(value, str):
        return {"value": value[:MAX_MESSAGE]}
    if isinstance(value, (int, np.integer)):
        return {"value": int(value)} if -2**63 <= int(value) < 2**63 else {"value": float(value)}
    if isinstance(value, (float, np.floating)):
        return {"value": float(value)}
    if isinstance(value, (tuple, list)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [encode(v, tensors, depth + 1) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("a returned dict must have string keys")
        return {"dict": {k: encode(v, tensors, depth + 1) for k, v in value.items()}}
    return {"unsupported": type(value).__name__}


def call_body(index: int, ok=None, error: dict | None = None) -> bytes:
    """Return the body of a ``C`` frame: call ``index`` returned ``ok`` or raised ``error``."""
    blob = b""
    if error is None:
        tensors: dict = {}
        header = {"index": index, "ok": encode(ok, tensors)}
        blob = _save_tensors(tensors) if tensors else b""
    else:
        header = {"index": index, "error": error}
    head = json.dumps(header).encode()
    return struct.pack(">Q", len(head)) + head + blob


# ---------------------------------------------------------------------------------------------
# The grader's side: cutting, ordering and decoding frames


class Unsupported:
    """A returned value of a type the grader does not transport (its type name is kept)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<a {self.type_name}>"


def _json(body: bytes, what: str):
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:
        raise ProtocolError(f"{what} is not JSON") from err


def _tensors(blob: bytes) -> dict:
    """Load a safetensors blob after checking its header: known dtypes, bounded count."""
    if not blob:
        return {}
    if len(blob) < 8:
        raise ProtocolError("truncated tensors")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > min(MAX_HEADER, len(blob) - 8):
        raise ProtocolError("tensor header too large")
    header = _json(blob[8:8 + size], "the tensor header")
    if not isinstance(header, dict) or len(header) > MAX_TENSORS + 1:
        raise ProtocolError("malformed tensor header")
    for name, info in header.items():
        if name != "__metadata__" and (not isinstance(info, dict)
                                       or info.get("dtype") not in _DTYPES):
            raise ProtocolError("a tensor of an unexpected dtype")
    try:
        return _load_tensors(blob)
    except Exception as err:  # noqa: BLE001 - safetensors rejects inconsistent offsets
        raise ProtocolError("inconsistent tensors") from err


def _value(node, tensors: dict, device_ok, budget: list, depth: int = 0):
    """Rebuild one node of `encode`'s tree, refusing anything `encode` never writes."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH + 1 or not isinstance(node, dict) or len(node) != (
            2 if "tensor" in node else 1):
        raise ProtocolError("malformed value")
    if "tensor" in node:
        tensor = tensors.get(node["tensor"]) if isinstance(node["tensor"], str) else None
        device = node.get("device")
        if tensor is None or not isinstance(device, str):
            raise ProtocolError("malformed tensor reference")
        if device == "numpy":
            return tensor.numpy()
        if device != "cpu" and device_ok(device):
            tensor = tensor.to(device)
        return tensor
    (kind, content), = node.items()
    if kind == "value":
        if content is None or isinstance(content, (bool, float)):
            return content
        if isinstance(content, int) and -2**63 <= content < 2**63:
            return content
        if isinstance(content, str) and len(content) <= MAX_MESSAGE:
            return clean_text(content)
        raise ProtocolError("malformed scalar")
    if kind in ("tuple", "list") and isinstance(content, list):
        items = [_value(v, tensors, device_ok, budget, depth + 1) for v in content]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict" and isinstance(content, dict):
        return {clean_text(k, 200): _value(v, tensors, device_ok, budget, depth + 1)
                for k, v in content.items()}
    if kind == "unsupported" and isinstance(content, str):
        return Unsupported(clean_text(content, 100))
    raise ProtocolError("malformed value")


def decode_call(body: bytes, device_ok=lambda device: False):
    """Decode a ``C`` frame body into ``(index, ("ok", value) | ("error", info))``.

    ``device_ok(name)`` says whether a tensor may be put back on the device it came from.
    Raises `ProtocolError` for anything `call_body` would not have written.
    """
    if len(body) < 8:
        raise ProtocolError("truncated result")
    (size,) = struct.unpack(">Q", body[:8])
    if size > min(MAX_HEADER, len(body) - 8):
        raise ProtocolError("result header too large")
    header = _json(body[8:8 + size], "the result header")
    if not isinstance(header, dict) or not isinstance(header.get("index"), int) \
            or len(header) != 2:
        raise ProtocolError("malformed result header")
    index = header["index"]
    if "error" in header:
        info = header["error"]
        if not isinstance(info, dict):
            raise ProtocolError("malformed error")
        return index, ("error", {k: clean_text(info.get(k, "")) for k in
                                 ("type", "message", "where")})
    if "ok" not in header:
        raise ProtocolError("malformed result header")
    tensors = _tensors(body[8 + size:])
    return index, ("ok", _value(header["ok"], tensors, device_ok, [MAX_NODES]))


class Conversation:
    """Everything one question's child sent, checked frame by frame as it arrives.

    Args:
        cells: the numbers of the answer cells the job runs, in order.
        calls: how many calls of the graded function the job makes.
        output_limit: bytes of printed output *and* of non-result frames together.
        result_limit: bytes of everything on the result pipe.
        device_ok: see `decode_call`.
    """

    def __init__(self, cells: list[int], calls: int, output_limit: int, result_limit: int,
                 device_ok=lambda device: False):
        self.cells, self.output_limit, self.result_limit = list(cells), output_limit, result_limit
        self.device_ok = device_ok
        self.calls: list = [None] * calls
        self.cell_errors: list[dict] = []
        self.ready = self.done = False
        self.setup_error = ""
        self.stage: tuple = ("start", None)
        self.output = bytearray()
        self.text_bytes = self.result_bytes = 0
        self._buffer = bytearray()
        self._harness_error = False

    # -- bytes in

    def feed_output(self, data: bytes) -> None:
        """Count printed output; keep its end for the report."""
        self.text_bytes += len(data)
        self.output += data
        del self.output[:-4096]
        if self.text_bytes > self.output_limit:
            raise LimitExceeded("output")

    def feed_result(self, data: bytes) -> None:
        """Cut frames from the result pipe and check each; raise on the first bad one."""
        self.result_bytes += len(data)
        if self.result_bytes > self.result_limit:
            raise LimitExceeded("result")
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = struct.unpack(">I", self._buffer[:4])
            if length == 0:
                raise ProtocolError("an empty frame")
            if length > self.result_limit:  # refused at its length: nothing is buffered
                raise LimitExceeded("result")
            if self._buffer[4:5] != b"C" and length > MAX_TEXT_FRAME:
                raise ProtocolError("an oversized frame")
            if len(self._buffer) < 4 + length:
                return
            frame = bytes(self._buffer[4:4 + length])
            del self._buffer[:4 + length]
            self._accept(frame[:1], frame[1:])

    # -- the order of frames

    def _accept(self, kind: bytes, body: bytes) -> None:
        if self.done:
            raise ProtocolError("a frame after 'done'")
        if kind != b"C":
            self.text_bytes += len(body)
            if self.text_bytes > self.output_limit:
                raise LimitExceeded("output")
        if not self.ready:
            if kind == b"R" and not body:
                self.ready = True
            elif kind == b"G":
                self.setup_error = clean_text(body.decode("utf-8", "replace"))
                self.done = True
            else:
                raise ProtocolError("a frame before the sandbox was ready")
            return
        stage, where = self.stage
        if kind == b"P":
            self.stage = self._next_stage(_json(body, "a progress frame"))
        elif kind == b"E":
            info = _json(body, "an error frame")
            if not isinstance(info, dict):
                raise ProtocolError("malformed error frame")
            cell = info.get("cell")
            if cell is None and not self._harness_error:
                self._harness_error = True
            elif stage != "cell" or cell != where or any(
                    e["cell"] == cell for e in self.cell_errors):
                raise ProtocolError("an error frame out of order")
            self.cell_errors.append({"cell": cell, **{k: clean_text(info.get(k, "")) for k in
                                                      ("type", "message", "where")}})
        elif kind == b"C":
            index, value = decode_call(body, self.device_ok)
            if stage != "call" or index != where or self.calls[index] is not None:
                raise ProtocolError("a result out of order")
            self.calls[index] = value
        elif kind == b"D" and not body:
            if any(c is None for c in self.calls):
                raise ProtocolError("'done' before every call returned")
            self.done = True
        else:
            raise ProtocolError(f"an unknown frame kind {kind!r}")

    def _next_stage(self, info) -> tuple:
        """Check a progress frame against the job: cells in order, then calls in order."""
        stage, where = self.stage
        if isinstance(info, dict) and list(info) == ["cell"] and info["cell"] in self.cells:
            position = self.cells.index(info["cell"])
            if stage == "start" or (stage == "cell" and position > self.cells.index(where)):
                return ("cell", info["cell"])
        if isinstance(info, dict) and list(info) == ["call"] and isinstance(info["call"], int):
            expected = 0 if stage in ("start", "cell") else where + 1
            if info["call"] == expected < len(self.calls) and (
                    stage != "call" or self.calls[where] is not None):
                return ("call", expected)
        raise ProtocolError("a progress frame out of order")
