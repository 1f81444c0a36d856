#!/usr/bin/env bash
# Prepares this machine for capd-rs's tests and local runs; safe to run again (it reuses caches):
#   - a Docker engine that answers, and the Docker network "kind"   (hack/docker-engine.sh)
#   - the local test images capd-rs-test/{node,haproxy}:local       (hack/images.sh)
#   - clusterctl, Cluster API's managers and cert-manager            (hack/tools.sh)
#     unless --without-tools is given (hack/run.sh --manager-only does not run them)
#   - kube-apiserver and etcd binaries                               (hack/control-plane.sh)
# Prints the directory of the control-plane binaries on stdout, and nothing else there; the tests
# find the tools' directories themselves (tests/support/setup.rs runs hack/tools.sh, which then
# answers from its cache at once).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"

with_tools=true
for arg in "$@"; do
  case $arg in
  --without-tools) with_tools=false ;;
  *) die "unknown argument '$arg' (expected --without-tools)" ;;
  esac
done

command -v cargo >/dev/null || die "cargo is not installed: install Rust with rustup (https://rustup.rs)."
command -v kubectl >/dev/null || die "kubectl is not installed; the tests and hack/run.sh drive the apiserver with it.
Install it (https://kubernetes.io/docs/tasks/tools/) or, on Debian, apt-get install kubernetes-client."
command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl); hack/run.sh mints its certificates with it."
bash "$here/docker-engine.sh"
bash "$here/images.sh"
if $with_tools; then
  command -v ip >/dev/null || die "ip is not installed (apt-get install iproute2); the tests make network namespaces with it."
  started=$SECONDS
  tools=$(bash "$here/tools.sh" all)
  log "tools ready in $((SECONDS - started))s: ${tools//$'\n'/ }"
fi
bash "$here/control-plane.sh"
