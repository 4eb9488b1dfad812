"""SIA DC-09: alarm panels (Hikvision AX PRO, Ajax, DSC, Honeywell ...) reporting over IP.

- ``dc09``: one frame judged and answered on pysiaalarm (framing, CRC-16/ARC, AES-CBC per
  account, the timestamp window, ACK/NAK), events mapped to readings through the Contact ID
  receiver's table (:data:`drivers.codecs.contact_id.EVENT_KINDS`);
- ``receiver``: :class:`SiaReceiver`, the TCP/UDP listener of one ``dc09_receivers`` entry of
  gateway.yaml (ACK after the durable commit, refusals counted, panels supervised);
- here: :func:`account_key`, an account's AES key from its secret reference, and
  :func:`decode_capture` for ``gateway profile test``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from drivers import DecodeError
from drivers.sia.dc09 import Dc09Frame, event_reading, parse_frame
from drivers.sia.receiver import Dc09Account, Dc09Device, ReceiverSettings, SiaReceiver
from gateway.kernel.errors import ConfigError
from gateway.kernel.model import utc

__all__ = ["Dc09Account", "Dc09Device", "Dc09Frame", "ReceiverSettings", "SiaReceiver",
           "account_key", "decode_capture", "looks_like_dc09", "parse_frame"]

_KEY_BYTES = (16, 24, 32)


def account_key(ref: Any, key_format: str, site_dir: Path, where: str) -> bytes:
    """The AES key of ``ref`` (an ``edge_config`` ``SecretRef``: ``secret_env`` or
    ``secret_file``, relative to the site directory) as bytes; ``ConfigError`` naming
    ``where`` (``gateway.yaml: dc09_receivers[...]...key``) when it is missing or is not a
    key: ``text`` 16/24/32 ASCII characters, ``hex`` 32/48/64 hex digits."""
    if ref.secret_env:
        value = os.environ.get(ref.secret_env, "")
        if not value:
            raise ConfigError([f"{where}.secret_env: environment variable {ref.secret_env} "
                               "is not set"])
        source = f"{where}.secret_env ({ref.secret_env})"
    else:
        path = Path(ref.secret_file)
        if not path.is_absolute():
            path = site_dir / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise ConfigError([f"{where}.secret_file: cannot read {path}: {why}"]) from None
        source = f"{where}.secret_file ({path})"
    if key_format == "hex":
        try:
            key = bytes.fromhex(value)
        except ValueError:
            key = b""
        if len(key) not in _KEY_BYTES:
            raise ConfigError([f"{source}: key_format hex needs 32, 48 or 64 hex digits, "
                               f"got {len(value)} characters"])
        return key
    if not value.isascii() or len(value) not in _KEY_BYTES:
        raise ConfigError([f"{source}: key_format text needs 16, 24 or 32 ASCII characters, "
                           f"got {len(value)}"])
    return value.encode("ascii")


def looks_like_dc09(raw: bytes) -> bool:
    """A capture of DC-09 frames (rather than Contact ID receiver lines)."""
    return b'"' in raw and any(t in raw for t in (b'ADM-CID"', b'SIA-DCS"', b'NULL"'))


def decode_capture(raw: bytes, key: bytes | None, device_id: str
                   ) -> tuple[list[dict[str, Any]], list[DecodeError]]:
    """``gateway profile test`` on captured DC-09 frames (one per line, or each ended by CR):
    one output line per frame (its account, type, sequence, timestamp, event and the
    reading it gives), problems naming the frame. The timestamp window is not applied (a
    capture is old); encrypted frames are decrypted with ``key``."""
    lines: list[dict[str, Any]] = []
    problems: list[DecodeError] = []
    frames = [f.strip(b"\n\r\x00 ") for f in raw.replace(b"\r", b"\n").split(b"\n")]
    for n, fr in enumerate((f for f in frames if f), 1):
        where = f"frame {n}"
        probe = parse_frame(fr, {}, check_time=False)
        f = parse_frame(fr, {probe.account: key if probe.encrypted else None},
                        check_time=False)
        if not f.ok:
            answer = f.answer[9:f.answer.index(b'"', 10) + 1].decode("ascii", "replace")
            problems.append(DecodeError(f.reason, f"{f.detail} (answered {answer})",
                                        where=f"{where} account {f.account or '?'}"))
            continue
        out: dict[str, Any] = {"frame": n, "account": f.account, "type": f.message_type,
                               "sequence": f.sequence, "encrypted": f.encrypted,
                               "timestamp": f.timestamp.isoformat() if f.timestamp else None}
        if f.event is None:
            lines.append({**out, "metric": "availability", "value": True,
                          "kind": "availability", "unit": "", "quality": "good"})
            continue
        out["event"] = f.event.label
        try:
            r = event_reading(f.event, device_id=device_id, ts=utc())
        except DecodeError as exc:
            problems.append(DecodeError(exc.reason, exc.detail, where=f"{where} account "
                                        f"{f.account}"))
            continue
        lines.append({**out, "metric": r.metric, "value": r.value, "unit": r.unit,
                      "kind": r.kind.value, "quality": r.quality.value})
    if not lines and not problems:
        raise DecodeError("truncated", "no DC-09 frame in the capture", where="input")
    return lines, problems
