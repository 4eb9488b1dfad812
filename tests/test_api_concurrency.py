"""Shared state of the API under concurrency (issue 17.2).

The API runs its blocking work (Argon2, SQLite reads, file I/O) on worker threads
(``gateway.blocking``), while the drivers, the pipeline and the rest of the service change
``Metrics`` on the event loop's thread. These tests hammer ``Metrics`` and ``Auth`` from
several threads with a tiny ``sys.setswitchinterval`` so that the interpreter switches
threads every few bytecodes: an iteration over a dict that another thread grows fails with
``RuntimeError: dictionary changed size during iteration``, a read-modify-write loses updates.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from argon2 import PasswordHasher

from gateway.auth import LOGIN_MAX_FAILURES, Auth, AuthError, _sha
from gateway.metrics import Metrics
from gateway.store import Store

PASSWORD = "correct horse battery"


@contextmanager
def switch_often(interval: float = 1e-6) -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(targets: list[Callable[[], None]], seconds: float) -> list[BaseException]:
    """Run each target in a loop on its own thread for ``seconds``; the errors they raised."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop(fn: Callable[[], None]) -> None:
        try:
            while not stop.is_set():
                fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=loop, args=(fn,), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(10)
    return errors


def test_metrics_render_while_threads_add_label_sets():
    """The reproduction of ``RuntimeError: dictionary changed size during iteration`` in
    ``Metrics.render`` (seen under load): threads keep adding counters with new label sets
    and new histograms while another thread renders ``/metrics``."""
    m = Metrics()
    m.gauge("gateway_test_gauge", lambda: 1.0, "a gauge")
    counter = iter(range(10**9))

    def add() -> None:
        i = next(counter)
        m.inc("gateway_test_total", device=f"d-{i}", transport="mqtt")
        m.observe(f"gateway_test_{i % 200}_seconds", 0.02)

    def scrape() -> None:
        text = m.render()
        assert text.endswith("\n")
        m.total("gateway_test_total")
        m.by_label("gateway_test_total", "transport")

    with switch_often():
        errors = run_threads([add, add, add, scrape, scrape], seconds=2.0)
    assert not errors, repr(errors[0])
    assert m.total("gateway_test_total") == len(m.by_label("gateway_test_total", "device"))


def test_metrics_lose_no_increment_across_threads():
    m = Metrics()
    per_thread, threads = 20_000, 4

    def work() -> None:
        for _ in range(per_thread):
            m.inc("gateway_test_total", transport="mqtt")
            m.observe("gateway_test_seconds", 0.02)

    with switch_often():
        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert m.get("gateway_test_total", transport="mqtt") == per_thread * threads
    assert f"gateway_test_seconds_count {per_thread * threads}" in m.render()


def _auth(store: Store, memory_kib: int = 8) -> Auth:
    a = Auth(store)
    a.hasher = PasswordHasher(time_cost=1, memory_cost=memory_kib, parallelism=1)
    a.add_user("duty", "duty", PASSWORD)
    return a


def test_auth_sessions_change_while_a_user_is_disabled(store):
    """Requests of many sessions (each one read from the store into the session map) while
    an admin disables users: the map is never iterated while another thread grows it."""
    auth = _auth(store)
    for i in range(200):
        auth.add_user(f"user-{i}", "duty", PASSWORD)
    now = time.time()
    cookies = [f"cookie-{i}" for i in range(20_000)]
    store.write_sync(lambda c: c.executemany(
        "INSERT INTO sessions VALUES (?,?,?,?,?)",
        [(_sha(k), "duty", "csrf", now, now) for k in cookies]))
    pending = iter(cookies)
    users = iter(range(200))

    def request() -> None:
        auth.from_cookie(next(pending))

    def disable() -> None:
        auth.disable_user(f"user-{next(users)}", "admin")

    with switch_often():
        errors = run_threads([request, request, request, disable], seconds=2.0)
    errors = [e for e in errors if not isinstance(e, StopIteration)]
    assert not errors, repr(errors[0])


def test_concurrent_guesses_get_no_more_than_the_limit(store):
    """Wrong passwords sent at the same moment: the limit counts the guesses being checked,
    so no more than ``LOGIN_MAX_FAILURES`` of them reach the password check."""
    auth = _auth(store, memory_kib=4 * 1024)      # a few ms per check, outside the GIL
    n = 4 * LOGIN_MAX_FAILURES
    start = threading.Barrier(n)
    statuses: list[int] = []

    def guess() -> None:
        start.wait()
        try:
            auth.login("duty", "wrong password", "10.0.0.66")
        except AuthError as exc:
            statuses.append(exc.status)

    ts = [threading.Thread(target=guess) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(statuses) == [401] * LOGIN_MAX_FAILURES + [429] * (n - LOGIN_MAX_FAILURES)
    # a right password from the duty room's PC still works; the failures stay counted
    assert auth.login("duty", PASSWORD, "10.0.0.5")[1].name == "duty"
    with pytest.raises(AuthError) as exc:
        auth.login("duty", PASSWORD, "10.0.0.66")
    assert exc.value.status == 429


def test_a_request_in_flight_does_not_bring_a_logged_out_session_back(store, monkeypatch):
    """A request checks its session while the same session logs out (another tab, the
    stream's re-check): the request may finish, but the cookie is dead afterwards."""
    auth = _auth(store)
    cookie, _ = auth.login("duty", PASSWORD, "10.0.0.5")
    query_one = store.query_one
    done = []

    def logout_meanwhile(sql: str, params=()):
        if sql.startswith("SELECT role FROM users") and not done:
            done.append(True)
            auth.logout(cookie)             # while from_cookie below is between its steps
        return query_one(sql, params)

    monkeypatch.setattr(store, "query_one", logout_meanwhile)
    auth.from_cookie(cookie)
    assert done
    with pytest.raises(AuthError):
        auth.from_cookie(cookie)
