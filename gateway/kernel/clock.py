"""Wall-clock helpers: every timestamp the gateway records is an aware UTC ``datetime``.

Part of the kernel (:mod:`gateway.kernel`): imports nothing else of the project. The rule
engine's own notion of time (step-proof engine time, due timers) is ``rules.clock``; it is
given ``now`` and never reads a clock itself.
"""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["utc", "utc_iso"]


def utc(ts: datetime | float | None = None) -> datetime:
    """Return ``ts`` as an aware UTC datetime; ``None`` means now, a float is epoch seconds."""
    if ts is None:
        return datetime.now(timezone.utc)
    if isinstance(ts, (int, float)):
        return datetime.fromtimestamp(float(ts), timezone.utc)
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: timestamps must carry a UTC offset")
    return ts.astimezone(timezone.utc)


def utc_iso() -> str:
    """Now, as ISO 8601 with its ``+00:00`` offset (how the store writes its times)."""
    return datetime.now(timezone.utc).isoformat()
