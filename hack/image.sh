#!/usr/bin/env bash
# Builds the manager image without any registry: the static release manager built on this
# machine (hack/static-manager.sh: x86_64-unknown-linux-musl, stripped, cached and incremental),
# in a `FROM scratch` image with nothing but /manager, run as UID:GID 65532:65532 (the
# Dockerfile's "prebuilt" target).
#
#   hack/image.sh [IMAGE]        IMAGE defaults to capd-rs-manager:dev
#
# Prints the image name on stdout (progress goes to stderr). Installs what it needs when missing,
# saying so: the Rust target and musl-gcc (hack/static-manager.sh), a Docker engine
# (hack/docker-engine.sh).
#
# Settings: RUN_AS (the image's UID:GID, default 65532:65532), BASE_IMAGE (default scratch; any
# other base must already be in the local engine: nothing is pulled).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
cd "$here/.."

image="${1:-capd-rs-manager:dev}"
: "${RUN_AS:=65532:65532}"
: "${BASE_IMAGE:=scratch}"
started=$(date +%s)

bash "$here/static-manager.sh" >/dev/null
bash "$here/docker-engine.sh"

# The legacy builder when buildx is absent (Debian's docker.io has none; the CLI would refuse
# BuildKit then). The Dockerfile works with both.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
log "building $image (Dockerfile target prebuilt, base $BASE_IMAGE, user $RUN_AS)"
docker build --target prebuilt \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "RUN_AS=$RUN_AS" \
  -t "$image" . >"$CAPD_RS_CACHE/image-build.log" 2>&1 \
  || die "docker build failed (log: $CAPD_RS_CACHE/image-build.log):
$(tail -15 "$CAPD_RS_CACHE/image-build.log")"
log "built $image ($(($(docker image inspect -f '{{.Size}}' "$image") / 1000)) kB) in $(($(date +%s) - started))s"
echo "$image"
