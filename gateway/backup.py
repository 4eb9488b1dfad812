"""Backup and restore of a gateway: its store (SQLite) and its site configuration.

``create_backup`` copies the store with SQLite's online backup API, so a running gateway is
backed up consistently (a snapshot of one committed state, WAL included) without stopping it.
The archive is a gzip'd tar:

    manifest.json        format, gateway version, time, instance id, schema version,
                         sha256 of every other member
    data/gateway.db      the store (integrity-checked copy)
    data/*.db            other SQLite databases (embedded telemetry), copied the same way
    data/...             other regular files of the data directory
    config/...           the site directory (YAML, profiles)
    extra/<name>         files given with ``extra=`` (e.g. the env file with secrets)

The archive is written 0600: it holds personal data and, with extras, secrets.

``restore_backup`` checks every checksum and the database's integrity before touching the
targets, extracts next to them and swaps directories in, so a failed restore leaves the old
state as it was. Non-empty targets are kept aside as ``<dir>.before-restore-<time>`` (only with
``force``). Stop the gateway before restoring.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway import GatewayError, StoreError, __version__
from gateway.store.files import copy_database, integrity_check

__all__ = ["BackupError", "BackupInfo", "create_backup", "restore_backup", "prune_backups",
           "FORMAT"]

FORMAT = 1
DB_NAME = "gateway.db"
_SIDECARS = ("-wal", "-shm", "-journal")


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


class BackupError(GatewayError):
    """A backup could not be made, or an archive is not a valid, intact gateway backup."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    files: int
    bytes: int
    instance_id: str | None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _snapshot_db(src: Path, dest: Path) -> dict:
    """Online backup of ``src`` into ``dest`` (``gateway.store.files.copy_database``);
    returns facts from the copy (``instance_id``, ``schema_version``)."""
    try:
        facts = copy_database(src, dest)
    except StoreError as exc:
        raise BackupError(f"{src}: cannot back up the store: {exc}") from exc
    if facts["integrity"] != "ok":
        raise BackupError(f"{src}: integrity check of the copy failed: {facts['integrity']}")
    return facts


def _tree(root: Path, skip: Collection[str] = frozenset()) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root)
            if str(rel) in skip or name.endswith((".tmp", "~")) or not p.is_file() \
                    or p.is_symlink():
                continue
            out.append(p)
    return out


def create_backup(data_dir: str | Path, config_dir: str | Path, out: str | Path, *,
                  extra: Iterable[str | Path] = (), exclude: Collection[str] = ()) -> BackupInfo:
    """Write a backup archive of ``data_dir`` (store) and ``config_dir`` (site) to ``out``.

    Every SQLite database at the top of ``data_dir`` (the store, the embedded telemetry) is
    copied with the online backup API; ``exclude`` names files of ``data_dir`` to leave out
    (e.g. ``telemetry.db`` in nightly backups: bounded, and may be shed by design).
    """
    data_dir, config_dir, out = Path(data_dir), Path(config_dir), Path(out)
    db = data_dir / DB_NAME
    if not db.is_file():
        raise BackupError(f"{db}: no gateway store here (is --data the data directory?)")
    if not (config_dir / "site.yaml").is_file():
        raise BackupError(f"{config_dir}: no site.yaml (is --config the site directory?)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=out.parent) as tmp:
        if DB_NAME in exclude:
            raise BackupError(f"{DB_NAME} is the store: it cannot be excluded")
        dbs = [p for p in sorted(data_dir.glob("*.db")) if p.name not in exclude
               and p.is_file() and _is_sqlite(p)]
        if db not in dbs:
            raise BackupError(f"{db}: not an SQLite database")
        skip = set(exclude) | {p.name + s for p in dbs for s in ("", *_SIDECARS)}
        members: list[tuple[str, Path]] = []
        meta: dict = {}
        for p in dbs:
            snap = Path(tmp) / p.name
            facts = _snapshot_db(p, snap)
            if p.name == DB_NAME:
                meta = facts
            members.append((f"data/{p.name}", snap))
        members += [(f"data/{p.relative_to(data_dir)}", p) for p in _tree(data_dir, skip)]
        members += [(f"config/{p.relative_to(config_dir)}", p) for p in _tree(config_dir)]
        for e in extra:
            e = Path(e)
            if not e.is_file():
                raise BackupError(f"{e}: extra file not found")
            members.append((f"extra/{e.name}", e))
        manifest = {
            "format": FORMAT, "gateway_version": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
            "instance_id": meta.get("instance_id"), "schema_version": meta.get("schema_version"),
            "files": {name: _sha256(path) for name, path in members},
        }
        partial = Path(tmp) / "archive.tar.gz"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            body = json.dumps(manifest, indent=2, ensure_ascii=False).encode()
            ti = tarfile.TarInfo("manifest.json")
            ti.size, ti.mtime, ti.mode = len(body), int(time.time()), 0o600
            tar.addfile(ti, io.BytesIO(body))
            for name, path in members:
                tar.add(path, arcname=name, recursive=False)
            raw.flush()
            os.fsync(raw.fileno())
        size = partial.stat().st_size
        os.replace(partial, out)     # never a half-written archive under the final name
    return BackupInfo(out, len(members), size, meta.get("instance_id"))


def _read_manifest(tar: tarfile.TarFile, archive: Path) -> dict:
    try:
        fh = tar.extractfile("manifest.json")
    except KeyError:
        raise BackupError(f"{archive}: not a gateway backup (no manifest.json)") from None
    if fh is None:   # a member of that name, but not a file (a directory, say)
        raise BackupError(f"{archive}: not a gateway backup (manifest.json is not a file)")
    try:
        manifest = json.load(fh)
    except ValueError as exc:
        raise BackupError(f"{archive}: manifest.json: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: backup format {manifest.get('format')!r} is not "
                          f"supported (this gateway reads format {FORMAT})")
    return manifest


def _extract_verified(archive: Path, into: Path) -> dict:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            manifest = _read_manifest(tar, archive)
            # filter="data" refuses absolute paths, "..", links out of the tree, devices
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"{archive}: cannot read the archive: {exc}") from exc
    files = manifest.get("files") or {}
    if f"data/{DB_NAME}" not in files:
        raise BackupError(f"{archive}: the archive holds no store (data/{DB_NAME})")
    for name, digest in files.items():
        p = into / name
        if not p.is_file():
            raise BackupError(f"{archive}: {name}: listed in the manifest but missing")
        if _sha256(p) != digest:
            raise BackupError(f"{archive}: {name}: checksum mismatch (damaged archive)")
    for name in files:
        if not (name.startswith("data/") and name.endswith(".db")):
            continue
        try:
            check = integrity_check(into / name)
        except StoreError as exc:
            raise BackupError(f"{archive}: {name}: {exc}") from exc
        if check != "ok":
            raise BackupError(f"{archive}: {name}: integrity check failed: {check}")
    return manifest


def _swap_in(staged: Path, target: Path, force: bool, stamp: str) -> Path | None:
    """Move ``staged`` to ``target``; keep a non-empty old target aside (returns where)."""
    aside = None
    st = (target if target.exists() else target.parent).stat()
    if target.exists() and any(target.iterdir()):
        if not force:
            raise BackupError(f"{target}: not empty; use --force to restore over it (the "
                              f"current contents are kept as {target.name}.before-restore-*)")
        aside = target.with_name(f"{target.name}.before-restore-{stamp}")
        target.rename(aside)
    elif target.exists():
        target.rmdir()
    staged.rename(target)
    if os.geteuid() == 0:
        # restored files belong to whoever owned the directory before (the service user)
        for dirpath, _dirs, files in os.walk(target):
            os.chown(dirpath, st.st_uid, st.st_gid)
            for f in files:
                os.chown(os.path.join(dirpath, f), st.st_uid, st.st_gid)
    return aside


def restore_backup(archive: str | Path, data_dir: str | Path, config_dir: str | Path, *,
                   force: bool = False, extra_dir: str | Path | None = None) -> dict:
    """Restore ``archive`` into ``data_dir`` and ``config_dir``; returns the manifest.

    Everything is verified before anything is replaced. Extras are written to ``extra_dir``
    (when given) for the operator to put back by hand: they are secrets with their own owners.
    """
    archive, data_dir, config_dir = Path(archive), Path(data_dir), Path(config_dir)
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    if (data_dir / "gateway.lock").exists():
        from gateway.store import lock_data_dir

        lock = lock_data_dir(data_dir)
        if lock is None:
            raise BackupError(f"{data_dir}: a gateway is running on this data directory; "
                              f"stop it first (systemctl stop community-gateway)")
        lock.close()
    for target in (data_dir, config_dir):
        target.parent.mkdir(parents=True, exist_ok=True)
        if not force and target.exists() and any(target.iterdir()):
            raise BackupError(f"{target}: not empty; use --force to restore over it (the "
                              f"current contents are kept as {target.name}.before-restore-*)")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=data_dir.parent) as tmp_name:
        tmp = Path(tmp_name)
        manifest = _extract_verified(archive, tmp)
        if not (tmp / "config").is_dir():
            (tmp / "config").mkdir()
        staged_config = tmp / "config"
        if config_dir.parent != data_dir.parent:   # rename() needs the same filesystem
            moved = Path(tempfile.mkdtemp(prefix=".restore-", dir=config_dir.parent))
            shutil.copytree(staged_config, moved / "config")
            staged_config = moved / "config"
        _swap_in(tmp / "data", data_dir, force, stamp)
        _swap_in(staged_config, config_dir, force, stamp)
        if staged_config.parent != tmp:
            staged_config.parent.rmdir()
        if extra_dir is not None and (tmp / "extra").is_dir():
            dest = Path(extra_dir)
            dest.mkdir(parents=True, exist_ok=True, mode=0o700)
            for p in (tmp / "extra").iterdir():
                shutil.copy2(p, dest / p.name)
                os.chmod(dest / p.name, 0o600)
    return manifest


def prune_backups(directory: str | Path, keep: int, prefix: str = "gateway-backup-") -> list[Path]:
    """Delete all but the newest ``keep`` archives named ``prefix*.tar.gz``; return deleted."""
    found = sorted(Path(directory).glob(f"{prefix}*.tar.gz"))
    doomed = found[:-keep] if keep > 0 else found
    for p in doomed:
        p.unlink()
    return doomed
