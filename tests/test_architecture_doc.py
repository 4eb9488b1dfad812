"""docs/architecture.md stays true to the code (issue 17).

Fast, no servers. The doc's backticked spans are checked against the repository:

- a span that looks like a repository path (``gateway/store/schema.py``,
  ``drivers/serial_line/``, ``drivers/codecs/*``, or any ``*.py``) exists;
- a span that is a dotted name of the project (``gateway.store.COMMIT_RETRY``,
  ``rules.spec``) imports, or is an attribute of a module that does;
- every import-linter contract of pyproject.toml is described by its id and its name.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("gateway", "drivers", "rules", "edge_config", "simulators")
#: first path segments that make a span a repository path
TOP_DIRS = (*PACKAGES, "tests", "docs", "deploy", ".ci")
#: names that end like a file are file names, not modules (``rules.yaml``, ``gateway.lock``)
FILE_ENDINGS = ("yaml", "yml", "json", "md", "db", "py", "toml", "sh", "html", "js", "css",
                "sql", "txt", "lock", "conf", "service", "timer", "path")

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_SPAN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.*\-]+)*/?")
_DOTTED = re.compile(r"(?:%s)(?:\.[A-Za-z_]\w*)+" % "|".join(PACKAGES))


def _spans() -> list[str]:
    """Backticked spans of the doc's prose and tables (fenced diagrams left out)."""
    text = _FENCE.sub("", DOC.read_text(encoding="utf-8"))
    return [s.strip() for s in _SPAN.findall(text)]


def _is_path(span: str) -> bool:
    if not _PATH.fullmatch(span):
        return False
    if "/" in span:
        return span.split("/", 1)[0] in TOP_DIRS
    return span.endswith(".py")


def _exists(span: str) -> bool:
    if "*" in span:
        return any(ROOT.glob(span))
    return (ROOT / span).exists()


def _resolves(name: str) -> bool:
    """``name`` is a module of the project, or an attribute (chain) of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_path_in_the_doc_exists() -> None:
    paths = sorted({s for s in _spans() if _is_path(s)})
    assert len(paths) > 100, paths          # the module map alone has more
    missing = [p for p in paths if not _exists(p)]
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_project_name_in_the_doc_resolves() -> None:
    names = sorted({s for s in _spans() if _DOTTED.fullmatch(s)
                    and s.rsplit(".", 1)[1] not in FILE_ENDINGS})
    assert len(names) > 10, names
    unknown = [n for n in names if not _resolves(n)]
    assert unknown == [], f"docs/architecture.md names what the code does not have: {unknown}"


def test_every_import_contract_is_described() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 6
    text = DOC.read_text(encoding="utf-8")
    undescribed = [c["id"] for c in contracts
                   if f"`{c['id']}`" not in text or c["name"] not in text]
    assert undescribed == [], f"contracts not described by id and name: {undescribed}"
