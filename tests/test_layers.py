"""The layers as they are at run time (docs/architecture.md, "Layers").

`lint-imports` (pyproject.toml, run by `bash deploy/quickstart.sh test`) checks the import
statements; these check what importing actually loads (a package's ``__init__`` runs too),
that every error of the project is a ``GatewayError``, and that the metrics implementation
is what the kernel's interface promises.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys

import pytest

from gateway.kernel.errors import GatewayError
from gateway.kernel.metrics import MetricsSink
from gateway.metrics import Metrics

PROJECT = ("gateway", "drivers", "rules", "edge_config", "simulators")


def _loaded_after(code: str) -> list[str]:
    """Project modules loaded by ``code`` in a fresh interpreter."""
    probe = (f"import sys\n{code}\nimport json\n"
             f"print(json.dumps(sorted(m for m in sys.modules "
             f"if m.split('.')[0] in {PROJECT!r})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")]


@pytest.mark.parametrize("library", ["drivers", "rules", "edge_config"])
def test_a_library_loads_the_kernel_and_itself_only(library: str) -> None:
    modules = _modules(library)
    loaded = _loaded_after("\n".join(f"import {m}" for m in modules))
    foreign = [m for m in loaded if m.split(".")[0] != library
               and not (m in ("gateway", "gateway.kernel") or m.startswith("gateway.kernel."))]
    assert foreign == [], f"{library} loads {foreign}"


def test_the_kernel_loads_nothing_else() -> None:
    loaded = _loaded_after("\n".join(f"import {m}" for m in _modules("gateway.kernel")))
    assert all(m == "gateway" or m.startswith("gateway.kernel") for m in loaded), loaded


def test_the_service_and_cli_load_no_simulator() -> None:
    """`gateway run`: the CLI and the service; `gateway demo` imports them lazily."""
    loaded = _loaded_after("import gateway.cli, gateway.service")
    assert not [m for m in loaded if m.startswith("simulators")]
    assert "gateway.demo" not in loaded


def test_the_service_loads_pymodbus_only_for_a_site_with_modbus_buses() -> None:
    """About 2 MB of a Pi's memory (docs/benchmarks.md, "day", sixth round)."""
    probe = ("import sys\nimport gateway.cli, gateway.service\n"
             "print([m for m in sys.modules if m.split('.')[0] == 'pymodbus'"
             " or m == 'drivers.modbus'])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_gateway_run_does_not_load_httpx_command_line_tool() -> None:
    """httpx imports rich and pygments for its command-line tool when they are installed
    (the test extra installs them): ~2.9 MB the service never uses."""
    probe = ("import argparse, sys\nimport gateway.cli as cli\n"
             "cli.cmd_run(argparse.Namespace(config='/nonexistent-site', data='/tmp',"
             " host='127.0.0.1', port=0))\n"
             "print('httpx' in sys.modules, 'rich' in sys.modules or 'pygments' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.stdout.strip().splitlines()[-1] == "True False", out.stderr[-2000:]


def test_every_project_error_is_a_gateway_error() -> None:
    errors = []
    for package in ("gateway", "drivers", "rules", "edge_config"):
        for name in _modules(package):
            module = importlib.import_module(name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == name and issubclass(cls, BaseException):
                    errors.append(cls)
    assert len(errors) >= 15     # the walk found them (AuthError, DecodeError, ...)
    strays = [f"{c.__module__}.{c.__qualname__}" for c in errors
              if not issubclass(c, GatewayError)]
    assert strays == [], f"not derived from GatewayError: {strays}"


def test_the_package_says_so() -> None:
    import gateway
    from drivers import DecodeError, DriverError
    from drivers.profiles import ProfileMisfit
    from gateway.alarms import AlarmError, AlarmNotFound
    from gateway.auth import AuthError
    from gateway.installer import InstallerError

    assert gateway.GatewayError is GatewayError
    for cls in (gateway.ConfigError, gateway.StoreError, gateway.UplinkError, DriverError,
                DecodeError, ProfileMisfit, AlarmError, AlarmNotFound, AuthError,
                InstallerError):
        assert issubclass(cls, GatewayError), cls
    assert issubclass(ProfileMisfit, ValueError)     # as before it joined the family


def test_metrics_satisfy_the_kernel_interface() -> None:
    m = Metrics()
    assert isinstance(m, MetricsSink)
    sink: MetricsSink = m
    sink.inc("x_total", transport="mqtt")
    sink.counters[("x_total", (("transport", "mqtt"),))] += 1    # the intake's hot path
    sink.observe("x_seconds", 0.01)
    assert m.get("x_total", transport="mqtt") == 2.0


def test_the_model_is_the_kernels() -> None:
    import gateway.heap
    import gateway.kernel.heap
    import gateway.kernel.model
    import gateway.model

    assert gateway.model.Reading is gateway.kernel.model.Reading
    assert gateway.model.utc is gateway.kernel.model.utc
    assert gateway.heap.settle is gateway.kernel.heap.settle
    assert set(gateway.model.__all__) == set(gateway.kernel.model.__all__)
