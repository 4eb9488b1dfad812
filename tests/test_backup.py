"""Backup and restore: a running gateway is backed up online; restoring into fresh
directories brings back its alarms, users/tokens and site configuration; damaged or hostile
archives are refused before anything is replaced."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from gateway.backup import BackupError, create_backup, prune_backups, restore_backup
from gateway.store import Store
from tests.support import EXAMPLE, GatewayProcess, mqtt_publish, site_copy, wait_for


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _small_store(data: Path) -> None:
    store = Store(data / "gateway.db")
    store.open()
    store.write_sync(lambda c: c.execute("INSERT INTO meta VALUES ('probe', 'v1')"))
    store.close()


@pytest.mark.integration
def test_backup_of_running_gateway_restores_alarms_tokens_and_config(tmp_path, mosquitto):
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    gw = GatewayProcess(config, tmp_path / "data")
    token = gw.token("duty", "desk")
    gw.start()
    try:
        api = gw.api(token)
        mqtt_publish(mosquitto.port, [("devices/caller-7-101", {"event": "sos"})])
        alarm = wait_for(lambda: api.get("/api/alarms", params={"state": "open"})
                         .json()["alarms"], timeout=10, what="SOS alarm")[0]
        r = api.post(f"/api/alarms/{alarm['id']}/ack", json={"note": "called back"})
        assert r.status_code == 200, r.text
        # online: the gateway keeps running and writing while it is backed up
        archive = tmp_path / "backups" / "b.tar.gz"
        res = gw.cli("backup", "--data", str(gw.data), "--config", str(config), "--out",
                     str(archive))
        assert res.returncode == 0, res.stderr
        assert gw.ready()
    finally:
        gw.stop()
    assert archive.stat().st_mode & 0o077 == 0          # personal data: owner only
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "manifest.json" in names and "data/gateway.db" in names
    assert "config/site.yaml" in names and "config/devices.yaml" in names
    assert not any(n.endswith(("-wal", "-shm")) for n in names), names

    fresh_data, fresh_config = tmp_path / "new" / "data", tmp_path / "new" / "site"
    res = gw.cli("restore", str(archive), "--data", str(fresh_data), "--config",
                 str(fresh_config))
    assert res.returncode == 0, res.stderr
    assert _files(fresh_config) == _files(config)

    gw2 = GatewayProcess(fresh_config, fresh_data).start()
    try:
        api2 = gw2.api(token)              # the token came back with the store
        back = api2.get(f"/api/alarms/{alarm['id']}")
        assert back.status_code == 200, back.text
        body = back.json()
        assert body["device_id"] == "caller-7-101" and body["state"] == "acknowledged"
        assert body["ack_note"] == "called back"
        actions = [e["action"] for e in body["events"]]
        assert actions[0] == "raised" and "acknowledged" in actions, actions
    finally:
        gw2.stop()


def test_restore_refuses_non_empty_targets_without_force_and_keeps_them_aside(tmp_path):
    _small_store(tmp_path / "data")
    archive = create_backup(tmp_path / "data", EXAMPLE, tmp_path / "b.tar.gz").path
    target = tmp_path / "live"
    (target / "data").mkdir(parents=True)
    (target / "data" / "gateway.db").write_bytes(b"old store")
    with pytest.raises(BackupError, match="not empty; use --force"):
        restore_backup(archive, target / "data", target / "site")
    assert (target / "data" / "gateway.db").read_bytes() == b"old store"
    restore_backup(archive, target / "data", target / "site", force=True)
    aside = list(target.glob("data.before-restore-*"))
    assert len(aside) == 1 and (aside[0] / "gateway.db").read_bytes() == b"old store"
    conn = sqlite3.connect(target / "data" / "gateway.db")
    assert conn.execute("SELECT value FROM meta WHERE key='probe'").fetchone() == ("v1",)
    conn.close()


def test_damaged_archive_is_refused_before_anything_changes(tmp_path):
    _small_store(tmp_path / "data")
    good = create_backup(tmp_path / "data", EXAMPLE, tmp_path / "b.tar.gz").path
    # rewrite one config member with different bytes, keep the manifest
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(good) as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "config/site.yaml":
                data = data.replace(b"timezone", b"timezonX")
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(BackupError, match="config/site.yaml: checksum mismatch"):
        restore_backup(bad, tmp_path / "r" / "data", tmp_path / "r" / "site")
    assert not (tmp_path / "r" / "data").exists() and not (tmp_path / "r" / "site").exists()
    trunc = tmp_path / "trunc.tar.gz"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(BackupError, match="trunc.tar.gz"):
        restore_backup(trunc, tmp_path / "r" / "data", tmp_path / "r" / "site")


def test_archive_with_path_outside_the_target_is_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    manifest = json.dumps({"format": 1, "files": {}}).encode()
    with tarfile.open(evil, "w:gz") as tar:
        for name, body in (("manifest.json", manifest), ("../escaped.txt", b"x")):
            ti = tarfile.TarInfo(name)
            ti.size = len(body)
            tar.addfile(ti, io.BytesIO(body))
    with pytest.raises(BackupError, match="evil.tar.gz"):
        restore_backup(evil, tmp_path / "r" / "data", tmp_path / "r" / "site")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "r" / "escaped.txt").exists()


def test_backup_needs_a_store_and_a_site(tmp_path):
    with pytest.raises(BackupError, match="no gateway store here"):
        create_backup(tmp_path, EXAMPLE, tmp_path / "x.tar.gz")
    _small_store(tmp_path / "data")
    with pytest.raises(BackupError, match="no site.yaml"):
        create_backup(tmp_path / "data", tmp_path, tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_extras_are_archived_and_restored_owner_only(tmp_path):
    _small_store(tmp_path / "data")
    env = tmp_path / "gateway.env"
    env.write_text("MQTT_PASSWORD=s3cret\n")
    archive = create_backup(tmp_path / "data", EXAMPLE, tmp_path / "b.tar.gz",
                            extra=[env]).path
    restore_backup(archive, tmp_path / "r" / "data", tmp_path / "r" / "site",
                   extra_dir=tmp_path / "r" / "secrets")
    got = tmp_path / "r" / "secrets" / "gateway.env"
    assert got.read_text() == "MQTT_PASSWORD=s3cret\n"
    assert got.stat().st_mode & 0o077 == 0


def test_out_dir_keeps_the_newest_backups(tmp_path):
    for stamp in ("20240101T000000", "20240102T000000", "20240103T000000"):
        (tmp_path / f"gateway-backup-{stamp}.tar.gz").write_bytes(b"")
    (tmp_path / "unrelated.tar.gz").write_bytes(b"")
    gone = prune_backups(tmp_path, keep=2)
    assert [p.name for p in gone] == ["gateway-backup-20240101T000000.tar.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gateway-backup-20240102T000000.tar.gz", "gateway-backup-20240103T000000.tar.gz",
        "unrelated.tar.gz"]


def test_cli_reports_errors_with_exit_code_1(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "gateway.cli", "restore",
                          str(tmp_path / "nope.tar.gz"), "--data", str(tmp_path / "d"),
                          "--config", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "nope.tar.gz: no such file" in res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
def test_backup_by_root_leaves_the_store_usable_by_its_owner(tmp_path):
    """sudo gateway backup on a stopped gateway: SQLite creates -wal/-shm; they must belong
    to the store's owner, or the service could not open its store any more."""
    data = tmp_path / "data"
    _small_store(data)
    nobody = 65534
    for p in [data, *data.iterdir()]:
        os.chown(p, nobody, nobody)
    assert not (data / "gateway.db-wal").exists()
    create_backup(data, EXAMPLE, tmp_path / "b.tar.gz")
    for p in data.iterdir():
        assert p.stat().st_uid == nobody, p


def test_restore_into_the_installed_layout_keeps_the_directories_owners(tmp_path):
    """Data and site in different parents (/var/lib/..., /etc/.../site), both already created
    (empty) by install.sh: restored files take the owner of the directory they replace."""
    _small_store(tmp_path / "src")
    archive = create_backup(tmp_path / "src", EXAMPLE, tmp_path / "b.tar.gz").path
    data = tmp_path / "var/lib/community-gateway"
    site = tmp_path / "etc/community-gateway/site"
    data.mkdir(parents=True)
    site.mkdir(parents=True)
    owner = 65534 if os.geteuid() == 0 else os.geteuid()
    if os.geteuid() == 0:
        os.chown(data, owner, owner)
    restore_backup(archive, data, site)
    assert _files(site) == _files(EXAMPLE)
    assert (data / "gateway.db").stat().st_uid == owner
    assert data.stat().st_uid == owner
    leftovers = [p.name for p in (tmp_path / "var/lib").iterdir()] + \
        [p.name for p in (tmp_path / "etc/community-gateway").iterdir()]
    assert sorted(leftovers) == ["community-gateway", "site"]     # no temp dirs left behind


def test_every_sqlite_database_is_snapshotted_and_telemetry_can_be_left_out(tmp_path):
    """The embedded telemetry (telemetry.db, WAL, being written) is copied consistently like
    the store, or left out with exclude (what the nightly timer does)."""
    data = tmp_path / "data"
    _small_store(data)
    live = sqlite3.connect(data / "telemetry.db")
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("CREATE TABLE points (ts REAL, value REAL)")
    live.executemany("INSERT INTO points VALUES (?, ?)", [(i, i * 0.5) for i in range(500)])
    live.commit()          # committed, but still only in the -wal file: the writer is open
    (data / "notes.txt").write_text("kept as a plain file\n")
    try:
        full = create_backup(data, EXAMPLE, tmp_path / "full.tar.gz").path
        lean = create_backup(data, EXAMPLE, tmp_path / "lean.tar.gz",
                             exclude=["telemetry.db"]).path
    finally:
        live.close()
    with tarfile.open(full) as tar:
        names = set(tar.getnames())
    assert {"data/gateway.db", "data/telemetry.db", "data/notes.txt"} <= names
    assert not any(n.endswith(("-wal", "-shm")) for n in names), names
    restore_backup(full, tmp_path / "r" / "data", tmp_path / "r" / "site")
    got = sqlite3.connect(tmp_path / "r" / "data" / "telemetry.db")
    assert got.execute("SELECT count(*), sum(value) FROM points").fetchone() == (500, 62375.0)
    got.close()
    with tarfile.open(lean) as tar:
        assert "data/telemetry.db" not in tar.getnames()
    with pytest.raises(BackupError, match="cannot be excluded"):
        create_backup(data, EXAMPLE, tmp_path / "x.tar.gz", exclude=["gateway.db"])


def test_restore_refuses_while_a_gateway_runs_on_the_data_dir(tmp_path, mosquitto):
    """The running gateway holds a lock on its data directory; restore and a second gateway
    on the same data are refused instead of corrupting it."""
    from tests.support import GatewayProcess, site_copy

    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port)
    gw = GatewayProcess(config, tmp_path / "data").start()
    try:
        archive = tmp_path / "b.tar.gz"
        made = gw.cli("backup", "--data", str(gw.data), "--config", str(config), "--out",
                      str(archive))
        assert made.returncode == 0, made.stderr
        res = gw.cli("restore", str(archive), "--data", str(gw.data), "--config", str(config),
                     "--force")
        assert res.returncode != 0
        assert "a gateway is running on this data directory" in res.stderr
        second = GatewayProcess(config, tmp_path / "data")
        out = second.cli("run", "--config", str(config), "--data", str(gw.data), "--port",
                         "1")
        assert out.returncode == 1 and "another gateway" in out.stderr
        assert gw.ready()
    finally:
        gw.stop()
