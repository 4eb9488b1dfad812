"""Login rate limits slow a guesser without letting anyone lock the duty account out."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from gateway.auth import LOGIN_MAX_FAILURES, Auth, AuthError
from gateway.store import Store


@pytest.fixture
def auth(tmp_path):
    store = Store(tmp_path / "g.db")
    store.open()
    a = Auth(store)
    a.hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # fast for tests
    a.add_user("duty", "duty", "correct horse battery")
    yield a
    store.close()


def test_guesser_is_stopped_but_the_duty_pc_can_still_log_in(auth):
    for _ in range(LOGIN_MAX_FAILURES):
        with pytest.raises(AuthError) as exc:
            auth.login("duty", "wrong password", "10.0.0.66")
        assert exc.value.status == 401
    with pytest.raises(AuthError) as exc:
        auth.login("duty", "correct horse battery", "10.0.0.66")   # the guesser's own address
    assert exc.value.status == 429
    _cookie, who = auth.login("duty", "correct horse battery", "10.0.0.5")  # duty room PC
    assert who.name == "duty" and who.role == "duty"


def test_one_address_spraying_many_names_is_stopped(auth):
    for i in range(4 * LOGIN_MAX_FAILURES):
        with pytest.raises(AuthError):
            auth.login(f"user{i}", "x", "10.0.0.77")
    with pytest.raises(AuthError) as exc:
        auth.login("duty", "correct horse battery", "10.0.0.77")
    assert exc.value.status == 429
