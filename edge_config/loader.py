"""Load and validate a site directory, reporting every problem as ``FILE:LINE: field: message``.

``load_site(path, validators)`` returns a :class:`SiteConfig` or raises
:class:`gateway.kernel.errors.ConfigError` listing *all* problems found (syntax, schema,
cross-references), each located by file and line so an installer can fix them in one pass.

edge_config imports the kernel and itself only (docs/architecture.md, "Layers"). What the
other libraries know about a site, rules.yaml's model and its references (``rules.spec``)
and which profile fits which device (``drivers.profiles``), comes in as :class:`Validators`;
``gateway.site.load_site(path)`` is this loader with the rules library's and the drivers'
validators, and what everything else calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from edge_config.fast_yaml import FastYamlError, TreeCache, load_plain
from edge_config.schema import (
    CALL_STEPS, STANDARD_CATEGORIES, Device, DevicesFile, GatewayFile, SiteFile, UplinksFile,
)
from gateway.kernel.errors import ConfigError

__all__ = ["FILES", "SiteConfig", "Validators", "load_site", "locate", "plain",
           "read_trees", "revalidate_devices"]

#: file name -> pydantic model (rules.yaml is validated by the rules library's own model)
FILES: dict[str, type[BaseModel] | None] = {
    "site.yaml": SiteFile,
    "devices.yaml": DevicesFile,
    "rules.yaml": None,
    "uplinks.yaml": UplinksFile,
    "gateway.yaml": GatewayFile,
}
REQUIRED = ("site.yaml", "devices.yaml")
#: a community of 10,000 households (about 57,000 devices) writes a devices.yaml of 9 MB
MAX_FILE_BYTES = 16 * 1024 * 1024
#: what ``_read_yaml`` returns when the fast reading cannot be trusted
_SLOW = object()


@dataclass(frozen=True)
class SiteConfig:
    """A validated site: one object per file, plus where it was read from."""

    directory: Path
    site: SiteFile
    devices: DevicesFile
    rules: Any  # rules.spec.RulesConfig
    uplinks: UplinksFile
    gateway: GatewayFile
    trees: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: those of ``trees`` the tree cache holds as they are (taken from it, or put in it:
    #: plain data JSON gives back), by file name: nobody walks them again to find that out
    #: (a tree is one of them only while it is the very object here)
    cached_trees: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # a site made with other trees (``replace``) keeps none of the old ones alive here
        if self.cached_trees:
            object.__setattr__(self, "cached_trees", {
                n: t for n, t in self.cached_trees.items() if self.trees.get(n) is t})

    def household(self, household_id: str | None):
        return self._households.get(household_id) if household_id is not None else None

    def grid_cell(self, code: str | None):
        return self._grid_cells.get(code) if code is not None else None

    @cached_property
    def _households(self) -> dict[str, Any]:
        """Households by id (made once: a 5,000-device site asks for each device's); the
        first of a duplicated id, as the scan it replaces found."""
        return _first_by(self.site.households, "id")

    @cached_property
    def _grid_cells(self) -> dict[str, Any]:
        return _first_by(self.site.grid_cells, "code")


def _first_by(items: Iterable[Any], key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for x in items:
        out.setdefault(getattr(x, key), x)
    return out


@dataclass(frozen=True)
class Validators:
    """What the libraries above edge_config know about a site (see ``gateway.site``).

    - ``rules_model``: the pydantic model of rules.yaml (``rules.spec.RulesConfig``);
    - ``rule_references(rules, device_ids, household_ids, grid_cells)``: ``(loc, message)``
      for each reference of the rules to something the site does not have;
    - ``load_profiles(directory)``: the site's device profiles (built-in plus its
      ``profiles/`` directory); raises ``ValueError`` naming a profile file that is wrong;
    - ``fit_profile(profiles, device_id, device_type, profile_id, fmt, transport=...,
      zigbee2mqtt=...)``: ``None`` when the device's profile (named, or its type's default)
      fits its type and a transport whose input is in format ``fmt``, else the message.
      Whether it fits depends on ``device_type``, ``profile_id``, ``fmt`` and
      ``zigbee2mqtt`` only (the loader asks once per such fit; a misfit's message may name
      the device and its transport).
    """

    rules_model: type[BaseModel]
    rule_references: Callable[[Any, set[str], set[str], set[str]],
                              Iterable[tuple[Iterable[str | int], str]]]
    load_profiles: Callable[[Path], Any]
    fit_profile: Callable[..., str | None]


def locate(tree: Any, loc: tuple) -> int | None:
    """1-based line of the deepest node of ``loc`` that exists in a ruamel tree."""
    line = None
    node = tree
    for part in loc:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(part, int) and isinstance(node, list):
                if lc is not None and part < len(node):
                    line = lc.item(part)[0] + 1
                node = node[part]
            elif isinstance(node, dict) and part in node:
                if lc is not None:
                    line = lc.key(part)[0] + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    if line is None and getattr(tree, "lc", None) is not None:
        line = tree.lc.line + 1
    return line


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(file)"


class _Collector:
    def __init__(self, directory: Path, validators: Validators) -> None:
        self.directory = directory
        self.validators = validators
        self.issues: list[str] = []

    def add(self, fname: str, line: int | None, loc: tuple | str, msg: str) -> None:
        where = f"{self.directory / fname}:{line or 1}"
        field_name = loc if isinstance(loc, str) else _dotted(loc)
        self.issues.append(f"{where}: {field_name}: {msg}")


def _read_yaml(path: Path, out: _Collector, fast: bool = False,
               cache: TreeCache | None = None) -> Any:
    """The file's tree: ruamel's (lines for errors), or with ``fast`` plain data read by
    :func:`edge_config.fast_yaml.load_plain` (or taken from ``cache`` when the file's bytes
    did not change); ``_SLOW`` when that cannot be promised to be ruamel's reading (the
    caller then reads the whole site with ruamel)."""
    fname = path.name
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            out.add(fname, 1, "(file)", f"file larger than {MAX_FILE_BYTES} bytes")
            return None
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        out.add(fname, 1, "(file)", f"not UTF-8: {exc.reason}")
        return None
    if fast and cache is not None:
        known = cache.get(fname, raw)
        if known is not None:
            return known
    try:
        data = load_plain(text) if fast else YAML(typ="rt").load(text)
        if fast and cache is not None and isinstance(data, dict):
            cache.put(fname, raw, data)
    except FastYamlError:
        return _SLOW
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        out.add(fname, mark.line + 1 if mark else 1, "(syntax)",
                f"{exc.problem or exc.context}".strip())
        return None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        out.add(fname, 1, "(file)", "the file must hold a mapping at its top level")
        return None
    return data


def _validate(model: type[BaseModel], tree: Any, fname: str, out: _Collector,
              is_plain: bool = False):
    try:
        return model.model_validate(tree if is_plain else _plain(tree))
    except ValidationError as exc:
        for err in exc.errors():
            loc = _tree_loc(tree, err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            out.add(fname, locate(tree, loc), loc, msg)
        return None


def _tree_loc(tree: Any, loc: tuple) -> tuple:
    """Drop the parts of a pydantic loc that are not in the file (union tags like 'match')."""
    out: list = []
    node = tree
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node and (
                "[" in part or node.get("kind") == part):
            continue
        out.append(part)
        try:
            node = node[part] if isinstance(node, (dict, list)) else None
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(out)


def plain(node: Any) -> Any:
    """ruamel's commented containers -> plain dicts/lists (pydantic wants plain types)."""
    return _plain(node)


def _plain(node: Any) -> Any:
    """ruamel's commented containers -> plain dicts/lists (pydantic wants plain types)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _find_index(tree: Any, list_key: str, id_key: str, value: str) -> int | None:
    for i, item in enumerate(tree.get(list_key) or []):
        if isinstance(item, dict) and item.get(id_key) == value:
            return i
    return None


def _items(tree: Any, key: str) -> list[tuple[int, dict]]:
    seq = tree.get(key) if isinstance(tree, dict) else None
    return [(i, x) for i, x in enumerate(seq or []) if isinstance(x, dict)]


def _cross_check(cfg: dict[str, Any], trees: dict[str, Any], out: _Collector,
                 fit_only: set[str] | None = None) -> None:
    """References between entries and files. Works on the raw trees, so that it reports
    problems even in files whose schema validation failed (every problem in one pass)."""
    st = trees.get("site.yaml") or {}
    dt = trees.get("devices.yaml") or {}

    def unique(fname: str, tree: Any, key: str, field_name: str, what: str) -> set[str]:
        seen: set[str] = set()
        for i, item in _items(tree, key):
            value = item.get(field_name)
            if not isinstance(value, str):
                continue
            if value in seen:
                loc = (key, i, field_name)
                out.add(fname, locate(tree, loc), loc, f"duplicate {what} {value!r}")
            seen.add(value)
        return seen

    def refs(fname: str, tree: Any, key: str, field_name: str, known: set[str],
             what: str) -> None:
        for i, item in _items(tree, key):
            value = item.get(field_name)
            if value is not None and value not in known:
                loc = (key, i, field_name)
                out.add(fname, locate(tree, loc), loc, f"unknown {what} {value!r}")

    cells = unique("site.yaml", st, "grid_cells", "code", "grid cell code")
    homes = unique("site.yaml", st, "households", "id", "household id")
    refs("site.yaml", st, "households", "grid_cell", cells, "grid cell")
    ids = unique("devices.yaml", dt, "devices", "id", "device id")
    unique("gateway.yaml", trees.get("gateway.yaml") or {}, "dc09_receivers", "id",
           "DC-09 receiver id")
    if "site.yaml" in trees:     # unreadable site.yaml: its own error says so, no echoes
        refs("devices.yaml", dt, "devices", "household", homes, "household")
        refs("devices.yaml", dt, "devices", "grid_cell", cells, "grid cell")
    devices: DevicesFile | None = cfg.get("devices.yaml")
    if devices is not None:
        topics: dict[str, str] = {}
        for i, d in enumerate(devices.devices):
            topic = d.topic
            if not topic:
                continue
            if topic in topics:
                loc = ("devices", i, "mqtt")
                out.add("devices.yaml", locate(dt, loc), loc,
                        f"topic {topic!r} already used by device {topics[topic]!r}")
            topics[topic] = d.id
        _check_transports(devices, cfg.get("gateway.yaml"), dt, out, fit_only)
    rules_cfg = cfg.get("rules.yaml")
    if rules_cfg is not None and "rules.yaml" in trees:
        for rule_loc, msg in out.validators.rule_references(rules_cfg, ids, homes, cells):
            out.add("rules.yaml", locate(trees["rules.yaml"], tuple(rule_loc)), tuple(rule_loc),
                    msg)
    _check_call_plans(st, rules_cfg if "rules.yaml" in trees else None, out)
    if "site.yaml" in trees:     # help keys name a category of site.yaml's help_categories
        cats = st.get("help_categories") if isinstance(st, dict) else None
        known = set(cats) if isinstance(cats, dict) else set()
        for i, item in _items(dt, "devices"):
            acts = item.get("help_actions")
            if not isinstance(acts, dict):
                continue
            for action, cat in acts.items():
                if isinstance(cat, str) and cat not in known:
                    where: tuple = ("devices", i, "help_actions", action)
                    out.add("devices.yaml", locate(dt, where), where,
                            f"unknown help category {cat!r} (site.yaml help_categories: "
                            f"{', '.join(sorted(known)) or 'none'})")


def _check_call_plans(st: Any, rules_cfg: Any, out: _Collector) -> None:
    """Call plan steps name what the site has (``resident``, ``contacts``, ``grid_member``
    or an ``on_call`` id), and the categories of ``response`` and of households'
    ``call_plans`` are standard ones (``STANDARD_CATEGORIES``) or ones a rule of rules.yaml
    raises (``default`` apart): a misspelt category would never apply. Raw tree, like the other references."""
    if not isinstance(st, dict):
        return
    on_call = st.get("on_call")
    steps = set(CALL_STEPS) | ({k for k in on_call if isinstance(k, str)}
                               if isinstance(on_call, dict) else set())
    rules = getattr(rules_cfg, "rules", None)
    categories = set(STANDARD_CATEGORIES) | (
        {c for r in rules if isinstance(c := getattr(r, "category", None), str)}
        | {c for r in rules   # an inactivity rule's 无法监护 (rules.spec.CannotWatchSpec)
           if isinstance(c := getattr(getattr(r, "cannot_watch", None), "category", None), str)}
        if rules is not None else set())

    def check(plans: Any, where: tuple) -> None:
        if not isinstance(plans, dict):
            return
        for category, plan in plans.items():
            if category != "default" and category not in categories:
                loc = (*where, category)
                out.add("site.yaml", locate(st, loc), loc,
                        f"unknown alarm category {category!r}: not a standard one nor one a "
                        f"rule in rules.yaml raises (known: {', '.join(sorted(categories))}, "
                        f"or 'default')")
            steps_of = plan.get("call_plan") if where == ("response",) and isinstance(
                plan, dict) else plan
            if not isinstance(steps_of, list):
                continue
            base = (*where, category, "call_plan") if where == ("response",) else (
                *where, category)
            for j, step in enumerate(steps_of):
                if isinstance(step, str) and step not in steps:
                    loc = (*base, j)
                    out.add("site.yaml", locate(st, loc), loc,
                            f"unknown call plan step {step!r}: one of "
                            f"{', '.join(CALL_STEPS)} or an on_call id "
                            f"({', '.join(sorted(steps - set(CALL_STEPS))) or 'none defined'})")

    check(st.get("response"), ("response",))
    for i, h in _items(st, "households"):
        check(h.get("call_plans"), ("households", i, "call_plans"))


def _check_transports(devices: DevicesFile, gw: GatewayFile | None, dt: Any,
                      out: _Collector, fit_only: set[str] | None = None) -> None:
    """Modbus/serial/DC-09 devices name a bus/line/receiver (and a DC-09 device one of its
    receiver's accounts) of gateway.yaml and sit at a free address; every
    device's profile (named, or its type's default) fits its type and transport: format
    ``json`` over MQTT, ``modbus`` on a bus, the line's protocol on a serial line,
    ``contact_id`` behind a DC-09 receiver, and a
    profile of the device's type (``contact_id`` profiles serve any type). See
    ``drivers.profiles.fit_profile`` (through :class:`Validators`); the message names the
    device, the profile and what fits."""
    v = out.validators
    buses = {b.id for b in gw.modbus_buses} if gw else set()
    lines = {ln.id: ln.protocol for ln in gw.serial_lines} if gw else {}
    receivers = {r.id: {a.account.upper() for a in r.accounts}
                 for r in gw.dc09_receivers} if gw else {}
    try:
        profiles = v.load_profiles(out.directory / "profiles")
    except ValueError as exc:
        out.add("profiles", 1, "(file)", str(exc))
        return
    taken: dict[tuple, str] = {}
    #: (type, profile, format, Zigbee2MQTT) of devices whose profile fitted: a fit depends
    #: on nothing else (only a misfit's message names the device and its transport)
    fitted: set[tuple] = set()
    for i, d in enumerate(devices.devices):
        if d.modbus is not None:
            loc, fmt = ("devices", i, "modbus", "bus"), "modbus"
            transport = f"Modbus bus {d.modbus.bus!r}"
            if gw is not None and d.modbus.bus not in buses:
                out.add("devices.yaml", locate(dt, loc), loc,
                        f"unknown Modbus bus {d.modbus.bus!r} (gateway.yaml modbus_buses)")
            key: tuple | None = ("modbus", d.modbus.bus, d.modbus.unit)
        elif d.serial is not None:
            loc = ("devices", i, "serial", "line")
            fmt = lines.get(d.serial.line, "")
            transport = f"serial line {d.serial.line!r} ({fmt})"
            if gw is not None and d.serial.line not in lines:
                out.add("devices.yaml", locate(dt, loc), loc,
                        f"unknown serial line {d.serial.line!r} (gateway.yaml serial_lines)")
            key = ("serial", d.serial.line, d.serial.address.upper(), d.serial.zone)
        elif d.dc09 is not None:
            # a panel's events are Contact ID events (ADM-CID, or SIA-DCS mapped to them)
            loc, fmt = ("devices", i, "dc09", "receiver"), "contact_id"
            transport = f"SIA DC-09 receiver {d.dc09.receiver!r}"
            accounts = receivers.get(d.dc09.receiver)
            if gw is not None and accounts is None:
                out.add("devices.yaml", locate(dt, loc), loc, f"unknown DC-09 receiver "
                        f"{d.dc09.receiver!r} (gateway.yaml dc09_receivers)")
            elif accounts is not None and d.dc09.account.upper() not in accounts:
                aloc = ("devices", i, "dc09", "account")
                out.add("devices.yaml", locate(dt, aloc), aloc, f"account {d.dc09.account!r} "
                        f"is not among the accounts of DC-09 receiver {d.dc09.receiver!r} "
                        f"(gateway.yaml dc09_receivers[].accounts)")
            key = ("dc09", d.dc09.receiver, d.dc09.account.upper(), d.dc09.zone)
        else:
            fmt, key = "json", None
            transport = "Zigbee2MQTT" if d.mqtt and d.mqtt.zigbee2mqtt else "MQTT"
        if key is not None:
            if key in taken:
                out.add("devices.yaml", locate(dt, loc), loc,
                        f"address already used by device {taken[key]!r}")
            taken[key] = d.id
        if not fmt:         # unknown line: reported above, its format is not known
            continue
        if fit_only is not None and d.id not in fit_only:
            continue        # unchanged device, unchanged profiles: it fitted (revalidate_devices)
        z2m = bool(d.mqtt and d.mqtt.zigbee2mqtt)
        fit = (d.type, d.profile, fmt, z2m)
        if fit in fitted:
            continue
        misfit = v.fit_profile(profiles, d.id, d.type, d.profile, fmt, transport=transport,
                               zigbee2mqtt=z2m)
        if misfit is None:
            fitted.add(fit)
        else:
            ploc = ("devices", i, "profile") if d.profile else ("devices", i, "type")
            out.add("devices.yaml", locate(dt, ploc), ploc, misfit)


def load_site(directory: str | Path, validators: Validators, *,
              fast: bool = True, cache: Path | None = None) -> SiteConfig:
    """Read, validate and cross-check a site directory; raise ConfigError with every issue.
    (Callers outside the tests of edge_config want ``gateway.site.load_site``.)

    ``fast`` (default): read the files with :mod:`edge_config.fast_yaml` first (plain trees,
    no lines); a site with any problem, or a file it cannot promise to read as ruamel does,
    is read again with ruamel, so that every problem carries its line. The result is the
    same either way but for ``trees``: plain data after the fast reading, ruamel's after the
    slow one (``locate`` finds no line in plain data: line 1).

    ``cache``: a JSON file (:class:`edge_config.fast_yaml.TreeCache`) of the trees read
    fast before; a file whose bytes did not change is taken from it (the gateway's start
    after a power cut), and it is written again when a file changed and the site is valid.
    The site is validated and cross-checked all the same."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError([f"{directory}: not a directory"])
    if fast:
        trees = TreeCache(cache) if cache is not None else None
        site = _load(directory, validators, fast=True, cache=trees)
        if site is not None:
            if trees is not None:
                trees.save()
            return site
    site = _load(directory, validators, fast=False)
    assert site is not None   # the slow reading raises or returns
    return site


def _load(directory: Path, validators: Validators, *, fast: bool,
          cache: TreeCache | None = None) -> SiteConfig | None:
    """One reading of the site (see :func:`load_site`); with ``fast``, None where the
    slow reading must decide."""
    out = _Collector(directory, validators)
    trees: dict[str, Any] = {}
    parsed: dict[str, Any] = {}
    for fname, model in FILES.items():
        path = directory / fname
        if not path.exists():
            if fname in REQUIRED:
                out.add(fname, 1, "(file)", "missing")
            tree = {}
        else:
            tree = _read_yaml(path, out, fast, cache)
            if tree is _SLOW or (fast and out.issues):
                return None
            if tree is None:
                continue
        trees[fname] = tree
        parsed[fname] = _validate(model or validators.rules_model, tree, fname, out, fast)
    _cross_check(parsed, trees, out)
    if out.issues:
        if fast:
            return None
        raise ConfigError(out.issues)
    held = {n: tree for n, tree in trees.items()
            if cache is not None and cache.holds_tree(n, tree)}
    return SiteConfig(directory, parsed["site.yaml"], parsed["devices.yaml"],
                      parsed["rules.yaml"], parsed["uplinks.yaml"], parsed["gateway.yaml"], trees,
                      held)


def read_trees(directory: str | Path, validators: Validators,
               cache: Path | None = None, save: bool = False) -> dict[str, Any] | None:
    """The trees of a site's files as plain data, as :func:`load_site` puts them in
    ``SiteConfig.trees`` (the fast reading, or ruamel's made plain): what an edit is checked
    against (:func:`revalidate_devices`' ``trees``) when the site was kept without them.
    ``cache``: as for :func:`load_site`; with ``save``, a file read fast is written to it
    (the next start and the next reading find it there). None when a file cannot be read;
    the caller checks that the files did not change since the site was loaded."""
    directory = Path(directory)
    out = _Collector(directory, validators)
    known = TreeCache(cache) if cache is not None else None
    trees: dict[str, Any] = {}
    for fname in FILES:
        path = directory / fname
        if not path.exists():
            if fname in REQUIRED:
                return None
            trees[fname] = {}
            continue
        tree = _read_yaml(path, out, True, known)
        if tree is _SLOW:
            tree = _read_yaml(path, out, False)
            tree = None if tree is None else _plain(tree)
        if tree is None or out.issues:
            return None
        trees[fname] = tree
    if save and known is not None:
        known.save()
    return trees


def revalidate_devices(site: SiteConfig, tree: Any, known: list[Any], validators: Validators,
                       *, changed: set[str], trees: dict[str, Any] | None = None,
                       quick: bool = True) -> SiteConfig:
    """``site`` with devices.yaml's content replaced by ``tree`` (a mapping like the file's,
    e.g. ``{"devices": [...]}``), every other file as ``site`` has it: the checks
    :func:`load_site` makes of the whole directory, for an edit of a few devices.

    ``known[i]`` is the already validated ``Device`` of entry ``i`` when that entry is
    unchanged from ``site`` (``None``: validate it); ``changed`` names the devices whose
    profile fit is checked again (the others fitted and neither they nor the profiles
    changed: the caller makes sure the profiles did not). Schema, references between
    entries and files, topics, addresses and the rules' references are checked over the
    whole site, as :func:`load_site` does. Raises ``ConfigError`` like it; the line of a
    problem is that of ``tree``'s nodes where they carry one (ruamel's), else 1.
    ``trees``: the other files' trees to check against (default ``site.trees``; plain
    dicts are read faster than ruamel's).

    ``quick`` (default): first the checks that involve the entries to validate (``known``
    None) and the ids that are gone, the rest of the site as it was (valid, as ``site``
    is); a site that passes them passes the whole check, so it is returned as the whole
    check would return it. Anything that does not pass, or that they do not cover (a device
    on a field bus), takes the whole check, so that its errors are the whole check's
    (tests/test_installer_scale.py compares both)."""
    fname = "devices.yaml"
    if not (site.trees if trees is None else trees):
        # without them the rules' references and call plans would go unchecked
        raise ValueError("revalidate_devices: the site's file trees are needed (read_trees)")
    if quick:
        quick_devices = _quick_devices(site, tree, known, validators, changed,
                                       site.trees if trees is None else trees)
        if quick_devices is not None:
            return SiteConfig(site.directory, site.site, quick_devices, site.rules,
                              site.uplinks, site.gateway,
                              {**(site.trees if trees is None else trees), fname: tree})
    out = _Collector(site.directory, validators)
    entries = tree.get("devices") if isinstance(tree, dict) else None
    plain = {str(k): _plain(v) for k, v in tree.items() if k != "devices"} if isinstance(
        tree, dict) else {}
    if isinstance(entries, list) and len(known) == len(entries):
        plain["devices"] = [k if k is not None else _plain(e) for k, e in zip(known, entries)]
    elif entries is not None:
        plain["devices"] = _plain(entries)
    devices: DevicesFile | None
    try:
        devices = DevicesFile.model_validate(plain)
    except ValidationError as exc:
        devices = None
        for err in exc.errors():
            loc = _tree_loc(tree, err["loc"])
            out.add(fname, locate(tree, loc), loc, err["msg"].removeprefix("Value error, "))
    parsed = {"site.yaml": site.site, "devices.yaml": devices, "rules.yaml": site.rules,
              "uplinks.yaml": site.uplinks, "gateway.yaml": site.gateway}
    trees = {**(site.trees if trees is None else trees), fname: tree}
    _cross_check(parsed, trees, out, fit_only=changed)
    if out.issues or devices is None:
        raise ConfigError(out.issues)
    return SiteConfig(site.directory, site.site, devices, site.rules, site.uplinks,
                      site.gateway, trees)


def _quick_devices(site: SiteConfig, tree: Any, known: list[Any], validators: Validators,
                   changed: set[str], trees: dict[str, Any]) -> DevicesFile | None:
    """The devices of :func:`revalidate_devices`'s site when its quick checks pass, else
    None. ``site`` passed every check, and only devices.yaml's entries changed, so what can
    fail is: a new entry's schema, its household and grid cell, an id or topic now taken
    twice, a rule naming a device that is gone, a new entry's profile fit (``changed``);
    an entry on a field bus (its bus and address) is left to the whole check."""
    if not isinstance(tree, dict) or list(tree) != ["devices"]:
        return None
    entries = tree["devices"]
    if not isinstance(entries, list) or len(entries) != len(known):
        return None
    devices = list(known)
    fresh: list[Device] = []
    for i in [i for i, k in enumerate(known) if k is None]:
        try:
            d = Device.model_validate(_plain(entries[i]))
        except ValidationError:
            return None
        if d.mqtt is None:
            return None
        devices[i] = d
        fresh.append(d)
    homes, cells = set(site._households), set(site._grid_cells)   # noqa: SLF001
    for d in fresh:
        if (d.household is not None and d.household not in homes
                or d.grid_cell is not None and d.grid_cell not in cells):
            return None
    ids = {d.id for d in devices}
    topics = [d.topic for d in devices if d.mqtt is not None]
    if len(ids) != len(devices) or len(set(topics)) != len(topics):
        return None
    if site.rules is not None and "rules.yaml" in trees and any(
            True for _ in validators.rule_references(site.rules, ids, homes, cells)):
        return None
    try:
        profiles = validators.load_profiles(site.directory / "profiles")
    except ValueError:
        return None
    for d in [d for d in devices if d.id in changed]:
        if d.mqtt is None or validators.fit_profile(
                profiles, d.id, d.type, d.profile, "json",
                transport="Zigbee2MQTT" if d.mqtt.zigbee2mqtt else "MQTT",
                zigbee2mqtt=bool(d.mqtt.zigbee2mqtt)) is not None:
            return None
    return DevicesFile.model_construct(devices=devices)
