"""Crash consistency of the care writes (issue 15): ``kill -9`` the real gateway at random
moments while residents press help keys, staff enter help requests for phone calls, set and
end households' care states and record call outcomes; then count what a user can observe.

``python -m simulators.bench crash_care [--seed N] [--kills 12] [--quick]``; the quick CI
variant is ``tests/test_crash_care.py`` (same code, :func:`run_suite`, 4 kills).

Real processes on loopback, as in :mod:`simulators.bench.crash` (whose gateway process and
device publisher it uses): Mosquitto, the simulated case system and ``gateway run`` on a copy
of the example site with

- Zigbee2MQTT callers whose keys ``2_single``, ``3_single`` and ``4_single`` are help keys
  (meal, repair, escort) on the example's households, and one more for the final barrier;
- households ``h-c-N`` without devices, whose care states staff change (no activity of
  theirs can end a state early, so the last acknowledged change is what must be in force);
- an SOS caller, pressed once at the start: the alarm whose call outcomes staff record.

Workload (threads with their own ``random.Random`` from the seed; every loop bounded in
count and time): *residents* press a random help key of a random caller (QoS 1; a press
counts once the broker's PUBACK reached the device: the broker then holds it for the
gateway's persistent session); *staff* (bearer token, only while the gateway is up) enter a
help request with a unique note and ``request_id``, set or end a care household's state
(unique note) or record a call outcome on the SOS alarm (unique note, ``request_id``). An
answer 2xx is *acknowledged*; no answer (the kill cut it) is *ambiguous*. The main thread
starts the gateway, waits for ``/readyz`` (now and then kills it while it is still starting),
keeps it up for a random while (now and then only until a staff request is on its way, then
0-30 ms: between its commit and its answer), ``SIGKILL``s it and keeps it down for a random
while.

After the last kill the gateway starts once more; a press of the barrier caller (delivered
after every press the broker held) shows every earlier press was handled, and the run waits
for the case outbox to drain (``gateway_outbox_pending`` 0), all bounded. Counted (any
count above zero fails the run):

- ``lost_presses``: a press of a help key (caller, category), acknowledged, with no request
  of that key created after or within 60 s before it (the presses of one key within 60 s
  are one request); ``duplicate_requests``: two requests of one key less than 60 s apart;
  ``phantom_requests``: a request for a key never pressed;
- ``lost_help_entries`` / ``duplicate_help_entries``: a staff request answered 201 missing,
  or any entry (by its note) there twice;
- ``missing_cases`` / ``duplicate_cases`` / ``orphan_cases``: a request without exactly one
  service case at the case system (by its idempotency key ``...-help-<id>-0``), or a service
  case of no request;
- ``lost_care``: a household whose care state is not what its last acknowledged change left
  (or, after it, what one of the ambiguous ones would have);
- ``lost_call_outcomes`` / ``duplicate_call_outcomes``: a call outcome answered 200 missing
  from the alarm's history, or one recorded twice.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from simulators.bench import crash
from simulators.bench.crash import EXAMPLE, GatewayProc, Publisher, _log, _metric, _until

__all__ = ["Options", "add_args", "run", "run_suite"]

KEYS = {"2_single": "meal", "3_single": "repair", "4_single": "escort"}
HOUSEHOLDS = ("h-7-101", "h-7-302", "h-9-201")
BARRIER = "caller-hb"
REPEAT_S = 60.0               # gateway.help_requests.REPEAT_S: one key's presses, one request
CLOCK_S = 1.0                 # requests' created_at are whole seconds
SOS_CALLER = "caller-sos"
FAILURE_KEYS = ("lost_presses", "duplicate_requests", "phantom_requests", "lost_help_entries",
                "duplicate_help_entries", "missing_cases", "duplicate_cases", "orphan_cases",
                "lost_care", "lost_call_outcomes", "duplicate_call_outcomes")


@dataclass
class Options:
    seed: int = 0
    kills: int = 12
    quick: bool = False
    callers: int = 6                  # Zigbee2MQTT callers with three help keys each
    care_households: int = 4
    uptime_s: tuple[float, float] = (0.8, 4.0)
    downtime_s: tuple[float, float] = (0.3, 2.5)
    early_kill_p: float = 0.15        # kill while still starting (before /readyz)
    aim_at_staff_p: float = 0.3       # kill just as a staff request is sent
    press_gap_s: tuple[float, float] = (0.05, 0.4)
    staff_gap_s: tuple[float, float] = (0.03, 0.25)
    workdir: Path | None = None
    progress: bool = True

    @classmethod
    def quick_options(cls, seed: int = 0, kills: int = 4, **kw) -> Options:
        """About 30-40 s on two cores."""
        return cls(seed=seed, kills=kills, quick=True, uptime_s=(0.8, 2.5),
                   downtime_s=(0.3, 1.5), **kw)


def add_args(p: argparse.ArgumentParser) -> None:
    crash.add_args(p, kills=12, quick_kills=4)


def run(args: argparse.Namespace) -> dict:
    if args.quick:
        opts = Options.quick_options(seed=args.seed, kills=args.kills or 4)
    else:
        opts = Options(seed=args.seed, kills=args.kills or 12)
    opts.workdir = args.workdir
    return run_suite(opts)


def run_suite(opts: Options) -> dict:
    """Run the whole suite; the report (``ok``, ``failures``, ``examples``, figures)."""
    return crash.in_workdir(opts.workdir, "bench-crash-care-",
                            lambda work: CareCrashRun(opts, work).run())


def _site(dest: Path, opts: Options, mqtt_port: int, case_url: str) -> None:
    from ruamel.yaml import YAML

    shutil.copytree(EXAMPLE, dest)
    # the local broker saves every second (gateway.broker): the alarm devices move to the
    # alarm session 2 s after its subscription, so kills land before, during and after moves
    (dest / "gateway.yaml").write_text(
        f"mqtt:\n  host: 127.0.0.1\n  port: {mqtt_port}\n  max_payload_bytes: 4096\n"
        "  alarm_fence_delay_s: 2\n")
    (dest / "uplinks.yaml").write_text(
        f"case_system:\n  url: {case_url}\n  key_id: tianlin-07\n"
        f"  secret_env: CASE_SYSTEM_SECRET\n  timeout_s: 2\n")
    yaml = YAML(typ="safe")
    site = yaml.load((dest / "site.yaml").read_text(encoding="utf-8"))
    cell = site["households"][0]["grid_cell"]
    for i in range(opts.care_households):
        site["households"].append({"id": f"h-c-{i + 1}", "address": f"田林路200弄9号{i + 1}01室",
                                   "building": "9", "grid_cell": cell})
    (dest / "site.yaml").write_text(json.dumps(site, ensure_ascii=False))   # JSON is YAML
    devices = yaml.load((dest / "devices.yaml").read_text(encoding="utf-8"))["devices"]
    for i, name in enumerate([f"caller-h{i + 1}" for i in range(opts.callers)] + [BARRIER]):
        devices.append({"id": name, "type": "emergency_caller",
                        "household": HOUSEHOLDS[i % len(HOUSEHOLDS)],
                        "mqtt": {"zigbee2mqtt": name}, "help_actions": KEYS})
    devices.append({"id": SOS_CALLER, "type": "emergency_caller", "household": "h-9-201",
                    "mqtt": {"topic": f"devices/{SOS_CALLER}"}})
    (dest / "devices.yaml").write_text(json.dumps({"devices": devices}, ensure_ascii=False))


@dataclass
class StaffOp:
    what: str                 # help | care_set | care_end | call
    target: str               # household, or the alarm id
    note: str
    status: str = "sent"      # ok | ambiguous | refused
    state: str | None = None  # care_set: the state set


@dataclass
class Model:
    #: acked presses of each key (caller, category): wall times
    pressed: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    unacked: set[tuple[str, str]] = field(default_factory=set)
    ops: list[StaffOp] = field(default_factory=list)


class CareCrashRun:
    def __init__(self, opts: Options, work: Path):
        self.o = opts
        self.work = work
        rng = random.Random(opts.seed)
        self.rng_kill = random.Random(rng.getrandbits(64))
        self.rng_press = random.Random(rng.getrandbits(64))
        self.rng_staff = random.Random(rng.getrandbits(64))
        self.model = Model()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.kills = self.early = self.restarts = self.aimed = 0
        self.staff_sending = threading.Event()     # set as a staff request goes out
        self.alarm_id: int | None = None
        self.call_key = "resident:0"
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        if self.o.progress:
            _log(f"{time.monotonic() - self.t0:6.1f} s  {msg}")

    def run(self) -> dict:
        threads = [threading.Thread(target=self._presses, name="crash-care-presses"),
                   threading.Thread(target=self._staff, name="crash-care-staff")]

        def setup(broker_port: int, sim: Any) -> tuple[GatewayProc, Publisher]:
            _site(self.work / "site", self.o, broker_port, sim.url)
            self.gw = GatewayProc(self.work / "site", self.work / "data",
                                  {"CASE_SYSTEM_SECRET": sim.secret})
            self.token = self.gw.token("duty", "crash-care")
            self.sim_url = sim.url
            self.pub = Publisher(broker_port)
            return self.gw, self.pub

        return crash.killing_run(self.work, setup, lambda: self._kills(threads), self.stop,
                                 lambda: threads, self._final)

    def _api(self) -> httpx.Client:
        return httpx.Client(base_url=self.gw.url, timeout=2.0,
                            headers={"Authorization": f"Bearer {self.token}"})

    # -- kills -------------------------------------------------------------------------
    def _kills(self, threads: list[threading.Thread]) -> None:
        gw, r = self.gw, self.rng_kill
        for cycle in range(1, 3 * self.o.kills + 2):
            if self.kills >= self.o.kills:
                return
            gw.start()
            if cycle > 1 and r.random() < self.o.early_kill_p:
                time.sleep(r.uniform(0.05, 1.2))       # during start-up and recovery
                gw.kill()
                self.kills += 1
                self.early += 1
                self.log(f"cycle {cycle}: SIGKILL before /readyz; kills {self.kills}")
                time.sleep(r.uniform(*self.o.downtime_s))
                continue
            gw.wait_ready()
            self.restarts += 1
            if cycle == 1:
                self._first_alarm()
                for t in threads:      # the gateway's session exists: the broker keeps presses
                    t.start()
            up = r.uniform(*self.o.uptime_s)
            aim, delay = r.random() < self.o.aim_at_staff_p, r.uniform(0.0, 0.03)
            if aim:       # half the uptime as usual, then the next staff request is the moment
                time.sleep(up / 2)
                self.staff_sending.clear()
                aim = self.staff_sending.wait(up / 2)
                if aim:
                    time.sleep(delay)
                    self.aimed += 1
            else:
                time.sleep(up)
            gw.kill()
            self.kills += 1
            self.log(f"cycle {cycle}: SIGKILL after {up:.1f} s up"
                     f"{' (as a staff request was sent)' if aim else ''}; kills {self.kills}")
            time.sleep(r.uniform(*self.o.downtime_s))

    def _first_alarm(self) -> None:
        """Press the SOS caller once and wait for its alarm (the call outcomes' alarm)."""
        if not self.pub.publish(f"devices/{SOS_CALLER}", {"sos": True}):
            raise RuntimeError("the broker did not acknowledge the SOS press")
        with self._api() as api:
            def alarm() -> dict | None:
                try:
                    found = [a for a in api.get("/api/alarms", params={"state": "open"}).json()
                             ["alarms"] if a.get("device_id") == SOS_CALLER]
                except (httpx.HTTPError, ValueError, KeyError):
                    return None
                return found[0] if found else None
            first = _until(alarm, 20)
        if first is None:
            raise RuntimeError("no alarm for the SOS press within 20 s")
        self.alarm_id = first["id"]
        plan = (first.get("response") or {}).get("call_plan") or []
        self.call_key = plan[0]["key"] if plan else self.call_key

    # -- residents -----------------------------------------------------------------------
    def _presses(self) -> None:
        r = self.rng_press
        callers = [f"caller-h{i + 1}" for i in range(self.o.callers)]
        deadline = time.monotonic() + 600
        for _ in range(100_000):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            time.sleep(r.uniform(*self.o.press_gap_s))
            device, action = r.choice(callers), r.choice(sorted(KEYS))
            sent = time.time()
            ok = self.pub.publish(f"zigbee2mqtt/{device}", {"action": action})
            with self.lock:
                pair = (device, KEYS[action])
                if ok:
                    self.model.pressed.setdefault(pair, []).append(sent)
                else:
                    self.model.unacked.add(pair)

    # -- staff ---------------------------------------------------------------------------
    def _staff(self) -> None:
        r = self.rng_staff
        # what each op is comes from its own generator, drawn only for an op that is sent:
        # the gaps (drawn also while the gateway is down) must not change the mix of ops,
        # or a run's timing could leave out a kind (a run without a call outcome). Ops come
        # in shuffled blocks of five: a help entry, a call outcome, a care state set, one
        # ended, and one more of any kind
        kinds = random.Random(r.getrandbits(64))
        block: list[float] = []
        homes = [f"h-c-{i + 1}" for i in range(self.o.care_households)]
        deadline = time.monotonic() + 600
        with self._api() as api:
            for n in range(100_000):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                time.sleep(r.uniform(*self.o.staff_gap_s))
                if not self.gw.up.is_set():
                    continue
                if not block:       # a roll in each kind's band, and one drawn freely
                    block = [0.15, 0.42, 0.7, 0.9, kinds.random()]
                    kinds.shuffle(block)
                roll = block.pop()
                note = f"crash-care {self.o.seed} #{n}"
                call: tuple[str, str, dict | None]
                if roll < 0.3:
                    op = StaffOp("help", r.choice(HOUSEHOLDS), note)
                    call = ("POST", "/api/help-requests", {
                        "category": r.choice(sorted(KEYS.values())), "household_id": op.target,
                        "note": note, "request_id": f"crash-care-{self.o.seed}-{n}"})
                elif roll < 0.55:
                    op = StaffOp("call", str(self.alarm_id), note)
                    call = ("POST", f"/api/alarms/{self.alarm_id}/calls", {
                        "contact": self.call_key, "note": note,
                        "outcome": r.choice(["connected", "no_answer", "notified"]),
                        "request_id": f"crash-care-{self.o.seed}-{n}"})
                elif roll < 0.85:
                    op = StaffOp("care_set", r.choice(homes), note,
                                 state=r.choice(["away", "hospital", "carer"]))
                    call = ("PUT", f"/api/households/{op.target}/care",
                            {"state": op.state, "note": note})
                else:
                    op = StaffOp("care_end", r.choice(homes), note)
                    call = ("DELETE", f"/api/households/{op.target}/care", None)
                with self.lock:
                    self.model.ops.append(op)
                self.staff_sending.set()
                try:
                    res = api.request(call[0], call[1], json=call[2])
                except httpx.HTTPError:
                    op.status = "ambiguous"
                    continue
                if res.is_success or (op.what == "care_end" and res.status_code == 404):
                    op.status = "ok"        # (404: the household had no state: none now)
                else:
                    op.status = "refused"

    # -- the end ---------------------------------------------------------------------------
    def _final(self) -> dict:
        gw = self.gw
        gw.start()
        gw.wait_ready()
        self.restarts += 1
        barrier_ok = self.pub.publish(f"zigbee2mqtt/{BARRIER}", {"action": "2_single"})
        with self._api() as api:
            def listing() -> list[dict]:
                try:
                    return api.get("/api/help-requests").json()["requests"]
                except (httpx.HTTPError, ValueError, KeyError):
                    return []
            settled = bool(barrier_ok and _until(
                lambda: any(q["device_id"] == BARRIER for q in listing()), 30))

            def drained() -> bool:
                try:
                    return _metric(api.get("/metrics").text, "gateway_outbox_pending") == 0
                except httpx.HTTPError:
                    return False
            outbox_drained = bool(_until(drained, 30, 0.2))
            requests = listing()
            care = api.get("/api/care").json()["care"]
            alarm = api.get(f"/api/alarms/{self.alarm_id}").json()
        cases = httpx.get(f"{self.sim_url}/_sim/cases", timeout=10).json()["cases"]
        report = self._evaluate(requests, care, alarm, cases)
        report.update(settled=settled, outbox_drained=outbox_drained)
        report["ok"] = settled and outbox_drained and not any(report["failures"].values())
        if self.o.workdir is not None:
            (self.work / "evidence.json").write_text(json.dumps({
                "pressed": [[*k, v] for k, v in self.model.pressed.items()],
                "ops": [vars(o) for o in self.model.ops], "requests": requests,
                "care": care, "alarm": alarm, "cases": cases},
                ensure_ascii=False, indent=1, default=str))
        return report

    def _evaluate(self, requests: list[dict], care: list[dict], alarm: dict,
                  cases: list[dict]) -> dict:
        fail = {k: 0 for k in FAILURE_KEYS}
        examples: dict[str, list] = {k: [] for k in FAILURE_KEYS}

        def bad(key: str, example: object) -> None:
            fail[key] += 1
            if len(examples[key]) < 5:
                examples[key].append(example)

        m = self.model
        keyed: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for q in requests:
            if q["channel"] == "caller_key" and q["device_id"] != BARRIER:
                keyed.setdefault((q["device_id"], q["category"]), []).append(
                    (datetime.fromisoformat(q["created_at"]).timestamp(), q["id"]))
        for pair, presses in m.pressed.items():
            created = [c for c, _ in keyed.get(pair, [])]
            for p in presses:
                if not any(c >= p - REPEAT_S - CLOCK_S for c in created):
                    bad("lost_presses", [*pair, p])
        for pair, made in keyed.items():
            made.sort()
            for (a, ida), (b, idb) in zip(made, made[1:]):
                if b - a < REPEAT_S - CLOCK_S:
                    bad("duplicate_requests", [*pair, ida, idb, round(b - a, 1)])
            if pair not in m.pressed and pair not in m.unacked:
                bad("phantom_requests", [*pair, [i for _, i in made]])
        by_note: dict[str, int] = {}
        for q in requests:
            if q["channel"] == "phone":
                by_note[q["note"]] = by_note.get(q["note"], 0) + 1
        helps = [o for o in m.ops if o.what == "help"]
        for o in helps:
            if o.status == "ok" and not by_note.get(o.note):
                bad("lost_help_entries", o.note)
        for note, n in by_note.items():
            if n > 1:
                bad("duplicate_help_entries", note)
        service = [c for c in cases if c["category"] == "service"]
        per_key: dict[str, int] = {}
        for c in service:
            per_key[c["idempotency_key"]] = per_key.get(c["idempotency_key"], 0) + 1
        known = {q["id"] for q in requests}
        for q in requests:
            n = sum(v for k, v in per_key.items() if k.endswith(f"-help-{q['id']}-0"))
            if n == 0:
                bad("missing_cases", q["id"])
            elif n > 1:
                bad("duplicate_cases", q["id"])
        for key in per_key:
            head, _, rest = key.rpartition("-help-")
            if not head or int(rest.split("-")[0]) not in known:
                bad("orphan_cases", key)
        in_force = {c["household_id"]: (c["state"], c["note"]) for c in care}
        for home in {o.target for o in m.ops if o.what.startswith("care")}:
            ops = [o for o in m.ops if o.target == home and o.what.startswith("care")]
            last_ok = max((i for i, o in enumerate(ops) if o.status == "ok"), default=-1)
            allowed = [None] if last_ok < 0 else [_care_after(ops[last_ok])]
            allowed += [_care_after(o) for o in ops[last_ok + 1:] if o.status == "ambiguous"]
            if in_force.get(home) not in allowed:
                bad("lost_care", {"household": home, "in_force": in_force.get(home),
                                  "allowed": allowed})
        calls: dict[str, int] = {}
        for e in alarm.get("events", []):
            detail = e.get("detail") or {}
            if e.get("action") == "call":
                calls[detail.get("note", "")] = calls.get(detail.get("note", ""), 0) + 1
        for o in m.ops:
            if o.what == "call" and o.status == "ok" and not calls.get(o.note):
                bad("lost_call_outcomes", o.note)
        for note, n in calls.items():
            if n > 1:
                bad("duplicate_call_outcomes", note)
        count = {what: sum(1 for o in m.ops if o.what == what and o.status == "ok")
                 for what in ("help", "call", "care_set", "care_end")}
        return {
            "seed": self.o.seed, "kills": self.kills, "early_kills": self.early,
            "kills_aimed_at_staff": self.aimed,
            "restarts": self.restarts, "help_keys_pressed": len(m.pressed),
            "presses_acked": sum(len(v) for v in m.pressed.values()),
            "requests": len(requests),
            "service_cases": len(service),
            "staff_ops_acked": count, "staff_ops_ambiguous": sum(
                1 for o in m.ops if o.status == "ambiguous"),
            "care_in_force": len(in_force), "failures": fail,
            "examples": {k: v for k, v in examples.items() if v}}


def _care_after(op: StaffOp) -> tuple[str, str] | None:
    """The household's care state once ``op`` took effect."""
    return (op.state or "", op.note) if op.what == "care_set" else None
