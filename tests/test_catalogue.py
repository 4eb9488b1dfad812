"""The string catalogue (gateway/static/i18n.js, issue 13.4): both languages hold the same
keys, every error code the API makes has its words, every reading kind, device type, audit
action, case status and fault code the gateway uses is in it, and the server reads the file
exactly as the browser does."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from gateway.alarms import RESOLVE_REASONS
from gateway.api.errors import ERROR_CODES, FIELD_CODES
from gateway.catalogue import CatalogueError, catalogue, parse, text
from gateway.model import DEVICE_TYPES, Kind, Quality
from rules.alarms import FAULT_NAMES

CAT = catalogue()


def test_both_languages_have_the_same_keys():
    assert set(CAT["zh"]) == set(CAT["en"])
    assert all(v.strip() for lang in CAT.values() for v in lang.values())


@pytest.mark.parametrize("prefix, codes", [
    ("err_", ERROR_CODES), ("v_", FIELD_CODES), ("type_", DEVICE_TYPES),
    ("kind_", [k.value for k in Kind]), ("q_", [q.value for q in Quality]),
    ("fault_", list(FAULT_NAMES)), ("cs_", ["accepted", "dispatched", "on_site", "closed"]),
    ("act_", ["login", "alarm.acknowledge", "alarm.resolve", "alarm.call", "user.create", "user.disable",
              "token.create", "device.create", "device.edit", "device.remove", "device.mode",
              "device.mode_expired", "device.mode_until", "household.commissioned",
              "care.set", "care.end",
              "outbox.retry_failed"]),
    ("actor_", ["system", "device", "cli", "setup", "rule", "case_system"]),
    ("tier_", ["grid_member", "duty_officer", "street_office"]),
    ("cat_", ["emergency_call", "fire", "gas", "panic", "water_leak", "inactivity",
              "cannot_watch", "checkin_missed", "device_fault", "intrusion", "tamper"]),
])
def test_every_code_has_words(prefix, codes):
    missing = [c for c in codes if prefix + c not in CAT["zh"]]
    assert not missing, f"no words for {prefix}: {missing}"


def test_no_english_article_guesses_a_placeholder():
    """'a {what}' reads 'a emergency call' for half the words it takes (night-shift walk)."""
    import re
    assert [k for k, v in CAT["en"].items() if re.search(r"\b[aA]n? \{", v)] == []


def test_boolean_readings_read_as_words():
    for kind in ("sos", "smoke", "gas", "water_leak", "motion", "door_open", "tamper"):
        assert {f"kv_{kind}_true", f"kv_{kind}_false"} <= set(CAT["zh"]), kind
    assert (text("zh", "kind_sos"), text("zh", "kv_sos_true"), text("zh", "q_good")) == (
        "一键呼叫", "已按下", "信号良好")


def test_resolve_reasons_are_bilingual():
    assert all(set(v) >= {"zh", "en"} for v in RESOLVE_REASONS.values())


def test_the_server_reads_the_file_as_the_browser_does():
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.fail("node is not installed (Debian: apt-get install nodejs)")
    from importlib import resources
    src = resources.files("gateway").joinpath("static/i18n.js")
    out = subprocess.run([node, "-e", "global.window = {}; require(process.argv[1]); "
                          "console.log(JSON.stringify(window.I18N))", str(src)],
                         capture_output=True, text=True, check=True, timeout=30)
    assert json.loads(out.stdout) == CAT


def test_a_form_the_reader_does_not_take_fails_loudly():
    with pytest.raises(CatalogueError):
        parse('window.I18N = {\n  zh: {\n    a: `template`,\n  },\n  en: {\n  },\n};\n')
    assert text("en", "no_such_key", default="x") == "x"
    assert text("en", "err_user_disabled") == "This user is disabled"
