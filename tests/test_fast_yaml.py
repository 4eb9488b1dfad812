"""edge_config.fast_yaml reads what ruamel reads, or refuses (issue 18: start-up time)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from edge_config import loader
from edge_config.fast_yaml import AVAILABLE, FastYamlError, load_plain
from edge_config.loader import plain
from gateway.site import VALIDATORS

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="PyYAML without libyaml")

EXAMPLE = Path(__file__).resolve().parents[1] / "edge_config" / "examples" / "tianlin"

SCALARS = ["yes", "no", "on", "off", "y", "true", "False", "TRUE", "null", "~", "Null", "",
           "010", "0o17", "0x1F", "0b101", "1_000", "-12", "+3", "22:00", "1:30:00", "08:00",
           "1.5", "1e3", "1.0e3", "-.inf", ".NaN", "1_0.5", "2026-01-01", "007",
           "138-0001-0001", "310104-012-01", "h-01-101", "'quoted'", '"22:00"', "模拟路100弄"]


@pytest.mark.parametrize("scalar", SCALARS)
def test_scalars_as_ruamel_reads_them(scalar: str) -> None:
    text = f"a: {scalar}\nb: [{scalar or 'x'}]\n"
    want = plain(YAML(typ="rt").load(text))
    got = load_plain(text)
    if isinstance(want["a"], float) and want["a"] != want["a"]:   # NaN
        assert got["a"] != got["a"]
    else:
        assert got == want and _base(got["a"]) is _base(want["a"])


def _base(v: object) -> type:
    """The plain type behind ruamel's subclasses (ScalarInt, ScalarFloat, ...)."""
    for t in (bool, int, float, str, list, dict):
        if isinstance(v, t):
            return t
    return type(v)


@pytest.mark.parametrize("text", ["a: 1\na: 2\n", "a: !!binary aGk=\n", "a: !custom x\n",
                                  "1: x\n", "a: [1, 2\n", "b: &b {x: 1}\nc: {<<: *b}\n", "a: 2026-01-01 10:00:00\n"])
def test_what_it_cannot_promise_it_refuses(text: str) -> None:
    with pytest.raises(FastYamlError):
        load_plain(text)


def test_the_example_site_is_the_same_either_way() -> None:
    fast = loader.load_site(EXAMPLE, VALIDATORS)
    slow = loader.load_site(EXAMPLE, VALIDATORS, fast=False)
    for name in ("site", "devices", "rules", "uplinks", "gateway"):
        assert getattr(fast, name) == getattr(slow, name)
    assert {k: plain(v) for k, v in slow.trees.items()} == fast.trees


def test_a_broken_site_is_read_again_for_its_lines(tmp_path: Path) -> None:
    import shutil

    from gateway import ConfigError
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE, site)
    text = (site / "devices.yaml").read_text(encoding="utf-8")
    (site / "devices.yaml").write_text(text + "  - id: extra\n    type: no_such_type\n",
                                       encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        loader.load_site(site, VALIDATORS)
    line = len(text.splitlines()) + 2
    assert any(f"devices.yaml:{line}:" in issue for issue in err.value.issues)


def test_the_cache_gives_the_same_site_and_follows_the_files(tmp_path: Path) -> None:
    import shutil

    site = tmp_path / "site"
    shutil.copytree(EXAMPLE, site)
    cache = tmp_path / "data" / "site-cache.json"
    cache.parent.mkdir()
    first = loader.load_site(site, VALIDATORS, cache=cache)
    assert cache.exists()
    again = loader.load_site(site, VALIDATORS, cache=cache)
    assert again.devices == first.devices and again.site == first.site
    text = (site / "site.yaml").read_text(encoding="utf-8")
    (site / "site.yaml").write_text(text.replace("田林七村社区", "田林七村新社区", 1), encoding="utf-8")
    changed = loader.load_site(site, VALIDATORS, cache=cache)
    assert changed.site == loader.load_site(site, VALIDATORS, fast=False).site
    assert changed.site != first.site
