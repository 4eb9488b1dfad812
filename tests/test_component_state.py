import logging
from gateway.kernel.component import StateTracker

def test_tracker_logs_each_transition_once(caplog):
    caplog.set_level(logging.DEBUG)
    t = StateTracker("mqtt intake 127.0.0.1:1883", "starting")
    assert t.set("online") and not t.set("online")
    assert t.set("offline", "connection refused")
    t.set("offline", "again")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [(logging.INFO, "mqtt intake 127.0.0.1:1883 starting -> online"),
                     (logging.WARNING, "mqtt intake 127.0.0.1:1883 online -> offline (connection refused)")]
    assert t.transitions == 2 and t.value == "offline"

def test_between_good_states_is_quiet(caplog):
    caplog.set_level(logging.INFO)
    t = StateTracker("case forwarder:", "idle", good=("idle", "ok"))
    t.set("ok")
    t.set("idle")
    assert caplog.records == []
    t.set("retrying: timeout")
    t.set("ok")
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
