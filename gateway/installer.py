"""Installer edits of the site configuration: add, edit and remove devices, test mode.

Contract of every edit (``SiteEditor.upsert_device`` / ``remove_device`` / ``set_mode``):

1. the change is applied to a round-trip copy of ``devices.yaml`` (comments and order kept);
2. the whole site is validated on a temporary copy with ``edge_config.loader.load_site`` plus
   the profile lookup the service does; any problem raises :class:`InstallerError` with
   field-level messages, and nothing on disk changes;
3. the previous file is kept (``devices.yaml.prev`` and ``.versions/devices.yaml.<UTC stamp>``,
   the last ``keep`` versions), the new file is written to a temp file, fsynced and renamed
   over the old one (atomic: a crash leaves the old or the new file, never a broken one);
4. the re-loaded :class:`SiteConfig` is returned; the caller (the API) hands it to the
   service's reload hook, which applies it without a restart.

The commissioning checklist (:func:`checklist`) is computed from the config, device health
and recorded test presses; it has no state of its own.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from edge_config.loader import SiteConfig
from gateway import ConfigError, GatewayError
from gateway.blocking import blocking
from gateway.device_modes import effective_mode
from gateway.model import utc
from gateway.site import load_site

__all__ = ["InstallerError", "SiteEditor", "checklist"]

DEVICES = "devices.yaml"
_ISSUE_RE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<loc>[^:]+): (?P<msg>.*)$")


class InstallerError(GatewayError):
    """A rejected edit; ``errors`` is a list of ``{"field", "message"}`` for the form."""

    def __init__(self, errors: list[dict[str, str]], status: int = 422):
        self.errors = errors
        self.status = status
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


@dataclass(frozen=True, slots=True)
class Version:
    name: str
    saved_at: str
    size: int


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.width = 120
    y.allow_unicode = True
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    return y


class SiteEditor:
    """Validated, atomic, versioned edits of one site directory (see module contract)."""

    def __init__(self, directory: str | Path, keep: int = 20, check=None):
        self.directory = Path(directory)
        self.keep = keep
        self.versions_dir = self.directory / ".versions"
        #: extra check of a candidate site (the service's profile lookup); raises ConfigError
        self.check = check
        self._lock = asyncio.Lock()

    # -- reading -------------------------------------------------------------------------
    def _load_tree(self) -> Any:
        path = self.directory / DEVICES
        tree = _yaml().load(path.read_text(encoding="utf-8")) if path.exists() else None
        if tree is None:
            tree = {}
        if tree.get("devices") is None:
            tree["devices"] = []
        return tree

    def versions(self) -> list[Version]:
        if not self.versions_dir.is_dir():
            return []
        out = [Version(p.name, p.name.rsplit(".", 1)[-1], p.stat().st_size)
               for p in self.versions_dir.glob(f"{DEVICES}.*")]
        return sorted(out, key=lambda v: v.name, reverse=True)

    # -- edits ---------------------------------------------------------------------------
    async def upsert_device(self, device: dict, *, create: bool, actor: str) -> SiteConfig:
        """Add (``create``) or replace the device ``device["id"]``; see module contract."""
        async with self._lock:
            tree = await blocking(self._load_tree)
            devices = tree["devices"]
            index = next((i for i, d in enumerate(devices)
                          if isinstance(d, dict) and d.get("id") == device["id"]), None)
            if create and index is not None:
                raise InstallerError([{"field": "id", "message":
                                       f"device {device['id']!r} already exists"}], 409)
            if not create and index is None:
                raise InstallerError([{"field": "id", "message":
                                       f"device {device['id']!r} not found"}], 404)
            entry = {k: v for k, v in device.items() if v not in (None, "")}
            if index is None:
                devices.append(entry)
            else:
                old = devices[index]
                for key in [k for k in old if k not in entry]:
                    del old[key]
                for key, value in entry.items():
                    if old.get(key) != value:
                        old[key] = value
            return await blocking(self._commit, tree, index if index is not None
                                    else len(devices) - 1)

    async def add_devices(self, devices: list[dict], *, actor: str) -> SiteConfig:
        """Add several devices in one edit (a Zigbee network registered from one page): one
        validation, one write, one reload; all of them or, on any problem, none. A problem
        of the i-th device is reported as field ``devices[i].<field>``."""
        async with self._lock:
            tree = await blocking(self._load_tree)
            have = {d.get("id") for d in tree["devices"] if isinstance(d, dict)}
            errors = []
            for i, device in enumerate(devices):
                if device["id"] in have:
                    errors.append({"field": f"devices[{i}].id",
                                   "message": f"device {device['id']!r} already exists"})
                have.add(device["id"])
            if errors:
                raise InstallerError(errors, 409)
            first = len(tree["devices"])
            tree["devices"].extend({k: v for k, v in d.items() if v not in (None, "")}
                                   for d in devices)
            return await blocking(self._commit, tree, None, first)

    async def remove_device(self, device_id: str, *, actor: str) -> SiteConfig:
        async with self._lock:
            tree = await blocking(self._load_tree)
            devices = tree["devices"]
            index = next((i for i, d in enumerate(devices)
                          if isinstance(d, dict) and d.get("id") == device_id), None)
            if index is None:
                raise InstallerError([{"field": "id", "message":
                                       f"device {device_id!r} not found"}], 404)
            del devices[index]
            return await blocking(self._commit, tree, None)

    async def set_mode(self, device_id: str, mode: str, *, actor: str,
                       until: datetime | None = None) -> SiteConfig:
        """normal / test / maintenance, persisted in devices.yaml (survives a restart); a test
        or maintenance mode ends at ``until`` (``mode_until``, gateway.device_modes)."""
        async with self._lock:
            tree = await blocking(self._load_tree)
            entry = next((d for d in tree["devices"]
                          if isinstance(d, dict) and d.get("id") == device_id), None)
            if entry is None:
                raise InstallerError([{"field": "id", "message":
                                       f"device {device_id!r} not found"}], 404)
            if mode == "normal":
                entry.pop("mode", None)
                entry.pop("mode_until", None)
            else:
                entry["mode"] = mode
                if until is not None:
                    entry["mode_until"] = until.isoformat()
            index = tree["devices"].index(entry)
            return await blocking(self._commit, tree, index)

    async def settle_modes(self, now: datetime, *, default_s: float, max_s: float,
                           zone: tzinfo) -> tuple[SiteConfig | None, list[dict]]:
        """Test/maintenance modes of the file as of ``now``: ended ones back to normal
        (``"expired"``), one without an end ends ``default_s`` from now, one ending more than
        ``max_s`` ahead ends ``max_s`` from now (``"bounded"``). Returns the re-loaded site
        (None: nothing to change) and the changes ``{"action", "device_id", "mode", "until",
        "why"?}``. Under the editor's lock, so an installer's edit meanwhile is seen."""
        async with self._lock:
            tree = await blocking(self._load_tree)
            changes: list[dict] = []
            for entry in tree["devices"]:
                if not isinstance(entry, dict) or entry.get("mode") in (None, "normal"):
                    continue
                until = _as_datetime(entry.get("mode_until"))
                if until is not None and until <= now:
                    changes.append({"action": "expired", "device_id": entry.get("id"),
                                    "mode": entry.get("mode"), "until": until})
                    entry.pop("mode", None)
                    entry.pop("mode_until", None)
                    continue
                if until is None or until > now + timedelta(seconds=max_s + 60):
                    why = "had no end" if until is None else "ended more than 24 h ahead"
                    until = (now + timedelta(seconds=default_s if until is None else max_s)
                             ).astimezone(zone).replace(microsecond=0)
                    entry["mode_until"] = until.isoformat()
                    changes.append({"action": "bounded", "device_id": entry.get("id"),
                                    "mode": entry.get("mode"), "until": until, "why": why})
            if not changes:
                return None, []
            return await blocking(self._commit, tree, None), changes

    # -- validate, keep the previous version, write atomically ---------------------------
    def _commit(self, tree: Any, index: int | None, first: int | None = None) -> SiteConfig:
        """``index``: the one edited device; ``first``: the first of several added (their
        problems are named ``devices[i].<field>``, i counted from it)."""
        buf = io.StringIO()
        _yaml().dump(tree, buf)
        text = buf.getvalue()
        self._validate(text, index, first)
        target = self.directory / DEVICES
        if target.exists():
            self.versions_dir.mkdir(exist_ok=True)
            stamp = utc().strftime("%Y%m%dT%H%M%S%fZ")
            shutil.copy2(target, self.versions_dir / f"{DEVICES}.{stamp}")
            shutil.copy2(target, self.directory / f"{DEVICES}.prev")
            for old in self.versions()[self.keep:]:
                (self.versions_dir / old.name).unlink(missing_ok=True)
        _atomic_write(target, text)
        return load_site(self.directory)

    def _validate(self, text: str, index: int | None, first: int | None = None) -> None:
        with tempfile.TemporaryDirectory(prefix="site-check-") as tmp:
            copy = Path(tmp) / "site"
            shutil.copytree(self.directory, copy,
                            ignore=shutil.ignore_patterns(".versions", "*.prev", "*.tmp"))
            (copy / DEVICES).write_text(text, encoding="utf-8")
            try:
                site = load_site(copy)
                if self.check is not None:
                    self.check(site)
            except ConfigError as exc:
                raise InstallerError(_field_errors(exc.issues, index, first)) from None


def _as_datetime(value: Any) -> datetime | None:
    """A ``mode_until`` as the YAML gives it (an aware timestamp or an ISO string)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_DEVICE_LOC = re.compile(r"^devices\[(\d+)\](.*)$")


def _field_errors(issues: list[str], index: int | None,
                  first: int | None = None) -> list[dict[str, str]]:
    """``FILE:LINE: devices[3].household: msg`` -> ``{"field": "household", ...}`` for the
    edited entry (``index``), or ``{"field": "devices[1].household"}`` for the second of
    several added from ``first`` on; problems elsewhere keep their full location."""
    out: list[dict[str, str]] = []
    prefix = f"devices[{index}]" if index is not None else None
    for issue in issues:
        m = _ISSUE_RE.match(issue)
        if m is None:
            out.append({"field": "(config)", "message": issue})
            continue
        loc, msg = m["loc"].strip(), m["msg"].strip()
        row = _DEVICE_LOC.match(loc) if first is not None else None
        if row is not None and first is not None and int(row[1]) >= first:
            rest = row[2].lstrip(".") or "(device)"
            field = rest.split(".")[0].split("[")[0]
            out.append({"field": f"devices[{int(row[1]) - first}].{field}", "message": msg})
        elif prefix and loc.startswith(prefix):
            field = loc[len(prefix):].lstrip(".") or "(device)"
            out.append({"field": field.split(".")[0].split("[")[0], "message": msg})
        else:
            out.append({"field": f"{Path(m['file']).name}:{m['line']}: {loc}", "message": msg})
    return out


def checklist(site: SiteConfig, household_id: str, health: Any, tests: dict[str, int],
              signed_off: dict | None = None) -> dict:
    """Commissioning checklist of one household: ``{"items": [...], "complete": bool}``.

    ``health`` is the HealthBook; ``tests`` maps device id -> tests recorded (presses, or
    readings while in test mode).
    Each item: ``{"id", "ok", "zh", "en", "device_id"?}``.
    """
    hh = site.household(household_id)
    if hh is None:
        raise KeyError(household_id)
    cell = site.grid_cell(hh.grid_cell)
    devices = [d for d in site.devices.devices if d.household == household_id]
    items: list[dict] = [
        {"id": "contacts", "ok": bool(hh.contacts),
         "zh": "已登记至少一位紧急联系人", "en": "At least one emergency contact registered"},
        {"id": "grid_member", "ok": bool(cell and cell.grid_member),
         "zh": "所属网格已指定网格员", "en": "The grid cell has a grid member"},
        {"id": "devices", "ok": bool(devices),
         "zh": "已绑定设备", "en": "Devices bound to the household"},
    ]
    if hh.lives_alone:
        items.append({"id": "caller", "ok": any(d.type == "emergency_caller" for d in devices),
                      "zh": "独居住户已安装一键呼叫器",
                      "en": "Resident living alone has an emergency caller"})
    for d in devices:
        h = health.devices.get(d.id) if health is not None else None
        online = (h is not None and h.last_seen is not None
                  and h.state in ("online", "degraded") and not h.battery_low)
        items.append({"id": f"online:{d.id}", "device_id": d.id, "ok": online,
                      "zh": f"{d.name or d.id} 在线且电量正常",
                      "en": f"{d.name or d.id} online with battery OK"})
        # a press, or any good reading while in test mode (motion, door, meter): the
        # device_tests rows the rule engine's TestRecords make
        items.append({"id": f"tested:{d.id}", "device_id": d.id, "ok": tests.get(d.id, 0) > 0,
                      "zh": f"{d.name or d.id} 已完成测试触发",
                      "en": f"{d.name or d.id} test trigger recorded"})
        items.append({"id": f"normal:{d.id}", "device_id": d.id,
                      "ok": effective_mode(d) == "normal",
                      "zh": f"{d.name or d.id} 已退出测试模式",
                      "en": f"{d.name or d.id} back in normal mode"})
    return {"household_id": household_id, "items": items,
            "complete": all(i["ok"] for i in items), "signed_off": signed_off}
