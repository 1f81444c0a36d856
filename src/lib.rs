//! capd-rs: a Cluster API infrastructure provider for Docker.
//!
//! The library holds everything the `manager` and `crdgen` binaries share: the v1beta2 API types
//! ([`api`]) and, as the provider grows, the webhooks, controllers and Docker runtime.

pub mod api;
pub mod bootstrap;
pub mod client;
pub mod controllers;
pub mod diagnostics;
pub mod docker;
pub mod features;
pub mod flags;
pub mod formats;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod telemetry;
pub mod tls;
pub mod webhooks;
