"""What the rule engine knows of the site: devices, households, grid cells, local timezone.

Contract: :class:`SiteIndex` is immutable after construction. ``device_index`` and
``household_index`` give each device/household a dense integer (insertion order) that the
engine uses to keep per-device and per-household state in numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from zoneinfo import ZoneInfo

__all__ = ["DeviceInfo", "HouseholdInfo", "SiteIndex"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A registered device, bound to its household and grid cell (either may be None)."""

    device_id: str
    device_type: str
    household_id: str | None = None
    grid_cell: str | None = None
    name: str = ""                  # what staff call it (``{device_name}`` in messages)

    def __post_init__(self) -> None:
        if not self.device_id:
            raise ValueError("DeviceInfo without device_id")


@dataclass(frozen=True, slots=True)
class HouseholdInfo:
    """A household; ``lives_alone`` selects it for inactivity rules by default."""

    household_id: str
    grid_cell: str | None = None
    lives_alone: bool = False
    tz: str | None = None
    address: str = ""               # ``{household_address}`` in messages

    def __post_init__(self) -> None:
        if not self.household_id:
            raise ValueError("HouseholdInfo without household_id")


@dataclass(frozen=True, slots=True)
class SiteIndex:
    """Devices and households by id, and the site's IANA timezone (e.g. ``"Asia/Shanghai"``).

    Raises ``ValueError`` for an unknown timezone or a device bound to an unknown household.
    """

    devices: Mapping[str, DeviceInfo]
    households: Mapping[str, HouseholdInfo]
    tz: str = "Asia/Shanghai"
    #: grid cell code -> its name (``{grid_cell_name}`` in messages)
    grid_cell_names: Mapping[str, str] = field(default_factory=dict)
    zone: ZoneInfo = field(init=False, repr=False, compare=False)
    device_index: Mapping[str, int] = field(init=False, repr=False, compare=False)
    household_index: Mapping[str, int] = field(init=False, repr=False, compare=False)
    devices_of_household: Mapping[str, tuple[str, ...]] = field(init=False, repr=False,
                                                                compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.tz)
        except Exception as exc:  # ZoneInfoNotFoundError, ValueError for malformed keys
            raise ValueError(f"unknown timezone {self.tz!r}") from exc
        by_household: dict[str, list[str]] = {h: [] for h in self.households}
        for d in self.devices.values():
            if d.household_id is not None:
                if d.household_id not in by_household:
                    raise ValueError(f"device {d.device_id!r}: unknown household "
                                     f"{d.household_id!r}")
                by_household[d.household_id].append(d.device_id)
        object.__setattr__(self, "zone", zone)
        object.__setattr__(self, "device_index",
                           MappingProxyType({d: i for i, d in enumerate(self.devices)}))
        object.__setattr__(self, "household_index",
                           MappingProxyType({h: i for i, h in enumerate(self.households)}))
        object.__setattr__(self, "devices_of_household", MappingProxyType(
            {h: tuple(ds) for h, ds in by_household.items()}))

    @classmethod
    def build(cls, devices: list[DeviceInfo], households: list[HouseholdInfo],
              tz: str = "Asia/Shanghai") -> SiteIndex:
        """Convenience constructor from lists."""
        return cls({d.device_id: d for d in devices}, {h.household_id: h for h in households}, tz)

    def names(self, device_id: str | None, household_id: str | None,
              grid_cell: str | None) -> dict[str, str]:
        """The name placeholders of a message about this place: ``device_name``,
        ``household_address``, ``grid_cell_name``; each falls back to the id when the site
        gives no name (so a message never loses its subject)."""
        d = self.devices.get(device_id) if device_id else None
        h = self.households.get(household_id) if household_id else None
        return {"device_name": (d.name if d is not None and d.name else device_id or ""),
                "household_address": (h.address if h is not None and h.address
                                      else household_id or ""),
                "grid_cell_name": self.grid_cell_names.get(grid_cell or "", grid_cell or "")}
