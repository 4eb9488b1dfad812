"""The alarm book: a staff command changes the alarm, its history, its outbox row and the
audit log together — or none of them."""

from __future__ import annotations

import pytest

from gateway.alarms import AlarmBook, AlarmNotFound, AlarmStateError
from gateway.model import Severity, utc
from gateway.site import load_site
from gateway.store import Store
from rules.actions import RaiseAlarm
from tests.support import EXAMPLE


async def test_ack_and_resolve_are_audited_with_the_change(tmp_path):
    async with Store(tmp_path / "g.db") as store:
        book = AlarmBook(store, load_site(EXAMPLE))
        [change] = await book.apply([RaiseAlarm(
            "sos:caller-7-101", "sos", "emergency_call", Severity.CRITICAL, "caller-7-101",
            "h-7-101", "310104-012-03", "一键呼叫", "SOS", utc(), True)])
        alarm_id = change.alarm_id
        await book.acknowledge(alarm_id, "wangfang", "已电话联系")
        with pytest.raises(AlarmStateError):
            await book.acknowledge(alarm_id, "someone-else")      # refused: nothing written
        await book.resolve(alarm_id, "wangfang", "handled", "已上门")
        with pytest.raises(AlarmNotFound):
            await book.resolve(alarm_id + 1, "wangfang", "handled")
        audit = [(r["actor"], r["action"], r["target"])
                 for r in store.query("SELECT * FROM audit ORDER BY id")]
        assert audit == [("wangfang", "alarm.acknowledge", str(alarm_id)),
                         ("wangfang", "alarm.resolve", str(alarm_id))]
        topics = [r["topic"] for r in store.query("SELECT topic FROM outbox ORDER BY seq")]
        assert topics == ["case.create", "case.update", "case.update"]
        events = [e["action"] for e in book.get(alarm_id, with_events=True)["events"]]
        assert events == ["raised", "acknowledged", "resolved"]
