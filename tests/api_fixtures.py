"""An in-process API over a real store, a copy of the example site and real auth (Argon2),
for the API, role-matrix and schemathesis tests. Clients log in like the console does."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from gateway.alarms import AlarmBook
from gateway.api import ApiContext, Broadcaster, change_events, create_app
from gateway.auth import ROLES, Auth
from gateway.health import HealthBook
from gateway.installer import SiteEditor
from gateway.linkage import Linkage, WriterRegistry
from gateway.metrics import Metrics
from gateway.service import bindings_for, health_rows
from gateway.site import load_site
from gateway.store import Store
from tests.support import EXAMPLE

__all__ = ["ApiEnv", "api_env", "raise_sos"]


@dataclass
class ApiEnv:
    app: object
    ctx: ApiContext
    store: Store
    site_dir: Path
    passwords: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None = None) -> TestClient:
        """A TestClient logged in as ``role`` (session cookie + CSRF header), or anonymous."""
        c = TestClient(self.app, base_url="http://127.0.0.1")
        if role is not None:
            r = c.post("/api/login", json={"username": role, "password": self.passwords[role]})
            assert r.status_code == 200, r.text
            c.headers["X-CSRF-Token"] = r.json()["csrf"]
        return c

    def bearer(self, role: str) -> TestClient:
        return TestClient(self.app, base_url="http://127.0.0.1",
                          headers={"Authorization": f"Bearer {self.tokens[role]}"})


def raise_sos(env: ApiEnv, device: str = "caller-7-101", *, key: str | None = None) -> int:
    """Raise an SOS alarm through the alarm book as the rule engine would; return its id."""
    from gateway.model import Severity, utc
    from rules.actions import RaiseAlarm

    site = env.ctx.site
    d = next(d for d in site.devices.devices if d.id == device)
    hh = site.household(d.household)
    action = RaiseAlarm(key or f"sos:{device}:{secrets.token_hex(4)}", "sos", "emergency_call",
                        Severity.CRITICAL, device, d.household, hh.grid_cell if hh else None,
                        f"一键呼叫：{d.household}", f"Emergency call: {d.household}", utc(), True)
    changes = asyncio.run(env.ctx.book.apply([action]))
    return changes[0].alarm_id


@pytest.fixture
def api_env(tmp_path) -> ApiEnv:
    site_dir = tmp_path / "site"
    shutil.copytree(EXAMPLE, site_dir)
    (site_dir / "uplinks.yaml").write_text("{}\n")
    site = load_site(site_dir)
    store = Store(tmp_path / "gateway.db")
    store.open()
    broadcaster = Broadcaster()
    book = AlarmBook(store, site, on_change=lambda ch: change_events(book, broadcaster, ch))
    health = HealthBook(health_rows(site))
    auth = Auth(store)
    # still Argon2id, at a test-friendly cost (the service uses the library's defaults)
    auth.hasher = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)

    def reload(new, change=None) -> None:
        health.rebind(health_rows(new))
        book.site = ctx.site = new

    ctx = ApiContext(book=book, auth=auth, metrics=Metrics(), broadcaster=broadcaster,
                     health=lambda: {"store": {"state": "ok", "ready": True}}, site=site,
                     devices=health, reload=reload,
                     editor=SiteEditor(site_dir, check=bindings_for))
    # commands to devices: a linkage without writers (no device of the example takes any)
    ctx.extra["linkage"] = Linkage(store, lambda: ctx.site, WriterRegistry())
    env = ApiEnv(create_app(ctx), ctx, store, site_dir)
    for role in ROLES:
        env.passwords[role] = secrets.token_urlsafe(12)
        auth.add_user(role, role, env.passwords[role])
        env.tokens[role] = auth.create_token(role, f"{role}-client")
    yield env
    store.close()
