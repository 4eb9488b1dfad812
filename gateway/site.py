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

import threading
from importlib import resources
from pathlib import Path
from typing import Any

from drivers.profiles import ProfileMisfit, fit_profile, load_profiles
from edge_config.loader import SiteConfig, Validators
from edge_config.loader import load_site as _load_site
from rules.spec import RulesConfig, check_references

__all__ = ["VALIDATORS", "SiteConfig", "load_site", "profiles_of"]


def _fit(profiles: Any, device_id: str, device_type: str, profile_id: str | None, fmt: str,
         *, transport: str = "", zigbee2mqtt: bool = False) -> str | None:
    try:
        fit_profile(profiles, device_id, device_type, profile_id, fmt, transport=transport,
                    zigbee2mqtt=zigbee2mqtt)
    except ProfileMisfit as exc:
        return str(exc)
    return None


_PROFILES: dict[Any, Any] = {}
_PROFILES_LOCK = threading.Lock()


def _profiles_key(directory: Path) -> tuple:
    """What the profiles of ``directory`` are made of: every file's name, size, mtime and
    inode (the shipped ones and the site's)."""
    shipped = resources.files("drivers").joinpath("profiles")
    files = [Path(str(p)) for p in shipped.iterdir() if p.name.endswith(".yaml")]
    if directory.is_dir():
        files += directory.glob("*.yaml")
    out = []
    for f in sorted(files):
        st = f.stat()
        out.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return (str(directory), tuple(out))


def profiles_of(directory: str | Path) -> Any:
    """``drivers.profiles.load_profiles(directory)``, read again only when one of its files
    changed (parsing them costs more than a device edit may take; a profile set is not
    changed once made)."""
    directory = Path(directory)
    key = _profiles_key(directory)
    with _PROFILES_LOCK:
        hit = _PROFILES.get(key)
    if hit is not None:
        return hit
    profiles = load_profiles(directory)
    with _PROFILES_LOCK:
        if len(_PROFILES) >= 4:
            _PROFILES.clear()
        _PROFILES[key] = profiles
    return profiles


#: rules.yaml's model and references, and the profile checks, for ``edge_config``'s loader
VALIDATORS = Validators(rules_model=RulesConfig, rule_references=check_references,
                        load_profiles=profiles_of, fit_profile=_fit)


def load_site(directory: str | Path, cache: Path | None = None) -> SiteConfig:
    """Read, validate and cross-check a site directory; raise
    :class:`gateway.kernel.errors.ConfigError` with every issue (``FILE:LINE: field: msg``).
    ``cache``: the parsed files' JSON cache (``edge_config.loader.load_site``; the service
    keeps it in its data directory)."""
    return _load_site(directory, VALIDATORS, cache=cache)
