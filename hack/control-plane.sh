#!/usr/bin/env bash
# Provides kube-apiserver and etcd binaries for tests and for the local main job.
#
# Prints the directory holding both binaries (the envtest layout) on stdout; progress goes to stderr.
#   1. KUBEBUILDER_ASSETS, when set, is used as it is (users with envtest binaries keep theirs).
#   2. Otherwise both are built once from the Go module proxy and cached under
#      ${CAPD_RS_CACHE:-~/.cache/capd-rs}/control-plane/<version>/, keyed by the Kubernetes version.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the k8s.io/* staging modules
# with local paths. A wrapper module requires it and pins every staging module to the matching
# v0.x release; etcd is built from the same module graph, at the version Kubernetes itself uses.
# The cache is filled atomically (build in a temp dir, then rename), so a failed or interrupted
# build never leaves something a later run takes for a good cache.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for bin in kube-apiserver etcd; do
    [[ -x "$KUBEBUILDER_ASSETS/$bin" ]] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $bin"
  done
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

# Bump when the build below changes what it produces, so stale caches are rebuilt.
readonly BUILD_RECIPE=2
dest="$CAPD_RS_CACHE/control-plane/$KUBERNETES_VERSION-r$BUILD_RECIPE"
if [[ -x "$dest/kube-apiserver" && -x "$dest/etcd" ]]; then
  echo "$dest"
  exit 0
fi

command -v go >/dev/null || die "Go is not installed, so kube-apiserver and etcd cannot be built.
Install Go (https://go.dev/doc/install) or set KUBEBUILDER_ASSETS to a directory holding
kube-apiserver and etcd (for example from: setup-envtest use $KUBERNETES_VERSION -p path)."

log "building kube-apiserver and etcd $KUBERNETES_VERSION from the Go module proxy (once; cached in $dest)"
mkdir -p "$CAPD_RS_CACHE/control-plane"
work=$(mktemp -d "$CAPD_RS_CACHE/control-plane/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT

proxy_hint="Check that the Go module proxy (GOPROXY=$(go env GOPROXY)) is reachable, or set
KUBEBUILDER_ASSETS to a directory holding kube-apiserver and etcd."

kube_mod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" 2>&1) \
  || die "cannot download k8s.io/kubernetes@$KUBERNETES_VERSION: $kube_mod
$proxy_hint"
gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$kube_mod")
[[ -f "$gomod" ]] || die "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION in: $kube_mod"

# Kubernetes' go.mod names the Go release it needs; an older Go fails late with a misleading error.
needed_go=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" | sed -n 1p)
have_go=$(go env GOVERSION | sed 's/^go//; s/[^0-9.].*//')
if [[ -n "$needed_go" ]] && [[ $(printf '%s\n%s\n' "$needed_go" "$have_go" | sort -V | sed -n 1p) != "$needed_go" ]]; then
  die "Kubernetes $KUBERNETES_VERSION needs Go $needed_go or newer to build; this machine has Go $have_go.
Install a newer Go (https://go.dev/dl/) or set KUBEBUILDER_ASSETS to a directory holding kube-apiserver and etcd."
fi

staging_version="v0.${KUBERNETES_VERSION#v1.}"
{
  echo "module capd-rs/control-plane"
  echo
  echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')"
  echo
  echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
  echo
  echo "replace ("
  sed -n "s#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 $staging_version#p" "$gomod"
  echo ")"
} >"$work/go.mod"
cat >"$work/tools.go" <<'GO'
//go:build tools

// Package tools pins the binaries this module builds.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
GO

(
  cd "$work"
  go mod tidy >"$work/tidy.log" 2>&1 || die "resolving the module graph failed (log: tail below)
$(tail -20 "$work/tidy.log")
$proxy_hint"
  mkdir -p out
  # Stamp the version the apiserver reports (/version); a plain module build says v0.0.0-master.
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  stamp="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
  stamp+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  stamp+=" -X k8s.io/component-base/version.gitTreeState=clean"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $stamp" -o out/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
    || die "building kube-apiserver failed"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3 \
    || die "building etcd failed"
  ./out/kube-apiserver --version >&2
  ./out/etcd --version | sed -n 1p >&2
)

rm -rf "$dest"
mv "$work/out" "$dest"
log "cached kube-apiserver and etcd in $dest"
echo "$dest"
