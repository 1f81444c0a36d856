# Shared settings and helpers for the hack/ scripts. Sourced, not run.

# The Kubernetes version of the test and local control plane. Cluster API v1.14 supports it as a
# management cluster, and k8s-openapi is built with the matching feature (Cargo.toml: v1_35).
: "${KUBERNETES_VERSION:=v1.35.4}"
# Where built binaries and image recipes' stamps are cached, outside the repository.
: "${CAPD_RS_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/capd-rs}"
# The Docker network the provider puts clusters on (CAPD's default, shared with kind).
: "${CAPD_DOCKER_NETWORK:=kind}"
export KUBERNETES_VERSION CAPD_RS_CACHE CAPD_DOCKER_NETWORK
mkdir -p "$CAPD_RS_CACHE"

# Prints a progress line on stderr.
log() { echo "[capd-rs] $*" >&2; }

# Prints an error on stderr and exits.
die() {
  echo "[capd-rs] ERROR: $*" >&2
  exit 1
}
