#!/usr/bin/env bash
# Builds the local test images from Debian packages, without any registry:
#   capd-rs-test/node:local     behaves like a kind node where the provider looks
#   capd-rs-test/haproxy:local  Debian's haproxy, laid out like kindest/haproxy
#
# Each recipe is a folder under hack/images/<name>/: `packages` (Debian packages to unpack),
# `rootfs/` (files laid over them) and `changes` (Dockerfile instructions for `docker import`).
# The root filesystem is assembled with `apt-get download` + `dpkg -x` and imported; the image
# carries a label with the recipe's hash and is rebuilt only when the recipe changes.
# Needs a running Docker engine (hack/docker-engine.sh) and apt (Debian or Ubuntu).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipes="$here/images"
readonly HASH_LABEL=dev.capd-rs.recipe-hash

# The hash of a recipe folder and of this script, which together decide the image's content.
recipe_hash() {
  (cd "$recipes/$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    stat -c '%a %n' $(find . -type f | LC_ALL=C sort)
    sha256sum <"$here/images.sh") | sha256sum | cut -c1-16
}

# Prints the Debian packages a recipe needs: its list plus their library dependencies, recursively.
# Only lib* packages are followed: the images need shared libraries, not maintainer-script tooling.
package_closure() {
  local listed
  listed=$(grep -v '^#' "$recipes/$1/packages")
  {
    echo "$listed"
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances $listed | { grep '^lib' || true; } | { grep -v '^libelogind' || true; }
  } | sort -u
}

build_image() {
  local name=$1 ref="capd-rs-test/$1:local" hash
  hash=$(recipe_hash "$name")
  if [[ $(docker image inspect -f "{{index .Config.Labels \"$HASH_LABEL\"}}" "$ref" 2>/dev/null) == "$hash" ]]; then
    log "$ref is up to date (recipe $hash)"
    return
  fi
  log "building $ref from Debian packages (recipe $hash)"
  local work
  work=$(mktemp -d)
  trap "rm -rf '$work'" RETURN
  mkdir -p "$work/debs" "$work/rootfs"
  local packages
  packages=$(package_closure "$name") || die "cannot resolve the packages of $name: is apt's package list current (apt-get update)?"
  (cd "$work/debs" && apt-get download -qq $packages >"$work/download.log" 2>&1) \
    || die "apt-get download failed for $name:
$(tail -5 "$work/download.log")
Run apt-get update, and check that Debian's package mirror is reachable."
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/rootfs"; done
  cp -a "$recipes/$name/rootfs/." "$work/rootfs/"
  # busybox provides sh and the core utilities; link every applet that nothing else provides.
  local bb="$work/rootfs/bin/busybox"
  [[ -x "$bb" ]] || die "busybox-static did not unpack to /bin/busybox; the image would have no shell"
  local applets
  applets=$("$bb" --list-full) || die "cannot list busybox's applets"
  for applet in $applets; do
    [[ -e "$work/rootfs/$applet" || -L "$work/rootfs/$applet" ]] || {
      mkdir -p "$(dirname "$work/rootfs/$applet")"
      ln -s /bin/busybox "$work/rootfs/$applet"
    }
  done
  rm -rf "$work/rootfs/usr/share/doc" "$work/rootfs/usr/share/man" "$work/rootfs/usr/share/locale"
  mkdir -p "$work/rootfs"/{tmp,run,var/lib,root,proc,sys,dev}
  chmod 1777 "$work/rootfs/tmp"
  local changes=(--change "LABEL $HASH_LABEL=$hash")
  while IFS= read -r line; do
    [[ -n "$line" ]] && changes+=(--change "$line")
  done <"$recipes/$name/changes"
  tar -C "$work/rootfs" -c . | docker import "${changes[@]}" - "$ref" >/dev/null \
    || die "docker import of $ref failed"
  log "built $ref ($(docker image inspect -f '{{.Size}}' "$ref" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# A quick check that each image works, so a broken recipe fails here and not in a test.
check_images() {
  docker run --rm --entrypoint /usr/sbin/haproxy capd-rs-test/haproxy:local -c -f /usr/local/etc/haproxy/haproxy.cfg >/dev/null \
    || die "capd-rs-test/haproxy:local cannot run haproxy (missing shared library?)"
  docker run --rm capd-rs-test/node:local sh -c 'crictl ps >/dev/null' \
    || die "capd-rs-test/node:local cannot run crictl"
}

for name in node haproxy; do build_image "$name"; done
check_images
