"""The grid case-system contract as a validator: docs/case-system.openapi.yaml's component
schemas (JSON Schema 2020-12, formats checked) through ``jsonschema_rs``.

Contract:
- ``Contract.load()`` reads the OpenAPI file beside the sources (``docs/``); it raises
  :class:`ContractUnavailable` when the file or the validator library (``jsonschema-rs``, in
  the project's ``test`` extra) is missing.
- ``contract.problems(name, body)`` lists ``(field, message)`` for a JSON value checked against
  ``components.schemas[name]``: ``field`` is the dotted path of the offending field (for a
  missing one: the path it should have), ``""`` for the body itself. Empty: valid.
- ``contract.check(name, body)`` raises :class:`ContractViolation` (``field``, ``detail``)
  for the first problem.
- ``contract.version`` is the file's ``info.version``.

The simulated case system checks every request body with it (so a gateway that drifts from
the file is refused, loudly), and the tests check every payload the gateway builds.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PATH", "Contract", "ContractUnavailable", "ContractViolation"]

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "docs" / "case-system.openapi.yaml"


class ContractUnavailable(RuntimeError):
    """The OpenAPI file or the validator library is not installed here."""


class ContractViolation(ValueError):
    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field, self.detail = field, detail


class Contract:
    def __init__(self, spec: dict[str, Any]) -> None:
        try:
            import jsonschema_rs
        except ImportError as e:   # pragma: no cover - the test extra has it
            raise ContractUnavailable("jsonschema-rs is not installed (pip install "
                                      "'community-edge-gateway[test]')") from e
        self.spec = spec
        self.version: str = str(spec["info"]["version"])
        self._schemas = spec["components"]["schemas"]
        self._validators: dict[str, Any] = {}
        self._lib = jsonschema_rs

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> Contract:
        return _load(str(path))

    @property
    def schema_names(self) -> list[str]:
        return list(self._schemas)

    def _validator(self, name: str) -> Any:
        v = self._validators.get(name)
        if v is None:
            if name not in self._schemas:
                raise KeyError(f"no schema {name!r} in the contract")
            root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                    "components": self.spec["components"],
                    "$ref": f"#/components/schemas/{name}"}
            v = self._validators[name] = self._lib.Draft202012Validator(
                root, validate_formats=True)
        return v

    def problems(self, name: str, body: Any) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for e in self._validator(name).iter_errors(body):
            path = [str(p) for p in e.instance_path]
            prop = getattr(e.kind, "property", None) if type(e.kind).__name__ == "Required" \
                else None
            if isinstance(prop, str):
                path.append(prop)
            field = ".".join(path)
            out.append((field, f"{field or 'body'}: {e.message}"))
        return out

    def check(self, name: str, body: Any) -> None:
        found = self.problems(name, body)
        if found:
            field, detail = found[0]
            if len(found) > 1:
                detail += f" (and {len(found) - 1} more problem(s))"
            raise ContractViolation(field, detail)


@cache
def _load(path: str) -> Contract:
    p = Path(path)
    if not p.is_file():
        raise ContractUnavailable(f"{p} not found (the contract ships with the sources)")
    from ruamel.yaml import YAML

    spec = YAML(typ="safe", pure=True).load(p.read_text(encoding="utf-8"))
    return Contract(spec)
