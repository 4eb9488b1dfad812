"""Command writers against real peers (issue 16): a pymodbus server whose valve controllers
obey coil and register writes, and a pty CJ/T 188 meter that obeys the valve command. The
write goes through the bus's or line's own task, the confirming ``valve_open`` reading
follows early, an unreachable device gives a CommandError naming it, and the other devices
keep being polled during and after."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer

from drivers.codecs.modbus_registers import plan_reads
from drivers.modbus import BusEndpoint, ModbusBus, ModbusDevice, PollPolicy
from drivers.profiles import ModbusProfile, load_profiles
from gateway.broker import free_port
from gateway.kernel.commands import Action, Command, CommandError
from gateway.metrics import Metrics
from drivers.serial_line import LineSettings, SerialDevice, SerialLine
from simulators.modbus_meters import MeterStore, serve_meters
from simulators.serial_meters import MeterBus, PtyAdapter, PtyLink
from tests.support import CollectingSink, running, until

pytestmark = pytest.mark.integration

PROFILES = load_profiles()
GAS_VALVE = PROFILES.by_id["modbus-gas-valve"]
WATER_METER = PROFILES.by_id["modbus-water-meter"]
assert isinstance(GAS_VALVE, ModbusProfile) and isinstance(WATER_METER, ModbusProfile)


def modbus_device(device_id: str, unit: int, profile: ModbusProfile) -> ModbusDevice:
    return ModbusDevice(device_id, unit, tuple(plan_reads(profile.entries())), "gas_valve",
                        commands=profile.writes())


def close(device_id: str, n: int = 1) -> Command:
    return Command(f"cmd-{device_id}-{n}", device_id, Action.CLOSE_VALVE)


def valve_states(sink: CollectingSink, device_id: str) -> list[bool]:
    return [r.value for r in sink.of(device_id, "valve_open")]


def one_valve_bus(endpoint: BusEndpoint, device: ModbusDevice,
                  timeout_s: float = 0.3) -> tuple[ModbusBus, CollectingSink]:
    """A bus with one valve, polled every 3 s (a confirmation sooner is an early poll's)."""
    sink = CollectingSink(expect_ack=False)
    return ModbusBus("b1", endpoint, [device], sink, Metrics(),
                     policy=PollPolicy(period_s=3.0, timeout_s=timeout_s)), sink


async def close_when_polled(bus: ModbusBus, sink: CollectingSink, device_id: str,
                            first_poll_s: float = 5) -> None:
    """Once the open valve was polled: close it; the confirming reading within 2.5 s."""
    await until(lambda: valve_states(sink, device_id) == [True], first_poll_s, "first poll")
    await bus.send(close(device_id))
    await until(lambda: valve_states(sink, device_id)[-1] is False, 2.5, "valve closed")


async def test_modbus_coil_write_closes_the_valve_and_the_early_poll_reads_it_back():
    store = MeterStore(GAS_VALVE.entries(), [1, 2, 3])
    for unit in (1, 2, 3):
        store.set_values(unit, {"valve_open": True})
    port = free_port()
    server = await serve_meters(store, port)
    sink, metrics = CollectingSink(expect_ack=False), Metrics()
    # a long period: the confirming reading can only come this fast from the early re-poll
    bus = ModbusBus("b1", BusEndpoint("tcp", port=port),
                    [modbus_device(f"gv-{u}", u, GAS_VALVE) for u in (1, 2, 3)], sink, metrics,
                    policy=PollPolicy(period_s=3.0, timeout_s=0.3))
    try:
        async with running(bus):
            await until(lambda: all(bus.stats[f"gv-{u}"].ok >= 1 for u in (1, 2, 3)), 5,
                        "a first poll of every valve")
            assert valve_states(sink, "gv-2") == [True]
            assert bus.supports("gv-2", Action.CLOSE_VALVE)
            assert not bus.supports("gv-2", Action.SIREN_ON)
            t0 = time.monotonic()
            await bus.send(close("gv-2"))
            written = time.monotonic() - t0
            assert store.value(2, "valve_open") == [0]          # the coil is off
            await until(lambda: False in valve_states(sink, "gv-2"), 2.5,
                        "the confirming valve_open False")
            confirmed = time.monotonic() - t0
            others_before = [bus.stats[f"gv-{u}"].ok for u in (1, 3)]
            await until(lambda: all(bus.stats[f"gv-{u}"].ok > n for u, n in
                                    zip((1, 3), others_before)), 8, "the next cycle")
    finally:
        await server.shutdown()
    assert written < 0.5 and confirmed < 2.5, (written, confirmed)
    assert store.writes == [(2, 5, 0, [0])]
    assert valve_states(sink, "gv-1")[-1] is True and valve_states(sink, "gv-3")[-1] is True
    assert bus.commands.written == 1 and not metrics.get("gateway_commands_failed_total",
                                                          transport="modbus")


async def test_modbus_register_write_closes_a_water_meter_valve():
    store = MeterStore(WATER_METER.entries(), [5])
    store.set_values(5, {"valve_open": True, "volume": 12.5})
    port = free_port()
    server = await serve_meters(store, port)
    bus, sink = one_valve_bus(BusEndpoint("tcp", port=port),
                              modbus_device("wm-5", 5, WATER_METER))
    try:
        async with running(bus):
            await close_when_polled(bus, sink, "wm-5")
            await bus.send(Command("c2", "wm-5", Action.OPEN_VALVE))
            await until(lambda: valve_states(sink, "wm-5")[-1] is True, 2.5, "valve open")
    finally:
        await server.shutdown()
    assert store.writes == [(5, 6, 3, [0]), (5, 6, 3, [1])]


async def test_modbus_unreachable_device_fails_naming_it_while_the_bus_polls_the_others():
    store = MeterStore(GAS_VALVE.entries(), [1, 2])
    store.dead = {1}
    port = free_port()
    server = await serve_meters(store, port)
    sink, metrics = CollectingSink(expect_ack=False), Metrics()
    bus = ModbusBus("b1", BusEndpoint("tcp", port=port),
                    [modbus_device("gv-dead", 1, GAS_VALVE), modbus_device("gv-2", 2, GAS_VALVE)],
                    sink, metrics, policy=PollPolicy(period_s=0.3, timeout_s=0.2, retries=1))
    try:
        async with running(bus):
            await until(lambda: bus.stats["gv-2"].ok >= 2, 5, "polls of the live valve")
            polls_before = bus.stats["gv-2"].ok
            with pytest.raises(CommandError, match="gv-dead") as failed:
                await bus.send(close("gv-dead"))
            assert "no answer" in str(failed.value)
            # a device the bus does not have, an action the profile has no write for
            with pytest.raises(CommandError, match="gv-nowhere"):
                await bus.send(close("gv-nowhere"))
            with pytest.raises(CommandError, match="gv-2"):
                await bus.send(Command("c3", "gv-2", Action.SIREN_ON))
            # the live valve was polled during the failed write's attempts and after it
            await until(lambda: bus.stats["gv-2"].ok >= polls_before + 3, 5, "polls after")
            await bus.send(close("gv-2"))                        # and can still be written
            await until(lambda: valve_states(sink, "gv-2")[-1] is False, 2.5, "gv-2 closed")
    finally:
        await server.shutdown()
    assert store.writes == [(2, 5, 0, [0])]
    assert metrics.get("gateway_commands_failed_total", transport="modbus") == 1
    assert (bus.commands.written, bus.commands.failed) == (1, 1)


async def test_modbus_rtu_coil_write_over_a_serial_line(tmp_path):
    link = PtyLink(tmp_path / "valve-side", tmp_path / "gateway-side")
    store = MeterStore(GAS_VALVE.entries(), [3])
    server = ModbusSerialServer(store, port=str(link.a.path), framer=FramerType.RTU,
                                baudrate=9600, ignore_missing_devices=True)
    await server.serve_forever(background=True)
    bus, sink = one_valve_bus(BusEndpoint("rtu", device=str(link.b.path), baudrate=9600),
                              modbus_device("gv-rtu", 3, GAS_VALVE), timeout_s=0.5)
    try:
        async with running(bus):
            await close_when_polled(bus, sink, "gv-rtu", first_poll_s=10)
    finally:
        await server.shutdown()
        link.close()
    assert store.writes == [(3, 5, 0, [0])]


async def test_modbus_command_sent_while_the_bus_connects_waits_for_it():
    """As after a restart: the linkage re-sends an interrupted close before the bus is up."""
    store = MeterStore(GAS_VALVE.entries(), [1])
    port = free_port()
    server = await serve_meters(store, port)
    bus, sink = one_valve_bus(BusEndpoint("tcp", port=port), modbus_device("gv-1", 1, GAS_VALVE))
    try:
        async with running(bus):
            assert bus.state == "starting"
            await bus.send(close("gv-1"))
            assert bus.state == "online"
    finally:
        await server.shutdown()
    assert store.writes == [(1, 5, 0, [0])]


async def test_modbus_command_to_a_bus_that_is_offline_fails_at_once():
    port = free_port()                                  # nothing listens there
    bus = ModbusBus("b9", BusEndpoint("tcp", port=port), [modbus_device("gv-1", 1, GAS_VALVE)],
                    CollectingSink(expect_ack=False), Metrics(),
                    policy=PollPolicy(period_s=0.3, timeout_s=0.2))
    async with running(bus):
        await until(lambda: bus.state == "offline", 10, "bus offline")
        t0 = time.monotonic()
        with pytest.raises(CommandError, match=r"gv-1.*b9.*offline"):
            await bus.send(close("gv-1"))
        assert time.monotonic() - t0 < 0.1


async def test_modbus_commands_sent_together_are_written_one_after_another():
    """Eight valves closed at once (a grid cell's), two of them on silent units at the head
    of the queue: each live one is written, none gives up waiting behind the silent ones."""
    live, silent = (1, 2, 3, 4, 5, 6), (7, 8)
    store = MeterStore(GAS_VALVE.entries(), list(live + silent))
    store.dead = set(silent)
    port = free_port()
    server = await serve_meters(store, port)
    sink = CollectingSink(expect_ack=False)
    bus = ModbusBus("b1", BusEndpoint("tcp", port=port),
                    [modbus_device(f"gv-{u}", u, GAS_VALVE) for u in live + silent], sink,
                    Metrics(), policy=PollPolicy(period_s=0.5, timeout_s=0.3, retries=1))
    try:
        async with running(bus):
            await until(lambda: bus.stats["gv-6"].ok >= 1, 5, "first cycle")
            outcomes = await asyncio.gather(*(bus.send(close(f"gv-{u}"))
                                              for u in silent + live), return_exceptions=True)
            await until(lambda: all(valve_states(sink, f"gv-{u}")[-1] is False
                                    for u in live), 2.5, "every live valve closed")
    finally:
        await server.shutdown()
    assert [type(o).__name__ for o in outcomes] == ["CommandError"] * 2 + ["NoneType"] * 6
    assert all("no answer" in str(o) for o in outcomes[:2])
    assert sorted(w[0] for w in store.writes) == list(live)


# -- CJ/T 188 valve over a serial line (pty) -----------------------------------------------
GAS_METER = PROFILES.by_id["cjt188-gas-meter"]
WATER_PLAIN = PROFILES.by_id["cjt188-water-meter"]
METER_1, METER_2, METER_GONE = "00000000000001", "00000000000002", "00000000000009"


@pytest.fixture
def adapter(tmp_path):
    a = PtyAdapter(tmp_path / "ttyUSB-mbus")
    yield a
    a.unplug()


def cjt188_line(adapter, devices, sink, metrics=None, period_s=3.0) -> SerialLine:
    return SerialLine("mbus-1", LineSettings(str(adapter.path), "cjt188", period_s=period_s,
                                             timeout_s=0.3),
                      devices, sink, metrics or Metrics())


async def test_cjt188_meter_closes_its_valve_and_the_early_read_confirms_it(adapter):
    bus = MeterBus(adapter, protocol="cjt188", cjt188_type=0x30,
                   cjt188_meters={METER_1: 10.5, METER_2: 20.25}).start()
    sink, metrics = CollectingSink(), Metrics()
    line = cjt188_line(adapter, [SerialDevice("gm-1", METER_1, GAS_METER, "gas_meter"),
                                 SerialDevice("gm-2", METER_2, GAS_METER, "gas_meter")],
                       sink, metrics)
    try:
        async with running(line):
            await until(lambda: line.polls_ok["gm-2"] >= 1, 5, "a first poll of both meters")
            assert valve_states(sink, "gm-1") == [True]
            assert line.supports("gm-1", Action.CLOSE_VALVE)
            assert not line.supports("gm-1", Action.SIREN_ON)
            t0 = time.monotonic()
            await line.send(close("gm-1"))
            written = time.monotonic() - t0
            assert bus.valve_commands == [(METER_1, False)] and bus.valves[METER_1] == "closed"
            await until(lambda: valve_states(sink, "gm-1")[-1] is False, 2.5,
                        "the confirming valve_open False")
            confirmed = time.monotonic() - t0
            await line.send(Command("c-open", "gm-1", Action.OPEN_VALVE))
            await until(lambda: valve_states(sink, "gm-1")[-1] is True, 2.5, "valve open again")
            polls = line.polls_ok["gm-2"]
            await until(lambda: line.polls_ok["gm-2"] > polls, 8, "the next cycle")
    finally:
        bus.stop()
    assert written < 0.5 and confirmed < 2.5, (written, confirmed)   # period 3 s: early read
    assert bus.valve_commands == [(METER_1, False), (METER_1, True)]
    assert valve_states(sink, "gm-2") and set(valve_states(sink, "gm-2")) == {True}
    assert line.commands.written == 2 and not metrics.get("gateway_commands_failed_total",
                                                           transport="serial")


async def test_cjt188_silent_or_refusing_meter_fails_naming_it_while_the_line_polls(adapter):
    bus = MeterBus(adapter, protocol="cjt188", cjt188_type=0x30,
                   cjt188_meters={METER_1: 10.5, METER_2: 20.25, METER_GONE: 1.0}).start()
    bus.dead = {METER_GONE}
    bus.refuse_valve = {METER_2}
    sink, metrics = CollectingSink(), Metrics()
    line = cjt188_line(adapter, [SerialDevice("gm-1", METER_1, GAS_METER),
                                 SerialDevice("gm-2", METER_2, GAS_METER),
                                 SerialDevice("gm-gone", METER_GONE, GAS_METER),
                                 SerialDevice("wm-plain", "00000000000003", WATER_PLAIN)],
                       sink, metrics, period_s=0.4)
    try:
        async with running(line):
            await until(lambda: line.polls_ok["gm-1"] >= 2, 5, "polls of the live meter")
            before = line.polls_ok["gm-1"]
            with pytest.raises(CommandError, match=r"gm-gone.*no answer"):
                await line.send(close("gm-gone"))
            with pytest.raises(CommandError, match=r"gm-2.*refused"):
                await line.send(close("gm-2"))
            with pytest.raises(CommandError, match="wm-plain"):      # a meter without valve
                await line.send(close("wm-plain"))
            await until(lambda: line.polls_ok["gm-1"] >= before + 2, 5, "polls go on")
            await line.send(close("gm-1"))
            await until(lambda: valve_states(sink, "gm-1")[-1] is False, 2.5, "closed")
    finally:
        bus.stop()
    assert bus.valves[METER_2] == "open" and bus.valves[METER_GONE] == "open"
    assert metrics.get("gateway_commands_failed_total", transport="serial") == 2
    assert not line.supports("wm-plain", Action.CLOSE_VALVE)


async def test_cjt188_command_while_the_adapter_is_unplugged_fails_at_once(adapter):
    sink = CollectingSink()
    line = cjt188_line(adapter, [SerialDevice("gm-1", METER_1, GAS_METER)], sink,
                       period_s=0.2)
    adapter.unplug()
    async with running(line):
        await until(lambda: line.state == "offline", 5, "line offline")
        with pytest.raises(CommandError, match=r"gm-1.*mbus-1.*offline"):
            await line.send(close("gm-1"))


# -- FieldDrivers: the gateway's way to a device's writer ------------------------------------
async def test_field_drivers_route_commands_to_the_bus_or_line_running_the_device(tmp_path,
                                                                                 adapter):
    from drivers.field import FieldDrivers, plan_field
    from gateway.site import load_site
    from tests.test_profile_formats import _site

    store = MeterStore(GAS_VALVE.entries(), [1])
    store.set_values(1, {"valve_open": True})
    port = free_port()
    server = await serve_meters(store, port)
    meters = MeterBus(adapter, protocol="cjt188", cjt188_type=0x30,
                      cjt188_meters={METER_1: 3.5}).start()
    devices = f"""
  - id: gv-kitchen
    type: gas_valve
    household: h-7-101
    profile: modbus-gas-valve
    modbus: {{bus: b1, unit: 1}}
  - id: gm-7-101
    type: gas_meter
    household: h-7-101
    profile: cjt188-gas-meter
    serial: {{line: mbus, address: "{METER_1}"}}
  - id: em-1
    type: electricity_meter
    grid_cell: "310104-012-03"
    modbus: {{bus: b1, unit: 3}}
"""
    gateway = f"""modbus_buses:
  - {{id: b1, tcp: {{host: 127.0.0.1, port: {port}}}, period_s: 5, timeout_s: 0.3}}
serial_lines:
  - {{id: mbus, device: {adapter.path}, protocol: cjt188, period_s: 5, timeout_s: 0.3}}
"""
    plans = plan_field(load_site(_site(tmp_path, devices, gateway)), PROFILES)
    sink = CollectingSink()
    field = FieldDrivers(plans, sink, Metrics())
    # what a device takes is known before its driver runs (the linkage asks at start-up)
    assert field.supports("gm-7-101", Action.CLOSE_VALVE) and field.writer_for("gm-7-101") is None
    assert field.supports("gv-kitchen", Action.OPEN_VALVE)
    assert not field.supports("em-1", Action.CLOSE_VALVE)
    # what the linkage's card index asks once (WriterRegistry.reachable): the same devices
    assert field.reachable() == {d for d in ("gv-kitchen", "gm-7-101", "em-1")
                                 if any(field.supports(d, a) for a in Action)}
    assert field.reachable() == {"gv-kitchen", "gm-7-101"}
    try:
        async with running(field):
            await until(lambda: valve_states(sink, "gv-kitchen") and
                        valve_states(sink, "gm-7-101"), 5, "first polls")
            assert isinstance(field.writer_for("gv-kitchen"), ModbusBus)
            assert isinstance(field.writer_for("gm-7-101"), SerialLine)
            assert field.writer_for("em-1") is None            # an SDM630 takes no command
            assert field.supports("gv-kitchen", Action.CLOSE_VALVE)
            assert not field.supports("gv-kitchen", Action.SWITCH_OFF)
            await field.send(close("gv-kitchen"))
            await field.send(close("gm-7-101"))
            await until(lambda: valve_states(sink, "gv-kitchen")[-1] is False
                        and valve_states(sink, "gm-7-101")[-1] is False, 3.0,
                        "both valves report closed (period 5 s: the early polls)")
            with pytest.raises(CommandError, match="em-1"):
                await field.send(close("em-1"))
            # an edit of the site restarts the bus: the field drivers route to the new one
            old = field.writer_for("gv-kitchen")
            changed = dict(plans)
            bus = plans["modbus:b1"]
            changed["modbus:b1"] = type(bus)(bus.bus_id, bus.endpoint,
                                             PollPolicy(period_s=4, timeout_s=0.3),
                                             bus.devices)
            field.rebind(changed)
            await until(lambda: field.states().get("modbus:b1") == "online"
                        and field.writer_for("gv-kitchen") is not old, 5, "the new bus")
            await field.send(Command("c-open", "gv-kitchen", Action.OPEN_VALVE))
    finally:
        meters.stop()
        await server.shutdown()
    assert store.writes == [(1, 5, 0, [0]), (1, 5, 0, [1])]
    assert meters.valve_commands == [(METER_1, False)]
