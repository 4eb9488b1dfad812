"""HMAC request signing, shared by the case-system client, its simulator and the gateway's
callback endpoint (stdlib only: ``hmac`` + ``hashlib``).

Scheme ``CEG-HMAC-SHA256`` (the normative text is docs/case-system.md, section "Signing"):

- ``X-Key-Id``: which shared secret signed the request (lets a receiver hold two during a
  rotation).
- ``X-Timestamp``: unix seconds, a decimal integer.
- ``X-Signature``: 64 lowercase hex digits, ``HMAC-SHA256(secret, string_to_sign)`` where::

      string_to_sign = "CEG-HMAC-SHA256\\n" + key_id + "\\n" + timestamp + "\\n"
                       + METHOD + "\\n" + target + "\\n" + hex(SHA-256(body))

  ``METHOD`` is upper case; ``target`` is the request target exactly as on the request line
  (percent-encoded path, plus ``?`` and the raw query string when there is one); ``body``
  is the raw body bytes (empty for a GET). Hashing the body keeps the string unambiguous
  whatever the body holds.

The receiver rejects, in this order: a missing header (``missing_header``), an unknown key id
(``unknown_key``), a malformed timestamp (``bad_timestamp``), a timestamp more than the replay
window away from its clock in either direction (``stale_timestamp``), a wrong signature
(``bad_signature``). Signatures are compared in constant time.

Secrets are held in :class:`Secret`, whose ``repr``/``str`` never show the value.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import string
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote

from gateway import GatewayError

__all__ = [
    "DEFAULT_WINDOW_S",
    "HEADER_KEY_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SCHEME",
    "Secret",
    "SignatureError",
    "Verifier",
    "asgi_target",
    "sign",
    "signed_headers",
    "string_to_sign",
]

SCHEME = "CEG-HMAC-SHA256"
HEADER_KEY_ID = "X-Key-Id"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_SIGNATURE = "X-Signature"
#: Default replay window, seconds, either side of the receiver's clock.
DEFAULT_WINDOW_S = 300

_MIN_SECRET_BYTES = 16
_HEX = frozenset(string.hexdigits.lower())


class Secret:
    """A shared HMAC secret that does not leak through ``repr``, ``str`` or logging.

    Raises ``ValueError`` when the value is shorter than 16 bytes (after stripping
    surrounding whitespace, so a trailing newline in a secret file does not count).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        raw = raw.strip()
        if len(raw) < _MIN_SECRET_BYTES:
            raise ValueError(f"secret too short: at least {_MIN_SECRET_BYTES} bytes required")
        self._value = raw

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Secret:
        """Read a secret from a file (surrounding whitespace stripped)."""
        with open(path, "rb") as f:
            return cls(f.read())

    def reveal(self) -> bytes:
        """The raw secret bytes: for computing a MAC, never for printing."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple:  # a pickled secret would end up in a file or a log
        raise TypeError("Secret cannot be pickled")


class SignatureError(GatewayError):
    """A request failed verification; ``reason`` is one of the codes in the module docstring."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def string_to_sign(key_id: str, timestamp: str, method: str, target: str, body: bytes) -> bytes:
    """The exact bytes that are MACed (see the module docstring)."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((SCHEME, key_id, timestamp, method.upper(), target, digest)).encode()


def sign(secret: Secret, key_id: str, timestamp: str, method: str, target: str,
         body: bytes) -> str:
    """Hex HMAC-SHA256 of :func:`string_to_sign` under ``secret``."""
    msg = string_to_sign(key_id, timestamp, method, target, body)
    return hmac.new(secret.reveal(), msg, hashlib.sha256).hexdigest()


def signed_headers(key_id: str, secret: Secret, method: str, target: str, body: bytes, *,
                   now: float | None = None) -> dict[str, str]:
    """The three signing headers for one request; ``now`` is unix seconds (default: now)."""
    ts = str(int(time.time() if now is None else now))
    return {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: ts,
        HEADER_SIGNATURE: sign(secret, key_id, ts, method, target, body),
    }


def asgi_target(scope: Mapping[str, object]) -> str:
    """The request target of an ASGI HTTP scope as it was on the request line (raw path,
    then ``?`` and the raw query string when there is one): what a receiver verifies."""
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes):  # servers may omit raw_path; re-encode the decoded path
        raw = quote(str(scope.get("path", "/")), safe="/:@!$&'()*+,;=-._~").encode()
    query = scope.get("query_string")
    if isinstance(query, bytes) and query:
        raw += b"?" + query
    return raw.decode("latin-1")


class Verifier:
    """Checks the signing headers of incoming requests.

    ``keys`` maps key id to secret; ``window_s`` is the replay window either side of
    ``clock()`` (unix seconds). :meth:`verify` returns the key id or raises
    :class:`SignatureError`.
    """

    __slots__ = ("_keys", "_window_s", "_clock")

    def __init__(self, keys: Mapping[str, Secret], *, window_s: float = DEFAULT_WINDOW_S,
                 clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("a verifier needs at least one key")
        if window_s <= 0:
            raise ValueError(f"replay window must be positive, got {window_s!r}")
        self._keys = dict(keys)
        self._window_s = float(window_s)
        self._clock = clock

    def __repr__(self) -> str:
        return f"Verifier(key_ids={sorted(self._keys)!r}, window_s={self._window_s})"

    def verify(self, method: str, target: str, body: bytes,
               headers: Mapping[str, str]) -> str:
        """Verify one request; ``headers`` may use any letter case for the names."""
        lower = {k.lower(): v for k, v in headers.items()}
        values = []
        for name in (HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE):
            value = lower.get(name.lower(), "").strip()
            if not value:
                raise SignatureError("missing_header", f"{name} header is required")
            values.append(value)
        key_id, ts, given = values
        secret = self._keys.get(key_id)
        if secret is None:
            raise SignatureError("unknown_key", "X-Key-Id is not a known key id")
        if not (ts.isascii() and ts.isdigit() and len(ts) <= 12):
            raise SignatureError("bad_timestamp", "X-Timestamp must be integer unix seconds")
        skew = self._clock() - int(ts)
        if abs(skew) > self._window_s:
            raise SignatureError(
                "stale_timestamp",
                f"X-Timestamp is {skew:+.0f} s from the receiver's clock "
                f"(window {self._window_s:.0f} s)")
        given = given.lower()
        expected = sign(secret, key_id, ts, method, target, body)
        if not (len(given) == 64 and set(given) <= _HEX
                and hmac.compare_digest(expected.encode(), given.encode())):
            raise SignatureError("bad_signature", "X-Signature does not match the request")
        return key_id
