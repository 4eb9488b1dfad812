"""HTTP API and the duty console (FastAPI).

Every ``/api`` endpoint needs a principal (session cookie + CSRF header for changes, or a
Bearer token) holding the endpoint's permission (``gateway.auth.PERMISSIONS``). The live
stream ``/api/stream`` is Server-Sent Events: one ``alarm`` event per alarm change.
"""


import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from gateway import __version__
from gateway.alarms import CASE_REASONS, RESOLVE_REASONS, AlarmBook, AlarmNotFound, AlarmStateError, Change
from gateway.auth import PERMISSIONS, Auth, AuthError, Principal
from gateway.metrics import Metrics

__all__ = ["ApiContext", "Broadcaster", "create_app", "grid_json", "household_json"]

log = logging.getLogger(__name__)
COOKIE = "gw_session"
AlarmId = Annotated[int, Path(ge=1, le=2**63 - 1, description="alarm id")]


class Broadcaster:
    """Fan-out of alarm changes to live subscribers; a slow subscriber is dropped, not waited on."""

    def __init__(self, max_queue: int = 1000):
        self.max_queue = max_queue
        self._subs: set[asyncio.Queue] = set()

    def publish(self, event: dict) -> None:
        for q in list(self._subs):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self._subs.discard(q)
                _close(q)  # the client reconnects and refetches the board

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(self.max_queue + 1)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subs.discard(q)

    def __len__(self) -> int:
        return len(self._subs)


def _close(q: asyncio.Queue) -> None:
    while not q.empty():
        q.get_nowait()
    q.put_nowait(None)


@dataclass
class ApiContext:
    """What the API needs from the running gateway."""

    book: AlarmBook
    auth: Auth
    metrics: Metrics
    broadcaster: Broadcaster
    health: Any                      # callable -> dict of component states
    site: Any                        # edge_config.loader.SiteConfig
    case_callback: Any = None        # async callable(method, target, headers, body) -> dict
    devices: Any = None              # gateway.health.HealthBook
    reload: Any = None               # callable(SiteConfig): apply an edited site, no restart
    editor: Any = None               # gateway.installer.SiteEditor
    secure_cookies: bool = False
    extra: dict = field(default_factory=dict)


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class SetupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    setup_token: str = Field(min_length=8, max_length=128)
    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{2,32}$")
    password: str = Field(min_length=10, max_length=256)


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=1000)


def _reason_required(schema: dict) -> None:
    # ``reason`` has no default: required in the schema, a clear error when missing
    schema["properties"]["reason"].pop("default", None)
    schema["required"] = ["reason", *schema.get("required", [])]


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_reason_required)
    reason: Literal[tuple(RESOLVE_REASONS)] = Field(  # type: ignore[valid-type]
        default=None, validate_default=True,
        description="why the alarm is resolved; staff choose it, there is no default")
    note: str = Field(default="", max_length=1000)

    @field_validator("reason", mode="before")
    @classmethod
    def _reason_given(cls, value: Any) -> Any:
        if value is None or value == "":
            raise PydanticCustomError(
                "reason_required", "a reason is required to resolve an alarm (there is no "
                "default): one of {choices}", {"choices": ", ".join(RESOLVE_REASONS)})
        return value


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _mask_phone(p: str) -> str:
    digits = p.replace(" ", "")
    return digits[:3] + "****" + digits[-4:] if len(digits) >= 8 else "****"


def household_json(hh, p: Principal) -> dict | None:
    """A household card; contacts masked for roles without ``contacts.read``."""
    if hh is None:
        return None
    full = p.can("contacts.read")
    return {"id": hh.id, "address": hh.address, "building": hh.building,
            "grid_cell": hh.grid_cell, "lives_alone": hh.lives_alone,
            "contacts": [{"name": c.name if full else c.name[:1] + "*", "relation": c.relation,
                          "phone": c.phone if full else _mask_phone(c.phone)}
                         for c in hh.contacts]}


def grid_json(cell) -> dict | None:
    return None if cell is None else {"code": cell.code, "name": cell.name,
                                      "grid_member": cell.grid_member}


def _register_gauges(ctx: ApiContext) -> None:
    """Driver and device health as Prometheus gauges (computed on scrape)."""
    for state in ("online", "offline", "degraded", "unknown"):
        ctx.metrics.gauge(f"gateway_devices_{state}",
                          lambda s=state: (ctx.devices.summary().get(s, 0) if ctx.devices else 0),
                          f"configured devices whose health is {state}")
    for comp in ("mqtt", "store", "rules"):
        ctx.metrics.gauge(f"gateway_component_ready_{comp}",
                          lambda c=comp: float(bool(ctx.health().get(c, {}).get("ready", 0))),
                          f"1 while the {comp} component is ready")


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="Community edge gateway", version=__version__,
                  description="Alarms, duty console and installer API of a community gateway.")
    app.state.ctx = ctx
    _register_gauges(ctx)

    # One mapping of the alarm book's errors for every endpoint: 404 unknown, 409 wrong state.
    @app.exception_handler(AlarmNotFound)
    async def _not_found(_request: Request, exc: AlarmNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(AlarmStateError)
    async def _wrong_state(_request: Request, exc: AlarmStateError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "code": exc.code}, status_code=409)

    def authenticate(request: Request) -> Principal:
        """The request's principal (Bearer token or session cookie); AuthError if none."""
        authz = request.headers.get("authorization", "")
        if authz.lower().startswith("bearer "):
            return ctx.auth.from_bearer(authz[7:].strip())
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            raise AuthError("not logged in")
        return ctx.auth.from_cookie(cookie)

    def principal(request: Request) -> Principal:
        try:
            p = authenticate(request)
        except AuthError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        if p.kind == "session" and request.method not in ("GET", "HEAD", "OPTIONS"):
            if request.headers.get("x-csrf-token") != p.csrf:
                raise HTTPException(403, "missing or wrong X-CSRF-Token")
        return p

    def need(permission: str):
        def dep(p: Annotated[Principal, Depends(principal)]) -> Principal:
            if not p.can(permission):
                raise HTTPException(403, f"role {p.role!r} may not {permission}")
            return p
        return dep

    def decorate(alarm: dict, p: Principal) -> dict:
        alarm = dict(alarm)
        alarm["household"] = household_json(ctx.site.household(alarm.get("household_id")), p)
        alarm["grid"] = grid_json(ctx.site.grid_cell(alarm.get("grid_cell")))
        return alarm

    # -- health and metrics ------------------------------------------------------------
    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict:
        """Liveness and component states; 200 while the process serves requests."""
        return {"status": "ok", "version": __version__, "components": ctx.health()}

    @app.get("/readyz", tags=["operations"])
    def readyz(response: Response) -> dict:
        """503 until intake, store and rules are up (what a load balancer should wait for)."""
        comps = ctx.health()
        ready = all(c.get("ready", True) for c in comps.values())
        response.status_code = 200 if ready else 503
        return {"ready": ready, "components": comps}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def metrics() -> str:
        """Prometheus text format."""
        return ctx.metrics.render()

    # -- session -----------------------------------------------------------------------
    @app.post("/api/login", tags=["auth"])
    def login(body: LoginBody, request: Request, response: Response) -> dict:
        client = request.client.host if request.client else "?"
        try:
            token, p = ctx.auth.login(body.username, body.password, client)
        except AuthError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                            secure=ctx.secure_cookies, max_age=math.ceil(ctx.auth.max_s))
        return {"user": p.name, "role": p.role, "csrf": p.csrf}

    @app.post("/api/logout", tags=["auth"])
    def logout(request: Request, response: Response,
               p: Annotated[Principal, Depends(principal)]) -> dict:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            ctx.auth.logout(cookie)
        response.delete_cookie(COOKIE)
        return {"ok": True}

    @app.get("/api/me", tags=["auth"])
    def me(p: Annotated[Principal, Depends(principal)]) -> dict:
        """Who is logged in, what they may do, and what the console needs to know."""
        esc = ctx.site.rules.escalation if ctx.site.rules is not None else None
        return {"user": p.name, "role": p.role, "csrf": p.csrf,
                "permissions": sorted(k for k in PERMISSIONS if p.can(k)),
                "site": {"id": ctx.site.site.site.id, "name": ctx.site.site.site.name,
                         "language": ctx.site.site.site.language,
                         "timezone": ctx.site.site.site.timezone},
                "escalation": None if esc is None else {
                    "min_severity": str(esc.min_severity),
                    "tiers": [{"name": t.name, "after_s": t.after, "notify": t.notify}
                              for t in esc.tiers]}}

    @app.post("/api/setup", tags=["auth"])
    def setup(body: SetupBody) -> dict:
        """Create the first admin with the one-time setup token printed at first start."""
        try:
            ctx.auth.complete_setup(body.setup_token, body.username, body.password)
        except AuthError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return {"ok": True, "user": body.username, "role": "admin"}

    # -- alarms ------------------------------------------------------------------------
    @app.get("/api/alarms", tags=["alarms"])
    def list_alarms(p: Annotated[Principal, Depends(need("alarms.read"))],
                    state: Literal["open", "raised", "acknowledged", "resolved"] | None = None,
                    limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> dict:
        """Alarms, open first, then by severity (critical first) and newest first."""
        return {"alarms": [decorate(a, p) for a in ctx.book.list(state, limit)]}

    @app.get("/api/alarms/{alarm_id}", tags=["alarms"])
    def get_alarm(alarm_id: AlarmId,
                  p: Annotated[Principal, Depends(need("alarms.read"))]) -> dict:
        return decorate(ctx.book.get(alarm_id, with_events=True), p)

    @app.post("/api/alarms/{alarm_id}/ack", tags=["alarms"])
    async def ack(alarm_id: AlarmId, p: Annotated[Principal, Depends(need("alarms.act"))],
                  body: AckBody | None = None) -> dict:
        alarm = await ctx.book.acknowledge(alarm_id, p.name, body.note if body else "")
        return decorate(alarm, p)

    @app.post("/api/alarms/{alarm_id}/resolve", tags=["alarms"])
    async def resolve(alarm_id: AlarmId, body: ResolveBody,
                      p: Annotated[Principal, Depends(need("alarms.act"))]) -> dict:
        """Resolve with a reason staff chose (422 without one). A critical alarm must be
        acknowledged first: 409 ``{"code": "ack_required"}`` otherwise."""
        alarm = await ctx.book.resolve(alarm_id, p.name, body.reason, body.note,
                                       require_ack=True)
        return decorate(alarm, p)

    @app.get("/api/resolve-reasons", tags=["alarms"])
    def reasons(p: Annotated[Principal, Depends(need("alarms.read"))]) -> dict:
        return {"reasons": RESOLVE_REASONS, "labels": {**RESOLVE_REASONS, **CASE_REASONS}}

    @app.get("/api/stream", tags=["alarms"])
    async def stream(request: Request,
                     p: Annotated[Principal, Depends(need("alarms.read"))]) -> StreamingResponse:
        """Server-Sent Events: ``event: alarm`` with the changed alarm as JSON data.

        While it is open the stream re-checks its session every ``stream_check_s`` (15 s),
        which keeps an open board's session from idling out; when the session has ended
        (absolute limit, logout, user disabled) it sends ``event: session`` with
        ``{"state": "ended", "detail": ...}`` and closes."""
        q = ctx.broadcaster.subscribe()
        check_s = ctx.auth.stream_check_s

        async def session_ended() -> str | None:
            try:
                await asyncio.to_thread(authenticate, request)
            except AuthError as exc:
                return str(exc)
            return None

        async def events() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            due = loop.time() + check_s
            try:
                yield b"retry: 2000\n\n"
                while True:
                    try:
                        async with asyncio.timeout(max(0.0, due - loop.time())):
                            ev = await q.get()
                    except TimeoutError:
                        ev = False
                    if loop.time() >= due:
                        due = loop.time() + check_s
                        ended = await session_ended()
                        if ended is not None:
                            data = json.dumps({"state": "ended", "detail": ended})
                            yield f"event: session\ndata: {data}\n\n".encode()
                            return
                    if ev is False:
                        yield b": keepalive\n\n"
                        continue
                    if ev is None:
                        return
                    alarm = ev.get("alarm")
                    if alarm is not None:
                        ev = dict(ev, alarm=decorate(alarm, p))
                    data = json.dumps(ev, ensure_ascii=False)
                    yield f"event: {ev['type']}\ndata: {data}\n\n".encode()
            finally:
                ctx.broadcaster.unsubscribe(q)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    # -- devices -----------------------------------------------------------------------
    @app.get("/api/devices", tags=["devices"])
    def list_devices(p: Annotated[Principal, Depends(need("devices.read"))]) -> dict:
        """Health of every configured device (online/offline/degraded, battery, last seen)."""
        return {"devices": [h.to_json() for h in ctx.devices.devices.values()],
                "summary": ctx.devices.summary()}

    @app.get("/api/devices/unknown", tags=["devices"])
    def unknown_devices(p: Annotated[Principal, Depends(need("devices.write"))]) -> dict:
        """Devices seen on the bus that no configuration binds (the installer's inbox)."""
        return {"unknown": sorted(ctx.devices.unknown.values(), key=lambda e: -e["last_seen"])}

    @app.get("/api/devices/{device_id}/readings", tags=["devices"])
    def device_readings(device_id: str,
                        p: Annotated[Principal, Depends(need("devices.read"))]) -> dict:
        """The last decoded readings of a device (newest last)."""
        h = ctx.devices.devices.get(device_id)
        if h is None:
            raise HTTPException(404, f"device {device_id!r} not configured")
        return {"device": h.to_json(), "readings": list(h.last_readings)}

    # -- case system callback ----------------------------------------------------------
    @app.post("/api/case-callback", tags=["case system"])
    async def case_callback(request: Request) -> dict:
        """Status changes of cases, POSTed (signed) by the grid case system."""
        if ctx.case_callback is None:
            raise HTTPException(404, "no case system configured")
        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return await ctx.case_callback(request.method, target, request.headers, body)

    from gateway.api_console import add_console_routes
    from gateway.api_installer import add_installer_routes

    add_console_routes(app, ctx, need, decorate)
    add_installer_routes(app, ctx, need)

    # -- console (static, no build step; served from the package) ----------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def console() -> Response:
        html = resources.files("gateway").joinpath("static/console.html").read_text("utf-8")
        return HTMLResponse(html, headers=_SECURITY_HEADERS)

    app.mount("/static", StaticFiles(directory=str(resources.files("gateway") / "static")),
              name="static")

    return app


def change_events(book: AlarmBook, broadcaster: Broadcaster, changes: list[Change]) -> None:
    """Publish alarm changes to live subscribers (called by the alarm book)."""
    if not len(broadcaster):
        return
    for ch in changes:
        try:
            alarm = book.get(ch.alarm_id)
        except AlarmNotFound:
            continue
        broadcaster.publish({"type": "alarm", "action": ch.action, "alarm": alarm})
