"""The night shift keeps its board (issue 12.8): duty sessions end after ``idle_s`` without a
request and ``max_s`` after login; an open live stream re-checks its session, which keeps it
from idling out, and tells the board when the session has ended. The limits are
configurable (constructor or environment) so these tests run in seconds."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from argon2 import PasswordHasher

from gateway import auth as auth_module
from gateway.auth import SESSION_IDLE_S, SESSION_MAX_S, Auth, AuthError
from gateway.store import Store
from tests.api_fixtures import api_env  # noqa: F401  (fixture)

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(auth_module, "time", SimpleNamespace(time=c.time, monotonic=c.monotonic))
    return c


def _auth(store: Store, **limits) -> Auth:
    a = Auth(store, **limits)
    a.hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # fast for tests
    if not a.store.query_one("SELECT 1 AS x FROM users WHERE username='duty'"):
        a.add_user("duty", "duty", PASSWORD)
    return a


def _expired(auth: Auth, cookie: str) -> str:
    with pytest.raises(AuthError) as exc:
        auth.from_cookie(cookie)
    assert exc.value.status == 401
    return str(exc.value)


def test_defaults_cover_a_night_shift():
    assert SESSION_IDLE_S == 8 * 3600
    assert SESSION_MAX_S == 14 * 3600 and SESSION_MAX_S >= 12 * 3600 + 3600


def test_a_session_in_use_lives_past_the_idle_limit_but_not_past_the_absolute_one(store, clock):
    auth = _auth(store, idle_s=100, max_s=1000)
    cookie, _ = auth.login("duty", PASSWORD, "10.0.0.5")
    for _ in range(19):                      # a request (or a stream check) every 50 s
        clock.now += 50
        assert auth.from_cookie(cookie).name == "duty"
    clock.now += 51                          # 1001 s after login
    assert _expired(auth, cookie) == "session expired"

    quiet, _ = auth.login("duty", PASSWORD, "10.0.0.5")
    clock.now += 99
    auth.from_cookie(quiet)
    clock.now += 101                         # 101 s without a request
    assert _expired(auth, quiet) == "session expired"


def test_limits_from_the_environment_and_arguments(store, monkeypatch):
    assert (_auth(store).idle_s, _auth(store).max_s) == (SESSION_IDLE_S, SESSION_MAX_S)
    assert _auth(store).stream_check_s == 15.0
    monkeypatch.setenv("GATEWAY_SESSION_IDLE_S", "4")
    monkeypatch.setenv("GATEWAY_SESSION_MAX_S", "20.5")
    a = _auth(store)
    assert (a.idle_s, a.max_s) == (4.0, 20.5) and a.stream_check_s == 1.0
    assert _auth(store, idle_s=60, max_s=600).idle_s == 60          # an argument wins
    for bad in ("soon", "0", "-5", "inf", "nan"):
        monkeypatch.setenv("GATEWAY_SESSION_MAX_S", bad)
        with pytest.raises(ValueError, match="GATEWAY_SESSION_MAX_S"):
            _auth(store)


def test_the_last_request_survives_a_restart(store, clock):
    """A gateway restart in the night does not count the idle time from the login."""
    auth = _auth(store, idle_s=100, max_s=1000)
    cookie, _ = auth.login("duty", PASSWORD, "10.0.0.5")
    clock.now += 90
    auth.from_cookie(cookie)
    clock.now += 60                           # 150 s after login, 60 s after the last request
    restarted = _auth(store, idle_s=100, max_s=1000)
    assert restarted.from_cookie(cookie).name == "duty"
    clock.now += 101
    assert _expired(_auth(store, idle_s=100, max_s=1000), cookie) == "session expired"


def _short_limits(env, idle_s: float, max_s: float) -> Auth:
    auth = Auth(env.store, idle_s=idle_s, max_s=max_s)
    auth.hasher = env.ctx.auth.hasher
    env.ctx.auth = auth
    return auth


def test_an_open_stream_keeps_its_session_alive(api_env):
    auth = _short_limits(api_env, idle_s=0.8, max_s=60)
    assert auth.stream_check_s == pytest.approx(0.2)
    board = api_env.client("duty")      # the board: its live stream stays open
    other = api_env.client("duty")      # the same user elsewhere, without a stream
    t0 = time.monotonic()
    with board.stream("GET", "/api/stream") as r:
        assert r.status_code == 200
        for _line in r.iter_lines():
            if time.monotonic() - t0 > 3 * auth.idle_s:
                break
    # three idle limits passed; the stream's checks kept the board's session alive
    assert board.get("/api/me").status_code == 200
    r = other.get("/api/me")
    assert r.status_code == 401 and r.json()["detail"] == "session expired"


def test_the_stream_tells_the_board_when_the_session_has_ended(api_env):
    auth = _short_limits(api_env, idle_s=0.5, max_s=2.0)
    board = api_env.client("duty")
    t0 = time.monotonic()
    events: list[tuple[str, str]] = []
    with board.stream("GET", "/api/stream") as r:
        assert r.status_code == 200
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                events.append((kind, line[6:]))
                kind = None
            assert time.monotonic() - t0 < auth.max_s + 5, "no session event from the stream"
        ended_after = time.monotonic() - t0    # the stream closed by itself
    assert events and events[-1][0] == "session", events
    assert json.loads(events[-1][1]) == {"state": "ended", "detail": "session expired"}
    assert auth.max_s <= ended_after < auth.max_s + 2 * auth.stream_check_s + 1
    assert board.get("/api/me").status_code == 401
