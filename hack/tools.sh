#!/usr/bin/env bash
# Provides the real Cluster API and cert-manager programs that tests run as processes:
#
#   hack/tools.sh [all|clusterctl|capi|cert-manager]...      (default: all)
#
# Prints one directory per selected tool on stdout, one a line, in the order asked (`all` is
# clusterctl, capi, cert-manager); progress goes to stderr.
#   1. CAPD_RS_TOOLS, when set, is used as it is: one directory holding every selected tool in the
#      layout below (as KUBEBUILDER_ASSETS stands in for hack/control-plane.sh's build).
#   2. Otherwise each tool is built once from the Go module proxy and cached under
#      ${CAPD_RS_CACHE:-~/.cache/capd-rs}/tools/<name>-<version>-r<recipe>/.
#
# Layout of a tool's directory (the union of all three is what CAPD_RS_TOOLS must hold):
#   clusterctl     clusterctl                                  (sigs.k8s.io/cluster-api/cmd/clusterctl)
#   capi           capi-core-manager                           (sigs.k8s.io/cluster-api/core)
#                  capi-kubeadm-bootstrap-manager              (.../bootstrap/kubeadm)
#                  capi-kubeadm-control-plane-manager          (.../controlplane/kubeadm)
#                  cluster-api/{core,bootstrap/kubeadm,controlplane/kubeadm}/config/  (as in the module:
#                      crd/bases/*.yaml, crd/kustomization.yaml (its labels), webhook/manifests.yaml)
#                  cluster-api/release/  Cluster API's release assets, as its `make release-manifests`
#                      builds them (kustomize of each config/default): core-components.yaml,
#                      bootstrap-components.yaml, control-plane-components.yaml, metadata.yaml
#   cert-manager   cert-manager-controller, cert-manager-cainjector
#                  cert-manager/crds/*.yaml                    (deploy/crds/ without Helm lines)
#
# Why wrapper modules: sigs.k8s.io/cluster-api's go.mod replaces its nested .../api module with a
# local path, so `go install ...@version` refuses it; a wrapper module requiring both at the same
# version builds it. cert-manager v1.11.x is the last release whose cmd/controller and
# cmd/cainjector are in the root module; its go.mod has one replace (miekg/dns), which a wrapper
# repeats (replaces only apply in the main module). The CAPI programs are built one after the
# other in one wrapper module, so their shared packages compile once (Go's build cache).
# Each cache directory is filled atomically (built in a temporary directory, then renamed) under a
# lock, so a failed, interrupted or concurrent run never leaves something taken for a good cache.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${CAPI_VERSION:=v1.14.2}"
# Newer cert-manager releases moved cmd/* into their own modules: this recipe builds v1.11.x only.
: "${CERT_MANAGER_VERSION:=v1.11.5}"
# Bump when a build below changes what it produces, so stale caches are rebuilt.
readonly BUILD_RECIPE=2
readonly CAPI_COMPONENTS=(core bootstrap/kubeadm controlplane/kubeadm)

# The files that make a tool's directory complete.
tool_files() {
  case $1 in
  clusterctl) echo clusterctl ;;
  capi)
    echo capi-core-manager capi-kubeadm-bootstrap-manager capi-kubeadm-control-plane-manager
    for c in "${CAPI_COMPONENTS[@]}"; do
      echo "cluster-api/$c/config/crd/bases" "cluster-api/$c/config/crd/kustomization.yaml"
      echo "cluster-api/$c/config/webhook/manifests.yaml"
    done
    echo cluster-api/release/{core,bootstrap,control-plane}-components.yaml cluster-api/release/metadata.yaml
    ;;
  cert-manager) echo cert-manager-controller cert-manager-cainjector cert-manager/crds ;;
  esac
}

tool_version() {
  case $1 in
  clusterctl | capi) echo "$CAPI_VERSION" ;;
  cert-manager) echo "$CERT_MANAGER_VERSION" ;;
  esac
}

has_tool() {
  local dir=$1 file
  for file in $(tool_files "$2"); do
    [[ -e "$dir/$file" ]] || return 1
  done
}

args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(all)
selected=()
for arg in "${args[@]}"; do
  case $arg in
  all) tools=(clusterctl capi cert-manager) ;;
  clusterctl | capi | cert-manager) tools=("$arg") ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 0
    ;;
  *) die "unknown tool '$arg': expected all, clusterctl, capi or cert-manager" ;;
  esac
  for tool in "${tools[@]}"; do
    [[ " ${selected[*]} " == *" $tool "* ]] || selected+=("$tool")
  done
done

if [[ -n "${CAPD_RS_TOOLS:-}" ]]; then
  for tool in "${selected[@]}"; do
    for file in $(tool_files "$tool"); do
      [[ -e "$CAPD_RS_TOOLS/$file" ]] || die "CAPD_RS_TOOLS=$CAPD_RS_TOOLS has no $file (wanted for $tool); see hack/tools.sh for the layout"
    done
    echo "$CAPD_RS_TOOLS"
  done
  exit 0
fi

tools_root="$CAPD_RS_CACHE/tools"
mkdir -p "$tools_root"
works=()
trap 'rm -rf "${works[@]}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tool_dir() { echo "$tools_root/$1-$(tool_version "$1")-r$BUILD_RECIPE"; }

proxy_hint() {
  echo "Check that the Go module proxy (GOPROXY=$(go env GOPROXY)) is reachable, or set CAPD_RS_TOOLS
to a directory holding the tools (layout: hack/tools.sh --help)."
}

# A field of `go mod download -json` output (the first one of that name).
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" <<<"$2" | sed -n 1p; }

# Downloads module $1 at $2 and prints `go mod download -json`'s answer.
download() {
  local answer
  answer=$(go mod download -json "$1@$2" 2>&1) || die "cannot download $1@$2: $answer
$(proxy_hint)"
  echo "$answer"
}

# Fails when this Go is older than the one go.mod $1 asks for.
check_go() {
  local needed have
  needed=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$1" | sed -n 1p)
  have=$(go env GOVERSION | sed 's/^go//; s/[^0-9.].*//')
  if [[ -n "$needed" ]] && [[ $(printf '%s\n%s\n' "$needed" "$have" | sort -V | sed -n 1p) != "$needed" ]]; then
    die "$2 needs Go $needed or newer to build; this machine has Go $have.
Install a newer Go (https://go.dev/dl/) or set CAPD_RS_TOOLS to a directory holding the tools."
  fi
}

# The `go` directive for a wrapper module: this Go's language version.
go_directive() { go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/'; }

# A new temporary directory for building $1, removed when this script exits.
new_work_dir() {
  work=$(mktemp -d "$tools_root/.build-$1-XXXXXX")
  works+=("$work")
}

# Writes a wrapper module into directory $1 and resolves its module graph. $2: its name; stdin:
# the rest of its go.mod; then the packages it builds (in tools.go, so `go mod tidy` keeps them).
wrapper_module() {
  local dir=$1 name=$2 pkg
  shift 2
  {
    printf 'module capd-rs/tools/%s\n\ngo %s\n\n' "$name" "$(go_directive)"
    cat
  } >"$dir/go.mod"
  {
    printf '//go:build tools\n\n// Package tools pins the programs this module builds.\npackage tools\n\nimport (\n'
    for pkg in "$@"; do printf '\t_ "%s"\n' "$pkg"; done
    printf ')\n'
  } >"$dir/tools.go"
  (cd "$dir" && go mod tidy >tidy.log 2>&1) || die "resolving the module graph of $name failed (log: tail below)
$(tail -20 "$dir/tidy.log")
$(proxy_hint)"
}

# Builds package $3 of module directory $1 into $1/out/$2 with ldflags $4.
go_build() {
  local started=$SECONDS
  (cd "$1" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $4" -o "out/$2" "$3" >build.log 2>&1) \
    || die "building $3 failed (log: tail below)
$(tail -20 "$1/build.log")"
  log "  built $2 in $((SECONDS - started))s"
}

# Copies $1 (in the read-only module cache) to $2, writable so the cache can be removed later.
copy_from_module() {
  mkdir -p "$(dirname "$2")"
  cp -R "$1" "$2"
  chmod -R u+w "$2"
}

# The wrapper module of Cluster API, shared by clusterctl and the managers within one run.
capi_module=""
capi_ldflags=""
capi_dir=""
prepare_capi() {
  [[ -z "$capi_module" ]] || return 0
  local answer gomod info_file commit date minor
  answer=$(download sigs.k8s.io/cluster-api "$CAPI_VERSION")
  gomod=$(json_field GoMod "$answer")
  capi_dir=$(json_field Dir "$answer")
  [[ -f "$gomod" && -d "$capi_dir" ]] || die "no go.mod for sigs.k8s.io/cluster-api@$CAPI_VERSION in: $answer"
  check_go "$gomod" "Cluster API $CAPI_VERSION"
  new_work_dir cluster-api
  capi_module=$work
  printf 'require (\n\tsigs.k8s.io/cluster-api %s\n\tsigs.k8s.io/cluster-api/api %s\n)\n' \
    "$CAPI_VERSION" "$CAPI_VERSION" | wrapper_module "$capi_module" cluster-api \
    sigs.k8s.io/cluster-api/cmd/clusterctl sigs.k8s.io/cluster-api/core \
    sigs.k8s.io/cluster-api/bootstrap/kubeadm sigs.k8s.io/cluster-api/controlplane/kubeadm
  # The version stamps CAPI's own release build sets (hack/version.sh), so clusterctl knows which
  # release it is (it picks provider versions and contracts by it) and the managers report it.
  commit=$(json_field Hash "$answer")
  info_file=$(json_field Info "$answer")
  date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info_file" 2>/dev/null || true)
  minor=${CAPI_VERSION#v*.}
  minor=${minor%%.*}
  local v=sigs.k8s.io/cluster-api/version
  capi_ldflags="-X $v.gitVersion=$CAPI_VERSION -X $v.gitMajor=${CAPI_VERSION:1:1} -X $v.gitMinor=$minor"
  capi_ldflags+=" -X $v.gitTreeState=clean -X $v.gitCommit=$commit -X $v.buildDate=$date"
}

# Moves a finished build into the cache and prints its directory.
install_tool() {
  local out=$1 tool=$2 dest
  dest=$(tool_dir "$tool")
  has_tool "$out" "$tool" || die "the build of $tool is incomplete; expected: $(tool_files "$tool")"
  rm -rf "$dest"
  mv -T "$out" "$dest"
  log "cached $tool $(tool_version "$tool") in $dest"
}

build_clusterctl() {
  prepare_capi
  local out="$capi_module/out-clusterctl"
  go_build "$capi_module" clusterctl sigs.k8s.io/cluster-api/cmd/clusterctl "$capi_ldflags"
  mkdir -p "$out"
  mv "$capi_module/out/clusterctl" "$out/"
  # No update check: it would ask GitHub, which these machines cannot reach.
  log "  clusterctl version: $(CLUSTERCTL_DISABLE_VERSIONCHECK=true "$out/clusterctl" version -o short 2>&1)"
  install_tool "$out" clusterctl
}

build_capi() {
  prepare_capi
  local out="$capi_module/out-capi" c
  go_build "$capi_module" capi-core-manager sigs.k8s.io/cluster-api/core "$capi_ldflags"
  go_build "$capi_module" capi-kubeadm-bootstrap-manager sigs.k8s.io/cluster-api/bootstrap/kubeadm "$capi_ldflags"
  go_build "$capi_module" capi-kubeadm-control-plane-manager sigs.k8s.io/cluster-api/controlplane/kubeadm "$capi_ldflags"
  mkdir -p "$out"
  mv "$capi_module"/out/capi-* "$out/"
  for c in "${CAPI_COMPONENTS[@]}"; do
    copy_from_module "$capi_dir/$c/config/crd/bases" "$out/cluster-api/$c/config/crd/bases"
    copy_from_module "$capi_dir/$c/config/crd/kustomization.yaml" "$out/cluster-api/$c/config/crd/kustomization.yaml"
    copy_from_module "$capi_dir/$c/config/webhook/manifests.yaml" "$out/cluster-api/$c/config/webhook/manifests.yaml"
  done
  # The release assets clusterctl installs from (CAPI's `make release-manifests`).
  local release="$out/cluster-api/release"
  mkdir -p "$release"
  kubectl kustomize "$capi_dir/core/config/default" >"$release/core-components.yaml"
  kubectl kustomize "$capi_dir/bootstrap/kubeadm/config/default" >"$release/bootstrap-components.yaml"
  kubectl kustomize "$capi_dir/controlplane/kubeadm/config/default" >"$release/control-plane-components.yaml"
  cp "$capi_dir/metadata.yaml" "$release/metadata.yaml"
  install_tool "$out" capi
}

build_cert_manager() {
  local answer gomod dir module out commit
  answer=$(download github.com/cert-manager/cert-manager "$CERT_MANAGER_VERSION")
  gomod=$(json_field GoMod "$answer")
  dir=$(json_field Dir "$answer")
  [[ -f "$gomod" && -d "$dir/cmd/controller" && -d "$dir/cmd/cainjector" ]] \
    || die "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION has no cmd/controller and cmd/cainjector in its root module (only v1.11.x and older do)"
  check_go "$gomod" "cert-manager $CERT_MANAGER_VERSION"
  # Its go.mod's replace directives that point at other modules (not local paths), one a line.
  new_work_dir cert-manager
  module=$work
  {
    printf 'require github.com/cert-manager/cert-manager %s\n\n' "$CERT_MANAGER_VERSION"
    awk '/^replace \($/ {block=1; next} block && /^\)$/ {block=0; next}
         /^replace / {sub(/^replace /, ""); if ($3 !~ /^[.\/]/) print "replace " $0; next}
         block && $3 !~ /^[.\/]/ && NF {sub(/^[ \t]+/, ""); print "replace " $0}' "$gomod"
  } | wrapper_module "$module" cert-manager github.com/cert-manager/cert-manager/cmd/controller \
    github.com/cert-manager/cert-manager/cmd/cainjector
  commit=$(json_field Hash "$answer")
  local u=github.com/cert-manager/cert-manager/pkg/util
  local ldflags="-X $u.AppVersion=$CERT_MANAGER_VERSION -X $u.AppGitCommit=$commit"
  go_build "$module" cert-manager-controller github.com/cert-manager/cert-manager/cmd/controller "$ldflags"
  go_build "$module" cert-manager-cainjector github.com/cert-manager/cert-manager/cmd/cainjector "$ldflags"
  out="$module/out"
  mkdir -p "$out/cert-manager/crds"
  # The CRDs are Helm templates only in their labels: drop those lines (and `labels:` if empty).
  for crd in "$dir"/deploy/crds/crd-*.yaml; do
    awk '/\{\{/ {next}
         pending {if ($0 ~ /^    /) print pending; pending=""}
         /^  labels:$/ {pending=$0; next}
         {print}' "$crd" >"$out/cert-manager/crds/${crd##*/}"
  done
  install_tool "$out" cert-manager
}

for tool in "${selected[@]}"; do
  dest=$(tool_dir "$tool")
  if ! has_tool "$dest" "$tool"; then
    # One build per tool at a time; a run that waited here finds the other's result.
    exec {lock}>"$tools_root/.lock-$tool"
    flock "$lock"
    if ! has_tool "$dest" "$tool"; then
      command -v go >/dev/null || die "Go is not installed, so $tool cannot be built.
Install Go (https://go.dev/doc/install) or set CAPD_RS_TOOLS to a directory holding the tools
(layout: hack/tools.sh --help)."
      started=$SECONDS
      log "building $tool $(tool_version "$tool") from the Go module proxy (once; cached in $dest)"
      "build_${tool//-/_}"
      log "$tool ready in $((SECONDS - started))s"
    fi
    exec {lock}>&-
  fi
  echo "$dest"
done
