"""What staff read when the grid case system refused an alarm's case (docs/case-system.md 9).

The forwarder records a refusal on the alarm as a short code, ``case_error`` =
``"<error>"`` or ``"<error>:<field>"`` (the case system's machine code and, when it named
one, the offending field; ``invalid_payload`` when the gateway's own models refused the
request before sending it). :func:`refusal` turns that code into one short sentence in
Chinese and in English for the card — never the raw validation text, never a URL.

Values written by earlier releases (``"invalid_payload: 1 validation error for CaseCreate
device.id ..."``, ``"rejected (HTTP 422): ..."``) are read too: their code and, where it
can be found, their field; the rest is dropped.
"""

from __future__ import annotations

import re

__all__ = ["refusal", "refusal_code"]

_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,79}$")
_LEGACY_FIELD = re.compile(r"validation errors? for \w+\s+([A-Za-z_][A-Za-z0-9_.]*)")

#: contract field -> (zh, en)
FIELDS: dict[str, tuple[str, str]] = {
    "device": ("设备信息", "device"),
    "devices": ("设备清单", "device list"),
    "household": ("住户信息", "household"),
    "household.id": ("住户编号", "household id"),
    "household.address": ("住户地址", "household address"),
    "grid_cell_code": ("网格编码", "grid cell code"),
    "site_id": ("小区编号", "site id"),
    "category": ("报警类别", "alarm category"),
    "severity": ("报警级别", "severity"),
    "title": ("工单标题", "title"),
    "description": ("工单描述", "description"),
    "occurred_at": ("报警时间", "time of the alarm"),
    "callback_url": ("回调地址", "callback address"),
    "idempotency_key": ("工单键", "case key"),
    "sequence": ("更新序号", "update sequence"),
    "kind": ("更新类型", "update kind"),
    "reason": ("处置原因", "resolve reason"),
    "note": ("备注", "note"),
    "actor": ("处置人", "actor"),
    "case_id": ("工单编号", "case number"),
}

#: error code -> (zh, en); ``{f}``: the field's name, when the code is about one
_WITH_FIELD: dict[str, tuple[str, str]] = {
    "validation_error": ("{f}缺失或不符合工单系统要求", "{f} missing or not accepted by the case system"),
    "invalid_payload": ("网关生成的{f}不完整或无效", "{f} incomplete or invalid (checked at the gateway)"),
}
_PLAIN: dict[str, tuple[str, str]] = {
    "validation_error": ("工单内容不符合工单系统要求", "not accepted by the case system"),
    "invalid_payload": ("网关生成的工单内容不完整", "incomplete case (checked at the gateway)"),
    "invalid_json": ("工单系统无法解析请求", "the case system could not read the request"),
    "idempotency_conflict": (
        "工单键与另一报警冲突（网关故障，请联系运维）",
        "case key clashes with another alarm's (a gateway fault: call support)"),
    "not_found": ("工单系统找不到该工单", "the case system does not know this case"),
    "no_case": ("报警没有工单，无法更新", "the alarm has no case to update"),
}
_OTHER = ("工单系统拒绝受理（代码 {code}）", "refused by the case system (code {code})")


def refusal_code(reason: str, field: str | None = None) -> str:
    """The ``case_error`` value recorded on the alarm for a refusal."""
    code = reason if _CODE.match(reason or "") else "refused"
    if field and _FIELD.match(field):
        return f"{code}:{field}"
    return code


def _parse(case_error: str) -> tuple[str, str | None]:
    head, sep, rest = case_error.partition(":")
    code = head.strip().split(" ", 1)[0]
    if not _CODE.match(code):
        code = "refused"
    field = rest if sep and _FIELD.match(rest) else None
    if field is None and sep:   # a value of an earlier release: "<code>: <free text>"
        m = _LEGACY_FIELD.search(rest)
        field = m.group(1) if m else None
    return code, field


def _field_name(field: str) -> tuple[str, str] | None:
    parts = [p for p in field.split(".") if not p.isdigit()]
    while parts:
        name = FIELDS.get(".".join(parts))
        if name is not None:
            return name
        parts.pop()
    return None


def refusal(case_error: str | None, has_case: bool) -> dict | None:
    """``{code, field, zh, en}`` for the card, or None when nothing was refused.

    ``has_case``: the alarm has a case (then it was an update that was refused)."""
    if not case_error:
        return None
    code, field = _parse(case_error)
    name = _field_name(field) if field else None
    if name is not None and code in _WITH_FIELD:
        zh, en = (t.format(f=n) for t, n in zip(_WITH_FIELD[code], name))
    elif code in _PLAIN:
        zh, en = _PLAIN[code]
    else:
        zh, en = (t.format(code=code) for t in _OTHER)
    if has_case:
        return {"code": code, "field": field, "zh": f"工单更新被拒：{zh}",
                "en": f"Case update refused: {en}"}
    return {"code": code, "field": field, "zh": f"工单被拒：{zh}", "en": f"Case refused: {en}"}
