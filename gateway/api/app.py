"""The FastAPI application: the routers of every area on one context."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.alarms import AlarmNotFound, AlarmStateError
from gateway.api import (
    admin, alarms, case_callback, commands, console, devices, help, history, household_care, installer,
    operations, session, visits,
)
from gateway.api.context import ApiContext
from gateway.api.errors import http_error, validation_error

__all__ = ["ROUTERS", "create_app"]

#: every area's router, in the order their routes are matched and listed
ROUTERS = (operations.router, session.router, alarms.router, devices.router,
           case_callback.router, history.router, admin.router, installer.router,
           help.router, visits.router, household_care.router, commands.router,
           console.router)


async def _not_found(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "code": "alarm_not_found",
                         "params": {}}, status_code=404)


async def _wrong_state(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AlarmStateError)
    return JSONResponse({"detail": str(exc), "code": exc.code, "params": {}}, status_code=409)


def create_app(ctx: ApiContext) -> FastAPI:
    """The gateway's API and console on ``ctx`` (``app.state.ctx``, read per request)."""
    app = FastAPI(title="Community edge gateway", version=__version__,
                  description="Alarms, duty console and installer API of a community gateway.")
    app.state.ctx = ctx
    operations.register_gauges(ctx)
    # One mapping of the alarm book's errors for every endpoint: 404 unknown, 409 wrong state.
    app.add_exception_handler(AlarmNotFound, _not_found)
    app.add_exception_handler(AlarmStateError, _wrong_state)
    # every other error with its machine code (gateway.api.errors: the console translates it)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", console.static_files(), name="static")
    return app
