# The capd-rs manager image: one static binary at /manager, run as a non-root UID.
#
# Two ways to build it, as Cluster API's own Dockerfile takes its builder image as an argument:
#
#   From source (needs a registry for the builder image; BuildKit or the legacy builder):
#     docker build -t capd-rs/manager:dev .
#     docker build --build-arg BUILDER_IMAGE=<rust image> --build-arg BASE_IMAGE=<base> ...
#
#   From a static binary built on the host (no registry at all; what hack/image.sh does):
#     docker build --target prebuilt -t capd-rs/manager:dev .
#   with the stripped x86_64-unknown-linux-musl release manager at .image/manager.
#
# The "prebuilt" stage comes first on purpose: the legacy builder builds every stage up to the
# target in order, so `--target prebuilt` never reaches the builder stage (whose image cannot be
# pulled without a registry). The price: the legacy builder building from source also runs the
# prebuilt stage first and needs .image/manager to exist (`hack/image.sh` makes it); BuildKit
# skips stages the target does not use.
#
# No `# syntax=` line and no `RUN --mount`: both need BuildKit (the syntax line would even pull a
# frontend image). Dependencies are cached in a layer of their own instead, built from the
# manifest with stub sources, so a source change rebuilds only this crate.

# The Rust toolchain image of the from-source build (Debian based: musl-tools comes from apt).
ARG BUILDER_IMAGE=docker.io/library/rust:1.95.0-bookworm
# The runtime base. scratch needs no pull and holds nothing but /manager; the binary is static
# and reads no file of the image (the cluster CA comes from the ServiceAccount mount).
# gcr.io/distroless/static:nonroot (CAPI's choice) works as well and adds CA certificates,
# /etc/passwd, /tmp and tzdata.
ARG BASE_IMAGE=scratch
# The UID:GID the manager runs as. 65532 is distroless's "nonroot", which CAPI's images use.
# That UID cannot use the host's Docker socket (root:docker, 0660) by itself: the Deployment
# adds the socket's group (supplementalGroups) or runs it as root (README, "Image").
ARG RUN_AS=65532:65532

# --- A static binary built on the host --------------------------------------------------------
FROM ${BASE_IMAGE} AS prebuilt
ARG RUN_AS
COPY .image/manager /manager
USER ${RUN_AS}
ENTRYPOINT ["/manager"]

# --- Build from source -----------------------------------------------------------------------
FROM ${BUILDER_IMAGE} AS builder
# x86_64-unknown-linux-musl, or aarch64-unknown-linux-musl on an arm64 builder (musl-gcc from
# Debian's musl-tools compiles for the builder's own architecture).
ARG RUST_TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${RUST_TARGET}"
WORKDIR /workspace
# Strip the symbols (as hack/image.sh does); set for both builds below, or the profile would
# differ and the dependencies be rebuilt.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols

# Dependencies first, in a layer that only a manifest or lock change invalidates. Cargo parses
# every target of the manifest, so each one gets a stub; the benches keep theirs for the build
# below (only the manager binary is built).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src crdgen benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > crdgen/main.rs \
 && awk '/^\[\[bench\]\]/ { bench = 1; next } /^\[/ { bench = 0 } \
         bench && $1 == "name" { gsub(/"/, "", $3); print $3 }' Cargo.toml \
    | while read -r name; do echo 'fn main() {}' > "benches/${name}.rs"; done \
 && export "CC_$(echo "${RUST_TARGET}" | tr - _)=musl-gcc" \
 && cargo build --release --locked --target "${RUST_TARGET}" --bin manager \
 && rm -rf src

COPY src/ src/
# touch: the sources may be older than the stub build's outputs, and cargo compares mtimes.
RUN touch src/main.rs src/lib.rs \
 && export "CC_$(echo "${RUST_TARGET}" | tr - _)=musl-gcc" \
 && cargo build --release --locked --target "${RUST_TARGET}" --bin manager \
 && cp "target/${RUST_TARGET}/release/manager" /manager

# --- The release image -----------------------------------------------------------------------
FROM ${BASE_IMAGE} AS release
ARG RUN_AS
COPY --from=builder /manager /manager
USER ${RUN_AS}
ENTRYPOINT ["/manager"]
