"""A refused case on the duty console (issue 12.1): the card says 工单被拒：<reason> in
Chinese (Case refused: ... in the English console) — never the case system's raw reply, a
validation dump or a URL — and shows the case once ``gateway outbox --retry-failed`` sent it
again. Real gateway process, real Mosquitto, the simulated case system refusing with 422,
Debian's Chromium."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest

from gateway.broker import free_port
from tests.support import GatewayProcess, mqtt_publish, site_copy
from tests.test_console_browser import _login

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_refused_case_reads_as_one_short_sentence_and_clears_after_retry(
        tmp_path, mosquitto, case_system, case_secret, browser):
    port = free_port()
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port, case_url=case_system.url,
                       callback_url=f"http://127.0.0.1:{port}/api/case-callback")
    gw = GatewayProcess(config, tmp_path / "data", env={"CASE_SYSTEM_SECRET": case_secret},
                        port=port)
    gw.passwords = {"duty": secrets.token_urlsafe(12)}
    res = gw.cli("user", "add", "--username", "duty", "--role", "duty", "--password-stdin",
                 "--data", str(gw.data), input=gw.passwords["duty"] + "\n")
    assert res.returncode == 0, res.stderr
    gw.start()
    httpx.post(f"{case_system.url}/_sim/faults", json={
        "mode": "reject", "status": 422, "error": "validation_error",
        "field": "household.address"}, timeout=5).raise_for_status()
    try:
        context, page = _login(browser, gw, "duty")
        try:
            mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"})])
            page.wait_for_selector(".alarm .case-refused", timeout=15_000)
            card = page.inner_text(".alarm")
            assert "工单被拒：住户地址缺失或不符合工单系统要求" in card
            assert "未建工单" not in card
            for raw in ("validation_error", "household.address", "http", "pydantic",
                        "simulated", "422"):
                assert raw not in card, (raw, card)
            page.select_option("#lang", "en")
            page.reload()
            page.wait_for_selector(".alarm .case-refused", timeout=10_000)
            assert ("Case refused: household address missing or not accepted by the case "
                    "system") in page.inner_text(".alarm .case-refused")
            # the cause fixed at the case system, the row queued again: the card shows the case
            httpx.delete(f"{case_system.url}/_sim/faults", timeout=5).raise_for_status()
            again = gw.cli("outbox", "--data", str(gw.data), "--retry-failed")
            assert again.returncode == 0 and "1 row(s) queued again" in again.stdout
            page.wait_for_function(
                "() => !document.querySelector('.alarm .case-refused') && "
                "/GC\\d{8}-\\d{6}/.test(document.querySelector('.alarm .case')?.textContent)",
                timeout=15_000)
            assert re.search(r"Case GC\d{8}-\d{6}", page.inner_text(".alarm .case"))
        finally:
            context.close()
    finally:
        gw.stop()
