"""Index of compiled rules by their most selective filter, and per-device routes.

Contract: :meth:`RuleIndex.routes_for` returns, for one device, the evaluators that accept
it grouped by the reading kind they listen to (rule order kept; key ``None``: evaluators
listening to every kind). Its cost depends on the number of rules that could apply to that
device, not on the number of rules; the engine calls it once per site device when it is
built (and once for each unknown device it meets) and keeps the result. Equal handler
tuples and equal routes are interned (shared by every device that has them; do not
modify a returned route). The route of a set of accepting evaluators is made once: a device
costs its buckets' look-ups and the ``accepts`` of the evaluators that may refuse it
(:meth:`Evaluator.accepts_every_device` ones are not asked), then one dict look-up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from gateway.kernel.model import Kind
from rules.evaluators import Evaluator
from rules.site import DeviceInfo

__all__ = ["RuleIndex"]

_FIELDS = ("device", "household", "cell", "type")


class RuleIndex:
    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self._by: dict[str, defaultdict[str, list[Evaluator]]] = {
            f: defaultdict(list) for f in _FIELDS}
        self._anywhere: list[Evaluator] = []
        #: equal handler tuples are shared between devices (memory, and the engine's cache
        #: of bound methods per tuple)
        self._interned: dict[tuple[Evaluator, ...], tuple[Evaluator, ...]] = {}
        self._routes: dict[tuple[str | int, ...], dict[Kind | None, tuple[Evaluator, ...]]] = {}
        #: the route of each tuple of accepting evaluators (of those asked) met so far
        self._by_accepted: dict[tuple[Evaluator, ...],
                                dict[Kind | None, tuple[Evaluator, ...]]] = {}
        for ev in evaluators:
            field, ids = ev.index_keys()
            if field == "any":
                self._anywhere.append(ev)
            else:
                for i in ids:
                    self._by[field][i].append(ev)
        #: evaluators of no bucket that accept every device, and the others of no bucket
        self._always = [ev for ev in self._anywhere if ev.accepts_every_device()]
        self._maybe = [ev for ev in self._anywhere if not ev.accepts_every_device()]

    def routes_for(self, d: DeviceInfo) -> dict[Kind | None, tuple[Evaluator, ...]]:
        by = self._by
        asked = list(self._maybe)
        for field, val in (("device", d.device_id), ("household", d.household_id),
                           ("cell", d.grid_cell), ("type", d.device_type)):
            if val is not None:
                bucket = by[field].get(val)
                if bucket:
                    asked += bucket
        accepted = tuple([ev for ev in asked if ev.accepts(d)])
        route = self._by_accepted.get(accepted)
        if route is None:
            route = self._by_accepted[accepted] = self._route(
                sorted({*self._always, *accepted}, key=_order))
        return route

    def _route(self, accepted: list[Evaluator]) -> dict[Kind | None, tuple[Evaluator, ...]]:
        """The route of the evaluators ``accepted`` (rule order), interned."""
        routes: dict[Kind | None, list[Evaluator]] = {}
        every: list[Evaluator] = []
        for ev in accepted:
            if ev.kinds is None:
                every.append(ev)
            else:
                for k in ev.kinds:
                    lst = routes.get(k)
                    if lst is None:
                        routes[k] = [ev]
                    else:
                        lst.append(ev)
        intern = self._interned
        out: dict[Kind | None, tuple[Evaluator, ...]] = {}
        for kind, evs in routes.items():
            t = tuple(sorted(evs + every, key=_order)) if every else tuple(evs)
            out[kind] = intern.setdefault(t, t)
        t = tuple(every)
        out[None] = intern.setdefault(t, t)
        # a flat key of kind names and interned tuples' ids (kept alive by ``_interned``):
        # one tuple of atoms per distinct route, which the garbage collector stops tracking
        key = tuple(x for k, t in out.items()
                    for x in ("" if k is None else k.value, id(t)))
        shared = self._routes.get(key)
        if shared is None:
            shared = self._routes[key] = out
        return shared


def _order(ev: Evaluator) -> int:
    return ev.order
