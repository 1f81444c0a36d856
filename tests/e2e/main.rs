//! End-to-end tests: the built `manager` binary as a separate process, driven only the way a
//! user drives it (flags, kubectl, signals), against a real apiserver and Docker engine.

#[path = "../support/mod.rs"]
mod support;

mod clusterctl;
mod deployment;
mod leader;
mod manager;
mod rbac;
mod run_sh;
