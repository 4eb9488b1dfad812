#!/usr/bin/env bash
# A private certificate authority for one site, and the broker's TLS certificate signed by it.
#   make-ca.sh --dir DIR [--site NAME] [--host NAME]... [--ip ADDR]... [--renew] [--group GRP]
# Writes DIR/ca.key (0600; keep a copy off the box, then you may delete it here), DIR/ca.crt
# (give it to every device that connects over TLS), DIR/server.key (0640, group GRP so the
# broker can read it) and DIR/server.crt. Idempotent: existing files are kept unless --renew
# (which re-issues the server certificate only; the CA stays, so devices need no change).
set -euo pipefail
dir= site=community-gateway renew=0 group=
hosts=() ips=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --site) site=$2; shift 2 ;;
    --host) hosts+=("$2"); shift 2 ;;
    --ip) ips+=("$2"); shift 2 ;;
    --renew) renew=1; shift ;;
    --group) group=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "make-ca.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$dir" ] || { echo "make-ca.sh: --dir is required" >&2; exit 2; }
command -v openssl >/dev/null || { echo "make-ca.sh: openssl is not installed" >&2; exit 1; }
[ ${#hosts[@]} -gt 0 ] || hosts=("$(hostname)" localhost)
[ ${#ips[@]} -gt 0 ] || ips=(127.0.0.1)
mkdir -p "$dir"
umask 077
cd "$dir"

if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
    -days 3650 -keyout ca.key -out ca.crt -subj "/O=${site}/CN=${site} site CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "make-ca.sh: created site CA $dir/ca.crt" >&2
fi

if [ "$renew" = 1 ] || [ ! -s server.key ] || [ ! -s server.crt ]; then
  san=""
  for h in "${hosts[@]}"; do san+="DNS:$h,"; done
  for a in "${ips[@]}"; do san+="IP:$a,"; done
  san=${san%,}
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
    -keyout server.key.new -out server.csr -subj "/O=${site}/CN=${hosts[0]}" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
    "$san" > server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
    -days 825 -extfile server.ext -out server.crt.new 2>/dev/null
  mv server.key.new server.key && mv server.crt.new server.crt
  rm -f server.csr server.ext
  echo "make-ca.sh: issued broker certificate $dir/server.crt for $san" >&2
fi
chmod 0644 ca.crt server.crt
chmod 0600 ca.key
if [ -n "$group" ] && chgrp "$group" server.key 2>/dev/null; then
  chmod 0640 server.key       # the broker reads it as group $group
else
  chmod 0600 server.key
fi
openssl verify -CAfile ca.crt server.crt >/dev/null
