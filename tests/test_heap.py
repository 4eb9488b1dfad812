"""gateway.heap.settle: long-lived objects leave the collector's scans; a later settle frees
what became garbage in between (the engine replaced by a site reload)."""

from __future__ import annotations

import gc
import weakref

from gateway.heap import settle


class _Node:
    def __init__(self) -> None:
        self.me = self      # a cycle: only the collector can free it


def test_settle_freezes_survivors_and_the_next_settle_frees_dropped_ones() -> None:
    try:
        node = _Node()
        ref = weakref.ref(node)
        first = settle()
        assert first["frozen"] == gc.get_freeze_count() > 0
        assert not any(o is node for o in gc.get_objects())   # no collection scans it
        del node
        gc.collect()
        assert ref() is not None          # frozen: ordinary collections leave it alone
        settle()                          # as after a reload: unfreeze, collect, freeze
        assert ref() is None
    finally:
        gc.unfreeze()


def test_pause_keeps_the_collector_off_until_a_settle_which_may_skip_the_collection() -> None:
    from gateway.kernel.heap import pause

    assert gc.isenabled()
    try:
        pause()                           # gateway run, before the service is imported
        assert not gc.isenabled()
        node = _Node()
        ref = weakref.ref(node)
        del node                          # start-up garbage
        settle(collect=False)             # the start-up settle: frozen, not collected
        assert gc.isenabled() and ref() is not None
        settle()                          # the next one (a reload) collects it
        assert ref() is None
        settle()
        assert gc.isenabled()             # a settle without a pause leaves it on
        node = _Node()
        ref = weakref.ref(node)
        settle()                          # frozen alive (a service that ran, in one process)
        del node
        settle(collect=False)             # no pause: collected all the same
        assert ref() is None
    finally:
        gc.enable()
        gc.unfreeze()


async def test_stalls_are_measured_and_a_full_collection_leaves_its_survivors_frozen() -> None:
    """/metrics shows how late the event loop wakes and how long full collections take;
    after one, what survived is frozen (the next full collection does not scan it again)."""
    import asyncio

    from gateway.metrics import Metrics, watch_stalls

    metrics = Metrics()
    kept = [[_Node()] for _ in range(1000)]          # long-lived containers
    gc.unfreeze()
    callbacks = len(gc.callbacks)
    task = asyncio.create_task(watch_stalls(metrics, every_s=0.01))
    try:
        await asyncio.sleep(0.05)
        before = gc.get_freeze_count()
        gc.collect()                                  # a full collection
        for _ in range(100):
            await asyncio.sleep(0.01)
            if "gateway_gc_pause_seconds_count 1" in metrics.render():
                break
        text = metrics.render()
        assert "gateway_gc_pause_seconds_count 1" in text, text
        assert "gateway_loop_lag_seconds_count" in text
        assert gc.get_freeze_count() >= before + len(kept)
        young = {id(o) for o in gc.get_objects(2)}
        assert not any(id(k) in young for k in kept)
    finally:
        task.cancel()
        del gc.callbacks[callbacks:]
        gc.unfreeze()


def test_gateway_run_that_stops_before_its_settle_turns_the_collector_back_on(tmp_path) -> None:
    import argparse

    from gateway.cli import cmd_run

    (tmp_path / "site").mkdir()         # no site.yaml, no devices.yaml: a ConfigError
    args = argparse.Namespace(config=str(tmp_path / "site"), data=str(tmp_path / "data"),
                              host="127.0.0.1", port=0)
    assert cmd_run(args) == 1
    assert gc.isenabled()
