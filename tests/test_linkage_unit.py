"""The linkage (gateway/linkage.py) on a real store with a fake transport: a send that fails is
retried and recorded; a device that never reports ends "not confirmed" with a device fault
that its next confirmed command clears; a device past its rate limit is skipped; a target
type without a writer is skipped as ``no_writer``."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from gateway.alarms import AlarmBook
from gateway.kernel.commands import (CONFIRMING_KIND, EXPECTED_STATE, Action, Command,
                                     CommandError)
from gateway.linkage import Linkage, LinkageSettings, WriterRegistry
from gateway.model import Kind, Reading, Severity
from gateway.site import load_site
from gateway.store import Store
from gateway.store import commands as command_rows
from gateway.store import devices as device_rows
from rules.actions import RaiseAlarm
from rules.commands import CommandIntent
from tests.linkage_fixtures import linkage_site
from tests.support import running, until


class FakeWriter:
    """Takes commands for ``devices``; reports the asked state unless the device is mute;
    ``fail`` sends raise CommandError first."""

    def __init__(self, devices: set[str], hook) -> None:
        self.devices, self.hook = devices, hook
        self.sent: list[Command] = []
        self.mute: set[str] = set()
        self.fail = 0

    def supports(self, device_id: str, action: Action) -> bool:
        return device_id in self.devices

    async def send(self, command: Command) -> None:
        if self.fail:
            self.fail -= 1
            raise CommandError(f"{command.device_id}: bus busy")
        self.sent.append(command)
        if command.device_id not in self.mute:
            reading = Reading(command.device_id, Kind(CONFIRMING_KIND[command.action]),
                              EXPECTED_STATE[command.action], datetime.now(timezone.utc))
            asyncio.get_running_loop().call_later(0.01, self.hook, reading)


@pytest.fixture
def rig(tmp_path):
    site = load_site(linkage_site(tmp_path / "site", mqtt_port=1883))
    store = Store(tmp_path / "gateway.db")
    store.open()
    registry = WriterRegistry()
    linkage = Linkage(store, lambda: site, registry, settings=LinkageSettings(
        confirm_timeout_s=0.3, attempts=2, rate_limit=2, rate_window_s=60))
    book = AlarmBook(store, site, on_change=linkage.on_changes)
    writer = FakeWriter({"valve-7-101", "siren-7-101"}, linkage.hooked(lambda r: None))
    registry.add(writer)
    yield book, linkage, writer, store
    store.close()


_n = iter(range(1, 1000))


async def _raise(book, *intents: CommandIntent) -> int:
    key = f"gas:gas-7-101:{next(_n)}"
    await book.apply([RaiseAlarm(key, "gas", "gas", Severity.CRITICAL, "gas-7-101", "h-7-101",
                                 "310104-012-03", "燃气", "gas", datetime.now(timezone.utc),
                                 True, then=intents)])
    alarm_id = book.open_id(key)
    assert alarm_id is not None
    return alarm_id


VALVE = CommandIntent("close_valve", {"household": "same", "type": "gas_valve"}, {})
PLUG = CommandIntent("switch_off", {"household": "same", "type": "smart_plug"}, {})
SIREN = CommandIntent("siren_on", {"device": "siren-7-101"}, {"duration": 30})
DETECTOR = CommandIntent("close_valve", {"device": "gas-7-101"}, {})   # a detector: no valve


def _ended(store, alarm_id: int) -> list[dict] | None:
    cs = command_rows.commands_of(store, [alarm_id]).get(alarm_id, [])
    done = all(c["status"] in ("confirmed", "not_confirmed", "skipped") for c in cs)
    return cs if cs and done else None


async def test_a_failed_send_is_retried_and_every_step_recorded(rig):
    book, linkage, writer, store = rig
    writer.fail = 1
    async with running(linkage):
        aid = await _raise(book, VALVE)
        cs = await until(lambda: _ended(store, aid), 5, "the command ended")
    assert [(c["device_id"], c["status"], c["attempts"]) for c in cs] == [
        ("valve-7-101", "confirmed", 2)]
    steps = [e["action"] for e in book.get(aid, with_events=True)["events"]
             if e["action"].startswith("command")]
    assert steps == ["commands_planned", "commands_resolved", "command_requested",
                     "command_failed", "command_sent", "command_confirmed"]


async def test_no_report_is_a_fault_that_the_next_confirmation_clears(rig):
    book, linkage, writer, store = rig
    writer.mute = {"siren-7-101"}
    async with running(linkage):
        aid = await _raise(book, SIREN)
        cs = await until(lambda: _ended(store, aid), 5, "the siren's command ended")
        assert cs[0]["status"] == "not_confirmed" and cs[0]["attempts"] == 2
        assert "siren-7-101" in device_rows.open_fault_devices(store, "command_not_confirmed")
        writer.mute = set()
        aid2 = await _raise(book, SIREN)
        cs = await until(lambda: _ended(store, aid2), 5, "the second command ended")
        assert cs[0]["status"] == "confirmed"
        assert device_rows.open_fault_devices(store, "command_not_confirmed") == []
    assert [c.params for c in writer.sent] == [{"duration": 30}] * 3


async def test_rate_limit_and_no_writer_are_skipped_and_said(rig):
    book, linkage, writer, store = rig
    async with running(linkage):
        outcomes = []
        for _ in range(3):
            aid = await _raise(book, VALVE, PLUG, DETECTOR)
            cs = await until(lambda a=aid: _ended(store, a), 5, "the commands ended")
            outcomes.append(sorted((c["device_id"], c["status"], c["reason"]) for c in cs))
    # the household has no smart plug: nothing to send; a detector cannot close a valve;
    # the third close is over the valve's limit
    no_writer = ("gas-7-101", "skipped", "no_writer")
    assert outcomes == [[no_writer, ("valve-7-101", "confirmed", None)]] * 2 + [
        [no_writer, ("valve-7-101", "skipped", "rate_limited")]]
    assert len(writer.sent) == 2


class ListingWriter(FakeWriter):
    """A writer that lists the devices it reaches (as the MQTT and field writers do)."""

    def reachable(self) -> set[str]:
        return set(self.devices)


async def test_a_card_offers_control_only_where_a_writer_reaches_a_device_of_its_household(rig):
    _book, linkage, _writer, _store = rig
    # valve-7-101 and siren-7-101 (household h-7-101) have a writer; valve-7-302 has none
    assert linkage.can_command("h-7-101", None)
    assert not linkage.can_command("h-7-302", None)
    assert linkage.can_command(None, "310104-012-03")     # the grid cell of h-7-101
    # a second writer that lists its devices reaches h-7-302's valve: the card offers it
    # once the site is asked again (a new site object, as after an edit)
    linkage.registry.add(ListingWriter({"valve-7-302"}, linkage.hooked(lambda r: None)))
    site = linkage.site()
    assert linkage.registry.reachable(d.id for d in site.devices.devices) == {
        "valve-7-101", "siren-7-101", "valve-7-302"}
    linkage._index = None
    assert linkage.can_command("h-7-302", None)
    assert not linkage.can_command("h-nobody", None)


def test_the_mqtt_writer_lists_the_devices_it_can_command(tmp_path):
    from drivers.mqtt_commands import MqttCommandWriter
    from gateway.linkage_wiring import mqtt_command_bindings
    from gateway.metrics import Metrics
    from gateway.service import bindings_for

    site = load_site(linkage_site(tmp_path / "site", mqtt_port=1883))
    writer = MqttCommandWriter(host="127.0.0.1", port=1883, client_id="t",
                               bindings=mqtt_command_bindings(bindings_for(site)),
                               metrics=Metrics())
    ids = [d.id for d in site.devices.devices]
    asked = {d for d in ids if any(writer.supports(d, a) for a in Action)}
    assert writer.reachable() == asked
    assert {"valve-7-101", "siren-7-101", "valve-7-302"} <= asked
    assert "gas-7-101" not in asked          # a detector takes no command
