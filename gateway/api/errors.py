"""API errors with a stable machine ``code`` beside the English ``detail``.

Every error the console can show answers ``{"detail": <English>, "code": <code>,
"params": {...}}``: the console translates ``code`` (with ``params`` filled in) through its
catalogue (``gateway/static/i18n.js``, keys ``err_<code>``); ``detail`` stays for scripts and
logs. A validation error (422) keeps FastAPI's list shape in ``detail``; each item carries
its own ``code`` (pydantic's ``type``, or for an installer edit the kind of configuration
problem) and ``params`` (pydantic's ``ctx``, or what the problem names), translated by the
console as ``v_<code>`` beside the form field.

:data:`ERROR_CODES` and :data:`FIELD_CODES` list every code made here; a test checks the
catalogue has each in both languages.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import GatewayError

__all__ = ["ERROR_CODES", "FIELD_CODES", "ApiError", "config_code", "field_problem",
           "http_error", "validation_error"]

#: codes of whole-request errors (``err_<code>`` in the console's catalogue)
ERROR_CODES: tuple[str, ...] = (
    # generic, by HTTP status, when a handler names nothing more precise
    "bad_request", "not_logged_in", "forbidden", "not_found", "method_not_allowed",
    "conflict", "invalid", "too_large", "rate_limited", "unavailable", "server_error",
    # sessions and permissions (gateway.auth.AuthError codes)
    "wrong_login", "login_throttled", "session_expired", "user_disabled", "invalid_token",
    "setup_done", "wrong_setup_token", "csrf", "role_forbidden",
    # users
    "user_exists", "user_not_found", "last_admin", "password_short",
    # alarms
    "alarm_not_found", "wrong_state", "ack_required",
    # devices, households, the installer
    "device_not_found", "household_not_found", "checklist_incomplete", "editing_unavailable",
    "no_case_system", "config_invalid", "zigbee_registered",
    # help requests and visits
    "help_not_found", "help_category_unknown", "help_wrong_state", "visit_in_future",
    # commands to devices (linkage)
    "not_commandable", "restore_forbidden", "linkage_stopped",
)

#: codes of one field's problem (``v_<code>``): pydantic's types the API's bodies can give,
#: and the kinds of configuration problems of an installer edit (:func:`config_code`)
FIELD_CODES: tuple[str, ...] = (
    "missing", "extra_forbidden", "string_too_short", "string_too_long",
    "string_pattern_mismatch", "string_type", "literal_error", "enum", "int_parsing",
    "int_type", "float_parsing", "float_type", "bool_parsing", "bool_type",
    "greater_than_equal", "less_than_equal", "greater_than", "less_than", "too_short",
    "too_long", "list_type", "dict_type", "model_type", "json_invalid", "datetime_parsing",
    "datetime_from_date_parsing", "value_error", "reason_required", "duration_invalid",
    # configuration problems (installer edits)
    "device_exists", "device_not_found", "unknown_household", "unknown_grid_cell",
    "duplicate_id", "topic_taken", "address_taken", "profile_misfit", "unknown_profile",
    "zigbee_registered", "id_fixed", "config", "invalid",
)

_BY_STATUS = {400: "bad_request", 401: "not_logged_in", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid",
              429: "rate_limited", 503: "unavailable"}


class ApiError(HTTPException, GatewayError):
    """An HTTP error with its ``code`` (one of :data:`ERROR_CODES`) and ``params``; a
    project error like every other (``GatewayError``)."""

    def __init__(self, status: int, code: str, detail: Any, **params: Any):
        super().__init__(status, detail)
        self.code = code
        self.params = params


def _code_of(exc: StarletteHTTPException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return code
    return _BY_STATUS.get(exc.status_code, "server_error" if exc.status_code >= 500
                          else "bad_request")


async def http_error(_request: Request, exc: Exception) -> JSONResponse:
    """Every HTTPException: its detail, code and params (field lists get item codes)."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if isinstance(detail, list):
        detail = [field_problem(d) if isinstance(d, dict) else d for d in detail]
    body = {"detail": detail, "code": _code_of(exc),
            "params": jsonable_encoder(getattr(exc, "params", {}) or {})}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 with ``code: "invalid"`` and a code and params per item."""
    assert isinstance(exc, RequestValidationError)
    items = []
    for e in exc.errors():
        # (never the input: it may be a password)
        item = {k: v for k, v in e.items() if k in ("loc", "msg", "type")}
        kind = str(e.get("type", "invalid"))
        params = {k: v if isinstance(v, (str, int, float, bool)) else str(v)
                  for k, v in (e.get("ctx") or {}).items() if k != "error"}
        if kind == "value_error" and e.get("loc", ())[-1:] == ("duration",):
            kind = "duration_invalid"
        item["code"], item["params"] = kind, params
        items.append(item)
    return JSONResponse({"detail": jsonable_encoder(items), "code": "invalid", "params": {}},
                        status_code=422)


# -- configuration problems of an installer edit (edge_config's messages) -------------------
_CONFIG = [
    (re.compile(r"^device '(?P<value>[^']*)' already exists"), "device_exists"),
    (re.compile(r"^device '(?P<value>[^']*)' not found"), "device_not_found"),
    (re.compile(r"^unknown household '(?P<value>[^']*)'"), "unknown_household"),
    (re.compile(r"^unknown grid cell '(?P<value>[^']*)'"), "unknown_grid_cell"),
    (re.compile(r"^duplicate [a-zA-Z0-9 -]+ '(?P<value>[^']*)'"), "duplicate_id"),
    (re.compile(r"^topic '(?P<value>[^']*)' already used by device '(?P<other>[^']*)'"),
     "topic_taken"),
    (re.compile(r"^address already used by device '(?P<other>[^']*)'"), "address_taken"),
    (re.compile(r"'(?P<value>[^']*)' is already registered"), "zigbee_registered"),
    (re.compile(r"unknown profile '(?P<value>[^']*)'"), "unknown_profile"),
    (re.compile(r"profile '(?P<value>[^']*)'"), "profile_misfit"),
]


def config_code(message: str) -> tuple[str, dict[str, str]]:
    """The code and params of one configuration problem's English message (``config``:
    a kind not listed here; the console then says the value is not accepted)."""
    for pattern, code in _CONFIG:
        m = pattern.search(message)
        if m is not None:
            return code, {k: v for k, v in m.groupdict().items() if v is not None}
    return "config", {}


def field_problem(item: dict) -> dict:
    """A field problem of a 4xx list with its ``code`` and ``params`` (kept when given)."""
    if "code" in item:
        return item
    code, params = config_code(str(item.get("msg", "")))
    return {**item, "code": code, "params": params}
