"""No default credentials: the first admin is created with a one-time setup token that never
lands in the log when the gateway runs as a service."""

from __future__ import annotations

import stat

import httpx
import pytest

from tests.support import GatewayProcess, site_copy

pytestmark = pytest.mark.integration


def test_setup_token_goes_to_a_private_file_not_the_log(tmp_path, mosquitto):
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    gw = GatewayProcess(config, tmp_path / "data")
    gw.start()
    try:
        token_file = tmp_path / "data" / "first-admin-setup-token"
        token = token_file.read_text().strip()
        assert len(token) >= 20
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        log = gw.log_text()
        assert "First start: no admin exists" in log and str(token_file) in log
        assert token not in log
        # nobody can log in before setup; a wrong token is refused
        body = {"username": "admin", "password": "a long admin password"}
        r = httpx.post(f"{gw.url}/api/setup", json=dict(body, setup_token="x" * 24))
        assert r.status_code == 401
        r = httpx.post(f"{gw.url}/api/setup", json=dict(body, setup_token=token))
        assert r.status_code == 200, r.text
        assert not token_file.exists()
        assert httpx.post(f"{gw.url}/api/setup",
                          json=dict(body, setup_token=token)).status_code == 409
        login = httpx.post(f"{gw.url}/api/login", json=body)
        assert login.status_code == 200 and login.json()["role"] == "admin"
    finally:
        gw.stop()
    # a restart with an admin present makes no new token
    gw.start()
    try:
        assert not (tmp_path / "data" / "first-admin-setup-token").exists()
    finally:
        gw.stop()
