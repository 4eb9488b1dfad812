"""The rule engine's snapshot in ``meta``: xz-compressed JSON (issue 18, "day": half the
bytes of zlib's level 1 for a 5,000-device site), and snapshots of earlier stores — zlib
bytes, plain JSON text — still read."""

from __future__ import annotations

import json
import zlib

from gateway.pipeline import decode_snapshot, encode_snapshot


def test_snapshots_of_every_encoding_are_read() -> None:
    snap = {"version": 1, "streams": [["motion-1", "motion", 1796574935.031164, False]],
            "rules": {"r": {"kind": "inactivity", "state": {"ids": ["h-1"] * 50}}}}
    blob = encode_snapshot(snap)
    assert blob.startswith(b"\xfd7zXZ\x00") and decode_snapshot(blob) == snap
    text = json.dumps(snap)
    assert decode_snapshot(zlib.compress(text.encode(), 1)) == snap
    assert decode_snapshot(text) == snap
