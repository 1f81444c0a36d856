#!/usr/bin/env bash
# Writes a clusterctl release of capd-rs: infrastructure-components.yaml (config/default with
# the release image), metadata.yaml, and every cluster template and ClusterClass of templates/.
#
#   hack/release.sh VERSION IMAGE                         writes out/ (git-ignored)
#   hack/release.sh --local-repository DIR VERSION IMAGE  writes DIR/infrastructure-docker-rs/VERSION/
#                                                         and DIR/clusterctl.yaml, a clusterctl
#                                                         local repository
#   VERSION=... IMAGE=... hack/release.sh [...]           the same, from the environment
#
#   VERSION  the release, v-prefixed semver as clusterctl wants it (v0.1.0, v0.1.1-rc.1); its
#            major.minor must have a release series in metadata.yaml
#   IMAGE    the manager image: REPOSITORY (tagged VERSION), REPOSITORY:TAG or REPOSITORY@DIGEST;
#            written canonical (capd-rs becomes docker.io/library/capd-rs), as clusterctl needs
#   OUT      the output directory without --local-repository (default out/)
#
# Prints the files it wrote, one per line; progress and errors go to standard error.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

log() { echo "[capd-rs] $*" >&2; }
die() {
  echo "[capd-rs] ERROR: $*" >&2
  exit 1
}
usage() {
  sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# The image config/default names (its `images:` entry); the release image replaces it.
dev_image=capd-rs-manager
provider_label=infrastructure-docker-rs

local_repository=""
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --local-repository) [[ $# -ge 2 ]] || usage; local_repository="$2"; shift 2 ;;
    --local-repository=*) local_repository="${1#*=}"; shift ;;
    -h | --help) usage ;;
    -*) log "unknown option $1"; usage ;;
    *) positional+=("$1"); shift ;;
  esac
done
[[ ${#positional[@]} -le 2 ]] || usage
version="${positional[0]:-${VERSION:-}}"
image="${positional[1]:-${IMAGE:-}}"
[[ -n "$version" && -n "$image" ]] || { log "VERSION and IMAGE are needed"; usage; }

# clusterctl reads release versions as semver with a leading v (vMAJOR.MINOR.PATCH, optional
# -prerelease and +build).
ident='[0-9A-Za-z-]+'
semver="^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-$ident(\.$ident)*)?(\+$ident(\.$ident)*)?$"
if [[ ! "$version" =~ $semver ]]; then
  die "VERSION '$version' is not a v-prefixed semantic version: clusterctl wants vMAJOR.MINOR.PATCH, e.g. v0.1.0 or v0.2.0-rc.1"
fi
major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"

# metadata.yaml's release series, as "major minor contract" lines.
series=$(awk '
  function flush() { if (major != "" && minor != "" && contract != "") print major, minor, contract; major = minor = contract = "" }
  /^[[:space:]]*-/ { flush() }
  /^[[:space:]]*-?[[:space:]]*major:/ { sub(/.*major:[[:space:]]*/, ""); major = $1 }
  /^[[:space:]]*-?[[:space:]]*minor:/ { sub(/.*minor:[[:space:]]*/, ""); minor = $1 }
  /^[[:space:]]*-?[[:space:]]*contract:/ { sub(/.*contract:[[:space:]]*/, ""); contract = $1 }
  END { flush() }
' "$root/metadata.yaml")
contract=$(awk -v M="$major" -v m="$minor" '$1 == M && $2 == m { print $3 }' <<<"$series")
if [[ -z "$contract" ]]; then
  known=$(awk '{ printf "%s%s.%s (%s)", sep, $1, $2, $3; sep = ", " }' <<<"$series")
  die "VERSION $version has no release series $major.$minor in metadata.yaml (it lists: ${known:-none}); add one with the Cluster API contract it implements before releasing"
fi

# IMAGE: REPOSITORY@DIGEST, REPOSITORY:TAG (a colon after the last slash) or REPOSITORY.
[[ "$image" =~ ^[^[:space:]]+$ ]] || die "IMAGE '$image' is not an image reference"
if [[ "$image" == *@* ]]; then
  image_name="${image%%@*}" image_field="digest: ${image#*@}"
elif [[ "${image##*/}" == *:* ]]; then
  image_name="${image%:*}" image_field="newTag: ${image##*:}"
else
  # An image tag cannot hold semver's "+" (build metadata): "_" stands for it, as in kind's tags.
  image_name="$image" image_field="newTag: ${version//+/_}" image="$image:${version//+/_}"
fi
# clusterctl refuses image names that are not canonical ("repository name must be canonical"):
# write them as Docker normalizes them (docker.io, and library/ for an official-style name).
first="${image_name%%/*}"
if [[ "$image_name" != */* ]]; then
  canonical="docker.io/library/$image_name"
elif [[ "$first" == *.* || "$first" == *:* || "$first" == localhost ]]; then
  canonical="$image_name"
else
  canonical="docker.io/$image_name"
fi
if [[ "$canonical" != "$image_name" ]]; then
  log "IMAGE $image_name is written as $canonical: clusterctl needs canonical image names"
  image="$canonical${image#"$image_name"}" image_name="$canonical"
fi

if [[ -n "$local_repository" ]]; then
  mkdir -p "$local_repository"
  local_repository="$(cd "$local_repository" && pwd)"
  out="$local_repository/$provider_label/$version"
else
  out="${OUT:-$root/out}"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"

command -v kubectl >/dev/null || die "kubectl is needed (its built-in kustomize builds config/default)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# An overlay of config/default that sets the image (kustomize takes other kustomizations by
# relative path only).
cat >"$work/kustomization.yaml" <<YAML
resources:
- $(realpath --relative-to="$work" "$root/config/default")
images:
- name: $dev_image
  newName: $image_name
  $image_field
YAML
kubectl kustomize "$work" >"$work/infrastructure-components.yaml" ||
  die "kubectl kustomize config/default failed (see above)"
grep -qF "image: $image" "$work/infrastructure-components.yaml" ||
  die "the manager image was not set to $image: config/default no longer names the image $dev_image (update dev_image in hack/release.sh)"

# Stale files of an earlier run in the same directory go first.
rm -f "$out"/infrastructure-components.yaml "$out"/metadata.yaml "$out"/cluster-template*.yaml "$out"/clusterclass-*.yaml
cp "$work/infrastructure-components.yaml" "$out/"
cp "$root/metadata.yaml" "$out/"
cp "$root"/templates/cluster-template*.yaml "$root"/templates/clusterclass-*.yaml "$out/"

log "release $version (series $major.$minor, contract $contract), image $image, in $out"
for file in "$out"/*.yaml; do echo "$file"; done

if [[ -n "$local_repository" ]]; then
  entry="providers:
- name: docker-rs
  type: InfrastructureProvider
  url: $out/infrastructure-components.yaml"
  config="$local_repository/clusterctl.yaml"
  header="# clusterctl configuration for the local repository $local_repository (hack/release.sh)."
  if [[ ! -e "$config" ]] || [[ $(head -n1 "$config") == *"(hack/release.sh)"* ]]; then
    printf '%s\n%s\n' "$header" "$entry" >"$config"
    echo "$config"
    log "use it with: clusterctl init --config $config --infrastructure docker-rs"
  else
    log "$config exists and is not hack/release.sh's: add this provider entry to it:"
    printf '%s\n' "$entry" >&2
  fi
fi
