"""Index of compiled rules by their most selective filter, and per-device routes.

Contract: :meth:`RuleIndex.routes_for` returns, for one device, the evaluators that accept
it grouped by the reading kind they listen to (rule order kept; key ``None``: evaluators
listening to every kind). Its cost depends on the number of rules that could apply to that
device, not on the number of rules; the engine calls it once per device and caches it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from gateway.model import Kind
from rules.evaluators import Evaluator
from rules.site import DeviceInfo

__all__ = ["RuleIndex"]

_FIELDS = ("device", "household", "cell", "type")


class RuleIndex:
    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self._by: dict[str, defaultdict[str, list[Evaluator]]] = {
            f: defaultdict(list) for f in _FIELDS}
        self._anywhere: list[Evaluator] = []
        for ev in evaluators:
            field, ids = ev.index_keys()
            if field == "any":
                self._anywhere.append(ev)
            else:
                for i in ids:
                    self._by[field][i].append(ev)

    def routes_for(self, d: DeviceInfo) -> dict[Kind | None, tuple[Evaluator, ...]]:
        found: dict[int, Evaluator] = {ev.order: ev for ev in self._anywhere}
        for field, val in zip(_FIELDS, (d.device_id, d.household_id, d.grid_cell,
                                        d.device_type)):
            if val is not None:
                bucket = self._by[field].get(val)
                if bucket:
                    for ev in bucket:
                        found[ev.order] = ev
        routes: dict[Kind | None, list[Evaluator]] = defaultdict(list)
        for order in sorted(found):
            ev = found[order]
            if ev.accepts(d):
                for k in (ev.kinds if ev.kinds is not None else (None,)):
                    routes[k].append(ev)
        every = routes.pop(None, [])
        out: dict[Kind | None, tuple[Evaluator, ...]] = {
            k: tuple(sorted(evs + every, key=_order)) for k, evs in routes.items()}
        out[None] = tuple(every)
        return out


def _order(ev: Evaluator) -> int:
    return ev.order
