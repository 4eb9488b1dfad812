"""Contract 1.1 of the grid case system (docs/case-system.md): every request the gateway
sends is checked against docs/case-system.openapi.yaml with a JSON Schema validator
(jsonschema-rs, simulators/contract.py); household-level alarms become cases without a
single device; the simulator refuses what breaks the file; a refusal reads as one short
sentence, is counted, and old outbox rows are mended on resend.

The wire bodies are taken where the real client puts them on the wire (an httpx transport
in front of the real CaseSystemClient); the alarms come from the real AlarmBook and store.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from gateway.alarms import AlarmBook
from gateway.forwarder import CaseForwarder, to_case_create
from gateway.metrics import Metrics
from gateway.model import Severity
from gateway.site import load_site
from gateway.store import Store
from gateway.uplink.case_system import CONTRACT_VERSION, CaseSystemClient
from gateway.uplink.signing import Secret
from rules.actions import RaiseAlarm
from simulators.case_system import LifecycleDelays, create_app
from simulators.contract import Contract
from tests.support import EXAMPLE

ROOT = Path(__file__).resolve().parents[1]
SECRET = Secret("test-secret-0123456789abcdef")


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


def test_the_contract_version_is_the_same_everywhere(contract: Contract) -> None:
    assert contract.version == CONTRACT_VERSION == "1.4.0"
    text = (ROOT / "docs" / "case-system.md").read_text("utf-8")
    assert f"**Contract version {CONTRACT_VERSION}**" in text
    assert f"| {CONTRACT_VERSION} |" in text          # the version table names it
    create = contract.spec["components"]["schemas"]["CaseCreate"]
    assert "device" not in create["required"] and "devices" in create["properties"]


def _raise(key: str, rule_id: str, category: str, device: str | None, household: str | None,
           cell: str, msg: str = "报警", severity: Severity = Severity.CRITICAL) -> RaiseAlarm:
    return RaiseAlarm(key, rule_id, category, severity, device, household, cell, msg,
                      f"alarm {key}", datetime.now(timezone.utc), True)


class WireRecorder:
    """The case system's side of the wire: every body checked against the contract file."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.bodies: list[tuple[str, dict]] = []
        self.problems: list[str] = []
        self.cases = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        path = request.url.path
        schema = "CaseUpdate" if path.endswith("/updates") else "CaseCreate"
        self.bodies.append((schema, body))
        self.problems += [p for _, p in self.contract.problems(schema, body)]
        if schema == "CaseCreate":
            self.cases += 1
            return httpx.Response(201, json={"case_id": f"GC-{self.cases}",
                                             "status": "accepted"})
        return httpx.Response(201, json={"case_id": path.split("/")[4], "update_id": "u",
                                         "sequence": body["sequence"], "applied": True,
                                         "status": "accepted"})


async def _drain(fwd: CaseForwarder) -> None:
    for _ in range(20):
        if fwd.pending_count() == 0:
            return
        await fwd.step()
    raise AssertionError("outbox not drained")


async def test_every_request_the_gateway_sends_fits_the_contract_file(tmp_path, contract):
    """Device alarms, household-level alarms (inactivity, count and compound per household),
    a grid-cell alarm, a rule category the contract does not name, and every update kind."""
    site = load_site(EXAMPLE)
    store = Store(tmp_path / "gateway.db")
    store.open()
    wire = WireRecorder(contract)
    try:
        book = AlarmBook(store, site, callback_url="http://127.0.0.1:9/api/case-callback")
        client = CaseSystemClient("http://cases.test", "gw", SECRET,
                                  transport=httpx.MockTransport(wire))
        fwd = CaseForwarder(store, client, Metrics())
        await book.apply([
            _raise("sos:caller-7-101", "sos", "emergency_call", "caller-7-101", "h-7-101",
                   "310104-012-03", "一键呼叫"),
            _raise("smoke:smoke-station-4", "smoke", "fire", "smoke-station-4", None,
                   "310104-012-04", "烟感报警"),
            _raise("inactivity:h-7-101", "inactivity", "inactivity", None, "h-7-101",
                   "310104-012-03", "独居老人无活动：h-7-101，" + "很久" * 80, Severity.MAJOR),
            _raise("sos3:h-9-201", "sos3", "emergency_call", None, "h-9-201", "310104-012-04"),
            _raise("fire_cell:310104-012-04", "fire_cell", "fire", None, None, "310104-012-04"),
            _raise("door_held:caller-7-302", "door_held", "door_held", "caller-7-302",
                   "h-7-302", "310104-012-03", severity=Severity.MINOR),
        ])
        async with client:
            await _drain(fwd)
            ids = [a["id"] for a in book.list()]
            await book.acknowledge(ids[0], "值班员 周", "已电话联系")
            await book.resolve(ids[1], "值班员 周", "false_alarm", "误报")
            await book.resolve(ids[2], "值班员 周", "cancelled_by_resident")
            await _drain(fwd)
        assert wire.problems == []
        assert len([s for s, _ in wire.bodies if s == "CaseCreate"]) == 6
        assert {s for s, _ in wire.bodies} == {"CaseCreate", "CaseUpdate"}
        # a household-level alarm: no single device, the household's watched devices listed
        inactive = next(b for s, b in wire.bodies
                        if s == "CaseCreate" and b["category"] == "inactivity")
        assert "device" not in inactive
        assert inactive["devices"] == [{"id": "caller-7-101", "type": "emergency_caller"}]
        assert len(inactive["title"]) == 120
        count = next(b for s, b in wire.bodies if s == "CaseCreate"
                     and b["household"]["id"] == "h-9-201")
        assert "device" not in count and count["devices"] == [
            {"id": "caller-9-201", "type": "emergency_caller"}]
        cell = next(b for s, b in wire.bodies if s == "CaseCreate"
                    and b["household"]["id"] == "310104-012-04")
        assert "device" not in cell and cell["devices"] == []
        assert cell["household"]["address"] == "田林七村第4网格"
        # a device alarm keeps its device, and lists it
        sos = next(b for s, b in wire.bodies if s == "CaseCreate"
                   and b.get("device", {}).get("id") == "caller-7-101")
        assert sos["devices"] == [sos["device"]]
        # a rule category outside the contract's list goes as "other"
        held = next(b for s, b in wire.bodies if s == "CaseCreate"
                    and b.get("device", {}).get("id") == "caller-7-302")
        assert held["category"] == "other"
        # what this release queues is already 1.1 (not mended on the way out)
        stored = [json.loads(r["payload"]) for r in store.query(
            "SELECT payload FROM outbox WHERE topic='case.create'")]
        assert sum("device" not in p for p in stored) == 3
        assert all(p["device"]["id"] and p["device"]["type"] for p in stored if "device" in p)
        # every alarm got its case; nothing refused
        assert all(a["case_id"] and a["case_refusal"] is None for a in book.list())
    finally:
        store.close()


def test_a_row_written_before_1_1_is_mended_on_resend(contract: Contract) -> None:
    """The shape the previous release queued for household-level alarms (refused then as
    not retryable): after the upgrade ``gateway outbox --retry-failed`` sends it as 1.1."""
    old = {"site_id": "tianlin-07", "grid_cell_code": "310104-012-03",
           "household": {"id": "h-7-101", "address": "田林路200弄7号101室"},
           "category": "inactivity", "severity": "major", "title": "独居老人无活动",
           "description": "No activity", "occurred_at": "2024-05-06T02:10:00+00:00",
           "device": {"id": None, "type": None}, "gateway_alarm_id": 12,
           "callback_url": None, "idempotency_key": "tianlin-07-abc-12-0", "sequence": 0}
    body = json.loads(to_case_create(old).model_dump_json(exclude={"device"}))
    assert contract.problems("CaseCreate", body) == []
    assert "device" not in body and body["household"]["id"] == "h-7-101"


async def test_the_simulator_refuses_what_breaks_the_contract_file(contract: Contract):
    """The models would take these (pydantic coerces), the file does not: a drift between
    the gateway and docs/case-system.openapi.yaml is refused loudly, naming the field."""
    from tests.test_case_system import KEY_ID, SECRET as SIM_SECRET, ServerThread, case_payload

    app = create_app(SIM_SECRET, KEY_ID, delays=LifecycleDelays(3600, 3600, 3600))
    with ServerThread(app, "case-sim-contract") as server:
        good = case_payload().model_dump(mode="json")
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as admin, \
                CaseSystemClient(server.url, KEY_ID, SIM_SECRET) as c:
            assert (await admin.get("/_sim/contract")).json() == {
                "version": CONTRACT_VERSION, "validating": True, "refused": 0}
            from gateway.uplink.case_system import HmacAuth

            http = httpx.AsyncClient(base_url=server.url, auth=HmacAuth(KEY_ID, SIM_SECRET))
            async with http:
                for field, value in (("occurred_at", 1714523400),
                                     ("devices", [{"id": "x"}])):
                    r = await http.post("/api/v1/cases", json=dict(good, **{field: value}))
                    assert r.status_code == 422, (field, r.text)
                    assert r.json()["field"].startswith(field), r.json()
                r = await http.post("/api/v1/cases", json=good)
                assert r.status_code == 201, r.text
                case_id = r.json()["case_id"]
                r = await http.post(f"/api/v1/cases/{case_id}/updates", json={
                    "idempotency_key": "upd-contract-1", "sequence": "2",
                    "kind": "acknowledged", "occurred_at": "2024-05-01T08:31:00+08:00"})
                assert (r.status_code, r.json()["field"]) == (422, "sequence"), r.text
            # without a device (1.1): accepted
            ref = await c.create_case(case_payload(device=None))
            assert ref.created
            report = (await admin.get("/_sim/contract")).json()
            assert report["refused"] == 3


@pytest.mark.parametrize(("case_error", "has_case", "zh", "en"), [
    ("validation_error:grid_cell_code", False, "工单被拒：网格编码缺失或不符合工单系统要求",
     "Case refused: grid cell code missing or not accepted by the case system"),
    ("validation_error:device", False, "工单被拒：设备信息缺失或不符合工单系统要求",
     "Case refused: device missing or not accepted by the case system"),
    ("validation_error:household.address", False, "工单被拒：住户地址缺失或不符合工单系统要求",
     "Case refused: household address missing or not accepted by the case system"),
    ("idempotency_conflict:idempotency_key", False,
     "工单被拒：工单键与另一报警冲突（网关故障，请联系运维）", None),
    ("no_case", True, "工单更新被拒：报警没有工单，无法更新", None),
    ("rejected", False, "工单被拒：工单系统拒绝受理（代码 rejected）", None),
    # what the previous release stored: a pydantic dump with a link, and a client error text
    ("invalid_payload: 1 validation error for CaseCreate\ndevice.id\n  Input should be a "
     "valid string [type=string_type, input_value=None, input_type=NoneType]\n    For "
     "further information visit https://errors.pydantic.dev/2.11/v/string_type", False,
     "工单被拒：网关生成的设备信息不完整或无效", None),
    ("rejected (HTTP 422): simulated rejection", False,
     "工单被拒：工单系统拒绝受理（代码 rejected）", None),
])
def test_a_refusal_reads_as_one_short_sentence(case_error, has_case, zh, en) -> None:
    from gateway.case_refusals import refusal

    r = refusal(case_error, has_case)
    assert r["zh"] == zh
    if en is not None:
        assert r["en"] == en
    for text in (r["zh"], r["en"]):
        assert not re.search(r"https?:|pydantic|\[type=|\n", text), text
    assert refusal(None, False) is None and refusal("", True) is None


async def test_a_refusal_is_counted_and_shown_in_words(tmp_path) -> None:
    site = load_site(EXAMPLE)
    store = Store(tmp_path / "gateway.db")
    store.open()
    try:
        book = AlarmBook(store, site)
        metrics = Metrics()
        refuse = httpx.MockTransport(lambda req: httpx.Response(422, json={
            "error": "validation_error", "field": "grid_cell_code",
            "detail": "grid_cell_code: not one of ours"}))
        client = CaseSystemClient("http://cases.test", "gw", SECRET, transport=refuse)
        fwd = CaseForwarder(store, client, metrics)
        await book.apply([_raise("sos:caller-7-101", "sos", "emergency_call", "caller-7-101",
                                 "h-7-101", "310104-012-03")])
        async with client:
            await fwd.step()
        alarm = book.list()[0]
        assert alarm["case_id"] is None
        assert alarm["case_error"] == "validation_error:grid_cell_code"
        assert alarm["case_refusal"]["zh"] == "工单被拒：网格编码缺失或不符合工单系统要求"
        assert metrics.get("gateway_case_refusals_total", topic="case.create",
                           reason="validation_error") == 1
        row = store.query_one("SELECT state, last_error FROM outbox")
        assert row["state"] == "failed" and "not one of ours" in row["last_error"]
    finally:
        store.close()
