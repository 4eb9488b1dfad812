"""The ``gateway`` command: run, demo, config validate, user/token management, rules replay,
backup and restore, device profiles (list, test)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
from pathlib import Path

from gateway import ConfigError, GatewayError, __version__

__all__ = ["main", "run_until_signalled"]


def run_until_signalled(coro) -> int:
    """Run ``coro`` until it ends or SIGINT/SIGTERM arrives; then cancel it cleanly."""

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None   # runner() is the task asyncio.run made
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        await coro

    try:
        asyncio.run(runner())
    except asyncio.CancelledError:
        return 0
    return 0


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_config_validate(args: argparse.Namespace) -> int:
    from gateway.site import load_site

    try:
        site = load_site(args.dir)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{len(exc.issues)} problem(s) found", file=sys.stderr)
        return 1
    from gateway.service import build_engine
    from rules.inactivity import watch_warnings

    for warning in watch_warnings(build_engine(site)):
        print(f"{args.dir}: warning: rules.yaml: {warning}", file=sys.stderr)
    print(f"{args.dir}: OK — site {site.site.site.id}: {len(site.site.grid_cells)} grid cells, "
          f"{len(site.site.households)} households, {len(site.devices.devices)} devices, "
          f"{len(site.rules.rules)} rules")
    return 0


#: how long a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
#: The store's writer thread takes the GIL again for each SQL statement of a commit; with
#: the event loop busy taking in thousands of messages a second, each wait was up to 5 ms and
#: an alarm's commit took 0.1-2.5 s (docs/benchmarks.md, "path"). At 0.5 ms: <= 100 ms.
SWITCH_INTERVAL_S = 0.0005


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.kernel.heap import pause, resume

    # httpx imports its command-line tool (rich, pygments: ~2.9 MB resident) whenever
    # they happen to be installed; the service never runs it (docs/benchmarks.md, day)
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    pause()     # no garbage collection until the service is built (gateway.kernel.heap)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        return _run(args)
    finally:
        resume()    # (the service's start-up settle turned it on, unless it never got there)


def _run(args: argparse.Namespace) -> int:
    from gateway.service import Gateway, Overrides

    try:
        gw = Gateway(args.config, args.data, Overrides(api_host=args.host, api_port=args.port))
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    try:
        return run_until_signalled(gw.run())
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_until_signalled(run_demo(args))


def _open_store(data: str):
    from gateway.store import Store

    store = Store(Path(data) / "gateway.db")
    store.open()
    return store


def cmd_token_create(args: argparse.Namespace) -> int:
    from gateway.auth import Auth

    store = _open_store(args.data)
    try:
        token = Auth(store).create_token(args.role, args.name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(token)
    print(f"(role {args.role}; shown once — store it in the client's secret store)",
          file=sys.stderr)
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from gateway.auth import Auth

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("error: passwords differ", file=sys.stderr)
            return 2
    store = _open_store(args.data)
    try:
        Auth(store).add_user(args.username, args.role, password, display_name=args.display_name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"user {args.username} ({args.role}) created")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """List the case outbox's failed rows, or put them back in the queue (``--retry-failed``).

    A row fails when the case system refused it (4xx). Once the cause is fixed (a grid cell
    code, the case system's configuration), re-queued rows are sent again in their original
    order by the running gateway; their idempotency keys make a resend safe.
    """
    store = _open_store(args.data)
    try:
        from gateway.store import outbox, record_audit

        failed = outbox.failed(store)
        for row in failed:      # an alarm's case, or a help request's service case
            subject = (f"alarm {row['alarm_id']}" if row["kind"] == outbox.ALARM
                       else f"help request {row['help_id']}")
            print(f"seq {row['seq']} {subject} {row['topic']} after "
                  f"{row['attempts']} attempt(s): {row['last_error']}")
        if args.retry_failed and failed:
            def tx(conn) -> int:
                n = outbox.requeue_failed(conn)
                record_audit(conn, "cli", "outbox.retry_failed", "", rows=n)
                return n

            print(f"{store.write_sync(tx)} row(s) queued again; the running gateway sends them "
                  f"within seconds")
        elif not failed:
            print("no failed rows")
    finally:
        store.close()
    return 0


def cmd_rules_replay(args: argparse.Namespace) -> int:
    from gateway.model import Reading
    from gateway.service import build_engine
    from gateway.site import load_site
    from rules.replay import replay

    try:
        site = load_site(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    engine = build_engine(site)
    bad = 0

    def readings():
        nonlocal bad
        with open(args.events, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield Reading.from_json(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    bad += 1
                    print(f"{args.events}:{lineno}: skipped: {exc}", file=sys.stderr)

    for action in replay(engine, readings()):
        print(json.dumps(action, ensure_ascii=False, default=str))
    return 1 if bad and args.strict else 0


def cmd_backup(args: argparse.Namespace) -> int:
    import time

    from gateway.backup import BackupError, create_backup, prune_backups

    out = Path(args.out) if args.out else Path(args.out_dir) / time.strftime(
        "gateway-backup-%Y%m%dT%H%M%S.tar.gz")
    try:
        info = create_backup(args.data, args.config, out, extra=args.extra,
                             exclude=args.exclude)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{info.path}: {info.files} files, {info.bytes} bytes (instance {info.instance_id})")
    if args.out_dir and args.keep:
        for old in prune_backups(args.out_dir, args.keep):
            print(f"removed old backup {old}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from gateway.backup import BackupError, restore_backup

    try:
        m = restore_backup(args.archive, args.data, args.config, force=args.force,
                           extra_dir=args.extra_to)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"restored backup of {m.get('created_at')} (gateway {m.get('gateway_version')}, "
          f"instance {m.get('instance_id')}) into {args.data} and {args.config}")
    return 0


def cmd_profile_list(args: argparse.Namespace) -> int:
    from drivers.commissioning import describe_profiles
    from drivers.profiles import load_profiles

    try:
        profiles = load_profiles(Path(args.config) / "profiles" if args.config else None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = describe_profiles(profiles)
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    for row in rows:
        print(f"{row['id']:34} {row['format']:10} {row['device_type']:20} {row['description']}")
    return 0


def cmd_profile_test(args: argparse.Namespace) -> int:
    """Decode one captured payload/frame: readings as JSON lines on stdout, problems on
    stderr as ``INPUT: where: detail [reason]`` (a bad JSON field is one such line naming
    the field, next to the other fields' readings); exit 1 if anything could not be decoded.
    Never a traceback: a failure of the decoder itself is one ``error:`` line (exit 1)."""
    from drivers import DecodeError
    from drivers.commissioning import decode_capture
    from drivers.profiles import load_profiles

    try:
        profiles = load_profiles(Path(args.config) / "profiles" if args.config else None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    profile = profiles.by_id.get(args.profile)
    if profile is None:
        print(f"error: no profile {args.profile!r} (see: gateway profile list)", file=sys.stderr)
        return 2
    try:
        raw = Path(args.input).read_bytes()
    except OSError as exc:
        print(f"error: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        if profile.format == "contact_id" and _dc09_capture(raw):
            lines, problems = _decode_dc09(args, raw)
        else:
            lines, problems = decode_capture(profile, raw, args.device)
    except ConfigError as exc:       # the DC-09 key given cannot be read
        print(f"error: {'; '.join(exc.issues)}", file=sys.stderr)
        return 2
    except DecodeError as exc:
        lines, problems = [], [exc]
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, no traceback
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        print(f"error: {args.input}: cannot decode with {profile.id}: {detail}",
              file=sys.stderr)
        return 1
    for line in lines:
        print(json.dumps(line, ensure_ascii=False))
    for problem in problems:
        print(f"{args.input}: {problem}", file=sys.stderr)
    return 1 if problems or not lines else 0


def _dc09_capture(raw: bytes) -> bool:
    from drivers.sia import looks_like_dc09

    return looks_like_dc09(raw)


def _decode_dc09(args: argparse.Namespace, raw: bytes):
    """A contact_id profile's capture of SIA DC-09 frames (ADM-CID, SIA-DCS, NULL): the
    panel's key, for encrypted frames, from --key-env or --key-file (never the command line)."""
    from drivers.sia import account_key, decode_capture as decode_dc09

    key = None
    if args.key_env or args.key_file:        # ConfigError naming the option if unreadable
        ref = argparse.Namespace(secret_env=args.key_env, secret_file=args.key_file)
        key = account_key(ref, args.key_format, Path.cwd(), "--key")
    return decode_dc09(raw, key, args.device)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description="Community edge gateway")
    p.add_argument("--version", action="version", version=f"gateway {__version__}")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the gateway service")
    run.add_argument("--config", required=True, help="site configuration directory")
    run.add_argument("--data", required=True, help="data directory (store)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080)
    run.set_defaults(fn=cmd_run)

    demo = sub.add_parser("demo", help="run a simulated community with broker, case system, "
                                       "gateway and console")
    demo.add_argument("--port", type=int, default=8080, help="console port (default 8080)")
    demo.add_argument("--data", default=None, help="data directory (default: a temp dir)")
    demo.add_argument("--press-every", type=float, default=180.0,
                      help="mean real seconds between simulated emergency-button presses "
                           "(default 180: an SOS every three minutes)")
    demo.add_argument("--households", type=int, default=200,
                      help="households of the simulated community (default 200)")
    demo.add_argument("--speed", type=float, default=60.0,
                      help="simulated seconds per real second (default 60: a day in 24 min)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the community (default 0)")
    demo.add_argument("--example", action="store_true",
                      help="run the small example site (edge_config/examples/tianlin) instead")
    demo.set_defaults(fn=cmd_demo)

    cfg = sub.add_parser("config", help="site configuration").add_subparsers(dest="sub",
                                                                             required=True)
    val = cfg.add_parser("validate", help="validate a site directory (FILE:LINE errors)")
    val.add_argument("dir")
    val.set_defaults(fn=cmd_config_validate)

    tok = sub.add_parser("token", help="API tokens").add_subparsers(dest="sub", required=True)
    tc = tok.add_parser("create", help="create an API token (printed once)")
    tc.add_argument("--role", required=True, choices=["duty", "installer", "admin"])
    tc.add_argument("--name", required=True)
    tc.add_argument("--data", required=True)
    tc.set_defaults(fn=cmd_token_create)

    usr = sub.add_parser("user", help="console users").add_subparsers(dest="sub", required=True)
    ua = usr.add_parser("add", help="add a user (password asked, or --password-stdin)")
    ua.add_argument("--username", required=True)
    ua.add_argument("--role", required=True, choices=["duty", "installer", "admin"])
    ua.add_argument("--display-name", default="")
    ua.add_argument("--password-stdin", action="store_true")
    ua.add_argument("--data", required=True)
    ua.set_defaults(fn=cmd_user_add)

    ob = sub.add_parser("outbox", help="the case outbox: list failed rows, queue them again")
    ob.add_argument("--data", required=True)
    ob.add_argument("--retry-failed", action="store_true",
                    help="queue every failed row again (after fixing the cause)")
    ob.set_defaults(fn=cmd_outbox)

    rules = sub.add_parser("rules", help="rules").add_subparsers(dest="sub", required=True)
    rr = rules.add_parser("replay", help="replay recorded readings (JSON lines) through the "
                                         "site's rules; print actions as JSON lines")
    rr.add_argument("--config", required=True)
    rr.add_argument("--strict", action="store_true", help="exit 1 if any line was skipped")
    rr.add_argument("events")
    rr.set_defaults(fn=cmd_rules_replay)

    bk = sub.add_parser("backup", help="back up the store (online, consistent) and the site "
                                        "configuration into a .tar.gz")
    bk.add_argument("--data", required=True, help="data directory (store)")
    bk.add_argument("--config", required=True, help="site configuration directory")
    where = bk.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="archive to write (FILE.tar.gz)")
    where.add_argument("--out-dir", help="write gateway-backup-<time>.tar.gz here")
    bk.add_argument("--keep", type=int, default=0,
                    help="with --out-dir: keep only the newest N backups")
    bk.add_argument("--extra", action="append", default=[],
                    help="also archive this file (e.g. the env file with secrets); repeatable")
    bk.add_argument("--exclude", action="append", default=[], metavar="NAME",
                    help="leave this file of the data directory out (e.g. telemetry.db); "
                         "repeatable")
    bk.set_defaults(fn=cmd_backup)

    rs = sub.add_parser("restore", help="restore a backup (stop the gateway first)")
    rs.add_argument("archive")
    rs.add_argument("--data", required=True)
    rs.add_argument("--config", required=True)
    rs.add_argument("--force", action="store_true",
                    help="restore over non-empty directories (they are kept aside)")
    rs.add_argument("--extra-to", default=None,
                    help="write archived extra files (secrets) into this directory")
    rs.set_defaults(fn=cmd_restore)

    prof = sub.add_parser("profile", help="device profiles: list them, test one on a captured "
                                          "payload or frame (commissioning)"
                          ).add_subparsers(dest="sub", required=True)
    pl = prof.add_parser("list", help="the shipped profiles (and a site's own with --config)")
    pl.add_argument("--config", help="site directory: include its profiles/ directory")
    pl.add_argument("--json", action="store_true", help="one JSON object per line")
    pl.set_defaults(fn=cmd_profile_list)
    pt = prof.add_parser("test", help="decode INPUT with PROFILE; readings as JSON lines")
    pt.add_argument("profile", help="profile id (gateway profile list)")
    pt.add_argument("input", help="JSON {topic, payload} for MQTT, JSON {function, address, "
                                  "registers} for Modbus, hex bytes text for serial frames, "
                                  "receiver lines or SIA DC-09 frames for Contact ID")
    pt.add_argument("--config", help="site directory: also look in its profiles/ directory")
    pt.add_argument("--device", default="test-device", help="device id put on the readings")
    pt.add_argument("--key-env", help="SIA DC-09 frames: environment variable holding the "
                                      "panel's AES key (encrypted frames)")
    pt.add_argument("--key-file", help="SIA DC-09 frames: file holding the panel's AES key")
    pt.add_argument("--key-format", choices=("text", "hex"), default="text",
                    help="the key as typed into the panel (16/24/32 characters) or hex")
    pt.set_defaults(fn=cmd_profile_test)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
