"""Broker accounts for a site: one MQTT user per device, ACLs, and the gateway's own user.

    python mqtt-accounts.py --config SITE_DIR --env ENV_FILE --out DIR [--rotate DEVICE]...

Run with the gateway's virtual environment (it reads the site with gateway.site). Writes into
DIR (by default /etc/mosquitto/community-gateway):

- ``credentials.csv`` (0600): device,username,password,topic — the source of truth for device
  passwords, handed to the installer who programs the devices. Devices already listed keep
  their password; new devices get a random one; ``--rotate DEVICE`` issues a new one; devices
  no longer in the site are removed (their access ends with the next broker reload).
- ``passwd``: mosquitto password file (PBKDF2-SHA512 hashes, made by ``mosquitto_passwd -U``),
  regenerated from credentials.csv plus the gateway user whose password is ``MQTT_PASSWORD``
  in ENV_FILE (root:gateway 0640, never in the repo).
- ``acl``: each device may publish only to its own topic; the Zigbee2MQTT bridge user
  (``zigbee2mqtt``) owns ``zigbee2mqtt/#``; the gateway user may read every topic and write
  the command topics of the devices that take commands (linkage).
- the alarm session's account (``gateway-alarm``, password ``MQTT_ALARM_PASSWORD`` in
  ENV_FILE, when set): once the gateway has recorded that its alarm session is subscribed
  (``broker-partition.json`` in ``--data``), that account alone reads the alarm devices'
  topics and the gateway user is denied them, so that an SOS has a queue of its own at the
  broker (gateway.broker_acl; docs/architecture.md "The alarm session"). Before that record
  it reads nothing.

The ``zigbee2mqtt`` account always exists (its row in credentials.csv, a random password kept
across runs, ``--rotate zigbee2mqtt`` for a new one): a fresh site has no Zigbee device yet,
and Zigbee2MQTT must log in before its devices can be paired and reach the installer's inbox.

Exit status 1 with a FILE:LINE message when the site is invalid. Then
``systemctl reload mosquitto`` (SIGHUP) applies the new files.
"""

from __future__ import annotations

import argparse
import csv
import grp
import io
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GATEWAY_USER = "gateway"
ALARM_USER = "gateway-alarm"
BRIDGE_USER = "zigbee2mqtt"


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically with ``mode`` from the first byte."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path, help="site directory")
    p.add_argument("--env", required=True, type=Path, help="env file with MQTT_PASSWORD")
    p.add_argument("--out", default=Path("/etc/mosquitto/community-gateway"), type=Path)
    p.add_argument("--group", default="mosquitto",
                   help="group that may read passwd/acl (the broker's)")
    p.add_argument("--data", default=Path("/var/lib/community-gateway"), type=Path,
                   help="the gateway's data directory (its broker-partition.json)")
    p.add_argument("--rotate", action="append", default=[], metavar="DEVICE")
    p.add_argument("--mosquitto-passwd", default=shutil.which("mosquitto_passwd")
                   or "/usr/bin/mosquitto_passwd")
    args = p.parse_args(argv)

    from gateway import ConfigError
    from gateway.broker_acl import gateway_acl, read_partition
    from gateway.service import bindings_for
    from gateway.site import load_site

    try:
        site = load_site(args.config)
        bindings = bindings_for(site)
    except ConfigError as exc:
        print("\n".join(exc.issues), file=sys.stderr)
        return 1
    env = read_env(args.env)
    gw_password = env.get("MQTT_PASSWORD")
    alarm_password = env.get("MQTT_ALARM_PASSWORD")
    for reserved in (GATEWAY_USER, ALARM_USER, BRIDGE_USER):
        if any(d.id == reserved for d in site.devices.devices):
            print(f"{args.config}/devices.yaml: devices.{reserved}: the id {reserved!r} is "
                  "reserved for a broker account; rename the device", file=sys.stderr)
            return 1
    partition = bool(alarm_password) and read_partition(args.data) == ALARM_USER
    if not gw_password:
        print(f"{args.env}: MQTT_PASSWORD is not set", file=sys.stderr)
        return 1
    if not Path(args.mosquitto_passwd).exists():
        print("mosquitto_passwd not found (apt-get install mosquitto)", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    cred_file = args.out / "credentials.csv"
    old: dict[str, dict] = {}
    if cred_file.exists():
        with open(cred_file, newline="", encoding="utf-8") as fh:
            old = {row["device"]: row for row in csv.DictReader(fh)}

    rows, acl = [], [f"# generated by mqtt-accounts.py from {args.config}; "
                     "edit the site, not this file", "",
                     *gateway_acl(bindings, user=GATEWAY_USER,
                                  alarm_user=ALARM_USER if alarm_password else None,
                                  partition=partition)]
    new = rotated = 0
    for d in site.devices.devices:
        if ":" in d.id:
            print(f"{args.config}/devices.yaml: devices.{d.id}: an MQTT user name cannot "
                  "contain ':'; rename the device", file=sys.stderr)
            return 1
        if d.mqtt is not None and d.mqtt.zigbee2mqtt:
            continue             # the bridge publishes for it; no account of its own
        prev = old.get(d.id)
        if prev is None or d.id in args.rotate:
            password = secrets.token_urlsafe(18)
            new += prev is None
            rotated += prev is not None
        else:
            password = prev["password"]
        rows.append({"device": d.id, "username": d.id, "password": password, "topic": d.topic})
        acl += [f"user {d.id}", f"topic write {d.topic}", ""]
    # always: Zigbee2MQTT logs in before the first Zigbee device is paired (the inbox)
    prev = old.get(BRIDGE_USER)
    if prev is None or BRIDGE_USER in args.rotate:
        password = secrets.token_urlsafe(18)
        new += prev is None
        rotated += prev is not None
    else:
        password = prev["password"]
    rows.append({"device": BRIDGE_USER, "username": BRIDGE_USER, "password": password,
                 "topic": "zigbee2mqtt/#"})
    acl += [f"user {BRIDGE_USER}", "topic readwrite zigbee2mqtt/#", ""]
    removed = sorted(set(old) - {r["device"] for r in rows})

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "passwd"
        lines = [f"{GATEWAY_USER}:{gw_password}"] + (
            [f"{ALARM_USER}:{alarm_password}"] if alarm_password else []) + [f"{r['username']}:{r['password']}"
                                                      for r in rows]
        write_private(plain, "\n".join(lines) + "\n")
        # -U hashes a plain-text file in place; passwords never appear on a command line
        subprocess.run([args.mosquitto_passwd, "-U", str(plain)], check=True,
                       capture_output=True, timeout=120)
        hashed = plain.read_text(encoding="utf-8")
    try:
        gid = grp.getgrnam(args.group).gr_gid
    except KeyError:
        gid = None
    for name, text in (("passwd", hashed), ("acl", "\n".join(acl))):
        write_private(args.out / name, text, 0o640 if gid is not None else 0o600)
        if gid is not None and os.geteuid() == 0:
            os.chown(args.out / name, 0, gid)
    sio = io.StringIO()
    w = csv.DictWriter(sio, fieldnames=["device", "username", "password", "topic"],
                       lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_private(cred_file, sio.getvalue())
    print(f"mqtt-accounts: {len(rows)} device account(s) ({new} new, {rotated} rotated, "
          f"{len(removed)} removed{': ' + ', '.join(removed) if removed else ''}); "
          f"gateway user '{GATEWAY_USER}' reads all"
          + (f" but the {sum(b.alarm for b in bindings.values())} alarm device topic(s), "
             f"which '{ALARM_USER}' reads" if partition else "")
          + (f"; '{ALARM_USER}' reads nothing until the gateway records its alarm session"
             if alarm_password and not partition else "") + f"; files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
