"""A fast reader of site files: libyaml's C parser with YAML 1.2 scalars, as ruamel reads them.

ruamel's round-trip loader, which keeps every node's line for ``FILE:LINE`` errors, is pure
Python: devices.yaml and site.yaml of a community of 1,000 households (5,683 devices) took
about 11 s of a gateway's start, 10,000 households minutes (docs/benchmarks.md, "ready").
A site that starts is almost always a valid one, so :func:`edge_config.loader.load_site`
reads it with :func:`load_plain` first and keeps ruamel for a site with a problem, whose
errors need the lines.

:func:`load_plain` gives the plain dicts, lists and scalars ruamel gives for the same text
(``edge_config.loader.plain`` of its tree), YAML 1.2 core schema: ``yes``/``on`` are strings,
``010`` is ten, ``22:00`` a string, ``1_000`` a thousand, dates are dates. What it cannot
promise to read the same way it refuses with :class:`FastYamlError` (the caller then reads
the file with ruamel): no libyaml, a syntax error, a duplicate key (ruamel refuses it), an
explicit tag, a non-string key, a merge key (``<<``), a time of day with a date.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.kernel.errors import GatewayError

__all__ = ["AVAILABLE", "FastYamlError", "TreeCache", "load_plain"]

#: libyaml is there (PyYAML built with it); without it :func:`load_plain` always refuses
AVAILABLE = hasattr(yaml, "CSafeLoader")


class FastYamlError(GatewayError, ValueError):
    """The fast reader cannot promise ruamel's reading of this text: read it with ruamel."""


# YAML 1.2 implicit scalars as ruamel's VersionedResolver has them for version 1.2
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_FLOAT = re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0o?[0-7_]+
    |[-+]?[0-9_]+
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_TIMESTAMP = re.compile(r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
    |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
    (?:[Tt]|[ \t]+)[0-9][0-9]?
    :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
    (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""", re.X)
_TAG = "tag:yaml.org,2002:"

if AVAILABLE:
    class _Loader(yaml.CSafeLoader):
        """C parser, ruamel's YAML 1.2 resolution, refusals instead of guesses."""

        yaml_implicit_resolvers: dict = {}
        yaml_constructors = dict(yaml.CSafeLoader.yaml_constructors)

    for _tag, _rx, _first in (("bool", _BOOL, "tTfF"), ("float", _FLOAT, "-+0123456789."),
                              ("int", _INT, "-+0123456789"), ("null", _NULL, ["~", "n", "N", ""]),
                              ("timestamp", _TIMESTAMP, "0123456789")):
        _Loader.add_implicit_resolver(_TAG + _tag, _rx, list(_first))

    def _int(loader: Any, node: Any) -> int:
        text = loader.construct_scalar(node).replace("_", "")
        sign = -1 if text.startswith("-") else 1
        text = text.lstrip("+-")
        for prefix, base in (("0b", 2), ("0o", 8), ("0x", 16)):
            if text.startswith(prefix):
                return sign * int(text[2:], base)
        return sign * int(text, 10)

    def _float(loader: Any, node: Any) -> float:
        text = loader.construct_scalar(node).replace("_", "").lower()
        if text.endswith(".inf"):
            return -math.inf if text.startswith("-") else math.inf
        if text == ".nan":
            return math.nan
        return float(text)

    def _mapping(loader: Any, node: Any) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                raise FastYamlError("a merge key (<<)")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise FastYamlError(f"a key that is not a string: {key!r}")
            if key in out:
                raise FastYamlError(f"duplicate key {key!r}")
            out[key] = loader.construct_object(value_node, deep=True)
        return out

    def _refuse(_loader: Any, node: Any) -> None:
        raise FastYamlError(f"tag {node.tag}")

    def _timestamp(loader: Any, node: Any) -> Any:
        value = yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
        if type(value).__name__ != "date":   # ruamel's times differ in their zone handling
            raise FastYamlError(f"a time: {node.value}")
        return value

    _Loader.add_implicit_resolver(_TAG + "merge", re.compile(r"^(?:<<)$"), ["<"])
    _Loader.add_constructor(_TAG + "int", _int)
    _Loader.add_constructor(_TAG + "timestamp", _timestamp)
    _Loader.add_constructor(_TAG + "float", _float)
    _Loader.add_constructor(_TAG + "map", _mapping)
    _Loader.add_constructor(None, _refuse)   # any other explicit tag
    for _tag in ("omap", "pairs", "set", "binary"):
        _Loader.add_constructor(_TAG + _tag, _refuse)


def load_plain(text: str) -> Any:
    """``text`` as plain Python data, read as ruamel reads it; :class:`FastYamlError` when
    that cannot be promised (see the module docstring)."""
    if not AVAILABLE:
        raise FastYamlError("PyYAML without libyaml")
    try:
        return yaml.load(text, Loader=_Loader)   # noqa: S506 - a safe loader (CSafeLoader's)
    except yaml.YAMLError as exc:
        raise FastYamlError(str(exc)) from None


class TreeCache:
    """The plain trees of site files read before, by the SHA-256 of their bytes, in one JSON
    file (the gateway's data directory): a start after a power cut reads a site that did not
    change as JSON (C speed) instead of YAML. A file whose tree JSON cannot carry exactly
    (a date) is not cached. Saved with a temporary file and a rename; a cache that cannot be
    read or written is ignored (the site is read as without it)."""

    VERSION = 1

    def __init__(self, path: Path):
        self.path = path
        self._files: dict[str, dict[str, Any]] = {}
        self._changed = False
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("version") == self.VERSION and isinstance(doc.get("files"), dict):
                self._files = doc["files"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass

    @staticmethod
    def holds(tree: Any) -> bool:
        """Whether the cache can hold ``tree`` (JSON gives it back as it is)."""
        return _jsonable(tree)

    def holds_tree(self, name: str, tree: Any) -> bool:
        """Whether ``tree`` is the very tree held for ``name`` (got or put: plain data)."""
        entry = self._files.get(name)
        return isinstance(entry, dict) and entry.get("tree") is tree

    def get(self, name: str, data: bytes) -> Any | None:
        entry = self._files.get(name)    # (a file written by hand: anything unexpected misses)
        if isinstance(entry, dict) and entry.get("sha256") == hashlib.sha256(data).hexdigest():
            return entry.get("tree")
        return None

    def put(self, name: str, data: bytes, tree: Any) -> None:
        if _jsonable(tree):
            self._files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "tree": tree}
            self._changed = True

    def save(self) -> None:
        if not self._changed or not self.path.parent.is_dir():
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"version": self.VERSION, "files": self._files},
                                      ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.path)
            self._changed = False
        except OSError:
            pass


def _jsonable(node: Any) -> bool:
    """True when JSON gives ``node`` back as it is (str keys, finite numbers, no dates)."""
    if isinstance(node, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in node.items())
    if isinstance(node, list):
        return all(_jsonable(v) for v in node)
    if isinstance(node, float):
        return math.isfinite(node)
    return node is None or isinstance(node, (str, int))
