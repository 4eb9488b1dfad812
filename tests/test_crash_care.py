"""Crash consistency of the care writes (issue 15), the quick CI variant: the real gateway is
SIGKILLed 4 times at random moments while residents press help keys, staff enter help
requests, change care states and record call outcomes; after a last restart every
acknowledged help press is one help request with exactly one service case at the simulated
case system, and every care state and call outcome the API acknowledged is there.

The implementation and what exactly is counted are in simulators/bench/crash_care.py
(``python -m simulators.bench crash_care`` runs the same code with 12 kills).
``GATEWAY_CRASH_SEED`` picks another seed (default 0); the evidence is left in the test's
temporary directory as evidence.json.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from simulators.bench.crash_care import Options, run_suite

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_kill_9_while_help_presses_care_states_and_call_outcomes_are_written(tmp_path):
    if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
        pytest.fail("mosquitto is not installed: run the README's test command "
                    "(it installs the distribution's package)")
    seed = int(os.environ.get("GATEWAY_CRASH_SEED", "0"))
    report = run_suite(Options.quick_options(seed=seed, workdir=tmp_path / "crash"))
    print("crash consistency (care):",
          json.dumps({k: v for k, v in report.items() if k != "examples"}, ensure_ascii=False))
    # the run must have exercised what it checks, or a pass would mean nothing
    assert report["kills"] == 4 and report["restarts"] >= 3
    assert report["help_keys_pressed"] > 0 and report["requests"] > 0
    acked = report["staff_ops_acked"]
    assert acked["help"] > 0 and acked["call"] > 0 and acked["care_set"] > 0
    assert report["settled"], "the barrier press never became a request"
    assert report["outbox_drained"], "the case outbox did not drain within 30 s"
    failed = {k: v for k, v in report["failures"].items() if v}
    assert not failed, (
        f"seed {seed}: invariants violated {failed}; examples: "
        f"{json.dumps(report['examples'], ensure_ascii=False)}; "
        f"evidence in {tmp_path / 'crash' / 'evidence.json'}")
