//! The provider's API: the `infrastructure.cluster.x-k8s.io/v1beta2` kinds, field for field the
//! v1beta2 API of the upstream Docker provider (CAPD v1.14.0), and read-only shims of the core
//! Cluster API objects the provider reads. Types only, no IO.

pub mod capi;
pub mod common;
pub mod crds;
mod docker_cluster;
mod docker_machine;
pub mod ip_family;
pub mod parse;
mod schema;
#[cfg(test)]
mod tests;

pub use docker_cluster::{
    DockerCluster, DockerClusterSpec, DockerClusterStatus, DockerClusterTemplate,
    DockerClusterTemplateResource, DockerClusterTemplateSpec, DockerLoadBalancer,
    LocalObjectReference,
};
pub use docker_machine::{
    DockerMachine, DockerMachineSpec, DockerMachineStatus, DockerMachineTemplate,
    DockerMachineTemplateResource, DockerMachineTemplateSpec, DockerMachineTemplateStatus, Mount,
};

/// The API group of the provider's kinds.
pub const GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// The API version of the provider's kinds (served and stored).
pub const VERSION: &str = "v1beta2";
/// The finalizer the DockerCluster controller puts on DockerClusters.
pub const CLUSTER_FINALIZER: &str = "dockercluster.infrastructure.cluster.x-k8s.io";
/// The finalizer the DockerMachine controller puts on DockerMachines.
pub const MACHINE_FINALIZER: &str = "dockermachine.infrastructure.cluster.x-k8s.io";
