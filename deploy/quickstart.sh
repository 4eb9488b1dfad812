#!/usr/bin/env bash
# One entry point for a fresh Debian 12 / Raspberry Pi OS machine with only python3 and apt.
#   bash deploy/quickstart.sh demo   # broker, simulated community + case system, gateway, console
#   bash deploy/quickstart.sh test   # the static checks, then the test suite (less -m nspawn)
# Idempotent: installs what is missing (apt packages, a venv with the project), then runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
what=${1:-demo}; shift || true

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_need=(mosquitto mosquitto-clients python3-venv)
if [ "$what" = test ]; then apt_need+=(chromium fonts-wqy-microhei victoria-metrics openssl systemd); fi
missing=()
for p in "${apt_need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "quickstart: installing system packages: ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# (the distribution's own mosquitto service may run on :1883; the demo and the tests start
# their own brokers on free loopback ports and never touch it)

venv="$root/.venv"
hash=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# the demo needs the project; the tests also need the test extra (Playwright, hypothesis, ...)
if [ "$what" = test ]; then extra="[test]"; wanted=("$venv/.installed-$hash-test")
else extra=""; wanted=("$venv/.installed-$hash-test" "$venv/.installed-$hash-demo"); fi
have=""
for s in "${wanted[@]}"; do [ -f "$s" ] && have=1; done
if [ -z "$have" ]; then
  echo "quickstart: installing Python packages into .venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e ".$extra"
  find "$venv" -maxdepth 1 -name '.installed-*' ! -name ".installed-$hash-*" -delete
  touch "$venv/.installed-$hash-${what}"
fi

# Static checks: `test` runs them before the tests, in this order, and stops at the first
# that fails. One line per tool (installed by the test extra, configured in pyproject.toml);
# ruff and mypy are issue 17.5's (mypy: every package, strict on the kernel, rules/ and
# drivers/, default mode elsewhere).
check() {
  echo "quickstart: $*" >&2
  "$venv/bin/$1" "${@:2}" || { echo "quickstart: $1 failed (see above); no tests run" >&2; return 1; }
}
static_checks() {
  check lint-imports --no-cache || return 1   # the layers: [tool.importlinter], docs/architecture.md
  check ruff check --no-cache . || return 1    # bug-finding rules: [tool.ruff] in pyproject.toml
  check mypy gateway edge_config rules drivers simulators || return 1   # [tool.mypy] in pyproject.toml
}

case "$what" in
  demo) exec "$venv/bin/gateway" demo "$@" ;;
  # the nspawn deployment test (tests/test_deploy_nspawn.py: boots Debian 12, installs, reboots,
  # upgrades; minutes) is left out: `.venv/bin/pytest -m nspawn tests/test_deploy_nspawn.py`
  # (docs/deploy.md, "Testing the deployment"). A later -m of the caller's replaces this one.
  # Two worker processes (pytest-xdist), each taking whole test files (their module-scoped
  # fixtures stay in one process): most tests wait on real processes, brokers and browsers,
  # so two share two cores well (~8 minutes here against ~14 in one). GATEWAY_TEST_WORKERS
  # sets the count; 0 runs in this process (e.g. `GATEWAY_TEST_WORKERS=0 bash ... test -x`).
  test) static_checks || exit 1
        exec "$venv/bin/python" -m pytest -m "not nspawn" -n "${GATEWAY_TEST_WORKERS:-2}" \
             --dist loadfile "$@" ;;
  *) echo "usage: $0 demo|test [args...]" >&2; exit 2 ;;
esac
