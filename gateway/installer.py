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
   service's reload hook, which applies it without a restart, with what changed
   (:meth:`SiteEditor.change_of`: a :class:`gateway.change_bus.SiteChange`, or ``None``
   for an edit of the whole file).

At community scale (thousands of devices) steps 1, 2 and 4 over the whole file take
seconds (ruamel's round trip), so an edit of a few devices takes a fast path when it can:
the editor keeps devices.yaml as blocks of lines (:class:`gateway.devices_doc.DevicesDoc`)
together with the site validated from them and the state (size, mtime, inode) of every file
of the site. If no file changed since, only the edited entries' blocks are read and
written, the site is validated from the previous one with those entries replaced
(``edge_config.loader.revalidate_devices``: the same schema, references, topics, addresses
and rule references over the whole site; the profile fit of the edited devices, the
others' being unchanged) plus the service's profile lookup of the edited devices, and the
previous file is kept and the new one written atomically as in 3. Anything the fast path is
not sure of (a file changed by hand, an unusual layout, a problem reported outside the
edited entries, whose message names a line) takes the whole-file path, which reports
exactly what ``gateway config validate`` does.

The commissioning checklist (:func:`checklist`) is computed from the config, device health
and recorded test presses; it has no state of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from edge_config.fast_yaml import TreeCache
from edge_config.loader import FILES, SiteConfig, plain, read_trees, revalidate_devices
from gateway import ConfigError, GatewayError
from gateway.blocking import blocking
from gateway.change_bus import SiteChange
from gateway.device_modes import effective_mode
from gateway.devices_doc import DevicesDoc
from gateway.model import utc
from gateway.site import VALIDATORS, load_site

__all__ = ["InstallerError", "SiteEditor", "checklist", "files_state", "lean_site"]

log = logging.getLogger(__name__)

DEVICES = "devices.yaml"
#: the fast path's state is let go this long after its last edit (:meth:`SiteEditor.release`)
IDLE_S = 600.0
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

    def __init__(self, directory: str | Path, keep: int = 20, check=None,
                 cache: Path | None = None, idle_s: float = IDLE_S):
        self.directory = Path(directory)
        self.keep = keep
        self.versions_dir = self.directory / ".versions"
        #: extra check of a candidate site (the service's profile lookup); raises ConfigError
        self.check = check
        #: the site's tree cache (``load_site``'s ``cache``), read when the fast path is made
        self.cache = cache
        #: the fast path's state is let go this long after the last edit (:meth:`release`)
        self.idle_s = idle_s
        self._lock = asyncio.Lock()
        #: the fast path's state: (files' state, the site validated from them, the blocks,
        #: the files' plain trees)
        self._base: tuple[tuple, SiteConfig, DevicesDoc, dict] | None = None
        #: (files' state, site) to make it from at the first edit (:meth:`defer`)
        self._seed: tuple[tuple, SiteConfig] | None = None
        self._used = 0.0         # time.monotonic() of the last use of the fast path
        self._changes: list[tuple[SiteConfig, SiteChange]] = []
        #: how the last edit went: "fast" or "whole file" (the benchmark reports it)
        self.last_path = ""

    # -- the fast path's state -----------------------------------------------------------
    def prime(self, site: SiteConfig, keys: tuple | None = None) -> bool:
        """Take ``site`` (just loaded from this directory) as the base of fast edits
        (blocking: reads devices.yaml, and the files' trees when ``site`` was kept without
        them). False when the file does not segment or the files changed since. ``keys``:
        the state of the site's files when ``site`` was loaded (default: now)."""
        keys = self._keys() if keys is None else keys
        self._base = None
        path = self.directory / DEVICES
        if not path.exists():
            return False
        trees = (_plain_trees(site) if site.trees else
                 read_trees(self.directory, VALIDATORS, self.cache))
        if trees is None or self._keys() != keys:
            return False
        doc = DevicesDoc.of(path.read_text(encoding="utf-8"), site)
        self._base = (keys, site, doc, trees) if doc is not None else None
        self._used = time.monotonic()
        return doc is not None

    def defer(self, site: SiteConfig, keys: tuple | None = None) -> None:
        """Make the fast path from ``site`` (just loaded from this directory; ``keys`` as
        for :meth:`prime`) at the first edit that wants it, not now: the service keeps no
        copy of devices.yaml's lines and the files' trees (~11 MB for 5,000 devices) while
        nobody edits (docs/benchmarks.md, day). The first edit pays for reading them (0.1 s
        for 880 households, ~1 s for 10,000)."""
        self._seed = (self._keys() if keys is None else keys, site)
        self._base = None

    def _primed(self) -> tuple[tuple, SiteConfig, DevicesDoc, dict] | None:
        """The fast path's state, made from :meth:`defer`'s site first (blocking)."""
        if self._base is None and self._seed is not None:
            keys, site = self._seed
            self._seed = None
            self.prime(site, keys)
        self._used = time.monotonic()
        return self._base

    async def release(self) -> bool:
        """Let the fast path's state go when no edit used it for ``idle_s`` (the service
        calls this now and then); the next edit makes it again, from the tree cache, which
        is brought up to date now (an edited devices.yaml is read once here, not at the next
        edit or start). True when let go. Never raises: a file that cannot be read now is
        read (and reported) by the next edit."""
        async with self._lock:
            base = self._base
            if base is None or time.monotonic() - self._used < self.idle_s:
                return False
            self._seed, self._base = (base[0], base[1]), None
        if self.cache is not None and not base[1].trees:
            try:
                await blocking(read_trees, self.directory, VALIDATORS, self.cache, True)
            except Exception as exc:  # noqa: BLE001 - the service goes on; the edit reports
                log.warning("installer: cannot bring the site's tree cache up to date: %s", exc)
        return True

    @contextlib.asynccontextmanager
    async def _editing(self) -> AsyncIterator[None]:
        """The edit lock."""
        async with self._lock:
            yield

    def _keys(self) -> tuple:
        return files_state(self.directory)

    def change_of(self, site: SiteConfig) -> SiteChange | None:
        """What the edit that returned ``site`` changed (None: take it whole)."""
        return next((ch for s, ch in self._changes if s is site), None)

    def _remember(self, site: SiteConfig, change: SiteChange | None) -> SiteConfig:
        if change is not None:
            self._changes = [*self._changes[-7:], (site, change)]
        return site

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
        async with self._editing():
            entry = {k: v for k, v in device.items() if v not in (None, "")}
            fast = await blocking(
                self._fast, [("add", entry)] if create else
                [("edit", device["id"], lambda e: _replace(e, entry))])
            if fast is not None:
                return fast
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
                _replace(devices[index], entry)
            return await blocking(self._commit, tree, index if index is not None
                                    else len(devices) - 1)

    async def add_devices(self, devices: list[dict], *, actor: str) -> SiteConfig:
        """Add several devices in one edit (a Zigbee network registered from one page): one
        validation, one write, one reload; all of them or, on any problem, none. A problem
        of the i-th device is reported as field ``devices[i].<field>``."""
        async with self._editing():
            fast = await blocking(self._fast, [
                ("add", {k: v for k, v in d.items() if v not in (None, "")}) for d in devices])
            if fast is not None:
                return fast
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
        async with self._editing():
            fast = await blocking(self._fast, [("remove", device_id)])
            if fast is not None:
                return fast
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
        async with self._editing():
            fast = await blocking(self._fast, [("edit", device_id,
                                                lambda e: _set_mode(e, mode, until))])
            if fast is not None:
                return fast
            tree = await blocking(self._load_tree)
            entry = next((d for d in tree["devices"]
                          if isinstance(d, dict) and d.get("id") == device_id), None)
            if entry is None:
                raise InstallerError([{"field": "id", "message":
                                       f"device {device_id!r} not found"}], 404)
            _set_mode(entry, mode, until)
            index = tree["devices"].index(entry)
            return await blocking(self._commit, tree, index)

    async def settle_modes(self, now: datetime, *, default_s: float, max_s: float,
                           zone: tzinfo) -> tuple[SiteConfig | None, list[dict]]:
        """Test/maintenance modes of the file as of ``now``: ended ones back to normal
        (``"expired"``), one without an end ends ``default_s`` from now, one ending more than
        ``max_s`` ahead ends ``max_s`` from now (``"bounded"``). Returns the re-loaded site
        (None: nothing to change) and the changes ``{"action", "device_id", "mode", "until",
        "why"?}``. Under the editor's lock, so an installer's edit meanwhile is seen."""
        async with self._editing():
            fast_changes: list[dict] = []
            # the site of the fast path, made or to be made (no need to make it for nothing)
            known = self._base[:2] if self._base is not None else self._seed
            moded = ([d.id for d in known[1].devices.devices if d.mode != "normal"]
                     if known is not None else [])

            def settle(entry: Any) -> None:
                ch = _settle_entry(entry, now, default_s, max_s, zone)
                if ch is not None:
                    fast_changes.append(ch)

            fast = None
            if known is not None and moded:
                fast = await blocking(self._fast, [("edit", d, settle) for d in moded],
                                      lambda: bool(fast_changes))
            if fast is UNCHANGED:
                return None, []
            if fast is not None:
                return fast, fast_changes
            if known is not None and not moded and self._keys() == known[0]:
                return None, []
            tree = await blocking(self._load_tree)
            changes: list[dict] = []
            for entry in tree["devices"]:
                if not isinstance(entry, dict) or entry.get("mode") in (None, "normal"):
                    continue
                ch = _settle_entry(entry, now, default_s, max_s, zone)
                if ch is not None:
                    changes.append(ch)
            if not changes:
                return None, []
            return await blocking(self._commit, tree, None), changes

    # -- validate, keep the previous version, write atomically ---------------------------
    def _commit(self, tree: Any, index: int | None, first: int | None = None) -> SiteConfig:
        """``index``: the one edited device; ``first``: the first of several added (their
        problems are named ``devices[i].<field>``, i counted from it)."""
        before = self._keys()        # the other files as the check below reads them
        buf = io.StringIO()
        _yaml().dump(tree, buf)
        text = buf.getvalue()
        site = self._validate(text, index, first)
        self._base = None
        written = self._write(text)
        self.last_path = "whole file"
        # the site validated on the copy is this directory's (the loader keeps no path
        # but the directory's); the next edits take the fast path from it
        trees = _plain_trees(site)
        site = lean_site(replace(site, directory=self.directory))   # the editor keeps the trees
        doc = DevicesDoc.of(text, site)
        self._seed = None
        self._base = ((_written(before, written), site, doc, trees) if doc is not None
                      else None)
        self._used = time.monotonic()
        return site

    def _write(self, text: str) -> os.stat_result:
        """Keep the previous file (``.prev``, ``.versions/``), write ``text`` atomically;
        the state of the file written (taken before it replaced the old one: a change by
        hand right after is not taken for the editor's own)."""
        target = self.directory / DEVICES
        if target.exists():
            self.versions_dir.mkdir(exist_ok=True)
            stamp = utc().strftime("%Y%m%dT%H%M%S%fZ")
            shutil.copy2(target, self.versions_dir / f"{DEVICES}.{stamp}")
            shutil.copy2(target, self.directory / f"{DEVICES}.prev")
            for old in self.versions()[self.keep:]:
                (self.versions_dir / old.name).unlink(missing_ok=True)
        return _atomic_write(target, text)

    def _validate(self, text: str, index: int | None, first: int | None = None) -> SiteConfig:
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
            return site

    def _fast(self, ops: list[tuple], proceed: Any = None) -> Any:
        """An edit of a few devices without the whole file (module contract): ``ops`` are
        ``("edit", id, mutate(entry))``, ``("add", entry)``, ``("remove", id)``. Returns the
        new site (its change kept for :meth:`change_of`), :data:`UNCHANGED` when
        ``proceed()`` says there is nothing to write, or None: take the whole-file path.
        Raises :class:`InstallerError` for a problem within the edited entries (or an id
        not found / taken)."""
        base = self._primed()
        if base is None or self._keys() != base[0]:
            return None
        keys, site, doc, trees = base
        devices = list(site.devices.devices)
        where = {d.id: k for k, d in enumerate(devices)}
        tree = trees.get(DEVICES)
        if not isinstance(tree, dict) or not isinstance(tree.get("devices"), list) or len(
                tree["devices"]) != len(devices):
            return None
        blocks = doc.blocks()
        entries: list[Any] = list(tree["devices"])
        known: list[Any] = list(devices)
        added: list[str] = []
        edited: list[str] = []
        removed: list[str] = []
        index: int | None = None
        first: int | None = None
        for op in ops:
            if op[0] == "add":
                entry = op[1]
                if entry.get("id") in where or entry.get("id") in added:
                    if len(ops) > 1:
                        return None     # the whole-file path names devices[i].id
                    raise InstallerError([{"field": "id", "message":
                                           f"device {entry.get('id')!r} already exists"}], 409)
                block = doc.block_of(entry)
                if block is None:
                    return None
                if first is None and len(ops) > 1:
                    first = len(entries)
                index = len(entries) if len(ops) == 1 else None
                blocks.append(block)
                entries.append(doc.read_block(block))  # ruamel entry
                known.append(None)
                added.append(str(entry["id"]))
                continue
            k = next((i for i, e in enumerate(known) if e is not None and e.id == op[1]),
                     None) if op[1] in where else None
            if k is None:
                raise InstallerError([{"field": "id", "message":
                                       f"device {op[1]!r} not found"}], 404)
            if op[0] == "remove":
                del blocks[k], entries[k], known[k]
                removed.append(op[1])
                continue
            entry = doc.entry(where[op[1]], devices[where[op[1]]])
            if entry is None:
                return None
            op[2](entry)
            block = doc.block_of(entry)
            if block is None:
                return None
            blocks[k], entries[k], known[k] = block, entry, None
            edited.append(op[1])
            index = k if len(ops) == 1 else None
        if proceed is not None and not proceed():
            return UNCHANGED
        if not blocks:
            return None
        new_tree = {**{k: v for k, v in tree.items() if k != "devices"}, "devices": entries}
        touched = set(added) | set(edited)
        try:
            new = revalidate_devices(site, new_tree, known, VALIDATORS, changed=touched,
                                     trees=trees)
            if self.check is not None:
                self.check(new, only=touched)
        except ConfigError as exc:
            rows = {i for i, e in enumerate(known) if e is None}
            if (len(ops) == 1 or first is not None) and all(_in_rows(issue, rows)
                                                             for issue in exc.issues):
                raise InstallerError(_field_errors(exc.issues, index, first)) from None
            return None         # a problem elsewhere: its message names a line
        new_doc = doc.spliced(blocks)
        self._base = None
        text = new_doc.text()
        written = self._write(text)
        # the editor keeps the trees, not every holder of the site; a site kept lean before
        # had only cacheable trees, so only the entries read now are looked at
        new = (replace(new, trees={}) if not site.trees and all(
            TreeCache.holds(e) for e, k in zip(entries, known) if k is None) else lean_site(new))
        self._base = (_written(keys, written), new, new_doc, {**trees, DEVICES: new_tree})
        self.last_path = "fast"
        return self._remember(new, SiteChange(site, tuple(added), tuple(edited),
                                              tuple(removed)))


def files_state(directory: Path) -> tuple:
    """The state (size, mtime, inode) of every file of the site in ``directory``: a change
    by hand ends the fast path."""
    out: list[tuple] = []
    for name in FILES:
        try:
            st = (directory / name).stat()
        except FileNotFoundError:
            out.append((name, None))
            continue
        out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    profiles = directory / "profiles"
    if profiles.is_dir():
        for p in sorted(profiles.glob("*.yaml")):
            st = p.stat()
            out.append((p.name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _written(keys: tuple, st: os.stat_result) -> tuple:
    """``keys`` (:func:`files_state`) with devices.yaml's state that of the file the editor
    wrote: any other change since ``keys`` were taken, or after the write, ends the fast
    path."""
    return tuple((DEVICES, st.st_size, st.st_mtime_ns, st.st_ino) if k[0] == DEVICES else k
                 for k in keys)


def lean_site(site: SiteConfig) -> SiteConfig:
    """``site`` without its files' trees when the tree cache can hold them all (the editor
    reads them back from it at its first edit); a site with a tree the cache cannot hold
    (a date written unquoted) keeps them, so that no edit reads the file again slowly."""
    if site.trees and all(site.cached_trees.get(name) is tree or TreeCache.holds(tree)
                          for name, tree in site.trees.items()):
        return replace(site, trees={})   # (keeps no cached tree: SiteConfig)
    return site


def _plain_trees(site: SiteConfig) -> dict:
    """The site's file trees as plain dicts (what the fast path checks against, read only).
    A site read by the fast YAML reader has plain trees already: they are used as they are
    (a copy of a 5,000-device site's trees held 2.9 MB for as long as the gateway ran)."""
    return {name: tree if _is_plain(tree) else plain(tree) for name, tree in site.trees.items()}


def _is_plain(node: Any) -> bool:
    """Only dicts with str keys, lists and scalars (ruamel's containers are subclasses)."""
    kind = type(node)
    if kind is dict:
        return all(type(k) is str and _is_plain(v) for k, v in node.items())
    if kind is list:
        return all(_is_plain(v) for v in node)
    return not isinstance(node, (dict, list))


#: what the fast path returns when there is nothing to write
UNCHANGED = object()


def _replace(old: Any, entry: dict) -> None:
    """Make the round-trip entry ``old`` hold ``entry`` (its comments and order kept)."""
    for key in [k for k in old if k not in entry]:
        del old[key]
    for key, value in entry.items():
        if old.get(key) != value:
            old[key] = value


def _set_mode(entry: Any, mode: str, until: datetime | None) -> None:
    if mode == "normal":
        entry.pop("mode", None)
        entry.pop("mode_until", None)
    else:
        entry["mode"] = mode
        if until is not None:
            entry["mode_until"] = until.isoformat()


def _settle_entry(entry: Any, now: datetime, default_s: float, max_s: float,
                  zone: tzinfo) -> dict | None:
    """One entry's mode as of ``now`` (``SiteEditor.settle_modes``); the change or None."""
    if entry.get("mode") in (None, "normal"):
        return None
    until = _as_datetime(entry.get("mode_until"))
    if until is not None and until <= now:
        mode = entry.get("mode")
        entry.pop("mode", None)
        entry.pop("mode_until", None)
        return {"action": "expired", "device_id": entry.get("id"), "mode": mode,
                "until": until}
    if until is None or until > now + timedelta(seconds=max_s + 60):
        why = "had no end" if until is None else "ended more than 24 h ahead"
        until = (now + timedelta(seconds=default_s if until is None else max_s)
                 ).astimezone(zone).replace(microsecond=0)
        entry["mode_until"] = until.isoformat()
        return {"action": "bounded", "device_id": entry.get("id"), "mode": entry.get("mode"),
                "until": until, "why": why}
    return None


def _in_rows(issue: str, rows: set[int]) -> bool:
    """An issue of devices.yaml located in one of the entries ``rows``."""
    m = _ISSUE_RE.match(issue)
    if m is None or Path(m["file"]).name != DEVICES:
        return False
    row = _DEVICE_LOC.match(m["loc"].strip())
    return row is not None and int(row[1]) in rows


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


def _atomic_write(path: Path, text: str) -> os.stat_result:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
        st = os.fstat(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return st


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
