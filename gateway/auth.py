"""Users, roles, sessions and API tokens. No default credentials exist.

- On first start, when no admin exists, the gateway creates a *one-time setup token*, prints
  it once on its console (never into a file log), and stores only its hash; ``POST
  /api/setup`` with that token creates the first admin.
- Passwords are hashed with Argon2id (argon2-cffi, memory-hard). Login is rate-limited per
  user name and per client address.
- Browser sessions: a random cookie (HttpOnly, SameSite=Strict) plus a CSRF token that every
  state-changing request must echo in ``X-CSRF-Token``; sessions expire after ``idle_s``
  without a request or a live-stream check (an open board's stream re-checks its session every
  ``stream_check_s``, which keeps it alive) and ``max_s`` after login whatever happens. Both
  are configurable (constructor, or ``GATEWAY_SESSION_IDLE_S`` / ``GATEWAY_SESSION_MAX_S``).
- Machine clients: ``Authorization: Bearer gw_...`` tokens from ``gateway token create``;
  only a SHA-256 of the token is stored (the token is 256 random bits, so a fast hash is
  the right tool there).

Every method blocks (Argon2, the store): the API calls them through ``gateway.blocking``, so
several run at once on worker threads. The in-memory maps (sessions, login failures) are
guarded by one lock, held for dict operations only (never across Argon2 or a query):

- a guess being checked counts against the login limits from the start of its check (and is
  taken back if the password was right), so guesses sent at the same moment get no more
  than the limit's worth of password checks;
- a request in flight never brings back a session that logged out or whose user was disabled
  meanwhile: it refreshes the session map only if the session is still there (or, when it
  read the session from the store, only if no session ended since).

The permission matrix (``PERMISSIONS``) is documented in docs/api.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway import GatewayError, StoreError
from gateway.kernel.resilience import RateLimit
from gateway.model import utc
from gateway.store import Store, Tx, accounts, record_audit
from gateway.store.audit import audit_log

__all__ = ["AuthError", "Auth", "Principal", "PERMISSIONS", "ROLES", "SESSION_IDLE_S",
           "SESSION_MAX_S", "UserExists"]

log = logging.getLogger(__name__)
ROLES = ("duty", "installer", "admin")

#: permission -> roles that hold it
PERMISSIONS: dict[str, frozenset[str]] = {
    "alarms.read": frozenset({"duty", "installer", "admin"}),
    "alarms.act": frozenset({"duty", "admin"}),            # acknowledge, resolve
    "contacts.read": frozenset({"duty", "admin"}),         # unmasked emergency contacts
    "households.read": frozenset({"duty", "installer", "admin"}),  # address, grid cell
    "devices.read": frozenset({"duty", "installer", "admin"}),
    "devices.write": frozenset({"installer", "admin"}),
    "users.manage": frozenset({"admin"}),
    "audit.read": frozenset({"admin"}),
    "help.read": frozenset({"duty", "admin"}),             # help requests (求助)
    "help.act": frozenset({"duty", "admin"}),              # enter, assign, done, feedback
    "visits.read": frozenset({"duty", "admin"}),           # visit coverage (探访), its CSV
    "visits.write": frozenset({"duty", "admin"}),          # record a visit
    "commands.send": frozenset({"duty", "admin"}),         # 关阀, 鸣笛, 断电 from the card
    "commands.restore": frozenset({"admin"}),              # 开阀, 静音, 通电: the inverses
}

SESSION_IDLE_S = 8 * 3600
#: A 12-hour duty shift plus 2 h of margin (logged in early for the handover, kept late by an
#: incident): the night shift's login lasts the night, but not into the next shift, which
#: logs in under its own name (acknowledgements are audited by user).
SESSION_MAX_S = 14 * 3600
LOGIN_WINDOW_S = 300
LOGIN_MAX_FAILURES = 5



class AuthError(GatewayError):
    """Authentication failed; ``status`` is the HTTP status to answer with, ``code`` the
    machine code the console translates (gateway.api.errors.ERROR_CODES)."""

    def __init__(self, message: str, status: int = 401, code: str = "not_logged_in"):
        self.status = status
        self.code = code
        super().__init__(message)


class UserExists(GatewayError, ValueError):
    """``add_user`` of a name that is taken."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    kind: str                  # "session" | "token"
    csrf: str | None = None    # sessions only

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _seconds(name: str, value: float | None, default: float) -> float:
    """A session limit: the argument, else the environment variable ``name``, else the
    default; a positive number of seconds."""
    if value is None:
        raw = os.environ.get(name, "").strip()
        try:
            value = float(raw) if raw else default
        except ValueError:
            raise ValueError(f"{name}={raw!r}: a number of seconds expected") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}: a positive number of seconds expected, not {value!r}")
    return float(value)


class Auth:
    def __init__(self, store: Store, setup_token_file: Path | None = None, *,
                 idle_s: float | None = None, max_s: float | None = None):
        self.store = store
        self.setup_token_file = setup_token_file
        self.hasher = PasswordHasher()   # Argon2id, library defaults (64 MiB, t=3)
        self.idle_s = _seconds("GATEWAY_SESSION_IDLE_S", idle_s, SESSION_IDLE_S)
        self.max_s = _seconds("GATEWAY_SESSION_MAX_S", max_s, SESSION_MAX_S)
        #: how often a live stream re-checks (and so keeps alive) its session: 15 s, the
        #: stream's keepalive, or faster for the short limits of tests
        self.stream_check_s = max(0.1, min(15.0, self.idle_s / 4, self.max_s / 20))
        #: how often a session's last request is written to the store (so that a restart
        #: does not count the night from the login): at most every 5 minutes per session
        self._persist_s = min(300.0, self.idle_s / 8)
        # guards _limits, _sessions and _ended (see the module's docstring)
        self._lock = threading.Lock()
        # failed logins in the last LOGIN_WINDOW_S per client+user, per client and (much
        # higher) per user from anywhere (``login``); each bounded in memory by RateLimit
        self._limits = (RateLimit(LOGIN_MAX_FAILURES, LOGIN_WINDOW_S),
                        RateLimit(4 * LOGIN_MAX_FAILURES, LOGIN_WINDOW_S),
                        RateLimit(20 * LOGIN_MAX_FAILURES, LOGIN_WINDOW_S))
        # token hash -> (user, csrf, created, last seen, last seen as stored)
        self._sessions: dict[str, tuple[str, str, float, float, float]] = {}
        #: sessions ended (logout, user disabled) so far: a request that read its session
        #: from the store caches it only if none ended meanwhile
        self._ended = 0

    # -- first start -----------------------------------------------------------------
    def has_admin(self) -> bool:
        return accounts.has_admin(self.store)

    def issue_setup_token(self) -> str | None:
        """A new one-time setup token if no admin exists yet (the old one is replaced)."""
        if self.has_admin():
            return None
        token = secrets.token_urlsafe(18)
        self.store.write_sync(lambda c: accounts.set_setup_token(c, _sha(token)))
        return token

    def complete_setup(self, token: str, username: str, password: str) -> None:
        stored = accounts.setup_token(self.store)
        if self.has_admin() or not stored:
            raise AuthError("setup already completed", 409, "setup_done")
        if not secrets.compare_digest(stored, _sha(token)):
            raise AuthError("wrong setup token", 401, "wrong_setup_token")
        self.add_user(username, "admin", password, actor="setup")
        self.store.write_sync(accounts.drop_setup_token)
        if self.setup_token_file is not None:
            self.setup_token_file.unlink(missing_ok=True)

    # -- users -----------------------------------------------------------------------
    def add_user(self, username: str, role: str, password: str, *, display_name: str = "",
                 actor: str = "cli") -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if len(password) < 10:
            raise ValueError("password: at least 10 characters")
        if accounts.user_exists(self.store, username):
            raise UserExists(f"user {username!r} exists")
        digest = self.hasher.hash(password)

        def tx(c: Tx) -> None:
            accounts.add_user(c, username, role, display_name or username, digest,
                              utc().isoformat())
            record_audit(c, actor, "user.create", username, role=role)

        try:
            self.store.write_sync(tx)
        except accounts.NameTaken as exc:
            raise UserExists(f"user {username!r} exists") from exc

    def users(self) -> list[dict]:
        """Every user (never the password hash)."""
        return accounts.users(self.store)

    def disable_user(self, username: str, actor: str) -> None:
        """Disable a user: their sessions stop working at once. The last admin stays."""
        row = accounts.user(self.store, username)
        if row is None:
            raise AuthError(f"no user {username!r}", 404, "user_not_found")
        admins = accounts.enabled_admins(self.store)
        if row["role"] == "admin" and not row["disabled"] and admins <= 1:
            raise AuthError("cannot disable the last admin", 409, "last_admin")

        def tx(c: Tx) -> None:
            accounts.disable_user(c, username)
            record_audit(c, actor, "user.disable", username)

        self.store.write_sync(tx)
        with self._lock:
            for h in [h for h, s in self._sessions.items() if s[0] == username]:
                del self._sessions[h]
            self._ended += 1

    def audit_log(self, limit: int = 200, actor: str | None = None) -> list[dict]:
        """Who did what, newest first."""
        return audit_log(self.store, limit, actor)

    @staticmethod
    def _login_keys(username: str, client: str) -> tuple[tuple[str, str], str, str]:
        """The keys of ``self._limits``, in its order."""
        return ((client, username), client, username)

    def login(self, username: str, password: str, client: str) -> tuple[str, Principal]:
        """Check a password; return (session cookie value, principal). Rate-limited."""
        now = time.monotonic()
        # Limits per client+user, per client, and (much higher) per user from anywhere: a
        # guesser is slowed down, but nobody on the LAN can lock the duty account out of the
        # duty room's PC during an emergency with a handful of wrong passwords.
        keys = self._login_keys(username, client)
        with self._lock:
            for limit, key in zip(self._limits, keys):
                if limit.count(key, now) >= limit.limit:
                    raise AuthError("too many failed logins; try again in a few minutes", 429,
                                    "login_throttled")
            for limit, key in zip(self._limits, keys):   # counted while it is checked
                limit.record(key, now)                  # (the module's docstring)
        try:
            row = accounts.enabled_user(self.store, username)
            if row is None:
                raise VerifyMismatchError
            self.hasher.verify(row["password_hash"], password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise AuthError("wrong user name or password", 401, "wrong_login") from None
        except BaseException:                      # not a wrong password (store error ...)
            self._uncount(keys, now)
            raise
        self._uncount(keys, now)
        with self._lock:
            self._limits[0].reset(keys[0])
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        wall = time.time()
        with self._lock:
            self._sessions[_sha(token)] = (username, csrf, wall, wall, wall)
        def tx(c: Tx) -> None:
            accounts.add_session(c, _sha(token), username, csrf, wall, wall)
            record_audit(c, username, "login", username)

        self.store.write_sync(tx)
        return token, Principal(username, row["role"], "session", csrf)

    def _uncount(self, keys: tuple[tuple[str, str], str, str], now: float) -> None:
        """Take back a login attempt counted while its password was checked."""
        with self._lock:
            for limit, key in zip(self._limits, keys):
                limit.forget(key, now)

    def logout(self, cookie: str) -> None:
        h = _sha(cookie)
        with self._lock:
            self._sessions.pop(h, None)
        try:
            self.store.write_sync(lambda c: accounts.delete_session(c, h))
        finally:
            with self._lock:     # again: a request in flight may have read it meanwhile
                self._sessions.pop(h, None)
                self._ended += 1

    def from_cookie(self, cookie: str) -> Principal:
        """The session's principal; refreshes its idle timer (every request does, and an
        open live stream every ``stream_check_s``). Blocking: may write to the store."""
        h = _sha(cookie)
        with self._lock:
            sess = self._sessions.get(h)
            ended = self._ended
        cached = sess is not None
        if sess is None:
            row = accounts.session(self.store, h)
            if row is None:
                raise AuthError("not logged in")
            sess = (row["username"], row["csrf"], row["created"], row["last_seen"],
                    row["last_seen"])
        username, csrf, created, last_seen, stored = sess
        now = time.time()
        if now - created > self.max_s or now - last_seen > self.idle_s:
            with self._lock:
                self._sessions.pop(h, None)
            raise AuthError("session expired", 401, "session_expired")
        role = accounts.active_role(self.store, username)
        if role is None:
            raise AuthError("user disabled", 401, "user_disabled")
        if now - stored >= self._persist_s:
            try:
                self.store.write_sync(lambda c: accounts.touch_session(c, h, now), timeout=5)
                stored = now
            except StoreError as exc:   # the store says so in /healthz; the session goes on
                log.warning("session last-seen not stored: %s", exc)
        with self._lock:   # never brings back a session that ended meanwhile
            if (h in self._sessions) if cached else (self._ended == ended):
                self._sessions[h] = (username, csrf, created, now, stored)
        return Principal(username, role, "session", csrf)

    # -- API tokens ------------------------------------------------------------------
    def create_token(self, role: str, name: str, actor: str = "cli") -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        token = "gw_" + secrets.token_urlsafe(32)

        def tx(c: Tx) -> None:
            accounts.add_token(c, _sha(token), name, role, utc().isoformat())
            record_audit(c, actor, "token.create", name, role=role)

        self.store.write_sync(tx)
        return token

    def from_bearer(self, token: str) -> Principal:
        row = accounts.token(self.store, _sha(token))
        if row is None:
            raise AuthError("invalid API token", 401, "invalid_token")
        return Principal(f"token:{row['name']}", row["role"], "token")
