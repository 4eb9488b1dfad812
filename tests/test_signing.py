"""Unit tests of the CEG-HMAC-SHA256 request signing (gateway.uplink.signing)."""

from __future__ import annotations

import hashlib
import hmac
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.uplink.signing import (Secret, SignatureError, Verifier, asgi_target, sign,
                                    signed_headers, string_to_sign)

SECRET = Secret("0123456789abcdef-test-secret")
NOW = 1_700_000_000.0


def verifier(window_s: float = 300) -> Verifier:
    return Verifier({"gw-1": SECRET}, window_s=window_s, clock=lambda: NOW)


def headers(method: str = "POST", target: str = "/api/v1/cases", body: bytes = b"{}",
            now: float = NOW, key_id: str = "gw-1", secret: Secret = SECRET) -> dict[str, str]:
    return signed_headers(key_id, secret, method, target, body, now=now)


def reason(method: str, target: str, body: bytes, hdrs: dict[str, str]) -> str:
    with pytest.raises(SignatureError) as exc:
        verifier().verify(method, target, body, hdrs)
    return exc.value.reason


def test_signature_is_hmac_of_the_documented_string() -> None:
    body = b'{"a":1}'
    expected_msg = ("CEG-HMAC-SHA256\ngw-1\n1700000000\nPOST\n/api/v1/cases?x=1\n"
                    + hashlib.sha256(body).hexdigest()).encode()
    assert string_to_sign("gw-1", "1700000000", "post", "/api/v1/cases?x=1", body) == expected_msg
    assert sign(SECRET, "gw-1", "1700000000", "POST", "/api/v1/cases?x=1", body) == hmac.new(
        SECRET.reveal(), expected_msg, hashlib.sha256).hexdigest()


def test_documented_vector() -> None:
    """The worked example in docs/case-system.md, section 2."""
    assert sign(Secret("test-secret-0123456789abcdef"), "gw-1", "1700000000", "POST",
                "/api/v1/cases", b"{}") == (
        "6f3e92b394920d37df83cda11931ca9f2c0d292fa16f79e65e314158073f9d4c")


def test_roundtrip_returns_key_id_and_header_names_are_case_insensitive() -> None:
    h = {k.lower(): v for k, v in headers().items()}
    assert verifier().verify("POST", "/api/v1/cases", b"{}", h) == "gw-1"


@pytest.mark.parametrize(("method", "target", "body"), [
    ("PUT", "/api/v1/cases", b"{}"),
    ("POST", "/api/v1/cases/x", b"{}"),
    ("POST", "/api/v1/cases?y=1", b"{}"),
    ("POST", "/api/v1/cases", b"{} "),
])
def test_any_change_to_the_request_is_a_bad_signature(method: str, target: str,
                                                      body: bytes) -> None:
    assert reason(method, target, body, headers()) == "bad_signature"


def test_wrong_secret_is_a_bad_signature() -> None:
    other = Secret("another-secret-of-16+bytes")
    assert reason("POST", "/api/v1/cases", b"{}", headers(secret=other)) == "bad_signature"


@pytest.mark.parametrize("skew", [-301, 301, -10_000])
def test_timestamp_outside_window_is_stale(skew: int) -> None:
    assert reason("POST", "/api/v1/cases", b"{}", headers(now=NOW + skew)) == "stale_timestamp"


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamp_inside_window_passes(skew: int) -> None:
    assert verifier().verify("POST", "/api/v1/cases", b"{}", headers(now=NOW + skew)) == "gw-1"


@pytest.mark.parametrize(("change", "expected"), [
    ({"X-Key-Id": ""}, "missing_header"),
    ({"X-Signature": ""}, "missing_header"),
    ({"X-Key-Id": "nobody"}, "unknown_key"),
    ({"X-Timestamp": "17e8"}, "bad_timestamp"),
    ({"X-Timestamp": "-1700000000"}, "bad_timestamp"),
    ({"X-Signature": "zz" * 32}, "bad_signature"),
    ({"X-Signature": "ab"}, "bad_signature"),
])
def test_malformed_headers_name_their_reason(change: dict[str, str], expected: str) -> None:
    h = headers() | change
    assert reason("POST", "/api/v1/cases", b"{}", h) == expected


@pytest.mark.parametrize(("scope", "target"), [
    ({"raw_path": b"/api/v1/cases/GC%2F1", "path": "/api/v1/cases/GC/1", "query_string": b""},
     "/api/v1/cases/GC%2F1"),
    ({"raw_path": b"/api/v1/cases", "query_string": b"updated_since=2024-05-01T00%3A00%2B08%3A00"},
     "/api/v1/cases?updated_since=2024-05-01T00%3A00%2B08%3A00"),
    ({"path": "/case callbacks", "query_string": b""}, "/case%20callbacks"),
])
def test_asgi_target_is_the_request_line_target(scope: dict, target: str) -> None:
    assert asgi_target(scope) == target


def test_secret_never_shows() -> None:
    s = Secret("super-secret-value-1234")
    assert "super" not in repr(s) and "super" not in str(s) and "super" not in f"{s}"
    assert "super" not in repr(verifier())
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_short_secret_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError):
        Secret("short")
    f = tmp_path / "secret"
    f.write_text("0123456789abcdef\n")
    assert Secret.from_file(f).reveal() == b"0123456789abcdef"


@given(body=st.binary(max_size=512), flip=st.integers(min_value=0, max_value=511))
def test_property_roundtrip_and_any_flipped_byte_fails(body: bytes, flip: int) -> None:
    h = headers(body=body)
    assert verifier().verify("POST", "/api/v1/cases", body, h) == "gw-1"
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
        assert reason("POST", "/api/v1/cases", tampered, h) == "bad_signature"
