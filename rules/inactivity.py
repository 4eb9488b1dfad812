"""Placeholder: the inactivity rule kind is being written (issue 4)."""

from __future__ import annotations

from rules.engine import register_kind

__all__: list[str] = []


def _not_yet(*_args: object) -> None:
    raise NotImplementedError("the 'inactivity' rule kind is not implemented yet")


register_kind("inactivity", _not_yet)
