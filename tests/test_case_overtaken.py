"""A case system may dispatch a case, and report it, before the gateway has recorded the
reply that opened it. The report finds the alarm or help request by the case's key (its
``case.create`` row, still pending); the reply recorded afterwards never moves the status
back; a refused create, or a reply naming another case, undoes what the key claimed.

The real store, alarm book and help desk's rows; the forwarder's commit of outcomes
(``gateway.forwarder._apply``) and the case feedback's (``apply_case_event``) are the two
writers, run here in each order."""

from __future__ import annotations

from gateway.alarms import AlarmBook
from gateway.case_feedback import apply_case_event
from gateway.forwarder import Outcome, _apply
from gateway.model import utc
from gateway.site import load_site
from gateway.store import Store, outbox
from gateway.store import help as help_rows
from simulators.bench._backlog import fill_backlog
from tests.support import EXAMPLE

PREFIX = "tianlin-07-ab12"


async def _alarm(store: Store) -> dict:
    book = AlarmBook(store, load_site(EXAMPLE))
    await fill_backlog(book, 1, tag="overtaken")
    alarm = store.query_one("SELECT * FROM alarms")
    row = store.query_one("SELECT * FROM outbox WHERE alarm_id=?", (alarm["id"],))
    assert row["topic"] == "case.create" and row["state"] == "pending"
    return {"alarm": alarm, "key": row["idempotency_key"], "seq": row["seq"]}


def _event(store: Store, n: int, case_id: str, key: str, status: str):
    return store.write_sync(lambda c: apply_case_event(
        c, event_id=f"{case_id}-e{n}", case_id=case_id, status=status, handler="王网格",
        note="", via="callback", idempotency_key=key))


def _card(store: Store, alarm_id: int) -> tuple:
    a = store.query_one("SELECT case_id, case_status, case_error, state FROM alarms "
                        "WHERE id=?", (alarm_id,))
    return a["case_id"], a["case_status"], a["case_error"], a["state"]


async def test_a_status_before_the_reply_shows_and_the_reply_keeps_it(store):
    got = await _alarm(store)
    alarm_id = got["alarm"]["id"]
    assert _event(store, 2, "GC1-1", got["key"], "dispatched") is not None
    assert _card(store, alarm_id) == ("GC1-1", "dispatched", None, "raised")
    store.write_sync(lambda c: _apply(c, [Outcome(got["seq"], alarm_id, "case.create",
                                                  "delivered", "GC1-1", "accepted")]))
    assert _card(store, alarm_id) == ("GC1-1", "dispatched", None, "raised")
    # a later update's reply (status as the case system saw it then) does not go back either
    _event(store, 3, "GC1-1", got["key"], "on_site")
    store.write_sync(lambda c: _apply(c, [Outcome(got["seq"], alarm_id, "case.update",
                                                  "delivered", "GC1-1", "dispatched")]))
    assert _card(store, alarm_id)[1] == "on_site"


async def test_a_refused_create_undoes_the_claim_and_a_close_resolved_nothing(store):
    """The key's case was another's (the case system answers 409 to our create): what it
    reported meanwhile, even a close, leaves the alarm open for staff, with no case."""
    got = await _alarm(store)
    alarm_id = got["alarm"]["id"]
    _event(store, 4, "OLD-1", got["key"], "closed")
    assert _card(store, alarm_id) == ("OLD-1", "closed", None, "raised")   # not resolved
    store.write_sync(lambda c: _apply(c, [Outcome(
        got["seq"], alarm_id, "case.create", "failed", error="idempotency_conflict: key",
        code="idempotency_conflict")]))
    assert _card(store, alarm_id) == (None, None, "idempotency_conflict", "raised")
    # and the old case's next report finds nothing here: the row is not pending any more
    assert _event(store, 5, "OLD-1", got["key"], "closed") is None
    assert _card(store, alarm_id) == (None, None, "idempotency_conflict", "raised")


async def test_a_reply_naming_another_case_wins_with_its_own_status(store):
    got = await _alarm(store)
    alarm_id = got["alarm"]["id"]
    _event(store, 3, "C1", got["key"], "on_site")
    store.write_sync(lambda c: _apply(c, [Outcome(got["seq"], alarm_id, "case.create",
                                                  "delivered", "C2", "accepted")]))
    assert _card(store, alarm_id) == ("C2", "accepted", None, "raised")
    assert _event(store, 2, "C2", got["key"], "dispatched") is not None
    assert _card(store, alarm_id)[1] == "dispatched"


async def test_a_status_reported_for_a_key_of_no_pending_create_changes_nothing(store):
    got = await _alarm(store)
    store.write_sync(lambda c: _apply(c, [Outcome(got["seq"], got["alarm"]["id"],
                                                  "case.create", "delivered", "GC1-1",
                                                  "accepted")]))
    assert _event(store, 2, "ELSE-9", got["key"], "dispatched") is None
    assert _card(store, got["alarm"]["id"])[:2] == ("GC1-1", "accepted")


def test_a_service_case_reported_before_its_reply_moves_the_help_request(store):
    now = utc().isoformat()

    def make(c):
        help_id = help_rows.insert(c, category="life_service", household_id="h-1",
                                   grid_cell="GC-1", device_id=None, channel="phone",
                                   note="", actor="duty", now=now, request_key=None)
        key = outbox.enqueue(c, help_id, "case.create", {}, now, PREFIX, outbox.SERVICE)
        seq = c.execute("SELECT seq FROM outbox WHERE idempotency_key=?", (key,)).fetchone()
        return help_id, key, seq[0]

    help_id, key, seq = store.write_sync(make)
    assert _event(store, 2, "SV-7", key, "dispatched") is None    # not an alarm's change
    req = store.query_one("SELECT * FROM help_requests WHERE id=?", (help_id,))
    assert (req["case_id"], req["case_status"], req["state"]) == ("SV-7", "dispatched",
                                                                  "assigned")
    store.write_sync(lambda c: _apply(c, [Outcome(seq, None, "case.create", "delivered",
                                                  "SV-7", "accepted", help_id=help_id)]))
    req = store.query_one("SELECT * FROM help_requests WHERE id=?", (help_id,))
    assert (req["case_id"], req["case_status"]) == ("SV-7", "dispatched")
