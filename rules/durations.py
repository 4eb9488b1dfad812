"""Durations and local times of day as written in rule files, and their human rendering.

Contract:
- :func:`parse_duration` accepts ``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, compounds such as
  ``"1h30m"``, and plain non-negative numbers (seconds). Anything else raises ``ValueError``
  with a message naming the accepted forms. The result is seconds as ``float``.
- :func:`parse_time_of_day` accepts ``"HH:MM"`` (24 h) and returns minutes after midnight.
- :func:`format_duration` renders seconds as ``"9 h 20 min"`` (en) or ``"9小时20分钟"`` (zh).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Bilingual", "bilingual_duration", "format_duration", "parse_duration", "parse_time_of_day", "format_time_of_day"]

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_HHMM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_duration(text: object) -> float:
    """Seconds in ``text`` (see module contract). Raises ``ValueError`` on anything else."""
    if isinstance(text, bool):
        raise ValueError(f"duration expected, got {text!r}")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"duration must be a non-negative number of seconds, got {text!r}")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"duration expected (e.g. '90s', '5m', '2h'), got {text!r}")
    s = text.strip().lower().replace(" ", "")
    if not _WHOLE.fullmatch(s):
        raise ValueError(
            f"bad duration {text!r}: use a number with a unit s/m/h/d/w, e.g. '90s', '5m', "
            f"'2h', '1h30m'")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(s))


def parse_time_of_day(text: object) -> int:
    """Minutes after local midnight for ``"HH:MM"``; ``ValueError`` otherwise."""
    if not isinstance(text, str) or not _HHMM.fullmatch(text.strip()):
        raise ValueError(f"bad time of day {text!r}: use 24-hour 'HH:MM', e.g. '22:30'")
    h, m = text.strip().split(":")
    return int(h) * 60 + int(m)


def format_time_of_day(minutes: int) -> str:
    """``"HH:MM"`` for minutes after midnight (taken modulo one day)."""
    minutes %= 1440
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def format_duration(seconds: float, lang: str = "en") -> str:
    """Human rendering, minute resolution above one minute: ``"9 h 20 min"`` / ``"9小时20分钟"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        n = int(seconds)
        return f"{n}秒" if lang == "zh" else f"{n} s"
    total_min = int(seconds // 60)
    d, rem = divmod(total_min, 1440)
    h, m = divmod(rem, 60)
    if lang == "zh":
        parts = [f"{d}天" if d else "", f"{h}小时" if h else "", f"{m}分钟" if m else ""]
        return "".join(parts)
    parts = [f"{d} d" if d else "", f"{h} h" if h else "", f"{m} min" if m else ""]
    return " ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class Bilingual:
    """A template value that differs by language (the zh template gets ``zh``)."""

    zh: str
    en: str

    def __str__(self) -> str:
        return self.en


def bilingual_duration(seconds: float) -> Bilingual:
    return Bilingual(format_duration(seconds, "zh"), format_duration(seconds, "en"))
