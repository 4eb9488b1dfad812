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
    assert db._conn.execute("SELECT count(*) FROM rollup").fetchone()[0] == 0
    assert db.series("meter-1", "power", 0, rollup=True)[0][1] == 100     # a query writes it
    now[0] += 400
    db.write_readings([power(i, 20.0) for i in range(100, 200)])
    buckets = db.series("meter-1", "power", 0, rollup=True)
    assert [b[1] for b in buckets] == [200] and buckets[0][3:5] == (10.0, 20.0)
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
