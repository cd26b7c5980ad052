"""What the conversion child says is JSON checked field by field (app.sandbox
_decode_reply): a child taken over through a decoder bug must not get an object,
let alone code, of its choosing into the worker."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from app.engine.facts import ImageInfo
from app.errors import ConversionCrashed
from app.sandbox import MAX_DETAIL_CHARS, _decode_reply, _encode_reply

INFO = ImageInfo("png", 640, 480, "RGBA", 1, route="stream", decoder_bytes=12, adam7=True)


def test_each_reply_survives_the_round_trip():
    assert _decode_reply(_encode_reply(("info", INFO, 2))) == ("info", INFO, 2)
    decoded = _decode_reply(_encode_reply(("info", INFO, 0)))[1]
    assert (decoded.route, decoded.decoder_bytes, decoded.adam7) == ("stream", 12, True)
    assert _decode_reply(_encode_reply(("pdf", 1234, 5678, 0))) == ("pdf", 1234, 5678, 0)
    api = ("api", "InvalidImage", "The image could not be decoded.", 1)
    assert _decode_reply(_encode_reply(api)) == api
    assert _decode_reply(_encode_reply(("memory", 0))) == ("memory", 0)


class _Payload:
    def __reduce__(self):
        return (os.mkdir, ("/nonexistent-dir-made-by-a-pickle",))


def test_a_pickle_is_never_loaded(tmp_path):
    for raw in (pickle.dumps(("pdf", 1, 2, 0)), pickle.dumps(("info", _Payload(), 0))):
        with pytest.raises(ConversionCrashed):
            _decode_reply(raw)
    assert not os.path.exists("/nonexistent-dir-made-by-a-pickle")


def _info(**change) -> bytes:
    fields = json.loads(_encode_reply(("info", INFO, 0)))[1]
    fields.update(change)
    return json.dumps(["info", fields, 0]).encode()


@pytest.mark.parametrize(
    "raw",
    [
        _info(width=True),  # a bool is not an int
        _info(interlaced=1),  # nor an int a bool
        _info(width=-1),
        _info(width=1.5),
        _info(kind=["png"]),
        _info(extra=1),
        b'["info", {"kind": "png"}, 0]',  # fields missing
        b'["pdf", 1, 2]',  # no count
        b'["pdf", 1, -2, 0]',
        b'["pdf", "1", 2, 0]',
        b'["pdf", 1, 2, 3, 0]',
        b'["memory", 0, 0]',
        b'["api", "os.system", "x", 0]',
        b'["api", "InvalidImage", "a\\nline", 0]',
        b'["api", "InvalidImage", null, 0]',
        b'["shell", "rm -rf /", 0]',
        b'{"tag": "pdf"}',
        b"[]",
        b"not json",
        b"\xff\xfe",
    ],
)
def test_a_reply_off_the_schema_is_a_crash(raw):
    with pytest.raises(ConversionCrashed):
        _decode_reply(raw)


def test_a_detail_is_capped_at_its_last_allowed_character():
    at_cap = ("api", "InvalidImage", "x" * MAX_DETAIL_CHARS, 0)
    assert _decode_reply(_encode_reply(at_cap)) == at_cap
    with pytest.raises(ConversionCrashed):
        _decode_reply(_encode_reply(("api", "InvalidImage", "x" * (MAX_DETAIL_CHARS + 1), 0)))
