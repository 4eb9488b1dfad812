"""Dispatcher: ``python -m simulators.bench NAME [--quick] [options]``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys

import simulators.bench as pkg


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not argv or argv[0] not in names:
        print(f"usage: python -m simulators.bench NAME [--quick] ...; NAME is one of: "
              f"{', '.join(names)}", file=sys.stderr)
        return 2
    name = argv.pop(0)
    mod = importlib.import_module(f"simulators.bench.{name}")
    parser = argparse.ArgumentParser(prog=f"python -m simulators.bench {name}")
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    mod.add_args(parser)
    args = parser.parse_args(argv)
    result = mod.run(args)
    result = {"benchmark": name, "quick": bool(args.quick), **result}
    print(json.dumps(result, ensure_ascii=False, sort_keys=False))
    return 1 if result.get("ok") is False else 0   # a benchmark that checks invariants (crash)


if __name__ == "__main__":
    sys.exit(main())
