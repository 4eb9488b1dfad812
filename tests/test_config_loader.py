"""Site configuration: every problem reported as FILE:LINE: field: message, in one pass."""

from __future__ import annotations

import shutil

import pytest

from gateway import ConfigError
from gateway.site import load_site
from tests.support import EXAMPLE


@pytest.fixture
def site(tmp_path):
    dest = tmp_path / "site"
    shutil.copytree(EXAMPLE, dest)
    return dest


def _issues(path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_site(path)
    return exc.value.issues


def test_example_site_is_valid():
    site = load_site(EXAMPLE)
    assert site.site.site.id == "tianlin-07"
    assert {d.type for d in site.devices.devices} >= {"emergency_caller", "smoke_detector"}
    assert site.uplinks.case_system.secret_env == "CASE_SYSTEM_SECRET"


def test_yaml_syntax_error_has_line(site):
    text = (site / "devices.yaml").read_text().splitlines()
    text[6] = "    household: [unclosed"
    (site / "devices.yaml").write_text("\n".join(text) + "\n")
    issues = _issues(site)
    assert len(issues) == 1
    assert issues[0].startswith(f"{site}/devices.yaml:") and "(syntax)" in issues[0]


def test_missing_required_file(site):
    (site / "site.yaml").unlink()
    assert any(i.startswith(f"{site}/site.yaml:1: (file): missing") for i in _issues(site))


def test_duplicate_ids_and_unknown_grid_cell(site):
    text = (site / "site.yaml").read_text()
    text = text.replace("id: h-7-302", "id: h-7-101").replace(
        'grid_cell: "310104-012-04"', 'grid_cell: "999999-000-00"')
    (site / "site.yaml").write_text(text)
    issues = _issues(site)
    lines = text.splitlines()
    dup_line = [i for i, ln in enumerate(lines, 1) if "id: h-7-101" in ln][1]
    cell_line = next(i for i, ln in enumerate(lines, 1) if "999999-000-00" in ln)
    assert f"{site}/site.yaml:{dup_line}: households[1].id: duplicate household id 'h-7-101'" \
        in issues, issues
    assert f"{site}/site.yaml:{cell_line}: households[2].grid_cell: unknown grid cell " \
           f"'999999-000-00'" in issues, issues


def test_unknown_key_and_secret_in_config_refused(site):
    (site / "uplinks.yaml").write_text(
        "case_system:\n  url: http://127.0.0.1:1\n  key_id: k1\n  secret: hunter2hunter2\n")
    issues = _issues(site)
    assert any("uplinks.yaml:4: case_system.secret: Extra inputs are not permitted" in i
               for i in issues), issues


def test_rule_problems_located(site):
    text = (site / "rules.yaml").read_text().replace("kind: match", "kind: wishful", 1)
    (site / "rules.yaml").write_text(text)
    issues = _issues(site)
    assert any(i.startswith(f"{site}/rules.yaml:") and "rules[0]" in i for i in issues), issues


def test_not_a_mapping_and_oversize(site):
    (site / "gateway.yaml").write_text("- just\n- a list\n")
    issues = _issues(site)
    assert f"{site}/gateway.yaml:1: (file): the file must hold a mapping at its top level" \
        in issues


def test_unreadable_site_file_is_one_error_not_an_echo_in_every_device(site):
    (site / "site.yaml").write_text("- not\n- a mapping\n")
    issues = _issues(site)
    assert issues == [f"{site}/site.yaml:1: (file): the file must hold a mapping at its top "
                      f"level"], issues
