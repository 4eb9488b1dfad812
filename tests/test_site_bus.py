"""The site bus: an edited site that fails its check changes nothing; one that passes reaches
every subscriber in order."""

import pytest

from gateway.change_bus import SiteBus
from gateway.kernel.errors import ConfigError


def test_a_site_that_fails_its_check_changes_nothing():
    seen: list[tuple[str, str]] = []

    def check(site: str) -> None:
        if site == "bad":
            raise ConfigError(["devices.yaml: devices.x.profile: no such profile"])

    bus = SiteBus("old", check=check)   # type: ignore[arg-type]
    bus.subscribe(lambda s: seen.append(("engine", s)))
    bus.subscribe(lambda s: seen.append(("intake", s)))
    with pytest.raises(ConfigError, match="devices.x.profile"):
        bus.publish("bad")             # type: ignore[arg-type]
    assert bus.current == "old" and seen == []
    bus.publish("new")                 # type: ignore[arg-type]
    assert bus.current == "new" and seen == [("engine", "new"), ("intake", "new")]
