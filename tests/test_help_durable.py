"""A help key press is acknowledged only once its help request is saved (issue 15): the
pipeline takes it the alarm-class way (``Pipeline(writers=(desk,))``), the request is
written in the same transaction as the press's inbox row, and only then is the message
acknowledged. A recovered inbox row (a crash after the commit) is fed to the engine only:
no second request; a message delivered again (a crash before the ack) is the same request.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from gateway.help_requests import HelpDesk
from gateway.metrics import Metrics
from gateway.model import Kind, Quality, Reading
from gateway.pipeline import Pipeline
from gateway.site import load_site
from gateway.store import Store, inbox, outbox
from tests.support import until
from tests.test_help_requests import _site_with_help_keys


def _press(value: str = "2_single", device: str = "caller-z-7-101") -> Reading:
    return Reading(device, Kind.BUTTON, value, datetime.now(timezone.utc), "", Quality.GOOD,
                   "emergency_caller", "h-7-101", "310104-012-03", "help_key")


async def test_a_help_key_press_is_acked_only_once_its_request_is_saved(tmp_path):
    site = load_site(_site_with_help_keys(tmp_path))
    store = Store(tmp_path / "gateway.db")
    store.open()
    woken: list[bool] = []
    try:
        desk = HelpDesk(store, lambda: site, wake=lambda: woken.append(True))
        pipe = Pipeline(store, engine=None, book=None, metrics=Metrics(),  # type: ignore[arg-type]
                        writers=(desk,))
        committer = asyncio.create_task(pipe._committer())
        seen_at_ack: list[tuple[int, int, int]] = []

        def ack() -> None:   # what the store holds when the broker gets its PUBACK
            seen_at_ack.append((
                store.query_one("SELECT count(*) AS n FROM help_requests")["n"],
                store.query_one("SELECT count(*) AS n FROM inbox")["n"],
                outbox.pending_count(store, outbox.SERVICE)))

        pipe.offer([_press()], ack)
        assert seen_at_ack == []                       # not before the commit
        await until(lambda: seen_at_ack, 5, "ack after the commit")
        assert seen_at_ack == [(1, 1, 1)]              # request, inbox row, service case
        assert woken == [True]                         # the forwarder was told
        # the broker delivers it again (no PUBACK reached it before a crash): the same request
        pipe.offer([_press()], ack)
        await until(lambda: len(seen_at_ack) == 2, 5, "second ack")
        assert seen_at_ack[1] == (1, 2, 1)
        events = [r["action"] for r in store.query("SELECT action FROM help_events")]
        assert events == ["received", "pressed_again"]
        # not a help key of this site (another key of the caller): acked, no request, and the
        # pipeline goes on
        pipe.offer([_press("9_single")], ack)
        await until(lambda: len(seen_at_ack) == 3, 5, "third ack")
        assert seen_at_ack[2][0] == 1
        # SOS and telemetry are as they were
        acked: list[bool] = []
        pipe.offer([Reading("caller-z-7-101", Kind.BATTERY, 80.0, datetime.now(timezone.utc))],
                   lambda: acked.append(True))
        assert acked == [True]
        committer.cancel()
        # recovered after a crash: the inbox rows are fed to the engine, and only to it
        fed: list[Reading] = []

        class Engine:
            def rewind(self, *a) -> None:
                pass

        pipe2 = Pipeline(store, engine=Engine(), book=None, metrics=Metrics(),  # type: ignore[arg-type]
                         writers=(desk,))
        await pipe2.recover()
        while not pipe2._alarm_q.empty():
            fed += pipe2._alarm_q.get_nowait()[1]
        assert [r.value for r in fed] == ["2_single", "2_single", "9_single"]
        assert len(inbox.unprocessed(store)) == 3
        assert store.query_one("SELECT count(*) AS n FROM help_requests")["n"] == 1
    finally:
        store.close()


async def test_a_care_key_press_is_acked_only_once_its_care_state_is_saved(tmp_path):
    """The same for a care key (外出 by the door): the state and its audit entry are in the
    inbox row's transaction; the broker delivering it again changes nothing."""
    from gateway.household_care import CareDesk
    from tests.test_household_care import _site_with_care_keys

    site = load_site(_site_with_care_keys(tmp_path))
    store = Store(tmp_path / "gateway.db")
    store.open()
    try:
        desk = CareDesk(store, lambda: site)
        pipe = Pipeline(store, engine=None, book=None, metrics=Metrics(),  # type: ignore[arg-type]
                        writers=(desk,))
        committer = asyncio.create_task(pipe._committer())
        seen_at_ack: list[tuple[int, int, int]] = []

        def ack() -> None:
            seen_at_ack.append((
                store.query_one("SELECT count(*) AS n FROM household_care")["n"],
                store.query_one("SELECT count(*) AS n FROM inbox")["n"],
                store.query_one("SELECT count(*) AS n FROM audit WHERE action='care.set'")["n"]))

        press = Reading("caller-z-7-101", Kind.BUTTON, "4_single", datetime.now(timezone.utc),
                        "", Quality.GOOD, "emergency_caller", "h-7-101", None, "care_key")
        pipe.offer([press], ack)
        assert seen_at_ack == []                       # not before the commit
        await until(lambda: seen_at_ack, 5, "ack after the commit")
        assert seen_at_ack == [(1, 1, 1)]              # state, inbox row, audit entry
        pipe.offer([press], ack)                       # delivered again
        await until(lambda: len(seen_at_ack) == 2, 5, "second ack")
        assert seen_at_ack[1] == (1, 2, 1)
        row = store.query_one("SELECT state, via, set_by FROM household_care")
        assert (row["state"], row["via"], row["set_by"]) == ("away", "caller", "device")
        committer.cancel()
    finally:
        store.close()
