//! The manager image and the Tilt files, as a user gets them: the image built by
//! `hack/image.sh` (no registry needed), inspected and run with the Docker CLI; the Tiltfile and
//! `tilt-provider.yaml` checked against what Cluster API v1.14.0's Tilt setup reads (Tilt itself
//! cannot be installed on these machines).
//!
//! A test binary of its own: the first build of the static manager takes minutes (later ones
//! reuse the cache in `$CAPD_RS_CACHE/target-musl`), and it is built once for all the tests here.

#[path = "../support/mod.rs"]
mod support;

mod image;
mod tilt;
