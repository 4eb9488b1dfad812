"""Telemetry: line protocol, the embedded SQLite default (downsampling, retention, row
bound), the bounded buffer (shed and counted, never blocking), and influxdb-client against a
real VictoriaMetrics (points checked through its export API)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.metrics import Metrics
from gateway.model import Kind, Reading
from gateway.telemetry import (EmbeddedTelemetry, InfluxWriter, TelemetryError, TelemetrySink,
                               to_line)
from simulators.victoria import VictoriaMetrics
from tests.support import until

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)


def power(i: int, value: float, device: str = "meter-1", at: datetime = T0) -> Reading:
    return Reading(device, Kind.POWER, value, at + timedelta(seconds=i),
                   device_type="electricity_meter", household_id="h-7-101",
                   grid_cell="310104-012-03")


def test_line_protocol_escapes_and_types() -> None:
    r = Reading("meter 1,a=b", Kind.POWER, 12, T0, household_id="h 1")
    assert to_line(r, "tianlin") == (
        r"power,site=tianlin,device=meter\ 1\,a\=b,household=h\ 1,metric=power "
        f"value=12.0 {int(T0.timestamp()) * 10**9}")
    assert to_line(Reading("d", Kind.SMOKE, True, T0), "s").split(" ")[1] == "value=true"
    assert to_line(Reading("d", Kind.ACCESS, "card-1", T0), "s") is None


@given(st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and "\n" not in s))
def test_line_protocol_tags_never_break_the_line(device: str) -> None:
    line = to_line(Reading(device, Kind.VOLTAGE, 230.0, T0), "s")
    # exactly two unescaped spaces: tags | fields | timestamp
    unescaped = [i for i, ch in enumerate(line) if ch == " " and line[i - 1] != "\\"]
    assert len(unescaped) == 2, line


def test_embedded_downsamples_and_applies_retention_and_row_bound(tmp_path) -> None:
    now = [T0.timestamp() + 3600]
    db = EmbeddedTelemetry(tmp_path / "telemetry.db", raw_retention_h=0.5, rollup_s=300,
                           rollup_retention_d=1, max_raw_rows=1000, prune_every_s=1e9,
                           clock=lambda: now[0])
    # one hour of 1 Hz power readings, 100..(100+3599)
    db.write_readings([power(i, 100.0 + i) for i in range(3600)])
    buckets = db.series("meter-1", "power", T0.timestamp(), rollup=True)
    assert len(buckets) == 12
    b0 = buckets[0]
    assert b0[1] == 300 and b0[2] == pytest.approx(100 + 149.5) and b0[3] == 100
    assert b0[4] == 399 and b0[5] == 399
    deleted = db.prune()
    counts = db.counts()
    print("pruned:", deleted, "left:", counts)
    # raw: 30 min retention keeps 1800; the row bound then keeps the newest 1000
    assert counts["raw"] == 1000
    raw = db.series("meter-1", "power", 0)
    assert raw[0][1] == 100.0 + 2600 and raw[-1][1] == 100.0 + 3599
    # rollups outlive raw points; after their own retention they go too
    assert counts["rollup"] == 12
    now[0] += 2 * 86400
    db.prune()
    assert db.counts() == {"raw": 0, "rollup": 0}
    db.close()


class FlakyWriter:
    def __init__(self) -> None:
        self.fail = True
        self.batches: list[int] = []

    def write_readings(self, readings: list[Reading]) -> None:
        if self.fail:
            raise TelemetryError("server down", retryable=True)
        self.batches.append(len(readings))

    def close(self) -> None:
        pass


async def test_buffer_is_bounded_sheds_counted_and_keeps_data_while_server_down() -> None:
    metrics = Metrics()
    writer = FlakyWriter()
    sink = TelemetrySink(writer, metrics, name="test", buffer_lines=1000, batch_lines=300,
                         flush_s=0.05)
    sink._backoff = type(sink._backoff)(base_s=0.01, cap_s=0.05)
    task = asyncio.create_task(sink.run(), name="telemetry")
    for i in range(1500):            # the server is down: 1000 kept, 500 shed and counted
        sink.offer(power(i, float(i)))
    assert metrics.get("gateway_shed_total", reason="telemetry_buffer_full") == 500
    await until(lambda: metrics.total("gateway_telemetry_errors_total") >= 2, 5,
                "two failed writes")
    assert sink.state.startswith("retrying") and sink.written == 0
    writer.fail = False
    await until(lambda: sink.written == 1000, 10, "the kept 1000 points written")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    print("batches:", writer.batches)
    assert sink.written == 1000 and max(writer.batches) <= 300 and sink.state == "ok"
    assert metrics.get("gateway_telemetry_written_total", sink="test") == 1000


@pytest.mark.integration
def test_influxdb_client_points_arrive_in_victoriametrics(tmp_path) -> None:
    with VictoriaMetrics(tmp_path / "vm") as vm:
        with InfluxWriter(vm.url, org="community", bucket="telemetry", token=None,
                          site="tianlin") as w:
            readings = [power(i, 10.0 * i, device=f"meter-{i % 3}") for i in range(12_000)]
            for lo in range(0, len(readings), 5000):
                w.write_readings(readings[lo:lo + 5000])
            series = vm.export('{__name__="power_value",site="tianlin"}')
        got = {s["metric"]["device"]: s for s in series}
        assert set(got) == {"meter-0", "meter-1", "meter-2"}
        s0 = got["meter-0"]
        assert s0["metric"]["household"] == "h-7-101"
        assert s0["metric"]["grid_cell"] == "310104-012-03"
        assert len(s0["values"]) == 4000 and s0["values"][:2] == [0, 30]
        assert s0["timestamps"][0] == int(T0.timestamp() * 1000)
        # an unreachable server is a retryable error, not a crash
        vm.stop()
        with pytest.raises(TelemetryError) as err:
            w.write_readings(readings[:10])
        assert err.value.retryable


def test_embedded_writes_in_time_order_and_a_bucket_once(tmp_path) -> None:
    """No index per series; an open bucket's rollup stays in memory until it closes (or a
    query or close writes it), later points of the bucket added to its row (issue 18)."""
    now = [T0.timestamp() + 100]
    db = EmbeddedTelemetry(tmp_path / "telemetry.db", rollup_s=300, prune_every_s=1e9,
                           clock=lambda: now[0])
    names = {r[0] for r in db._conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "raw_series" not in names
    db.write_readings([power(i, 10.0) for i in range(100)])
    assert db._conn.execute("SELECT count(*) FROM rollups").fetchone()[0] == 0
    assert db.series("meter-1", "power", 0, rollup=True)[0][1] == 100     # a query writes it
    now[0] += 400
    db.write_readings([power(i, 20.0) for i in range(100, 200)])
    buckets = db.series("meter-1", "power", 0, rollup=True)
    assert [b[1] for b in buckets] == [200] and buckets[0][3:5] == (10.0, 20.0)
    db.close()


def test_embedded_stores_a_repeated_value_only_after_raw_repeat_s(tmp_path) -> None:
    """A reading equal to its series' last stored point is not stored again until
    ``raw_repeat_s`` has passed; the raw series is the step series of the readings (a
    change at its time, a gap longer than ``raw_repeat_s`` a silence) and the rollups count
    every reading (issue 18: most door, motion and battery readings repeat)."""
    now = [T0.timestamp() + 100]
    db = EmbeddedTelemetry(tmp_path / "telemetry.db", rollup_s=3600, raw_repeat_s=600,
                           prune_every_s=1e9, clock=lambda: now[0])
    t = T0.timestamp()

    def door(minute: int, is_open: bool, device: str = "door-1") -> Reading:
        return Reading(device, Kind.DOOR_OPEN, is_open, T0 + timedelta(minutes=minute),
                       device_type="door_contact")

    # a reading a minute: shut 0..14, open at 15 and 16, shut from 17; silent 40..59; shut 60
    minutes = [*range(0, 40), 60]
    db.write_readings([door(m, m in (15, 16)) for m in minutes[:20]])
    db.write_readings([door(m, m in (15, 16)) for m in minutes[20:]]
                      + [door(0, True, device="door-2")])
    stored = db.series("door-1", "door_open", 0)
    assert stored == [(t, 0.0), (t + 600, 0.0), (t + 900, 1.0), (t + 1020, 0.0),
                      (t + 1620, 0.0), (t + 2220, 0.0), (t + 3600, 0.0)]
    assert db.series("door-2", "door_open", 0) == [(t, 1.0)]
    # the step series gives every reading's value back
    for m in minutes:
        held = [v for ts, v in stored if ts <= t + 60 * m][-1]
        assert held == (1.0 if m in (15, 16) else 0.0), m
    # the silence (40..59) is a gap longer than raw_repeat_s; a steady run never is one
    gaps = [b[0] - a[0] for a, b in zip(stored, stored[1:])]
    assert [g > 600 + 60 for g in gaps] == [False] * 5 + [True]
    now[0] = t + 7300
    rollup = db.series("door-1", "door_open", 0, rollup=True)
    assert [r[1] for r in rollup] == [40, 1]          # every reading counted
    # raw_repeat_s 0: every reading stored
    every = EmbeddedTelemetry(tmp_path / "every.db", raw_repeat_s=0, prune_every_s=1e9)
    every.write_readings([door(m, False) for m in range(5)])
    assert len(every.series("door-1", "door_open", 0)) == 5
    every.close()
    db.close()


def test_embedded_forgets_the_unstored_points_of_a_failed_batch(tmp_path) -> None:
    """A batch whose transaction fails stores nothing, so its points are not taken as the
    series' last stored ones: the retried batch stores them."""
    db = EmbeddedTelemetry(tmp_path / "telemetry.db", prune_every_s=1e9)
    db.write_readings([power(0, 5.0)])
    db._conn.execute("CREATE TRIGGER fail BEFORE INSERT ON points WHEN NEW.value = 6 "
                     "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    batch = [power(1, 6.0), power(2, 7.0)]
    with pytest.raises(TelemetryError):
        db.write_readings(batch)
    db._conn.execute("DROP TRIGGER fail")
    db.write_readings(batch)
    assert [v for _ts, v in db.series("meter-1", "power", 0)] == [5.0, 6.0, 7.0]
    db.close()


def test_embedded_makes_a_batchs_new_series_with_it_or_not_at_all(tmp_path) -> None:
    """Hundreds of meters seen for the first time in one batch (a fresh gateway draining its
    backlog): each gets its own series and its points; a failed batch leaves none of its new
    series behind, and the retried batch stores every point under its meter."""
    db = EmbeddedTelemetry(tmp_path / "telemetry.db", prune_every_s=1e9)
    db.write_readings([power(0, 0.0, device="meter-0")])
    batch = [power(1, float(i), device=f"meter-{i}") for i in range(1, 901)]
    db._conn.execute("CREATE TRIGGER fail BEFORE INSERT ON points WHEN NEW.value = 900 "
                     "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    with pytest.raises(TelemetryError):
        db.write_readings(batch)
    assert db._conn.execute("SELECT count(*) FROM series").fetchone()[0] == 1
    db._conn.execute("DROP TRIGGER fail")
    db.write_readings(batch)
    for i in (0, 1, 450, 900):
        assert [v for _ts, v in db.series(f"meter-{i}", "power", 0)] == [float(i)]
    assert db._conn.execute("SELECT count(*) FROM series").fetchone()[0] == 901
    db.close()


def test_embedded_a_failed_batch_retried_counts_once_in_its_rollup(tmp_path) -> None:
    """The sink retries a batch the file refused: its readings count once in their bucket
    (they were counted before the failure, and again with the retry, until issue 18's
    eleventh round)."""
    db = EmbeddedTelemetry(tmp_path / "telemetry.db", rollup_s=300, prune_every_s=1e9)
    batch = [power(i, float(i)) for i in range(1, 101)]
    db._conn.execute("CREATE TRIGGER fail BEFORE INSERT ON points WHEN NEW.value = 100 "
                     "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    with pytest.raises(TelemetryError):
        db.write_readings(batch)
    db._conn.execute("DROP TRIGGER fail")
    db.write_readings(batch)
    (bucket,) = db.series("meter-1", "power", 0, rollup=True)
    assert bucket[1:6] == (100, pytest.approx(50.5), 1.0, 100.0, 100.0)
    assert len(db.series("meter-1", "power", 0)) == 100
    db.close()


def test_embedded_reads_and_empties_an_earlier_versions_raw_table(tmp_path) -> None:
    """A telemetry.db written before points had series ids: its raw rows are read and pruned
    by time until none is left, then the table goes (issue 18)."""
    import sqlite3

    path = tmp_path / "telemetry.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE raw (ts REAL NOT NULL, device TEXT NOT NULL, metric TEXT NOT NULL, "
        "value REAL NOT NULL); CREATE INDEX raw_series ON raw(device, metric, ts); "
        "CREATE INDEX raw_ts ON raw(ts);")
    conn.executemany("INSERT INTO raw VALUES (?,?,?,?)",
                     [(T0.timestamp() + i, "meter-1", "power", float(i)) for i in range(10)])
    conn.commit()
    conn.close()
    now = [T0.timestamp() + 20]
    db = EmbeddedTelemetry(path, raw_retention_h=1, prune_every_s=1e9, clock=lambda: now[0])
    db.write_readings([power(i, 100.0 + i, at=T0 + timedelta(seconds=3000)) for i in range(2)])
    points = db.series("meter-1", "power", 0)
    assert len(points) == 12 and points[0] == (T0.timestamp(), 0.0)
    assert db.counts()["raw"] == 12
    now[0] = T0.timestamp() + 3650   # the old rows are past the retention, the 2 new are not
    db.prune()
    assert db.counts()["raw"] == 2
    tables = {r[0] for r in db._conn.execute("SELECT name FROM sqlite_master")}
    assert "raw" not in tables and "raw_series" not in tables
    db.close()


def test_embedded_reads_and_empties_an_earlier_versions_rollup_table(tmp_path) -> None:
    """A telemetry.db whose rollups were keyed by device and metric names: they are read
    (a bucket begun there and ended in the new table is one bucket) and pruned by retention
    until none is left, then the table goes (issue 18: by series id a row is half as big)."""
    import sqlite3

    path = tmp_path / "telemetry.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE rollup (bucket INTEGER NOT NULL, device TEXT NOT NULL, "
        "metric TEXT NOT NULL, n INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, "
        "max REAL NOT NULL, last REAL NOT NULL, PRIMARY KEY (bucket, device, metric)) "
        "WITHOUT ROWID;")
    b0 = int(T0.timestamp())                    # T0 is on a 300 s boundary
    conn.executemany("INSERT INTO rollup VALUES (?,?,?,?,?,?,?,?)",
                     [(b0 - 300, "meter-1", "power", 2, 10.0, 4.0, 6.0, 6.0),
                      (b0, "meter-1", "power", 2, 6.0, 1.0, 5.0, 5.0)])
    conn.commit()
    conn.close()
    now = [T0.timestamp() + 400]
    db = EmbeddedTelemetry(path, rollup_s=300, rollup_retention_d=1, prune_every_s=1e9,
                           clock=lambda: now[0])
    db.write_readings([power(10, 9.0), power(20, 2.0), power(310, 7.0)])
    assert db.series("meter-1", "power", 0, rollup=True) == [
        (b0 - 300, 2, 5.0, 4.0, 6.0, 6.0), (b0, 4, 17 / 4, 1.0, 9.0, 2.0),
        (b0 + 300, 1, 7.0, 7.0, 7.0, 7.0)]
    assert db.counts()["rollup"] == 4
    now[0] = b0 + 86400 + 100         # the old table's rows and the first new one expire
    db.prune()
    assert db.counts()["rollup"] == 1
    assert "rollup" not in {r[0] for r in db._conn.execute("SELECT name FROM sqlite_master")}
    db.close()
