"""The running gateway: wires config, store, rule engine, intake, uplinks and API together.

``Gateway(config_dir, data_dir).run()`` runs until cancelled; every long-lived loop is a
named task in one TaskGroup, so a crash of one stops the service (systemd restarts it)
instead of leaving a half-working gateway.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import uvicorn

from drivers.field import FieldDrivers, plan_field
from drivers.mqtt import AlarmSession, DeviceBinding, MqttIntake, is_alarm_device
from drivers.profiles import (Profile, ProfileMisfit, fit_profile, with_help_actions,
                              with_sos_actions, with_visit_cards)
from edge_config.loader import SiteConfig
from gateway import ConfigError, GatewayError
from gateway.alarms import AlarmBook, Change
from gateway.api import ApiContext, Broadcaster, change_events, create_app
from gateway.auth import Auth
from gateway.case_feedback import CaseFeedback, CaseStatusPoller
from gateway.change_bus import ChangeBus, SiteBus, SiteChange, Subscriber
from gateway.device_modes import ModeKeeper, effective_mode, modes_json
from gateway.forwarder import CaseForwarder
from gateway.health import DecodeFaults, HealthBook
from gateway.heap import settle
from drivers.profiles import with_care_actions
from gateway.household_care import CareDesk, apply_care
from rules.inactivity import watch_warnings
from gateway.help_requests import HelpDesk
from gateway.visits import VisitCards
from gateway.installer import SiteEditor, files_state, lean_site
from gateway.linkage_wiring import build_linkage, mqtt_command_bindings
from gateway.kernel.component import Component
from gateway.metrics import Metrics, watch_stalls
from gateway.model import Reading, utc
from gateway.pipeline import Pipeline, decode_snapshot
from gateway.sdnotify import notify_task
from gateway.site import load_site, profiles_of
from gateway.store import Store, lock_data_dir
from gateway.uplinks_wiring import Uplinks, build_uplinks
from rules.engine import Engine
from rules.site import DeviceInfo

__all__ = ["Gateway", "Overrides", "QuietServer", "build_engine", "read_secret", "serve_uvicorn"]

log = logging.getLogger(__name__)

#: the alarm session's split across restarts (drivers/mqtt_split.py), in the data directory
ALARM_SPLIT_FILE = "mqtt-alarm-split.json"

#: the data directory's cache of the parsed site files (``edge_config.fast_yaml.TreeCache``)
SITE_CACHE = "site-cache.json"


@dataclass(frozen=True)
class Overrides:
    """Run-time settings that are not part of the site's files (set by CLI/demo/tests)."""

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    case_system_url: str | None = None
    callback_url: str | None = None
    tick_s: float = 1.0


def read_secret(ref, config_dir: Path, where: str = "case_system") -> str:
    """Resolve a SecretRef (env var or file); raise ConfigError naming what is missing."""
    if ref.secret_env:
        value = os.environ.get(ref.secret_env)
        if not value:
            raise ConfigError([f"uplinks.yaml: {where}.secret_env: environment variable "
                               f"{ref.secret_env} is not set"])
        return value
    path = Path(ref.secret_file)
    if not path.is_absolute():
        path = config_dir / path
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([f"uplinks.yaml: {where}.secret_file: cannot read {path}: "
                           f"{exc.strerror}"]) from exc


def build_engine(site: SiteConfig):
    """The rule engine for a site (rules.Engine with the site's devices and households)."""
    from rules.engine import Engine
    from rules.site import HouseholdInfo, SiteIndex

    devices = {d.id: device_info(site, d) for d in site.devices.devices}
    households = {h.id: HouseholdInfo(h.id, h.grid_cell, h.lives_alone, address=h.address)
                  for h in site.site.households}
    cells = {c.code: c.name for c in site.site.grid_cells}
    engine = Engine(site.rules, SiteIndex(devices, households, site.site.site.timezone, cells))
    apply_modes(engine, site)
    return engine


def device_info(site: SiteConfig, d) -> DeviceInfo:
    """What the rule engine knows of a device of ``site``: its place (a grid cell of its own,
    else its household's), type and name."""
    return DeviceInfo(d.id, d.type, d.household,
                      d.grid_cell or (site.household(d.household).grid_cell
                                      if d.household else None), d.name)


def adopt_store(engine, book: AlarmBook) -> None:
    """The store is the one source of truth for alarm and fault bookkeeping: the engine's
    (restored from a snapshot up to 30 s old, or new) is made from it."""
    state = book.engine_state(engine.fired_keys())
    engine.adopt_store(state.journal, state.stored, state.version, state.open_faults,
                       state.ended)
    apply_care(engine, book.store)     # care states: the store's too (gateway.household_care)
    if state.stored:
        log.info("rule engine: %d open alarms taken from the store", len(state.stored))


def apply_modes(engine, site: SiteConfig) -> None:
    """Device modes (normal/test/maintenance) from the config win over a restored snapshot;
    a mode whose ``mode_until`` has passed is normal (gateway.device_modes)."""
    from gateway.device_modes import effective_mode

    now = utc()
    for d in site.devices.devices:
        engine.set_device_mode(d.id, effective_mode(d, now))


def health_rows(site: SiteConfig, only: set[str] | None = None
                ) -> list[tuple[str, str, str | None, str | None]]:
    """Device health's rows (of the devices ``only``, when given)."""
    return [(d.id, d.type, d.household,
             d.grid_cell or (site.household(d.household).grid_cell if d.household else None))
            for d in site.devices.devices if only is None or d.id in only]


def bindings_for(site: SiteConfig, only: set[str] | None = None) -> dict[str, DeviceBinding]:
    """The MQTT intake's topic -> device table; ``ConfigError`` naming the device when a
    profile does not fit (the same rule as ``gateway config validate``: ``fit_profile``).
    ``only``: the bindings of these devices (an edit of a few: the others are unchanged)."""
    profiles = profiles_of(site.directory / "profiles")
    devices = (list(site.devices.devices) if only is None
               else [d for d in site.devices.devices if d.id in only])
    if only is None or any(d.mqtt is None for d in devices):
        plan_field(site, profiles)   # Modbus/serial devices: profiles and buses exist
    out: dict[str, DeviceBinding] = {}
    problems: list[str] = []
    #: (type, profile, Zigbee2MQTT) -> (profile, alarm device) of the devices with no keys
    #: or cards of their own: they share it (made once, not 57,000 times at a large start)
    shared: dict[tuple[str, str | None, bool], tuple[Profile, bool]] = {}
    for d in devices:
        if d.mqtt is None:
            continue
        grid = d.grid_cell or (site.household(d.household).grid_cell if d.household else None)
        own = bool(d.sos_actions or d.care_actions or d.help_actions or d.visit_cards)
        key = (d.type, d.profile, bool(d.mqtt.zigbee2mqtt))
        hit = None if own else shared.get(key)
        if hit is not None:
            out[d.topic] = DeviceBinding(d.id, d.type, d.household, grid, hit[0], alarm=hit[1])
            continue
        try:   # Zigbee2MQTT devices without a profile: zigbee2mqtt-<type> (its keys)
            profile = fit_profile(profiles, d.id, d.type, d.profile, "json",
                                  transport="Zigbee2MQTT" if d.mqtt.zigbee2mqtt else "MQTT",
                                  zigbee2mqtt=bool(d.mqtt.zigbee2mqtt))
        except ProfileMisfit as exc:
            problems.append(f"devices.yaml: devices.{d.id}.profile: {exc}")
            continue
        assert isinstance(profile, Profile)
        try:   # which actions of this button mean SOS (devices.yaml sos_actions)
            profile = with_sos_actions(profile, d.sos_actions)
        except ProfileMisfit as exc:
            problems.append(f"devices.yaml: devices.{d.id}.sos_actions: {exc}")
            continue
        try:   # which actions set a household care state (devices.yaml care_actions)
            profile = with_care_actions(profile, d.care_actions)
        except ProfileMisfit as exc:
            problems.append(f"devices.yaml: devices.{d.id}.care_actions: {exc}")
            continue
        try:   # which actions are help keys (devices.yaml help_actions): button readings
            profile = with_help_actions(profile, d.help_actions)
        except ProfileMisfit as exc:
            problems.append(f"devices.yaml: devices.{d.id}.help_actions: {exc}")
            continue
        profile = with_visit_cards(profile, d.visit_cards)   # a door reader's visit cards
        alarm = is_alarm_device(profile)
        if not own:
            shared[key] = (profile, alarm)
        out[d.topic] = DeviceBinding(d.id, d.type, d.household, grid, profile, alarm=alarm)
    if problems:
        raise ConfigError(problems)
    return out


def with_card_reads(on_reading: Callable[[Reading], None],
                    cards: VisitCards) -> Callable[[Reading], None]:
    """The pipeline's reading hook, plus visit cards read at a door to the visits. (Help key
    presses are no hook's: the help desk is the pipeline's durable writer.)"""

    def both(reading: Reading) -> None:
        on_reading(reading)
        cards.offer(reading)
    return both


def engine_follow_up(book: AlarmBook, pipeline: Pipeline) -> Subscriber:
    """The change bus's subscriber that tells the rule engine (the pipeline's current one)
    what people and the case system did: an acknowledgement, a resolution, a case taken."""

    def follow_up(changes: Sequence[Change]) -> None:
        for ch in changes:
            if ch.action in ("acknowledged", "resolved"):
                # unless the store has opened a new alarm with this key since (a trigger
                # the engine took for an update: the pipeline restarts its bookkeeping)
                key = book.get(ch.alarm_id)["key"]
                current = book.open_id(key)
                if ch.action == "acknowledged" and current == ch.alarm_id:
                    pipeline.engine.acknowledged(key, utc())
                elif ch.action == "resolved" and current is None:
                    pipeline.engine.resolved(key, utc())
            elif ch.action in ("case", "case_status"):
                row = book.get(ch.alarm_id)   # the case taken: escalation stops
                if (row["state"] == "raised" and book.escalation_stopped(row["case_status"])
                        and book.open_id(row["key"]) == ch.alarm_id):
                    pipeline.engine.acknowledged(row["key"], utc())

    return follow_up


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the gateway owns SIGINT/SIGTERM."""

    def capture_signals(self):  # type: ignore[override]
        import contextlib

        return contextlib.nullcontext()


@dataclass
class CaseSystem:
    """The grid case system's three parts (uplinks.yaml ``case_system``)."""

    forwarder: CaseForwarder
    callback: Callable        # async (method, target, headers, body) -> dict, for the API
    poller: CaseStatusPoller


class Health:
    """``/healthz`` and ``/readyz``: each component's state, read when asked."""

    def __init__(self, *, store: Store, pipeline: Pipeline, tick_s: float, intake: MqttIntake,
                 field: FieldDrivers, case: CaseSystem | None, uplinks: Uplinks,
                 linkage: Callable[[], dict] | None = None) -> None:
        self.store, self.pipeline, self.tick_s = store, pipeline, tick_s
        self.intake, self.field, self.case, self.uplinks = intake, field, case, uplinks
        self.linkage = linkage
        self._t0 = time.monotonic()

    def rules_ready(self) -> bool:
        tick_age = time.monotonic() - (self.pipeline.last_tick or self._t0)
        return tick_age < 10 * self.tick_s + 5

    def __call__(self) -> dict:
        forwarder = self.case.forwarder if self.case else None
        ready = self.rules_ready()
        return {
            "mqtt": {"state": self.intake.state, "ready": self.intake.state == "online",
                     **({"alarm_session": split} if (split := self.intake.split_state())
                        else {})},
            **{key: {"state": state} for key, state in self.field.states().items()},
            "rules": {"state": "ok" if ready else "stalled", "ready": ready},
            "case_system": {"state": forwarder.state if forwarder else "not configured",
                            "pending": forwarder.pending_count() if forwarder else 0},
            **({"case_status_poll": {"state": self.case.poller.state}} if self.case else {}),
            **({"linkage": self.linkage()} if self.linkage else {}),   # commands to devices
            **self.uplinks.health(forwarder),       # "store", "outbox", the optional uplinks
        }


class Gateway:
    """The running gateway. ``run()`` builds each component (``_build_*``), wires them with
    two buses and runs them in one TaskGroup:

    - the change bus (:class:`ChangeBus`): alarm changes, from the alarm book, the case
      forwarder and the case feedback, to the rule engine, the live stream and the uplinks;
    - the site bus (:class:`SiteBus`): an edited site (installer pages), to the alarm book,
      the rule engine, the intake, the field buses, device health and the API.
    """

    def __init__(self, config_dir: str | Path, data_dir: str | Path,
                 overrides: Overrides | None = None):
        self.config_dir = Path(config_dir)
        self.data_dir = Path(data_dir)
        self.o = overrides or Overrides()
        # the parsed site files, cached by their bytes: a start after a power cut reads an
        # unchanged site of 10,000 households as JSON, not YAML (docs/benchmarks.md, ready)
        #: the state of the site's files before they are read (a change meanwhile ends the
        #: installer's fast path), and the site without the files' trees: only the
        #: installer's editor wants them, and reads them again at its first edit
        self._site_keys = files_state(self.config_dir)
        self.site = lean_site(load_site(self.config_dir, cache=self.data_dir / SITE_CACHE))
        self.metrics = Metrics()
        self.started = asyncio.Event()
        #: the care desk once built: the case system's care reports are told to its engine
        self.care: CareDesk | None = None

    async def run(self) -> None:
        site = self.site
        lock = lock_data_dir(self.data_dir)
        if lock is None:
            raise GatewayError(f"{self.data_dir}: another gateway (or a restore) is using this "
                               f"data directory")
        store = Store(self.data_dir / "gateway.db")
        store.open()
        try:
            await self._run(site, store)
        finally:
            store.close()
            lock.close()

    async def _run(self, site: SiteConfig, store: Store) -> None:
        auth = Auth(store, setup_token_file=self.data_dir / "first-admin-setup-token")
        announce_setup_token(auth, self.data_dir, self.o)
        changes, sites = ChangeBus(), SiteBus(site, check=check_site)
        broadcaster = Broadcaster()
        book = self._build_book(site, store, changes)
        engine = self._build_engine(site, store, book)
        health_book = HealthBook(health_rows(site))
        decode_faults = DecodeFaults(health_book, self.metrics, store)
        decode_faults.load()
        uplinks = build_uplinks(site, store, self.metrics, self.data_dir,
                                lambda ref, where: read_secret(ref, self.config_dir, where),
                                health_book, self.o.api_host, self.o.api_port)
        case = self._build_case_system(site, store, changes.publish)
        cards = VisitCards(store, lambda: self.site)
        desk = HelpDesk(store, lambda: self.site, callback_url=book.callback_url,
                        metrics=self.metrics,     # service cases go by the case outbox
                        wake=case.forwarder.wake if case is not None else (lambda: None))
        care = self.care = CareDesk(store, lambda: self.site, lambda: pipeline.engine)
        # a help or care key press: acked once its request / state is saved
        pipeline = Pipeline(store, engine, book, self.metrics, tick_s=self.o.tick_s,
                            on_reading=with_card_reads(uplinks.on_reading(health_book.seen),
                                                       cards),
                            writers=(desk, care))
        intake = self._build_intake(site, pipeline, health_book, decode_faults,
                                    urgent=case.forwarder.urgent if case is not None else None)
        # commands to devices (gateway/linkage.py): their outcome is the devices' own state
        linkage, commands_out = build_linkage(
            site, lambda: self.site, store, self.metrics, intake.bindings, changes.publish,
            case_note=book.case_note,       # each command's outcome, a note on the case
            mqtt_host=self.o.mqtt_host or site.gateway.mqtt.host,
            mqtt_port=self.o.mqtt_port or site.gateway.mqtt.port)
        pipeline.on_reading = linkage.hooked(pipeline.on_reading)
        field = FieldDrivers(plan_field(site, profiles_of(site.directory / "profiles")),
                             pipeline, self.metrics, on_error=health_book.error,
                             on_unknown=health_book.saw_unknown, decode_watch=decode_faults)
        # Modbus and CJ/T 188 commands: the field drivers route each to the bus or line
        # running its device at that moment (drivers/field.py)
        linkage.registry.add(field)
        health = Health(store=store, pipeline=pipeline, tick_s=self.o.tick_s, intake=intake,
                        field=field, case=case, uplinks=uplinks,
                        linkage=lambda: linkage.health(commands_out.state))

        # who hears of alarm changes, in this order (gateway/change_bus.py)
        changes.subscribe(engine_follow_up(book, pipeline))
        changes.subscribe(lambda chs: change_events(book, broadcaster, chs))
        changes.subscribe(linkage.on_changes)       # a raised alarm's planned commands
        if case is not None:
            changes.subscribe(waking_forwarder(case.forwarder))
        for waker in uplinks.wakers:
            changes.subscribe(waking(waker))

        ctx = ApiContext(book=book, auth=auth, metrics=self.metrics, broadcaster=broadcaster,
                         health=health, site=site, case_callback=case.callback if case else None,
                         devices=health_book, reload=sites.publish,
                         editor=SiteEditor(self.config_dir, check=bindings_for,
                                           cache=self.data_dir / SITE_CACHE),
                         extra={"help": desk, "linkage": linkage})
        ctx.extra["care"] = self.care
        # the installer's fast path (gateway.installer): made at the first edit, let go
        # after ten quiet minutes
        ctx.editor.defer(site, self._site_keys)
        # who hears of an edited site, in this order (the state swapped on the loop); with
        # a change (an edit of a few devices), each applies only that (apply_* below)
        sites.subscribe(lambda new: setattr(book, "site", new))
        sites.subscribe(lambda new, ch: apply_engine(pipeline, new, ch), change=True)
        sites.subscribe(lambda new, ch: apply_intake(intake, new, ch), change=True)
        sites.subscribe(lambda new: commands_out.rebind(mqtt_command_bindings(intake.bindings)))
        sites.subscribe(lambda new, ch: apply_field(field, new, ch), change=True)
        sites.subscribe(lambda new, ch: apply_health(health_book, new, ch), change=True)
        sites.subscribe(lambda new, ch: decode_faults.rebind(
            None if ch is None else ch.touched | set(ch.removed)), change=True)
        sites.subscribe(lambda new: setattr(ctx, "site", new))
        sites.subscribe(lambda new: setattr(self, "site", new))
        sites.subscribe(lambda new: broadcaster.publish({"type": "modes", **modes_json(new)}))
        sites.subscribe(lambda new, ch: _settle_after_reload(new) if ch is None else None,
                        change=True)

        # test/maintenance modes end on their own, audited as "system"
        modes = ModeKeeper(ctx.editor, lambda: sites.current,
                           lambda device, mode: pipeline.engine.set_device_mode(device, mode),
                           sites.publish, store.audit)
        server = QuietServer(uvicorn.Config(create_app(ctx), host=self.o.api_host,
                                            port=self.o.api_port, log_level="warning",
                                            lifespan="off", access_log=False))
        components: list[tuple[str, Component]] = [
            ("mqtt-intake", intake), ("field-buses", field), ("mqtt-commands", commands_out)]
        if case is not None:
            components += [("case-forwarder", case.forwarder),
                           ("case-status-poll", case.poller)]
        try:
            # no full collection: after gateway run's pause little is garbage (gateway.kernel.heap)
            settled = settle(collect=False, count=False)
            log.info("start-up heap settled: long-lived objects frozen in %.0f ms",
                     settled["ms"])
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pipeline.run(), name="pipeline")
                for name, component in components:
                    tg.create_task(component.run(), name=name)
                for name, run in uplinks.tasks:
                    tg.create_task(run(), name=name)
                tg.create_task(serve_uvicorn(server), name="api")
                tg.create_task(self._announce(server), name="announce")
                tg.create_task(_every(5.0, health_book.tick), name="device-health")
                tg.create_task(_every(60.0, ctx.editor.release), name="installer-release")
                tg.create_task(modes.run(), name="device-modes")
                tg.create_task(linkage.run(), name="linkage")
                tg.create_task(cards.run(), name="visit-cards")
                tg.create_task(notify_task(self.started, health.rules_ready), name="sd-notify")
                tg.create_task(watch_stalls(self.metrics), name="stall-watch")
        finally:
            await pipeline.save_snapshot()

    # -- a builder per component ---------------------------------------------------------
    def _build_book(self, site: SiteConfig, store: Store, changes: ChangeBus) -> AlarmBook:
        """The alarm book (the store's alarms), publishing its changes on ``changes``."""
        uplink = site.uplinks.case_system
        callback_url = self.o.callback_url or (uplink.callback_url if uplink else None)
        return AlarmBook(store, site, on_change=changes.publish, callback_url=callback_url,
                         metrics=self.metrics)

    def _build_engine(self, site: SiteConfig, store: Store, book: AlarmBook) -> Engine:
        """The rule engine: the last snapshot's state (up to 30 s old), then the store's
        alarm and fault bookkeeping, which wins (``adopt_store``)."""
        engine = build_engine(site)
        for warning in watch_warnings(engine):     # dead sensors could read as inactivity
            log.warning("rules.yaml: %s", warning)
        snap = store.get_meta("rules_snapshot")
        if snap:
            engine.load_snapshot(decode_snapshot(snap))
            apply_modes(engine, site)
            log.info("rule engine state restored from snapshot")
        adopt_store(engine, book)
        return engine

    def _build_intake(self, site: SiteConfig, pipeline: Pipeline, health_book: HealthBook,
                      decode_faults: DecodeFaults | None = None,
                      urgent: Callable[[], bool] | None = None) -> MqttIntake:
        """The MQTT intake of the site's devices (broker address overridable for tests),
        with the alarm devices' own session unless gateway.yaml turns it off. Its main
        session holds back telemetry while an alarm is committed and applied, and while
        ``urgent`` (a new alarm's case request on its way: ``CaseForwarder.urgent``)."""
        mq = site.gateway.mqtt
        password = os.environ.get(mq.password_env) if mq.password_env else None
        client_id = mq.client_id or f"gateway-{site.site.site.id}"
        alarm = AlarmSession(f"{client_id}-alarm", self.data_dir / ALARM_SPLIT_FILE,
                             delay_s=mq.alarm_fence_delay_s) if mq.alarm_session else None
        return MqttIntake(
            host=self.o.mqtt_host or mq.host, port=self.o.mqtt_port or mq.port,
            client_id=client_id, sink=pipeline,
            bindings=bindings_for(site), metrics=self.metrics, username=mq.username,
            password=password, keepalive=mq.keepalive_s, max_payload_bytes=mq.max_payload_bytes,
            on_error=health_book.error, decode_watch=decode_faults,
            on_unknown=lambda topic, payload: health_book.saw_unknown(
                topic, "zigbee2mqtt" if topic.startswith("zigbee2mqtt/") else "mqtt",
                payload.decode("utf-8", "replace")),
            alarm_session=alarm, alarm_first=_either(pipeline.alarm_work, urgent),
            commit_delay_s=_test_commit_delay(), test_decode_fault=_test_decode_fault())

    def _build_case_system(self, site: SiteConfig, store: Store,
                           on_change: Callable[[list[Change]], None]) -> CaseSystem | None:
        """The grid case system of uplinks.yaml, or None (with a warning) when none is
        configured."""
        uplink = site.uplinks.case_system
        if uplink is None:
            log.warning("no case system configured (uplinks.yaml): alarms stay on this gateway")
            return None
        from gateway.uplink.case_system import CaseSystemClient

        secret = read_secret(uplink, self.config_dir)

        def client() -> CaseSystemClient:
            return CaseSystemClient(self.o.case_system_url or uplink.url, uplink.key_id, secret,
                                    timeout=uplink.timeout_s, ca_bundle=uplink.ca_file)

        return CaseSystem(
            forwarder=CaseForwarder(store, client(), self.metrics, on_change=on_change,
                                    window=uplink.window),
            callback=CaseFeedback(store, uplink.key_id, secret, on_change,
                                  on_closed=uplink.on_case_closed,
                                  on_care=self._care_reported).handle,
            poller=CaseStatusPoller(store, client(), self.metrics, on_change,
                                    interval_s=uplink.poll_s, on_closed=uplink.on_case_closed,
                                    on_care=self._care_reported))

    def _care_reported(self, household_id: str, row: dict | None) -> None:
        """A care state the case system reported, committed: the rule engine follows."""
        if self.care is not None:
            self.care.told(household_id, row)

    async def _announce(self, server: uvicorn.Server) -> None:
        async with asyncio.timeout(60):
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
                await asyncio.sleep(0.05)
        log.info("gateway %s serving on http://%s:%d", self.site.site.site.id,
                 self.o.api_host, self.o.api_port)
        self.started.set()


def check_site(site: SiteConfig, change: SiteChange | None = None) -> None:
    """What an edited site must pass before any part of the service takes it (the site bus's
    check): topics and profiles (``bindings_for``, which plans the field buses too) and the
    rule engine it makes. A site that fails changes nothing. With a ``change``, the changed
    devices' bindings (the rest is as it was; the rule engine's site is checked by the
    loader: households exist, ids unique)."""
    if change is not None:
        bindings_for(site, only=change.touched)
        return
    bindings_for(site)
    build_engine(site)


def apply_engine(pipeline: Pipeline, site: SiteConfig, change: SiteChange | None) -> None:
    """The rule engine takes an edited site. With a change (devices.yaml's devices only: the
    rules, households and grid cells are the base's), the running engine takes the devices
    added, removed or changed (``Engine.update_devices``: their place, type and name, the
    per-device state of its rules) and the changed devices' modes, keeping all its state;
    a site taken whole gets a new engine (:func:`swap_engine`)."""
    if change is None:
        swap_engine(pipeline, site)
        return
    engine = pipeline.engine
    known = engine.site.devices
    ids = change.touched          # (a set made at each call)
    touched = [d for d in site.devices.devices if d.id in ids]
    infos = {d.id: device_info(site, d) for d in touched}
    changed = [i for i, info in infos.items() if known.get(i) != info]
    gone = [i for i in change.removed if i in known]
    if changed or gone:
        devices = dict(known)
        for i in gone:
            del devices[i]
        devices.update((i, infos[i]) for i in changed)
        if list(devices) != [d.id for d in site.devices.devices]:    # in the file's order
            devices = {d.id: infos.get(d.id) or known[d.id] for d in site.devices.devices}
        engine.update_devices(replace(engine.site, devices=devices), changed)
    now = utc()
    for d in touched:
        engine.set_device_mode(d.id, effective_mode(d, now))


def apply_intake(intake: MqttIntake, site: SiteConfig, change: SiteChange | None) -> None:
    """The MQTT intake's bindings: of the changed devices only, with a change."""
    if change is None:
        intake.rebind(bindings_for(site))
        return
    gone = change.touched | set(change.removed)
    bindings = {t: b for t, b in intake.bindings.items() if b.device_id not in gone}
    bindings.update(bindings_for(site, only=change.touched))
    intake.rebind(bindings)


def apply_field(field: FieldDrivers, site: SiteConfig, change: SiteChange | None) -> None:
    """The field buses: planned again when a changed device is (or was) on one."""
    if change is not None:
        gone = change.touched | set(change.removed)
        devices = [d for s in (change.base, site) for d in s.devices.devices if d.id in gone]
        if all(d.mqtt is not None for d in devices):
            return
    field.rebind(plan_field(site, profiles_of(site.directory / "profiles")))


def apply_health(health_book: HealthBook, site: SiteConfig,
                 change: SiteChange | None) -> None:
    """Device health's rows: the changed devices' only, with a change."""
    if change is None:
        health_book.rebind(health_rows(site))
    else:
        health_book.update(health_rows(site, only=change.touched), removed=change.removed)


def waking(wake: Callable[[], None]) -> Subscriber:
    """A change-bus subscriber that wakes a sender (an uplink)."""
    return lambda changes: wake()


def waking_forwarder(forwarder: CaseForwarder) -> Subscriber:
    """A change-bus subscriber that wakes the case forwarder, urgently for a new alarm."""
    return lambda changes: forwarder.wake(any(c.action == "raised" for c in changes))


def _either(first: Callable[[], bool], second: Callable[[], bool] | None
            ) -> Callable[[], bool]:
    if second is None:
        return first

    def either() -> bool:
        return first() or second()
    return either


def swap_engine(pipeline: Pipeline, site: SiteConfig) -> None:
    """A new rule engine for an edited site, its state carried over by snapshot."""
    engine = build_engine(site)
    engine.load_snapshot(pipeline.engine.snapshot())
    apply_modes(engine, site)
    pipeline.engine = engine


def _settle_after_reload(site: SiteConfig) -> None:
    settled = settle()     # frees the replaced engine; freezes the new one
    log.info("site configuration reloaded: %d devices (heap settled: %d objects, %.0f ms)",
             len(site.devices.devices), settled["frozen"], settled["ms"])


def announce_setup_token(auth: Auth, data_dir: Path, o: Overrides) -> None:
    """First start without an admin: make a one-time setup token (only its hash is stored).

    On an interactive terminal it is shown there. Otherwise (systemd, containers) it goes to a
    file readable only by the service user, and only the file's path is logged, so the token
    never lands in the journal.
    """
    token = auth.issue_setup_token()
    if not token:
        return
    where = f"http://{o.api_host}:{o.api_port}/"
    if sys.stderr.isatty():
        print(f"\nFirst start: no admin exists. Create one at {where} with setup token: {token}\n"
              f"  (or: gateway user add --role admin --data {data_dir})\n",
              file=sys.stderr, flush=True)
        return
    path = data_dir / "first-admin-setup-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.warning("First start: no admin exists. Create one at %s with the one-time setup token "
                "in %s (readable by the service user only), or: gateway user add --role admin "
                "--data %s", where, path, data_dir)


def _test_commit_delay() -> float:
    """GATEWAY_TEST_COMMIT_DELAY_S: fault injection for the redelivery test (off unless set)."""
    raw = os.environ.get("GATEWAY_TEST_COMMIT_DELAY_S")
    if not raw:
        return 0.0
    delay = float(raw)
    log.warning("TEST FAULT INJECTION: GATEWAY_TEST_COMMIT_DELAY_S=%s delays every alarm-class "
                "message by %.1f s before it is committed. Never set this in production.",
                raw, delay)
    return delay


def _test_decode_fault() -> bytes:
    """GATEWAY_TEST_DECODE_FAULT: fault injection for the decode-fault test (off unless set).
    An MQTT payload of a bound device containing these bytes makes its decoding raise."""
    raw = os.environ.get("GATEWAY_TEST_DECODE_FAULT")
    if not raw:
        return b""
    log.warning("TEST FAULT INJECTION: GATEWAY_TEST_DECODE_FAULT=%r makes decoding raise for "
                "every MQTT payload containing it. Never set this in production.", raw)
    return raw.encode()


async def _every(seconds: float, fn) -> None:
    while True:
        await asyncio.sleep(seconds)
        out = fn()
        if inspect.isawaitable(out):
            await out


async def _serve_or_raise(server: uvicorn.Server) -> None:
    # uvicorn answers a port it cannot bind with sys.exit(); as SystemExit that would skip
    # every finally block of the tasks around it (the demo's broker would be left running).
    try:
        await server.serve()
    except SystemExit as exc:
        raise GatewayError(f"cannot serve on {server.config.host}:{server.config.port} "
                           f"(in use?)") from exc


async def serve_uvicorn(server: uvicorn.Server) -> None:
    """Serve until cancelled; then let uvicorn shut down gracefully (lifespan, sockets)."""
    task = asyncio.create_task(_serve_or_raise(server), name="uvicorn")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await task
        except TimeoutError:
            task.cancel()
        raise
