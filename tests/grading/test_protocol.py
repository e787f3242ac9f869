"""The wire protocol: the grader accepts only what the harness writes, in its order, within
its caps; and no terminal escape survives."""

import json
import struct

import pytest
import torch
from deepscope.grading import protocol
from deepscope.grading.protocol import Conversation, LimitExceeded, ProtocolError
from deepscope.grading.report import spreadsheet_safe


def frame(kind: bytes, body=b"") -> bytes:
    body = json.dumps(body).encode() if isinstance(body, dict) else body
    return struct.pack(">I", len(kind + body)) + kind + body


def call(index, value=None, error=None) -> bytes:
    return frame(b"C", protocol.call_body(index, ok=value, error=error))


def talk(*frames, cells=(2, 5), calls=2, output_limit=2**20, result_limit=2**24):
    conversation = Conversation(list(cells), calls, output_limit, result_limit)
    conversation.feed_result(b"".join(frames))
    return conversation


GOOD = [frame(b"R"), frame(b"P", {"cell": 2}), frame(b"E", {"cell": 2, "type": "X",
                                                               "message": "m", "where": ""}),
        frame(b"P", {"cell": 5}), frame(b"P", {"call": 0}), call(0, torch.ones(2)),
        frame(b"P", {"call": 1}), call(1, error={"type": "E", "message": "no", "where": ""}),
        frame(b"D")]


def test_the_harness_order_is_accepted_even_byte_by_byte():
    whole = talk(*GOOD)
    assert whole.done and whole.ready and whole.cell_errors[0]["cell"] == 2
    assert torch.equal(whole.calls[0][1], torch.ones(2)) and whole.calls[1][0] == "error"
    pieces = Conversation([2, 5], 2, 2**20, 2**24)
    for byte in b"".join(GOOD):
        pieces.feed_result(bytes([byte]))
    assert pieces.done and pieces.calls[1] == whole.calls[1]


@pytest.mark.parametrize("frames, why", [
    ([frame(b"P", {"cell": 2})], "before the sandbox was ready"),
    ([frame(b"S", {"network": "forged"})], "before the sandbox was ready"),
    ([frame(b"R"), frame(b"R")], "unknown frame kind"),
    ([frame(b"R"), frame(b"S", {"isolation": "forged"})], "unknown frame kind"),
    ([frame(b"R"), frame(b"P", {"cell": 5}), frame(b"P", {"cell": 2})], "out of order"),
    ([frame(b"R"), frame(b"P", {"cell": 9})], "out of order"),
    ([frame(b"R"), frame(b"P", {"call": 1})], "out of order"),
    ([frame(b"R"), frame(b"P", {"call": 0}), frame(b"P", {"call": 1})], "out of order"),
    ([frame(b"R"), call(0, 1)], "a result out of order"),
    ([frame(b"R"), frame(b"P", {"call": 0}), call(1, 1)], "a result out of order"),
    ([frame(b"R"), frame(b"P", {"call": 0}), call(0, 1), call(0, 1)], "a result out of order"),
    ([frame(b"R"), frame(b"P", {"cell": 2}), frame(b"E", {"cell": 5})], "out of order"),
    ([frame(b"R"), frame(b"P", {"cell": 2}), frame(b"E", {"cell": 2}),
      frame(b"E", {"cell": 2})], "out of order"),
    ([frame(b"R"), frame(b"D")], "before every call returned"),
    ([*GOOD, frame(b"D")], "after 'done'"),
    ([frame(b"R"), frame(b"P", b"[" * 10000)], "not JSON"),
    ([frame(b"R"), b"\x00\x00\x00\x00"], "an empty frame"),
    ([frame(b"R"), frame(b"P", b" " * (protocol.MAX_TEXT_FRAME + 1))], "oversized"),
])
def test_anything_else_is_malformed(frames, why):
    with pytest.raises(ProtocolError, match=why):
        talk(*frames)


def test_a_setup_failure_is_the_grader_s_not_a_frame_to_forge_later():
    failed = talk(frame(b"G", b"unshare: Operation not permitted"))
    assert failed.done and not failed.ready and "unshare" in failed.setup_error
    with pytest.raises(ProtocolError):
        talk(frame(b"R"), frame(b"G", b"late"))


def test_every_byte_counts_against_the_caps():
    flood = [frame(b"R")] + [frame(b"E", {"cell": None, "message": "x" * 4000})] + \
        [frame(b"P", {"cell": 2})] * 1
    with pytest.raises(LimitExceeded) as err:
        talk(*flood, output_limit=3000)
    assert err.value.kind == "output"
    conversation = Conversation([2], 1, output_limit=100, result_limit=2**20)
    conversation.feed_output(b"x" * 60)
    with pytest.raises(LimitExceeded):
        conversation.feed_result(frame(b"R") + frame(b"P", {"cell": 2}) + frame(
            b"E", {"cell": 2, "message": "y" * 50}))
    with pytest.raises(LimitExceeded) as err:  # refused at its length prefix
        talk(frame(b"R"), b"\xff\xff\xff\xf0C", result_limit=2**20)
    assert err.value.kind == "result"


def test_results_are_checked_before_anyone_sees_them():
    def decode(header, blob=b""):
        head = json.dumps(header).encode()
        return protocol.decode_call(struct.pack(">Q", len(head)) + head + blob)

    assert decode({"index": 0, "ok": {"value": 3}}) == (0, ("ok", 3))
    for bad in ({"index": 0}, {"index": "0", "ok": {"value": 1}},
                {"index": 0, "ok": {"value": 2**70}}, {"index": 0, "ok": {"value": [1]}},
                {"index": 0, "ok": {"tensor": "0", "device": "cpu"}},
                {"index": 0, "ok": {"weird": 1}}, {"index": 0, "ok": {"value": 1}, "x": 1},
                {"index": 0, "ok": {"list": [{"value": 1}] * (protocol.MAX_NODES + 1)}}):
        with pytest.raises(ProtocolError):
            decode(bad)
    deep = {"value": 1}
    for _ in range(protocol.MAX_DEPTH + 3):
        deep = {"list": [deep]}
    with pytest.raises(ProtocolError):
        decode({"index": 0, "ok": deep})
    st_head = json.dumps({"0": {"dtype": "F32", "shape": [10**6, 10**6],
                                "data_offsets": [0, 4 * 10**12]}}).encode()
    with pytest.raises(ProtocolError):
        decode({"index": 0, "ok": {"tensor": "0", "device": "cpu"}},
               struct.pack("<Q", len(st_head)) + st_head)
    index, (kind, info) = decode({"index": 1, "error": {"type": "X", "message": "\x1b[2Jhi\r",
                                                         "where": "\u202e"}})
    assert info == {"type": "X", "message": "hi", "where": ""}
    index, (kind, value) = decode({"index": 0, "ok": {"dict": {"\x1b[31mk": {"value": "a\x07"}}}})
    assert value == {"k": "a"}


def test_clean_text_removes_what_a_terminal_would_obey():
    assert protocol.clean_text("a\x1b[31mred\x1b[0m\tb\nc\r\n") == "ared\tb\nc\n"
    assert protocol.clean_text("\x1b]0;title\x07x\x1b]8;;http://e\x1b\\y") == "xy"
    assert protocol.clean_text("\x9b31mz\x08\x00\x7f\u202edeliaf") == "zdeliaf"
    assert protocol.clean_text("x" * 50, limit=10) == "xxxxxxx..."


def test_csv_cells_cannot_be_formulas():
    assert spreadsheet_safe("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    for cell in ("+1", "-1+2", "@SUM(A1)"):
        assert spreadsheet_safe(cell) == "'" + cell
    assert spreadsheet_safe("alice.ipynb") == "alice.ipynb"
    assert spreadsheet_safe("\x1b[2J=1") == "'=1"
