"""Detection benchmark: how quickly inactivity is caught, and how often staff are bothered.

``python -m simulators.bench detection [--quick] [--days K] [--households N] [--seed S]``

Runs the simulated community (:mod:`simulators.community`) on a virtual clock: ``--warmup``
days for the learned baseline to learn, then ``--days`` scored days in which incidents are
planted (in ``--share`` of the households living alone the resident stops all activity at a
random time at home). The readings of the households living alone (the only ones the
inactivity rules watch; households do not influence each other's inactivity) go straight
into the rule engine built from the generated site like the service builds it (no
transports), ticked every simulated minute. Each raised alarm is resolved at once, as staff
would after a check call.

Residents living alone go away overnight now and then (``Community.trips``); with
probability ``--report-trips`` (default 0.7) a trip is reported through the away state
(外出, ``rules.inactivity.set_care``) six hours before the departure, from the departure to
the return rounded up to the hour (what the family tells the duty room). Dead-sensor
incidents (``--dead-share`` of the other households living alone: every device of the home
stops reporting for good, the resident goes on as usual; ``Community.plant_dead``) are
planted too. The site's supervision rule runs beside the inactivity rules (the silence
allowances 无法监护 is judged by).

Detectors, on the same readings in the same engine: ``learned`` — the site's ``inactivity``
rule (hour-of-week baseline) given the reported trips; ``learned_without_away`` — the same
rule without them; ``fixed`` — the ``inactivity_fixed`` rule (the same quiet hours, no away
state) at each timeout of ``--fixed-sweep``; the one whose median delay is closest to the
learned one's is reported as ``fixed`` ("at equal delay"), all of them in ``fixed_sweep``.

Figures per detector: ``detection_rate`` (incidents alarmed before the end of the run),
``median_delay_h`` and ``p95_delay_h`` (alarm time minus the time the resident would usually
have been active next: their next routine activity, or their wake-up time if the incident
happened in their sleep), ``false_alarms_per_100_household_days`` (alarms for a household
without an incident, or before its incident, per 100 scored household-days), of which
``false_alarms_while_away`` fell during stays away overnight. ``dead_sensors``: per
detector, the share of dead-sensor incidents whose first alarm was 无法监护 (category
``cannot_watch``) and not an inactivity alarm (must be 1.0), and the median time from the
sensors' death to it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gateway.model import Reading
from rules.actions import RaiseAlarm
from rules.inactivity import set_care
from rules.durations import format_duration, parse_duration
from simulators.community import DAY, Community

__all__ = ["add_args", "run", "score"]

SWEEP = "1h,1.5h,2h,2.5h,3h,4h,5h,6h,8h"


def add_args(p) -> None:
    p.add_argument("--households", type=int, default=None, help="default 200 (quick: 60)")
    p.add_argument("--days", type=int, default=None, help="scored days (default 28, quick 5)")
    p.add_argument("--warmup", type=int, default=None,
                   help="days before scoring, for the baseline to learn (default 28, quick 21)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--share", type=float, default=0.5,
                   help="share of households living alone given an incident (default 0.5)")
    p.add_argument("--fixed-sweep", default=SWEEP, help=f"fixed timeouts (default {SWEEP})")
    p.add_argument("--report-trips", type=float, default=0.7,
                   help="share of trips reported through the away state (default 0.7)")
    p.add_argument("--dead-share", type=float, default=0.3,
                   help="share of the other households living alone given a dead-sensor "
                        "incident (default 0.3)")
    p.add_argument("--truth", default=None, help="also write the ground truth (JSON lines)")


def run(args) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    households = args.households or (60 if quick else 200)
    days = args.days or (5 if quick else 28)
    warmup = args.warmup if args.warmup is not None else (21 if quick else 28)
    sweep = [parse_duration(x.strip()) for x in args.fixed_sweep.split(",") if x.strip()]
    return simulate(households, days, warmup, args.seed, args.share, sweep, args.truth,
                    report_trips=args.report_trips, dead_share=args.dead_share)


def simulate(households: int, days: int, warmup: int, seed: int, share: float,
             sweep: list[float], truth: str | None = None, report_trips: float = 0.7,
             dead_share: float = 0.3) -> dict[str, Any]:
    from gateway.service import build_engine
    from gateway.site import load_site
    from simulators.site_gen import write_site

    if days < 2:
        raise ValueError("--days must be at least 2 (incidents need time to be detected)")
    c = Community(households, seed)
    start = c.origin
    score_start = start + warmup * DAY
    end = score_start + days * DAY
    incidents = c.plant(score_start, end - 1.5 * DAY, share)
    dead = c.plant_dead(score_start, end - 1.5 * DAY, dead_share)
    with tempfile.TemporaryDirectory(prefix="detection-") as tmp:
        site = load_site(write_site(Path(tmp) / "site", c))
    rules = _rules(site.rules, sweep)
    engine = build_engine(dataclasses.replace(site, rules=rules))
    alone = [h.id for h in c.households if h.lives_alone]
    reports = _reported_trips(c, alone, report_trips, seed)
    alarms: list[tuple[str, str, float, str]] = []     # (rule id, household, epoch, category)
    t0 = time.perf_counter()
    n = 0
    next_tick = start
    utc = timezone.utc
    feed, tick = engine.feed, engine.tick

    def collect(actions: list, now: datetime) -> None:
        for a in actions:
            if isinstance(a, RaiseAlarm) and a.rule_id.startswith("inactivity"):
                assert a.household_id is not None   # inactivity is a household's
                alarms.append((a.rule_id, a.household_id, a.ts.timestamp(), a.category))
                engine.resolved(a.key, now)

    def tick_to(ts: float) -> None:
        nonlocal next_tick
        while next_tick <= ts:
            while reports and reports[-1][0] <= next_tick:   # a family tells of a trip
                _, h, leave, back = reports.pop()
                now = datetime.fromtimestamp(next_tick, utc)
                set_care(engine, h, "away", now, datetime.fromtimestamp(leave, utc),
                         datetime.fromtimestamp(back, utc), rules=["inactivity"])
            now = datetime.fromtimestamp(next_tick, utc)
            collect(tick(now), now)
            next_tick += 60.0

    for batch in c.reports(start, end, households=alone, shared=False, step=3 * 3600.0):
        if truth and n == 0:
            c.write_truth(truth)
        for r in batch:
            tick_to(r.ts)
            ts = datetime.fromtimestamp(r.ts, utc)
            for kind, value in r.values:
                out = feed(Reading(r.device_id, kind, value, ts), ts)
                if out:
                    collect(out, ts)
                n += 1
    tick_to(end - 60.0)
    elapsed = time.perf_counter() - t0
    figures = score(c, incidents, alarms, score_start, end, rules, dead)
    learned = figures.pop("inactivity")
    without = figures.pop("inactivity_noaway")
    sweep_rows = [dict(v, timeout_h=k) for k, v in sorted(figures.items())]
    fixed = min(sweep_rows, key=lambda row: abs(_or_inf(row["median_delay_h"])
                                               - _or_inf(learned["median_delay_h"])))
    ratio = (fixed["false_alarms_per_100_household_days"]
             / learned["false_alarms_per_100_household_days"]
             if learned["false_alarms_per_100_household_days"] else None)
    trips = [(a, b) for h in alone for a, b in c.trips(c.by_id[h])
             if a < end and b > score_start]
    return {
        "households": households, "watched_households": len(alone), "seed": seed,
        "warmup_days": warmup, "days": days, "incidents": len(incidents),
        "dead_sensor_incidents": len(dead), "report_trips": report_trips,
        "trips_in_scored_days": len(trips),
        "household_days": learned["household_days"],
        "learned": learned, "learned_without_away": without, "fixed": fixed,
        "away_reduction": (round(without["false_alarms_per_100_household_days"]
                                 / learned["false_alarms_per_100_household_days"], 2)
                           if learned["false_alarms_per_100_household_days"] else None),
        "false_alarm_ratio_fixed_to_learned": ratio,
        "fixed_sweep": sweep_rows,
        "readings": n, "readings_per_s": round(n / elapsed), "elapsed_s": round(elapsed, 1),
        "learned_rule": rules.rules[0].baseline.model_dump() if rules.rules[0].baseline else None,
    }


def _or_inf(x: float | None) -> float:
    return float("inf") if x is None else x


def _rules(site_rules, sweep: list[float]):
    """The site's learned rule (given the reported trips), a copy of it without them, one
    enabled copy of its fixed rule per timeout, and the site's supervision rules."""
    from rules.spec import RulesConfig

    learned = next(r for r in site_rules.rules if r.id == "inactivity")
    fixed = next(r for r in site_rules.rules if r.id == "inactivity_fixed")
    copies = [fixed.model_copy(update={"id": f"inactivity_fixed_{round(s)}", "enabled": True,
                                       "threshold": s}) for s in sweep]
    plain = learned.model_copy(update={"id": "inactivity_noaway"})
    health = [r for r in site_rules.rules if r.kind == "supervision"]
    return RulesConfig(rules=[learned, plain, *copies, *health], policy=site_rules.policy)


def _reported_trips(c: Community, alone: list[str], share: float,
                    seed: int) -> list[tuple[float, str, float, float]]:
    """Trips told to the duty room (``share`` of them, drawn per trip): (when told: six hours
    before leaving, household, departure, return rounded up to the hour), latest first."""
    import random

    out = []
    for h in alone:
        for a, b in c.trips(c.by_id[h]):
            if random.Random(f"{seed}:{h}:report:{a}").random() < share:
                out.append((a - 6 * 3600.0, h, a, -(-b // 3600) * 3600.0))
    return sorted(out, reverse=True)


def score(c: Community, incidents: list, alarms: list[tuple[str, str, float, str]],
          score_start: float, end: float, rules, dead: list | None = None,
          ) -> dict[str, dict[str, Any]]:
    """Figures per inactivity rule (keyed by the learned rules' ids or the fixed timeout
    in hours). Alarms of a household after its sensors died are scored apart (``dead``)."""
    by_hh = {i.household: i for i in incidents}
    died = {d.household: d.at for d in dead or ()}
    alone = [h for h in c.households if h.lives_alone]
    household_days = sum(min(end, by_hh[h.id].at if h.id in by_hh else end,
                             died.get(h.id, end)) - score_start for h in alone) / DAY
    out: dict[str, dict[str, Any]] = {}
    for rule in rules.rules:
        if rule.kind != "inactivity":
            continue
        cw = [(h, ts) for rid, h, ts, cat in alarms
              if rid == rule.id and cat == "cannot_watch" and ts >= score_start]
        mine = [(h, ts) for rid, h, ts, cat in alarms
                if rid == rule.id and cat != "cannot_watch" and ts >= score_start
                and ts < died.get(h, float("inf"))]
        dead_row = _dead_score(dead or [], cw, [(h, ts) for rid, h, ts, cat in alarms
                                                if rid == rule.id and cat != "cannot_watch"])
        delays, missed = [], []
        for inc in incidents:
            hits = [ts for h, ts in mine if h == inc.household and ts >= inc.at]
            if hits:
                delays.append((min(hits) - inc.usual_activity_at) / 3600)
            else:
                missed.append(inc.household)
        false = [(h, ts) for h, ts in mine if h not in by_hh or ts < by_hh[h].at]
        away = sum(1 for h, ts in false
                   if any(a <= ts <= b + 3600 for a, b in c.trips(c.by_id[h])))
        d = np.asarray(delays)
        row = {
            "detection_rate": round(len(delays) / len(incidents), 4) if incidents else None,
            "median_delay_h": round(float(np.median(d)), 2) if d.size else None,
            "p95_delay_h": round(float(np.percentile(d, 95)), 2) if d.size else None,
            "false_alarms_per_100_household_days": round(100 * len(false) / household_days, 3),
            "false_alarms": len(false), "false_alarms_while_away": away,
            "missed": missed, "household_days": round(household_days, 1),
            "dead_sensors": dead_row,
        }
        if not rule.id.startswith("inactivity_fixed"):
            out[rule.id] = row
        else:
            row["timeout"] = format_duration(rule.threshold, "en")
            out[round(rule.threshold / 3600, 2)] = row   # type: ignore[index]
    return out


def _dead_score(dead: list, cw: list[tuple[str, float]],
                inactive: list[tuple[str, float]]) -> dict[str, Any]:
    """Of the dead-sensor incidents: how many gave 无法监护 before any inactivity alarm."""
    first, delays, instead = 0, [], []
    for d in dead:
        got = min((ts for h, ts in cw if h == d.household and ts >= d.at), default=None)
        wrong = min((ts for h, ts in inactive if h == d.household and ts >= d.at),
                    default=None)
        if got is not None and (wrong is None or got <= wrong):
            first += 1
            delays.append((got - d.at) / 3600)
        else:
            instead.append(d.household)
    return {"incidents": len(dead),
            "cannot_watch_first": first,
            "share": round(first / len(dead), 4) if dead else None,
            "median_h": round(float(np.median(delays)), 2) if delays else None,
            "inactivity_alarm_instead": instead}
