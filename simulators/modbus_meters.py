"""Simulated Modbus meters: a real pymodbus server whose units answer from a register map.

Each unit holds the registers a profile's register map describes (e.g. Eastron SDM630: input
registers, float32), encoded with :func:`drivers.codecs.modbus_registers.encode_value`, so the
gateway's driver reads exactly what a real meter would send. A unit can be made *dead* (the
server stays silent, as a disconnected RS-485 device does: the client times out) and values
can be changed while the server runs. Coils (function 01, written with 05/15) and discrete
inputs (02) hold 0/1; writes to holding registers (06/16) and coils change what the next
read returns (a valve controller obeys at once) and are kept in ``writes``; a write to an
address the unit does not hold is an illegal-address exception, as on a real device.

The server uses pymodbus' ``ModbusServerContext`` with a custom data store (this class);
addresses are 0-based PDU addresses, as in the profiles.

    python -m simulators.modbus_meters --port 5020 --units 1-20 --dead 7 \
        --profile eastron-sdm630

``--log-writes`` prints ``write UNIT FC ADDRESS VALUES MONOTONIC`` for each write it obeys
(``time.monotonic()``: on Linux one clock for every process of the machine, so a benchmark
can time a command's arrival from its own process); :class:`MeterProcess` runs it so and
collects them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

from drivers.codecs.modbus_registers import RegisterEntry, encode_value
from drivers.profiles import ModbusProfile, load_profiles

__all__ = ["MeterProcess", "MeterStore", "Write", "default_values", "serve_meters"]

log = logging.getLogger(__name__)


def default_values(entries: list[RegisterEntry], unit: int) -> dict[str, float | bool]:
    """Plausible readings for a meter, different per unit (deterministic)."""
    rng = random.Random(unit)
    out: dict[str, float | bool] = {}
    for e in entries:
        k = e.kind.value
        if e.is_bool:
            out[e.metric] = k == "valve_open"       # a valve is open; no alarm, no fault
        elif k == "voltage":
            out[e.metric] = round(rng.uniform(215, 235), 1)
        elif k == "current":
            out[e.metric] = round(rng.uniform(0.5, 20), 2)
        elif k == "power":
            out[e.metric] = round(rng.uniform(100, 4000), 1)
        elif k == "frequency":
            out[e.metric] = 50.0
        elif k == "battery":
            out[e.metric] = 90.0
        else:
            out[e.metric] = round(rng.uniform(10, 9000), 2)
    return out


#: function code -> the table it reads or writes (1 coils, 2 discrete inputs, 3 holding, 4 input)
_TABLE = {1: 1, 5: 1, 15: 1, 2: 2, 3: 3, 6: 3, 16: 3, 4: 4}


class MeterStore(ModbusServerContext):
    """Registers of several units; pymodbus calls :meth:`async_getValues` per request."""

    def __init__(self, entries: list[RegisterEntry], units: list[int]):
        # Deliberately not calling super().__init__: this is the documented way to give the
        # server a data store of our own (old_simulator=True makes the server use it as-is).
        self.old_simulator = True
        self.simdevices = []
        self._devices = {}
        self.entries = entries
        self.units = set(units)
        self.dead: set[int] = set()
        self.registers: dict[int, dict[tuple[int, int], int]] = {u: {} for u in units}
        self.requests = 0
        self.writes: list[tuple[int, int, int, list[int]]] = []   # (unit, fc, address, values)
        self.log_writes = False
        for u in units:
            self.set_values(u, default_values(entries, u))

    def set_values(self, unit: int, values: dict[str, float | bool]) -> None:
        regs = self.registers[unit]
        for e in self.entries:
            if e.metric in values:
                for i, word in enumerate(encode_value(e, values[e.metric])):
                    regs[(e.function, e.address + i)] = word

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1):
        if device_id not in self.units or device_id in self.dead:
            raise NoSuchIdException(f"unit {device_id} does not answer")
        self.requests += 1
        regs = self.registers[device_id]
        table = _TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        out = []
        for a in range(address, address + count):
            word = regs.get((table, a))
            if word is None:
                # a gap inside a merged read: real meters return 0 for unused registers;
                # a read that touches nothing we hold is an illegal address
                word = 0
            out.append(word)
        if all((table, a) not in regs for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        return [bool(w) for w in out] if table in (1, 2) else out

    async def async_setValues(self, device_id, func_code, address, values):
        if device_id not in self.units or device_id in self.dead:
            raise NoSuchIdException(f"unit {device_id} does not answer")
        table = _TABLE.get(func_code)
        if table not in (1, 3):
            return ExcCodes.ILLEGAL_FUNCTION
        regs = self.registers[device_id]
        if any((table, address + i) not in regs for i in range(len(values))):
            return ExcCodes.ILLEGAL_ADDRESS
        for i, v in enumerate(values):
            regs[(table, address + i)] = int(v)
        self.writes.append((device_id, func_code, address, [int(v) for v in values]))
        if self.log_writes:
            print(f"write {device_id} {func_code} {address} "
                  f"{','.join(str(int(v)) for v in values)} {time.monotonic():.6f}", flush=True)
        return None

    def value(self, unit: int, metric: str) -> list[int]:
        """The raw words (or bits) a unit holds for ``metric`` now."""
        e = next(e for e in self.entries if e.metric == metric)
        return [self.registers[unit][(e.function, e.address + i)] for i in range(e.count)]

    def device_ids(self):
        return sorted(self.units)


async def serve_meters(store: MeterStore, port: int, host: str = "127.0.0.1") -> ModbusTcpServer:
    """Start a Modbus TCP server for ``store`` in the running loop (``await server.shutdown()``)."""
    server = ModbusTcpServer(store, address=(host, port), ignore_missing_devices=True)
    await server.serve_forever(background=True)
    return server


@dataclass(frozen=True)
class Write:
    """A write the simulator obeyed: unit, function code, address, values, and the
    ``time.monotonic()`` at which it did."""

    unit: int
    function: int
    address: int
    values: tuple[int, ...]
    at: float


class MeterProcess:
    """This simulator as a process of its own (``--log-writes``) on 127.0.0.1:``port``;
    ``writes`` fills as it obeys them (a thread reads its output)."""

    def __init__(self, port: int, units: list[int], profile: str):
        self.writes: list[Write] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.modbus_meters", "--port", str(port), "--units",
             ",".join(str(u) for u in units), "--profile", profile, "--log-writes"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError(f"the Modbus simulator on port {port} did not start")
        self._thread = threading.Thread(target=self._read, name="modbus-sim-writes",
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:            # ends when the process does
            w = line.split()
            if len(w) == 6 and w[0] == "write":
                self.writes.append(Write(int(w[1]), int(w[2]), int(w[3]),
                                         tuple(int(v) for v in w[4].split(",")), float(w[5])))

    def first_write(self, unit: int) -> float | None:
        """When ``unit`` was first written, or None."""
        return next((w.at for w in list(self.writes) if w.unit == unit), None)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if hasattr(self, "_thread"):
            self._thread.join(5)


def _units(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def profile_entries(profile_id: str) -> list[RegisterEntry]:
    profile = load_profiles().by_id.get(profile_id)
    if not isinstance(profile, ModbusProfile):
        raise SystemExit(f"{profile_id}: not a shipped Modbus profile")
    return profile.entries()


async def _main(args: argparse.Namespace) -> None:
    entries = profile_entries(args.profile)
    servers = []
    for port in args.port:
        store = MeterStore(entries, _units(args.units))
        store.log_writes = args.log_writes
        if args.dead and (args.dead_port is None or args.dead_port == port):
            store.dead = set(_units(args.dead))
        servers.append(await serve_meters(store, port))
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for s in servers:
            await s.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, action="append", required=True,
                   help="TCP port on 127.0.0.1 (repeat for several buses)")
    p.add_argument("--units", default="1", help="unit ids, e.g. 1-20")
    p.add_argument("--dead", default="", help="unit ids that never answer, e.g. 7")
    p.add_argument("--dead-port", type=int, default=None,
                   help="only the units of this port are dead (default: every port's)")
    p.add_argument("--profile", default="eastron-sdm630")
    p.add_argument("--log-writes", action="store_true",
                   help="print each write obeyed, with its time.monotonic()")
    args = p.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

