"""``gateway demo``: a whole community on one machine.

Starts a local Mosquitto (generated config, loopback), the simulated grid case system, the
simulated community (``--households`` homes whose residents live their days ``--speed`` times
faster than real time, publishing Zigbee2MQTT and JSON messages, with help keys, a daily
check-in, visits and gas valves: simulators/community_extras.py; ``--example`` runs the small
example site with button presses instead) and the gateway with the console on
http://127.0.0.1:PORT. A duty user with a fresh
random password is created and printed (there are no default passwords). Ctrl-C stops it all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from gateway.broker import Mosquitto, free_port
from gateway.service import Gateway, Overrides, QuietServer, serve_uvicorn

if TYPE_CHECKING:
    from simulators.community import Community

__all__ = ["run_demo", "example_site_dir"]

log = logging.getLogger(__name__)


def example_site_dir() -> Path:
    return Path(str(resources.files("edge_config").joinpath("examples/tianlin")))


async def run_demo(args) -> None:
    from simulators.case_system import create_app as case_app
    from simulators.community_mqtt import run_community
    from simulators.devices import run_devices

    _check_port_free(args.port)     # before anything starts: nothing to leave behind
    tmp = None
    if args.data:
        data = Path(args.data)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gateway-demo-")
        data = Path(tmp.name)
    secret = secrets.token_urlsafe(32)
    os.environ["CASE_SYSTEM_SECRET"] = secret      # read by the gateway via uplinks.yaml
    site_dir = data / "site"
    community, key_id, note = None, "tianlin-07", ""
    if getattr(args, "example", False):
        # A copy: the installer pages edit devices.yaml, never the packaged example.
        if not site_dir.exists():
            import shutil

            shutil.copytree(example_site_dir(), site_dir)
    else:
        community, key_id, note = _community_site(site_dir, args)
    broker = Mosquitto(workdir=data / "mosquitto")
    await asyncio.to_thread(broker.start)
    case_port = free_port()
    try:
        from gateway.uplink.signing import Secret

        cs = QuietServer(uvicorn.Config(
            case_app(Secret(secret), key_id), host="127.0.0.1", port=case_port,
            log_level="warning", access_log=False))
        gw = Gateway(site_dir, data / "gateway", Overrides(
            api_port=args.port, mqtt_port=broker.port,
            case_system_url=f"http://127.0.0.1:{case_port}",
            callback_url=f"http://127.0.0.1:{args.port}/api/case-callback"))
        password, admin_password = _ensure_demo_users(data / "gateway")
        logins = _write_logins(data, args.port, password, admin_password)
        devices = [(d.id, d.type, d.topic) for d in gw.site.devices.devices]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_uvicorn(cs), name="case-system-sim")
            tg.create_task(gw.run(), name="gateway")
            await asyncio.wait_for(gw.started.wait(), 60)
            # the gateway's own data directory is what `gateway token create --data` needs
            where = (f"{data} (the gateway's: {data / 'gateway'})" if tmp is None else
                     "a temporary directory, removed on exit (keep it with --data DIR)")
            print(f"\n  Demo community running.\n"
                  f"  Console:  http://127.0.0.1:{args.port}/\n"
                  f"  Log in as 'duty' with password: {password}\n"
                  f"  (installer pages and admin: user 'admin', password: {admin_password})\n"
                  f"  These logins are also in {logins} (readable by you only).\n"
                  f"  Data: {where}\n"
                  f"  MQTT broker: 127.0.0.1:{broker.port}   case system: "
                  f"http://127.0.0.1:{case_port}/_sim/cases\n"
                  f"{note}"
                  f"  Press Ctrl-C to stop.\n", file=sys.stderr, flush=True)
            tg.create_task(_remind(args.port, logins), name="demo-reminder")
            if community is None:
                tg.create_task(run_devices("127.0.0.1", broker.port, devices,
                                           press_every=args.press_every), name="demo-devices")
            else:
                tg.create_task(run_community("127.0.0.1", broker.port, community,
                                             speed=args.speed, press_every=args.press_every,
                                             seed=args.seed), name="demo-community")
    finally:
        await asyncio.to_thread(broker.cleanup)
        if tmp is not None:
            tmp.cleanup()
        print("demo stopped", file=sys.stderr)


def _community_site(site_dir: Path, args) -> tuple[Community, str, str]:
    """Generate the simulated community's site (rewritten on every start: its size and
    speed are the command's) and plant one incident an hour into simulated time."""
    from simulators.community import Community
    from simulators.community_extras import Extras
    from simulators.site_gen import write_site

    if args.households < 1 or args.speed <= 0:
        raise SystemExit("gateway demo: --households must be >= 1 and --speed > 0")
    origin = float(int(time.time()))
    community = Community(args.households, args.seed, origin=origin,
                          extras=Extras(speed=args.speed))
    write_site(site_dir, community, site_id="sim-community", time_scale=args.speed)
    incidents = community.plant(origin + 3600, origin + 2 * 3600,
                                1 / max(1, sum(h.lives_alone for h in community.households)))
    note = (f"  Community: {args.households} households, {len(community.devices)} devices, "
            f"a simulated day every {86400 / args.speed / 60:.0f} min (--speed {args.speed:g}).\n")
    threshold = _inactivity_threshold_s(site_dir)
    from gateway.site import load_site

    loaded = load_site(site_dir)
    addresses = {h.id: h.address for h in loaded.site.households}
    tz = loaded.site.site.timezone
    for inc in incidents:
        stops = time.time() + (inc.at - origin) / args.speed
        # the resident's last activity is at or before the stop: the alarm comes at the latest
        # one threshold (scaled) after it
        alarm_by = stops + threshold
        place = addresses.get(inc.household, inc.household)
        note += (f"  Planted incident: the resident of {place} stops all activity at "
                 f"{_clock(stops, tz)} ({(stops - time.time()) / 60:.1f} min from now); the "
                 f"inactivity alarm is expected by {_clock(alarm_by, tz)} ({tz}).\n")
    return community, "sim-community", note + _extras_note(community, addresses, args.speed, tz)


def _extras_note(community: Community, addresses: dict[str, str], speed: float,
                 tz: str) -> str:
    """The banner's lines on the help keys, the check-in, the visits and the gas valves."""
    x = community.extras
    if x is None:
        return ""
    note = (f"  Help keys (求助): {len(x.help_keys)} households; daily check-in (报平安): "
            f"{len(x.checkin)} households, {x.checkin_opens // 60:02d}:"
            f"{x.checkin_opens % 60:02d}-{x.checkin_by // 60:02d}:{x.checkin_by % 60:02d} "
            f"real time, every day (not accelerated); visits (探访): {len(x.special)} "
            f"special-difficulty households, {len(x.visited)} to be visited; gas valves: "
            f"{len(x.gas)} kitchens.\n")
    if x.planted_leak is not None:
        hid, at = x.planted_leak
        when = time.time() + (at - community.origin) / speed
        note += (f"  Planted gas leak: the kitchen of {addresses.get(hid, hid)} at "
                 f"{_clock(when, tz)}; its gas valve closes by itself (联动).\n")
    return note


def _inactivity_threshold_s(site_dir: Path) -> float:
    """The generated site's inactivity threshold, in real seconds (scaled by --speed)."""
    from gateway.site import load_site

    site = load_site(site_dir)
    rule = next(r for r in site.rules.rules if r.id == "inactivity")
    return float(rule.threshold)     # no quiet hours on the accelerated rule


def _clock(epoch: float, tz: str = "Asia/Shanghai") -> str:
    """``epoch`` as the console shows it: the site's local time (the simulated community
    is in Asia/Shanghai), whatever the machine's own zone is."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(epoch, ZoneInfo(tz)).strftime("%H:%M:%S")


def _write_logins(data: Path, port: int, duty: str, admin: str) -> Path:
    """The demo's logins in a file only its user can read (0600), for when the banner has
    scrolled away."""
    path = data / "demo-logins.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"console: http://127.0.0.1:{port}/\nduty: {duty}\nadmin: {admin}\n")
    os.chmod(path, 0o600)     # an existing file keeps its mode on open(); make sure
    return path


async def _remind(port: int, logins: Path, every_s: float = 600.0) -> None:
    """Every 10 minutes: where the console and the logins are (the path, never a password:
    no secrets in logs)."""
    while True:
        await asyncio.sleep(every_s)
        log.warning("demo: console http://127.0.0.1:%d/ - users 'duty' and 'admin', "
                    "passwords in %s", port, logins)


def _check_port_free(port: int) -> None:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(f"gateway demo: port {port} is in use; choose another with "
                             f"--port N") from None


def _ensure_demo_users(data: Path) -> tuple[str, str]:
    """Create (or reset) the demo's duty and admin users with new random passwords (so the
    demo never asks for the first-admin setup token)."""
    from gateway.auth import Auth
    from gateway.store import Store, accounts

    store = Store(data / "gateway.db")
    store.open()
    try:
        auth = Auth(store)
        out = []
        for user, role, name in (("duty", "duty", "值班员"), ("admin", "admin", "管理员")):
            password = secrets.token_urlsafe(9)
            store.write_sync(functools.partial(accounts.delete_user, username=user))
            auth.add_user(user, role, password, display_name=name)
            out.append(password)
        return out[0], out[1]
    finally:
        store.close()
