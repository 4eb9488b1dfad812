"""Packing numpy arrays into JSON-safe snapshot values and back, keyed by ids.

Contract: ``pack(ids, {name: array})`` stores the ids and each array (first axis = ids) as
base64 of its raw bytes with dtype and shape; ``unpack(saved, ids, {name: array})`` copies the
saved rows into the given arrays for the ids present in both (ids that are new keep their
initial values, ids that disappeared are dropped).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["pack", "unpack"]


def pack(ids: Sequence[str], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {"ids": list(ids),
            "arrays": {name: {"dtype": a.dtype.str, "shape": list(a.shape),
                              "b64": base64.b64encode(np.ascontiguousarray(a).tobytes())
                              .decode("ascii")}
                       for name, a in arrays.items()}}


def unpack(saved: dict[str, Any], ids: Sequence[str],
           arrays: Mapping[str, np.ndarray]) -> None:
    pos = {i: n for n, i in enumerate(saved["ids"])}
    pairs = [(n, pos[i]) for n, i in enumerate(ids) if i in pos]
    if not pairs:
        return
    dst = np.fromiter((a for a, _ in pairs), dtype=np.int64, count=len(pairs))
    src = np.fromiter((b for _, b in pairs), dtype=np.int64, count=len(pairs))
    for name, target in arrays.items():
        d = saved["arrays"].get(name)
        if d is None:
            continue
        a = np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"]))
        a = a.reshape(d["shape"])
        if a.shape[1:] == target.shape[1:]:
            target[dst] = a[src]
