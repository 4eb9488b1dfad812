"""Pipeline.offer(durable=True): every reading of such a source (an alarm receiver that
resends until acknowledged) is in the inbox before its ack; telemetry otherwise is acked at
once and never stored there."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from gateway.metrics import Metrics
from gateway.model import Kind, Reading
from gateway.pipeline import Pipeline
from gateway.store import Store
from tests.support import until


def _fault(device: str) -> Reading:
    # e.g. a pendant's low battery from a receiver: not an alarm-class reading
    return Reading(device, Kind.BATTERY, 5.0, datetime(2026, 1, 1, tzinfo=timezone.utc))


async def test_durable_offer_is_in_the_inbox_before_its_ack(tmp_path):
    store = Store(tmp_path / "gateway.db")
    store.open()
    try:
        pipe = Pipeline(store, engine=None, book=None, metrics=Metrics())  # type: ignore[arg-type]
        committer = asyncio.create_task(pipe._committer())
        inbox_rows_at_ack: list[int] = []

        def ack() -> None:
            inbox_rows_at_ack.append(store.query_one("SELECT count(*) AS n FROM inbox")["n"])

        assert not _fault("p-1").is_alarm_class
        pipe.offer([_fault("p-1")], ack, durable=True)
        assert inbox_rows_at_ack == []                     # not before the commit
        await until(lambda: inbox_rows_at_ack, 5, "ack after commit")
        assert inbox_rows_at_ack == [1]
        row = store.query_one("SELECT reading FROM inbox")
        assert '"p-1"' in row["reading"]

        acked: list[bool] = []
        pipe.offer([_fault("p-2")], lambda: acked.append(True))   # plain telemetry
        assert acked == [True]                             # at once ...
        pipe.offer([_fault("p-3")], ack, durable=True)     # committed after it, if at all
        await until(lambda: len(inbox_rows_at_ack) == 2, 5, "second ack after commit")
        stored = [r["reading"] for r in store.query("SELECT reading FROM inbox ORDER BY seq")]
        assert ['"p-2"' in r for r in stored] == [False, False]   # ... and never stored
        assert inbox_rows_at_ack == [1, 2]
        committer.cancel()
    finally:
        store.close()
