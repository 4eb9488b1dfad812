"""Index of compiled rules by reading kind and by their most selective filter.

Contract: :meth:`RuleIndex.handlers_for` returns, in rule order, the evaluators that listen to
``kind`` (or to every kind) and accept ``device``. Its cost depends on the number of rules
that could apply to that device, not on the number of rules: the engine calls it once per
(device, kind) stream and caches the answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from gateway.model import Kind
from rules.evaluators import Evaluator
from rules.site import DeviceInfo

__all__ = ["RuleIndex"]


class _Bucket:
    __slots__ = ("by", "anywhere")

    def __init__(self) -> None:
        self.by: dict[str, defaultdict[str, list[Evaluator]]] = {
            f: defaultdict(list) for f in ("device", "household", "cell", "type")}
        self.anywhere: list[Evaluator] = []

    def add(self, ev: Evaluator) -> None:
        field, ids = ev.index_keys()
        if field == "any":
            self.anywhere.append(ev)
        else:
            for i in ids:
                self.by[field][i].append(ev)

    def candidates(self, d: DeviceInfo, out: dict[int, Evaluator]) -> None:
        for field, val in (("device", d.device_id), ("household", d.household_id),
                           ("cell", d.grid_cell), ("type", d.device_type)):
            if val is not None:
                for ev in self.by[field].get(val, ()):
                    out[ev.order] = ev
        for ev in self.anywhere:
            out[ev.order] = ev


class RuleIndex:
    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self._by_kind: dict[Kind | None, _Bucket] = defaultdict(_Bucket)
        for ev in evaluators:
            if ev.kinds is None:
                self._by_kind[None].add(ev)
            else:
                for k in ev.kinds:
                    self._by_kind[k].add(ev)

    def handlers_for(self, device: DeviceInfo, kind: Kind) -> tuple[Evaluator, ...]:
        found: dict[int, Evaluator] = {}
        for k in (kind, None):
            b = self._by_kind.get(k)
            if b is not None:
                b.candidates(device, found)
        return tuple(found[o] for o in sorted(found) if found[o].accepts(device))
