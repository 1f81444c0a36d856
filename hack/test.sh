#!/usr/bin/env bash
# The whole test suite: formatting and lints, unit tests, integration tests against a real
# kube-apiserver + etcd and a real Docker engine, and the CRD drift check.
# Installs and starts what it needs first (hack/setup.sh). Extra arguments go to `cargo test`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source hack/lib.sh

started=$(date +%s)
assets=$(bash hack/setup.sh)
export KUBEBUILDER_ASSETS="$assets"
log "setup done in $(($(date +%s) - started))s"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
log "cargo test"
cargo test --all-targets "$@"
log "all tests passed in $(($(date +%s) - started))s"
