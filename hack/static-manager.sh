#!/usr/bin/env bash
# Builds the static (x86_64-unknown-linux-musl) release manager with symbols stripped, and puts
# it at .image/manager, where the Dockerfile's "prebuilt" target and the Tiltfile take it.
# Prints that path on stdout (progress goes to stderr).
#
# Installs what it needs when missing, saying so: the Rust target x86_64-unknown-linux-musl
# (rustup) and a musl C compiler for the ring crate (Debian's musl-tools, with apt). The cargo
# target directory is cached outside the repository, in $CAPD_RS_CACHE/target-musl, so later
# builds are incremental.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
cd "$here/.."

readonly target=x86_64-unknown-linux-musl

[[ $(uname -m) == x86_64 ]] || die "this script builds for $target and runs on x86_64 only (this is $(uname -m)).
Build the image from source instead: docker build --build-arg RUST_TARGET=<arch>-unknown-linux-musl ."
command -v cargo >/dev/null || die "cargo is not installed: install Rust with rustup (https://rustup.rs)."

# The Rust standard library for musl.
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  command -v rustup >/dev/null || die "the Rust target $target is missing and rustup is not installed to add it.
Install the $target standard library for your toolchain, or use rustup (https://rustup.rs)."
  log "adding the Rust target $target (rustup target add $target)"
  rustup target add "$target" >&2 || die "rustup target add $target failed; see above."
fi

# ring compiles C and assembly: it needs a C compiler for musl.
if ! command -v musl-gcc >/dev/null; then
  command -v apt-get >/dev/null || die "musl-gcc (a C compiler for musl, needed by the ring crate) is missing and apt-get is not available.
Install your distribution's musl tools (Debian/Ubuntu: musl-tools, Fedora: musl-gcc, Alpine: musl-dev) and try again."
  [[ $(id -u) == 0 ]] || die "musl-gcc (needed by the ring crate) is missing; installing Debian's musl-tools needs root.
Run: sudo apt-get install musl-tools"
  log "installing Debian's musl-tools (musl-gcc, needed to compile the ring crate for $target)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq musl-tools || { apt-get update -qq && apt-get install -y -qq musl-tools; }; } \
    >"$CAPD_RS_CACHE/apt-musl.log" 2>&1 \
    || die "apt-get install musl-tools failed (log: $CAPD_RS_CACHE/apt-musl.log):
$(tail -5 "$CAPD_RS_CACHE/apt-musl.log")
Install musl-tools by hand and try again."
fi

# Run from `cargo test` (tests/image), this script inherits the variables cargo sets for the
# test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Build scripts (ring's) record some of them, so a
# value that differs from the previous build's would rebuild everything: drop them.
for var in $(compgen -v | grep -E '^CARGO_(MANIFEST_|PKG_|CRATE_NAME|BIN_|TARGET_TMPDIR|PRIMARY_PACKAGE|RUSTC_CURRENT_DIR)' || true); do
  unset "$var"
done

# Symbols stripped by cargo: the same profile as the Dockerfile's from-source build.
target_dir="$CAPD_RS_CACHE/target-musl"
log "building the static release manager ($target, cargo target directory $target_dir)"
started=$(date +%s)
CARGO_TARGET_DIR="$target_dir" \
  CARGO_PROFILE_RELEASE_STRIP=symbols \
  CC_x86_64_unknown_linux_musl=musl-gcc \
  cargo build --release --locked --target "$target" --bin manager >&2 \
  || die "cargo build of the static manager failed; see above."

mkdir -p .image
# Replaced only when it changed: Docker and Tilt see a new file only when there is one.
cmp -s "$target_dir/$target/release/manager" .image/manager \
  || cp "$target_dir/$target/release/manager" .image/manager
log "static manager built in $(($(date +%s) - started))s: .image/manager, $(($(stat -c %s .image/manager) / 1000)) kB"
echo "$PWD/.image/manager"
