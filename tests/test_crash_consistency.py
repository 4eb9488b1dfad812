"""Crash consistency, the quick CI variant: the real gateway is SIGKILLed 5 times at random
moments while devices press, cancel, raise and clear smoke, staff acknowledge and resolve,
and escalations fall due; after a final restart nothing a user can observe may be lost.

The implementation, the invariants and what exactly is asserted are in
simulators/bench/crash.py (the benchmark ``python -m simulators.bench crash`` runs the same
code with 25 kills). In short: (a) every press acknowledged to the device yields its alarm (a
new alarm after each resolve, a count that covers the presses), (b) every cancel and clear
is applied (cleared SOS, auto-resolved smoke) and every staff action answered 200 stays,
(c) every escalation due while the gateway was down shows within 5 s of /readyz, (d) one
case per alarm at the simulated case system, none missing once the outbox has drained.

``GATEWAY_CRASH_SEED`` picks another seed (default 0); the evidence (device logs, alarms
with their events, cases) is left in the test's temporary directory as evidence.json.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from simulators.bench.crash import Options, run_suite

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_kill_9_while_presses_cancels_staff_and_escalations_are_in_flight(tmp_path):
    if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
        pytest.fail("mosquitto is not installed: run the README's test command "
                    "(it installs the distribution's package)")
    seed = int(os.environ.get("GATEWAY_CRASH_SEED", "0"))
    report = run_suite(Options.quick_options(seed=seed, workdir=tmp_path / "crash"))
    figures = {k: v for k, v in report.items() if k not in ("failures", "examples")}
    print("crash consistency:", json.dumps(figures, ensure_ascii=False))
    # the run must have exercised what it checks, or a pass would mean nothing
    assert report["kills"] == 5 and report["restarts_checked"] >= 2
    assert report["presses"] > 0 and report["smoke_raises"] > 0
    assert report["cancels_effective"] > 0 and report["smoke_clears_effective"] > 0
    assert report["staff_ops_effective"] > 0 and report["escalations_checked"] > 0
    assert report["settled"], "the devices' last messages never reached the rules"
    assert report["outbox_drained"], "the outbox did not drain within 60 s"
    failed = {k: v for k, v in report["failures"].items() if v}
    assert not failed, (
        f"seed {seed}: invariants violated {failed}; examples: "
        f"{json.dumps(report['examples'], ensure_ascii=False)}; "
        f"evidence in {tmp_path / 'crash' / 'evidence.json'}")
