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
    finally:
        gc.enable()
        gc.unfreeze()
