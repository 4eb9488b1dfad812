"""The permission matrix, endpoint by endpoint, for anonymous, duty, installer and admin.

The endpoint list comes from the app itself: a new endpoint without an entry in MATRIX fails
``test_every_endpoint_has_a_matrix_entry``. Each entry names the permission it needs
(``gateway.auth.PERMISSIONS``), ``"login"`` (any logged-in principal) or ``"public"``.
"""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from gateway.auth import PERMISSIONS, ROLES
from tests.api_fixtures import api_env, raise_sos  # noqa: F401  (fixture)

#: (method, path) -> permission | "login" | "public"
MATRIX: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "public",
    ("POST", "/api/login"): "public",
    ("POST", "/api/setup"): "public",
    ("POST", "/api/case-callback"): "public",        # authenticated by its HMAC signature
    ("GET", "/"): "public",                           # the console page itself (no data)
    ("POST", "/api/logout"): "login",
    ("GET", "/api/me"): "login",
    ("GET", "/api/alarms"): "alarms.read",
    ("GET", "/api/alarms/{alarm_id}"): "alarms.read",
    ("POST", "/api/alarms/{alarm_id}/ack"): "alarms.act",
    ("POST", "/api/alarms/{alarm_id}/resolve"): "alarms.act",
    ("POST", "/api/alarms/{alarm_id}/calls"): "alarms.act",
    ("GET", "/api/alarms/{alarm_id}/commands"): "alarms.read",
    ("POST", "/api/alarms/{alarm_id}/commands"): "commands.send",
    ("GET", "/api/resolve-reasons"): "alarms.read",
    ("GET", "/api/stream"): "alarms.read",
    ("GET", "/api/history"): "alarms.read",
    ("GET", "/api/history.csv"): "alarms.read",
    ("GET", "/api/households"): "households.read",
    ("GET", "/api/households/{household_id}"): "households.read",
    ("GET", "/api/households/{household_id}/checklist"): "devices.read",
    ("POST", "/api/households/{household_id}/commissioned"): "devices.write",
    ("GET", "/api/devices"): "devices.read",
    ("GET", "/api/devices/unknown"): "devices.write",
    ("GET", "/api/devices/{device_id}/readings"): "devices.read",
    ("GET", "/api/devices/{device_id}/tests"): "devices.read",
    ("PUT", "/api/devices/{device_id}/mode"): "devices.write",
    ("GET", "/api/devices/modes"): "alarms.read",    # the board's test/maintenance count
    ("GET", "/api/faults"): "devices.read",
    ("GET", "/api/installer/options"): "devices.write",
    ("GET", "/api/config/devices"): "devices.write",
    ("POST", "/api/config/devices"): "devices.write",
    ("PUT", "/api/config/devices/{device_id}"): "devices.write",
    ("DELETE", "/api/config/devices/{device_id}"): "devices.write",
    ("GET", "/api/config/versions"): "devices.write",
    ("GET", "/api/installer/zigbee"): "devices.write",
    ("POST", "/api/installer/zigbee/register"): "devices.write",
    ("GET", "/api/users"): "users.manage",
    ("POST", "/api/users"): "users.manage",
    ("POST", "/api/users/{username}/disable"): "users.manage",
    ("GET", "/api/audit"): "audit.read",
    ("GET", "/api/care"): "households.read",
    ("GET", "/api/checkins"): "households.read",
    ("PUT", "/api/households/{household_id}/care"): "alarms.act",
    ("DELETE", "/api/households/{household_id}/care"): "alarms.act",
    ("GET", "/api/help-requests"): "help.read",
    ("POST", "/api/help-requests"): "help.act",
    ("GET", "/api/help-requests/{help_id}"): "help.read",
    ("POST", "/api/help-requests/{help_id}/assign"): "help.act",
    ("POST", "/api/help-requests/{help_id}/done"): "help.act",
    ("POST", "/api/help-requests/{help_id}/feedback"): "help.act",
    ("POST", "/api/visits"): "visits.write",
    ("GET", "/api/visits/coverage"): "visits.read",
    ("GET", "/api/visits.csv"): "visits.read",
}

PARAMS = {"alarm_id": None, "household_id": "h-7-101", "device_id": "caller-7-101",
          "username": "nobody-here"}
BODIES = {
    ("POST", "/api/alarms/{alarm_id}/resolve"): {"reason": "handled", "note": "matrix"},
    ("POST", "/api/alarms/{alarm_id}/calls"): {"contact": "resident:0", "outcome": "connected"},
    ("POST", "/api/alarms/{alarm_id}/commands"): {"device_id": "caller-7-101",
                                                  "action": "close_valve"},   # 409: cannot
    ("PUT", "/api/devices/{device_id}/mode"): {"mode": "normal"},
    ("POST", "/api/config/devices"): {"id": "matrix-dev", "type": "door_contact",
                                      "household": "h-9-201"},
    ("PUT", "/api/config/devices/{device_id}"): {"id": "caller-7-101",
                                                 "type": "emergency_caller",
                                                 "household": "h-7-101",
                                                 "topic": "devices/caller-7-101"},
    ("POST", "/api/installer/zigbee/register"): {"devices": [
        {"zigbee2mqtt": "matrix-zigbee", "type": "door_contact", "household": "h-9-201"}]},
    ("POST", "/api/users"): {"username": "matrix-user", "role": "duty",
                             "password": "a-long-password-1"},
}
SKIP_CALL = {("DELETE", "/api/config/devices/{device_id}"), ("POST", "/api/logout")}


def routes(app) -> set[tuple[str, str]]:
    """(method, path) of every API route, the routers' included (FastAPI >= 0.16x keeps an
    included router as one entry of ``app.routes``: ``iter_route_contexts`` opens it)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:                  # older FastAPI: include_router copies the routes
        contexts = list(app.routes)
    else:
        contexts = list(iter_route_contexts(app.routes))
    out = set()
    for r in contexts:
        if isinstance(getattr(r, "original_route", r), APIRoute):
            for m in r.methods:
                out.add((m, r.path))
    return out


def test_every_endpoint_has_a_matrix_entry(api_env):
    have = routes(api_env.app)
    missing = sorted(have - set(MATRIX))
    assert not missing, f"endpoints without a role-matrix entry: {missing}"
    stale = sorted(set(MATRIX) - have)
    assert not stale, f"matrix entries for endpoints that no longer exist: {stale}"
    for perm in MATRIX.values():
        assert perm in PERMISSIONS or perm in ("login", "public"), perm


def expected(perm: str, role: str | None) -> str:
    if perm == "public":
        return "ok"
    if role is None:
        return "401"
    if perm == "login" or role in PERMISSIONS[perm]:
        return "ok"
    return "403"


def _call(client, method: str, path: str, env) -> int:
    url = path
    for name, value in PARAMS.items():
        url = url.replace("{" + name + "}", str(value))
    if "{alarm_id}" in path:
        url = path.replace("{alarm_id}", str(raise_sos(env)))
    body = BODIES.get((method, path))
    if (method, path) == ("GET", "/api/stream"):
        with client.stream("GET", url) as r:
            return r.status_code
    if method in ("POST", "PUT", "DELETE"):
        return client.request(method, url, json=body if body is not None else {}).status_code
    return client.request(method, url).status_code


@pytest.mark.parametrize("role", [None, *ROLES], ids=["anonymous", *ROLES])
def test_role_matrix(api_env, role):
    client = api_env.client(role)
    mismatches = []
    for (method, path), perm in sorted(MATRIX.items()):
        if (method, path) in SKIP_CALL or (method, path) == ("POST", "/api/case-callback"):
            continue
        status = _call(client, method, path, api_env)
        got = "401" if status == 401 else "403" if status == 403 else "ok"
        if status >= 500:
            got = f"server error {status}"
        if got != expected(perm, role):
            mismatches.append(f"{method} {path}: expected {expected(perm, role)}, got {status}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("role", ROLES)
def test_destructive_endpoints_and_tokens(api_env, role):
    """Delete and logout (called last, one client each) and Bearer tokens agree with sessions."""
    client = api_env.client(role)
    r = client.delete("/api/config/devices/smoke-station-4")
    assert (r.status_code == 200) == (role in PERMISSIONS["devices.write"]), r.text
    assert api_env.bearer(role).get("/api/users").status_code == (
        200 if role in PERMISSIONS["users.manage"] else 403)
    assert client.post("/api/logout").status_code == 200
    assert client.get("/api/me").status_code == 401
    anon = api_env.client()
    assert anon.delete("/api/config/devices/caller-7-101").status_code == 401
    assert anon.post("/api/logout").status_code == 401


def test_csrf_required_for_cookie_sessions(api_env):
    client = api_env.client("duty")
    alarm = raise_sos(api_env)
    del client.headers["X-CSRF-Token"]
    assert client.post(f"/api/alarms/{alarm}/ack", json={}).status_code == 403
    client.headers["X-CSRF-Token"] = "wrong"
    assert client.post(f"/api/alarms/{alarm}/ack", json={}).status_code == 403
    assert api_env.ctx.book.get(alarm)["state"] == "raised"


def test_case_callback_without_signature_is_refused(api_env):
    r = api_env.client().post("/api/case-callback", json={"event_id": "x"})
    assert r.status_code in (401, 404), r.text
