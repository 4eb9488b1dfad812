"""The site directory as the gateway loads it: ``edge_config``'s loader with what the rule
library and the drivers know about a site.

edge_config, rules and drivers are independent libraries over the kernel (docs/architecture.md,
"Layers"); this module, in the top layer, puts them together: rules.yaml is validated with
``rules.spec.RulesConfig`` and its references checked with ``rules.spec.check_references``,
each device's profile is checked to fit its type and transport with
``drivers.profiles.fit_profile``. Every caller that reads a site (the service, the installer,
the CLI, the tools and tests) calls :func:`load_site` here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivers.profiles import ProfileMisfit, fit_profile, load_profiles
from edge_config.loader import SiteConfig, Validators
from edge_config.loader import load_site as _load_site
from rules.spec import RulesConfig, check_references

__all__ = ["VALIDATORS", "SiteConfig", "load_site"]


def _fit(profiles: Any, device_id: str, device_type: str, profile_id: str | None, fmt: str,
         *, transport: str = "", zigbee2mqtt: bool = False) -> str | None:
    try:
        fit_profile(profiles, device_id, device_type, profile_id, fmt, transport=transport,
                    zigbee2mqtt=zigbee2mqtt)
    except ProfileMisfit as exc:
        return str(exc)
    return None


#: rules.yaml's model and references, and the profile checks, for ``edge_config``'s loader
VALIDATORS = Validators(rules_model=RulesConfig, rule_references=check_references,
                        load_profiles=load_profiles, fit_profile=_fit)


def load_site(directory: str | Path) -> SiteConfig:
    """Read, validate and cross-check a site directory; raise
    :class:`gateway.kernel.errors.ConfigError` with every issue (``FILE:LINE: field: msg``)."""
    return _load_site(directory, VALIDATORS)
