"""The string catalogue on the server side: ``gateway/static/i18n.js``, the console's
catalogue, read as data (one catalogue for every text staff read, in zh-CN and English).

The file is a JavaScript object of plain ``key: "text"`` pairs per language (``zh``,
``en``); :func:`catalogue` parses exactly that and raises :class:`CatalogueError` on
anything else, so a form the parser does not take (a template string, a computed key) fails
loudly here and in the tests instead of losing words. Texts use ``{name}`` placeholders.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources

from gateway.kernel.errors import GatewayError

__all__ = ["LANGS", "CatalogueError", "catalogue", "lang_of", "text"]

#: the console's languages: the catalogue's keys, and the ``lang`` values the API accepts
LANGS = {"zh-CN": "zh", "zh": "zh", "en": "en"}

_ENTRY = re.compile(r'\s*(?:"(?P<q>[^"\\]+)"|(?P<k>[A-Za-z_$][\w$]*))\s*:\s*'
                    r'(?P<v>"(?:[^"\\\n]|\\.)*")\s*,?')
_BLOCK = re.compile(r"^\s{2}(?P<lang>[a-z]+): \{\n(?P<body>.*?)^\s{2}\},?$", re.M | re.S)
_COMMENT = re.compile(r"^\s*//.*$", re.M)


class CatalogueError(GatewayError):
    """i18n.js holds something the catalogue reader does not take."""


def parse(source: str) -> dict[str, dict[str, str]]:
    """``{"zh": {...}, "en": {...}}`` of an i18n.js text (see module docstring)."""
    out: dict[str, dict[str, str]] = {}
    for block in _BLOCK.finditer(source):
        body = _COMMENT.sub("", block["body"])
        entries: dict[str, str] = {}
        pos = 0
        while pos < len(body):
            if body[pos:].strip() == "":
                break
            m = _ENTRY.match(body, pos)
            if m is None:
                line = body[pos:].strip().splitlines()[0][:80]
                raise CatalogueError(f"i18n.js ({block['lang']}): cannot read {line!r}")
            entries[m["q"] or m["k"]] = json.loads(m["v"])
            pos = m.end()
        out[block["lang"]] = entries
    if set(out) != {"zh", "en"}:
        raise CatalogueError(f"i18n.js: languages {sorted(out)}, expected en and zh")
    return out


@functools.cache
def catalogue() -> dict[str, dict[str, str]]:
    """The parsed catalogue of the installed package (read once)."""
    src = resources.files("gateway").joinpath("static/i18n.js").read_text("utf-8")
    return parse(src)


def lang_of(value: str | None) -> str:
    """The catalogue's language for an API ``lang`` value (default zh-CN)."""
    return LANGS.get(value or "zh-CN", "zh")


def text(lang: str, key: str, default: str | None = None, **params: object) -> str:
    """The text of ``key`` in ``lang`` (``zh``/``en``; zh-CN's when English lacks it), its
    ``{name}`` placeholders filled; ``default`` (else the key) when the catalogue lacks it."""
    cat = catalogue()
    s = cat.get(lang, {}).get(key) or cat["zh"].get(key)
    if s is None:
        return key if default is None else default
    for name, value in params.items():
        s = s.replace("{" + name + "}", str(value))
    return s


def zone_label(tz: str) -> str:
    """A timezone as a spreadsheet user reads it (CSV headers, file names): its UTC offset
    now (``UTC+08:00`` for Asia/Shanghai), not the tz database's name."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    offset = datetime.now(ZoneInfo(tz)).strftime("%z")      # +0800
    return f"UTC{offset[:3]}:{offset[3:]}"
