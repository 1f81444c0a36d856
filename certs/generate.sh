#!/usr/bin/env bash
# Makes the webhook certificates for a manager running outside a cluster (hack/run.sh uses it):
# a local CA, made once and kept, and a serving certificate for 127.0.0.1 and localhost signed
# by it, made anew at every run. See certs/README.md.
#
#   certs/generate.sh [--new-ca] [DIR]
#
#   DIR       where the files go (default: $CAPD_RS_CACHE/local/webhook-certs, that is
#             ~/.cache/capd-rs/local/webhook-certs, outside the repository)
#   --new-ca  replace the CA too (webhook configurations that trust the old one must then be
#             registered again with the new ca.crt; hack/run.sh does that at every start)
#
# Writes DIR/ca.crt, DIR/ca.key (the CA), DIR/tls.crt, DIR/tls.key (the serving pair, the names
# the manager's --webhook-cert-name and --webhook-key-name default to) and prints DIR. A running
# manager picks the new pair up within --webhook-cert-reload-interval (10s), without a restart.
set -euo pipefail

new_ca=false
dir=""
for arg in "$@"; do
  case "$arg" in
    --new-ca) new_ca=true ;;
    -h | --help) sed -n '2,16s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "certs/generate.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) [[ -z "$dir" ]] || { echo "certs/generate.sh: one directory only" >&2; exit 2; }; dir="$arg" ;;
  esac
done
if [[ -z "$dir" ]]; then
  dir="${CAPD_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/capd-rs}/local/webhook-certs"
fi
command -v openssl >/dev/null || { echo "certs/generate.sh: openssl is needed (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$dir"
chmod 700 "$dir"
umask 077
work=$(mktemp -d "$dir/.new.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The CA: ten years, only for signing certificates.
if [[ "$new_ca" == true || ! -s "$dir/ca.crt" || ! -s "$dir/ca.key" ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=capd-rs-local-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
  mv "$work/ca.key" "$dir/ca.key"
  mv "$work/ca.crt" "$dir/ca.crt"
fi

# The serving certificate: one year, for the addresses the apiserver calls the webhooks at.
openssl req -newkey rsa:2048 -nodes -subj /CN=capd-rs-webhook \
  -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
cat >"$work/ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EXT
openssl x509 -req -in "$work/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -CAserial "$work/ca.srl" -days 365 -extfile "$work/ext" -out "$work/tls.crt" 2>/dev/null
# Each file is replaced in one rename, the key first: a reload between the two renames sees a
# mismatched pair, which the manager logs and skips, keeping the pair it serves.
mv "$work/tls.key" "$dir/tls.key"
mv "$work/tls.crt" "$dir/tls.crt"
echo "$dir"
