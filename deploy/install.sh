#!/usr/bin/env bash
# Install, upgrade or roll back the community edge gateway on Debian 12 / Raspberry Pi OS
# (bookworm; arm64 or x86-64). Run as root from a checkout of the project:
#
#   sudo deploy/install.sh [--site DIR]          # install, or upgrade to this checkout
#   sudo deploy/install.sh --rollback            # back to the previous release
#
# Layout (see docs/deploy.md):
#   /opt/community-gateway/releases/<id>/venv    one virtual environment per release
#   /opt/community-gateway/current, previous     symlinks; upgrade/rollback swap them
#   /etc/community-gateway/site/                 the site configuration (installer's files)
#   /etc/community-gateway/gateway.env           secrets and listen address (root:gateway 0640)
#   /var/lib/community-gateway/                  the store (gateway:gateway 0750)
#   /var/backups/community-gateway/              nightly and pre-upgrade backups
#   /etc/mosquitto/conf.d/community-gateway.conf broker: accounts, ACLs, TLS listener
#   /etc/mosquitto/community-gateway/            passwd, acl, credentials.csv, tls/
#
# Idempotent: running it again changes nothing that is already right; an existing site,
# env file, certificates and device passwords are kept.
#
# Options:
#   --site DIR          install this site configuration (the old one is kept as site.prev)
#   --wheel FILE        install this wheel instead of building the checkout
#   --release-id ID     name of the release (default: version-<hash of the source files>)
#   --force             rebuild the release even if it is already installed
#   --python PY         interpreter for the virtual environment (default: python3, >= 3.11)
#   --deps-from VENV    reuse the dependencies installed in VENV instead of downloading them
#                       (for tests and offline boxes; same Python minor version required)
#   --mqtt-port N       broker loopback port for the gateway (default 1883)
#   --mqtt-tls-port N   broker TLS port for devices (default 8883)
#   --mqtt-tls-bind A   address of the TLS listener (default: every interface)
#   --tls-cert F --tls-key F --tls-ca F   use these broker certificates instead of a site CA
#   --tls-host NAME / --tls-ip ADDR       names in the generated broker certificate
#   --keep N            releases kept besides current and previous (default 2)
#   --root DIR          install everything under DIR (alias --prefix): a throwaway root for
#                       tests or staging; no system user, ownership or services are touched
#   --no-apt            do not install distribution packages
#   --no-systemd        do not install/enable/restart systemd units (files are still written)
#   --no-broker         do not configure Mosquitto
#   --rollback          make the previous release current again (and restart)
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
root=/ apt=1 systemd=1 broker=1 rollback=0 force=0 keep=2
site_in= wheel= release_id= python=python3 deps_from=
mqtt_port=1883 mqtt_tls_port=8883 mqtt_tls_bind= tls_cert= tls_key= tls_ca=
tls_hosts=() tls_ips=()

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root|--prefix) root=$2; shift 2 ;;
    --site) site_in=$(cd "$2" && pwd); shift 2 ;;
    --wheel) wheel=$(realpath "$2"); shift 2 ;;
    --release-id) release_id=$2; shift 2 ;;
    --force) force=1; shift ;;
    --python) python=$2; shift 2 ;;
    --deps-from) deps_from=$(cd "$2" && pwd); shift 2 ;;
    --mqtt-port) mqtt_port=$2; shift 2 ;;
    --mqtt-tls-port) mqtt_tls_port=$2; shift 2 ;;
    --mqtt-tls-bind) mqtt_tls_bind=$2; shift 2 ;;
    --tls-cert) tls_cert=$(realpath "$2"); shift 2 ;;
    --tls-key) tls_key=$(realpath "$2"); shift 2 ;;
    --tls-ca) tls_ca=$(realpath "$2"); shift 2 ;;
    --tls-host) tls_hosts+=("$2"); shift 2 ;;
    --tls-ip) tls_ips+=("$2"); shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --no-apt) apt=0; shift ;;
    --no-systemd) systemd=0; shift ;;
    --no-broker) broker=0; shift ;;
    --rollback) rollback=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ "$release_id" =~ ^[A-Za-z0-9._+-]*$ ]] || die "--release-id: letters, digits, . _ + - only"
[[ "$keep" =~ ^[0-9]+$ ]] || die "--keep: a number"
if [ -n "$tls_cert$tls_key$tls_ca" ] && { [ -z "$tls_cert" ] || [ -z "$tls_key" ] || [ -z "$tls_ca" ]; }; then
  die "--tls-cert, --tls-key and --tls-ca go together"
fi

# A throwaway root: paths inside it, and the real system (users, services) left alone.
if [ "$root" = / ]; then
  R= real=1
  [ "$(id -u)" = 0 ] || die "run as root (sudo $0 ...)"
else
  mkdir -p "$root"; R=$(cd "$root" && pwd) real=0
fi
APP=$R/opt/community-gateway
ETC=$R/etc/community-gateway
DATA=$R/var/lib/community-gateway
BACKUPS=$R/var/backups/community-gateway
UNITS=$R/etc/systemd/system
JOURNALD=$R/etc/systemd/journald.conf.d
MOSQ_CONF=$R/etc/mosquitto/conf.d
MOSQ_DIR=$R/etc/mosquitto/community-gateway
BIN=$R/usr/local/bin
SVC=community-gateway.service
pkgs=(gateway drivers rules edge_config simulators)   # what goes into the wheel

own() { # own USER:GROUP MODE PATH... — only on the real system
  local who=$1 mode=$2; shift 2
  chmod "$mode" "$@"
  if [ "$real" = 1 ]; then chown "$who" "$@"; fi
}
svc() { if [ "$systemd" = 1 ] && [ "$real" = 1 ]; then systemctl "$@"; fi; }

render() { # render SRC DEST: the unit/config with paths moved into the root
  sed -e "s|/opt/community-gateway|$APP|g" -e "s|/etc/community-gateway|$ETC|g" \
      -e "s|/var/lib/community-gateway|$DATA|g" -e "s|/var/backups/community-gateway|$BACKUPS|g" \
      -e "s|/etc/mosquitto/community-gateway|$MOSQ_DIR|g" \
      -e "s|@MOSQ_DIR@|$MOSQ_DIR|g" -e "s|@MQTT_PORT@|$mqtt_port|g" \
      -e "s|@MQTT_TLS_LISTENER@|$mqtt_tls_port${mqtt_tls_bind:+ $mqtt_tls_bind}|g" -e "s|@TLS_CA@|$tls_ca|g" \
      -e "s|@TLS_CERT@|$tls_cert|g" -e "s|@TLS_KEY@|$tls_key|g" "$1" > "$2.new"
  if [ -f "$2" ] && cmp -s "$2.new" "$2"; then rm -f "$2.new"; return 1; fi
  mv "$2.new" "$2"; return 0
}

# ---------------------------------------------------------------------------- rollback
if [ "$rollback" = 1 ]; then
  [ -L "$APP/previous" ] || die "no previous release to roll back to in $APP"
  cur=$(readlink "$APP/current") prev=$(readlink "$APP/previous")
  [ -f "$APP/$prev/.complete" ] || die "$APP/$prev is not a complete release"
  ln -sfn "$prev" "$APP/current.new" && mv -T "$APP/current.new" "$APP/current"
  ln -sfn "$cur" "$APP/previous.new" && mv -T "$APP/previous.new" "$APP/previous"
  say "rolled back: current -> $prev (previous -> $cur)"
  last=$(ls -1 "$BACKUPS"/gateway-backup-*.tar.gz 2>/dev/null | tail -n 1 || true)
  [ -z "$last" ] || say "if $cur changed the store's schema, restore the pre-upgrade backup: $last"
  svc restart "$SVC"
  exit 0
fi

# ---------------------------------------------------------------------------- preflight
case "$(uname -m)" in
  x86_64|aarch64) ;;
  armv7l|armv6l) say "warning: 32-bit ARM is not supported (flash Raspberry Pi OS Lite 64-bit)" ;;
  *) say "warning: untested architecture $(uname -m)" ;;
esac
if [ "$apt" = 1 ]; then
  need=(mosquitto mosquitto-clients python3-venv openssl sqlite3 ca-certificates)
  missing=()
  for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$python is older than 3.11"

if [ "$real" = 1 ] && ! getent passwd gateway >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/community-gateway --no-create-home \
    --shell /usr/sbin/nologin --comment "community edge gateway" gateway
  say "created system user gateway"
fi

mkdir -p "$APP/releases" "$ETC" "$DATA" "$BACKUPS" "$UNITS" "$JOURNALD" "$BIN"
own root:gateway 0750 "$ETC"
own gateway:gateway 0750 "$DATA"
own gateway:gateway 0700 "$BACKUPS"

# ---------------------------------------------------------------------------- release
if [ -z "$release_id" ]; then
  if [ -n "$wheel" ]; then
    release_id=$(basename "$wheel" | cut -d- -f2)
  else
    version=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$src/pyproject.toml")
    # named by content: the same code is the same release (a re-run is a no-op), any change
    # (committed or not) is a new one; no git needed (root and a user-owned checkout)
    digest=$(cd "$src" && find pyproject.toml "${pkgs[@]}" -type f ! -name '*.pyc' \
               ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \
             | sha256sum | cut -c1-10)
    release_id=$version-$digest
  fi
fi
rel=$APP/releases/$release_id
if [ -f "$rel/.complete" ] && [ "$force" = 0 ]; then
  say "release $release_id is already installed"
else
  [ "$(readlink "$APP/current" 2>/dev/null)" != "releases/$release_id" ] \
    || die "release $release_id is the running one; use a new --release-id to rebuild it"
  rm -rf "$rel"
  say "building release $release_id in $rel"
  if [ -z "$wheel" ]; then
    # build from a copy: pip builds in the source tree, which may belong to another user
    build=$(mktemp -d); trap 'rm -rf "$build"' EXIT
    (cd "$src" && cp -r pyproject.toml README.md "${pkgs[@]}" "$build/")
    find "$build" -name __pycache__ -prune -exec rm -rf {} +
  fi
  if [ -n "$deps_from" ]; then
    # no pip of its own (ensurepip is the slowest step); VENV's pip installs into it
    "$python" -m venv --without-pip "$rel/venv"
    pip=("$deps_from/bin/python" -m pip --python "$rel/venv/bin/python"
         --disable-pip-version-check -q)
    purelib=$("$deps_from/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    mine=$("$rel/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    [ "$(basename "$(dirname "$purelib")")" = "$(basename "$(dirname "$mine")")" ] \
      || die "--deps-from $deps_from has another Python version than $python"
    echo "$purelib" > "$mine/_community_gateway_deps.pth"
    "${pip[@]}" install --no-deps "${wheel:-$build}"
  else
    "$python" -m venv "$rel/venv"
    "$rel/venv/bin/python" -m pip --disable-pip-version-check -q install "${wheel:-$build}"
  fi
  mkdir -p "$rel/share/docs"
  cp -r "$here/systemd" "$here/mosquitto" "$here/journald" "$rel/share/"
  cp "$here/install.sh" "$rel/share/"
  cp -r "$src/edge_config/examples" "$rel/share/"
  [ ! -f "$src/docs/deploy.md" ] || cp "$src/docs/deploy.md" "$rel/share/docs/"
  "$rel/venv/bin/gateway" --version >/dev/null
  printf 'release=%s\nsource=%s\ninstalled=%s\n' "$release_id" "${wheel:-$src}" \
    "$(date -Is)" > "$rel/.complete"
fi

# ---------------------------------------------------------------------------- site and env
if [ -n "$site_in" ]; then
  rm -rf "$ETC/site.new"; cp -r "$site_in" "$ETC/site.new"
  "$rel/venv/bin/gateway" config validate "$ETC/site.new" >&2 \
    || die "the site in $site_in is invalid (nothing was changed)"
  if [ -d "$ETC/site" ]; then rm -rf "$ETC/site.prev"; mv "$ETC/site" "$ETC/site.prev"; fi
  mv "$ETC/site.new" "$ETC/site"
  say "installed site from $site_in (previous kept in $ETC/site.prev)"
elif [ ! -f "$ETC/site/site.yaml" ]; then
  cp -r "$src/edge_config/examples/tianlin" "$ETC/site"
  cat > "$ETC/site/gateway.yaml" <<EOF
# The device broker (deploy/mosquitto): loopback listener, the gateway's own account.
mqtt:
  host: 127.0.0.1
  port: $mqtt_port
  username: gateway
  password_env: MQTT_PASSWORD
  keepalive_s: 30
  max_payload_bytes: 8192
EOF
  cat > "$ETC/site/uplinks.yaml" <<'EOF'
# The grid case system: not configured yet, so alarms stay on this gateway (see
# docs/case-system.md). Example:
# case_system:
#   url: https://cases.example.gov.cn/api
#   key_id: your-key-id
#   secret_env: CASE_SYSTEM_SECRET      # the secret itself goes into gateway.env
{}
EOF
  say "no site configured: installed the example site in $ETC/site — replace it with yours (--site DIR)"
fi
# the service writes here (installer pages edit devices.yaml); secrets live in gateway.env
find "$ETC/site" -type d -exec chmod 0750 {} + && find "$ETC/site" -type f -exec chmod 0640 {} +
[ "$real" = 0 ] || chown -R gateway:gateway "$ETC/site"
"$rel/venv/bin/gateway" config validate "$ETC/site" >&2 || die "the site in $ETC/site is invalid"

env_file=$ETC/gateway.env
if [ ! -f "$env_file" ]; then
  (umask 077; cat > "$env_file" <<EOF
# Secrets and settings of the community gateway (read by systemd: EnvironmentFile).
# root:gateway 0640. Never commit this file; back it up with the store (see docs/deploy.md).
GATEWAY_HOST=127.0.0.1
GATEWAY_PORT=8080
# the gateway's own MQTT password (user "gateway"; hashed into the broker's passwd file)
MQTT_PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
# the grid case system's HMAC secret, when uplinks.yaml uses secret_env: CASE_SYSTEM_SECRET
#CASE_SYSTEM_SECRET=
EOF
  )
  say "created $env_file with a new MQTT password for the gateway"
fi
grep -q '^MQTT_PASSWORD=.' "$env_file" || die "$env_file has no MQTT_PASSWORD"
own root:gateway 0640 "$env_file"

# ---------------------------------------------------------------------------- broker
if [ "$broker" = 1 ]; then
  mkdir -p "$MOSQ_CONF" "$MOSQ_DIR"
  chmod 0750 "$MOSQ_DIR"
  [ "$real" = 0 ] || ! getent group mosquitto >/dev/null || chgrp mosquitto "$MOSQ_DIR"
  if [ -z "$tls_cert" ]; then
    [ ${#tls_hosts[@]} -gt 0 ] || tls_hosts=("$(hostname)" "$(hostname).local" localhost)
    [ ${#tls_ips[@]} -gt 0 ] || read -r -a tls_ips <<< "$(hostname -I 2>/dev/null || true) 127.0.0.1"
    args=(--dir "$MOSQ_DIR/tls" --site "community-gateway $(hostname)")
    for h in "${tls_hosts[@]}"; do args+=(--host "$h"); done
    for a in "${tls_ips[@]}"; do args+=(--ip "$a"); done
    [ "$real" = 0 ] || ! getent group mosquitto >/dev/null || args+=(--group mosquitto)
    "$here/mosquitto/make-ca.sh" "${args[@]}"
    tls_cert=$MOSQ_DIR/tls/server.crt tls_key=$MOSQ_DIR/tls/server.key tls_ca=$MOSQ_DIR/tls/ca.crt
  fi
  group=mosquitto; [ "$real" = 1 ] && getent group mosquitto >/dev/null || group=root
  "$rel/venv/bin/python" "$here/mosquitto/mqtt-accounts.py" --config "$ETC/site" \
    --env "$env_file" --out "$MOSQ_DIR" --group "$group" >&2
  svc enable --quiet mosquitto
  # listeners change only with a restart; accounts and ACLs are re-read on SIGHUP (reload)
  if render "$here/mosquitto/community-gateway.conf" "$MOSQ_CONF/community-gateway.conf"; then
    svc restart mosquitto
  else
    svc reload-or-restart mosquitto
  fi
fi

# ---------------------------------------------------------------------------- switch
old=$(readlink "$APP/current" 2>/dev/null || true)
restart=0
[ -z "$site_in" ] || restart=1
if [ "$old" != "releases/$release_id" ]; then
  restart=1
  if [ -n "$old" ] && [ -f "$DATA/gateway.db" ]; then
    say "backing up the store before switching from $old"
    "$rel/venv/bin/gateway" backup --data "$DATA" --config "$ETC/site" --extra "$env_file" \
      --out-dir "$BACKUPS" --keep 20 >&2
    [ "$real" = 0 ] || chown -R gateway:gateway "$BACKUPS"
  fi
  ln -sfn "releases/$release_id" "$APP/current.new" && mv -T "$APP/current.new" "$APP/current"
  if [ -n "$old" ]; then
    ln -sfn "$old" "$APP/previous.new" && mv -T "$APP/previous.new" "$APP/previous"
  fi
  say "current release: $release_id${old:+ (previous: ${old#releases/})}"
fi
ln -sfn "$APP/current/venv/bin/gateway" "$BIN/gateway"

# keep current, previous and the newest $keep others
keepers=("$(readlink "$APP/current")" "$(readlink "$APP/previous" 2>/dev/null || true)")
n=0
for d in $(ls -1t "$APP/releases"); do
  case " ${keepers[*]} " in *" releases/$d "*) continue ;; esac
  n=$((n + 1))
  if [ "$n" -gt "$keep" ]; then rm -rf "${APP:?}/releases/$d"; say "removed old release $d"; fi
done

# ---------------------------------------------------------------------------- units
changed=0
for u in community-gateway.service community-gateway-backup.service community-gateway-backup.timer \
         community-gateway-accounts.service community-gateway-accounts.path; do
  render "$here/systemd/$u" "$UNITS/$u" && changed=1 restart=1
done
render "$here/journald/community-gateway.conf" "$JOURNALD/community-gateway.conf" \
  && [ "$real" = 1 ] && [ "$systemd" = 1 ] && systemctl restart systemd-journald || true
if [ "$systemd" = 1 ] && [ "$real" = 1 ]; then
  [ "$changed" = 0 ] || systemctl daemon-reload
  systemctl enable --quiet community-gateway.service community-gateway-backup.timer
  [ "$broker" = 0 ] || systemctl enable --quiet --now community-gateway-accounts.path
  # only what changed is restarted: a re-run on an installed box leaves the service alone
  if [ "$restart" = 1 ]; then systemctl restart community-gateway.service
  else systemctl start community-gateway.service; fi
  systemctl start community-gateway-backup.timer
  say "started; status: systemctl status community-gateway; logs: journalctl -u community-gateway"
fi
say "done: $APP/current -> $(readlink "$APP/current")"
