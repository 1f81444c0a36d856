//! Integration tests against a real kube-apiserver + etcd and a real Docker engine.
//!
//! One test binary shares one control plane; every test has its own namespace and name prefix
//! (see `tests/support`), so the tests run in parallel.

#[path = "../support/mod.rs"]
mod support;

mod capi_tools;
mod crds;
mod diagnostics;
mod docker_cluster;
mod docker_machine;
mod node_bootstrap;
mod packaging;
mod smoke;
mod webhooks;
