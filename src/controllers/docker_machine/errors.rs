//! Why a DockerMachine cannot be provisioned now, each kind with the event reason it is
//! published under (the reasons are [`events`]' constants); the reconciler publishes them in
//! one place, and retries with backoff.

use crate::docker::node::NodeError;

/// The event reasons of the DockerMachine controller.
pub mod events {
    /// A node container was created.
    pub const CONTAINER_CREATED: &str = "ContainerCreated";
    /// A node container was removed.
    pub const CONTAINER_DELETED: &str = "ContainerDeleted";
    /// A container with the node's name is not this machine's, so it was left in place.
    pub const CONTAINER_NOT_OWNED: &str = "ContainerNotOwned";
    /// The engine failed on the node container.
    pub const CONTAINER_FAILED: &str = "ContainerFailed";
    /// A container with the node's name belongs to another object.
    pub const CONTAINER_NAME_CLASH: &str = "ContainerNameClash";
    /// The Cluster's spec cannot be used.
    pub const INVALID_CLUSTER: &str = "InvalidCluster";
    /// The machine names no image to run.
    pub const INVALID_MACHINE: &str = "InvalidMachine";
    /// The node image could not be pulled.
    pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
    /// The cluster's load balancer could not be given the node.
    pub const LOAD_BALANCER_CONFIG_FAILED: &str = "LoadBalancerConfigFailed";
    /// An image could not be pre-loaded into the node.
    pub const PRE_LOAD_IMAGES_FAILED: &str = "PreLoadImagesFailed";
    /// `spec.providerID` could not be written.
    pub const PROVIDER_ID_FAILED: &str = "ProviderIDFailed";
    /// The bootstrap data cannot be run.
    pub const BOOTSTRAP_DATA_INVALID: &str = "BootstrapDataInvalid";
    /// The bootstrap did not finish within `bootstrapTimeout`.
    pub const BOOTSTRAP_TIMED_OUT: &str = "BootstrapTimedOut";
    /// The engine failed while starting, reading or stopping the bootstrap.
    pub const BOOTSTRAP_FAILED: &str = "BootstrapFailed";
    /// The workload cluster's Node could not be given its providerID.
    pub const NODE_INITIALIZATION_FAILED: &str = "NodeInitializationFailed";
}

/// Why provisioning a DockerMachine stopped; the message says it for users (conditions and
/// events), [`MachineError::reason`] is its event reason.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The Cluster's spec cannot be used.
    #[error("{0}")]
    InvalidCluster(String),
    /// The node container cannot be made to run.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The engine could not say what the node logged.
    #[error("{0}")]
    ContainerLog(String),
    /// The cluster's load balancer could not be given the node.
    #[error("{0}")]
    LoadBalancerConfig(String),
    /// An image could not be pre-loaded.
    #[error("{0}")]
    PreLoadImages(String),
    /// `spec.providerID` could not be written.
    #[error("{0}")]
    ProviderId(String),
    /// The bootstrap data cannot be run.
    #[error("{0}")]
    BootstrapDataInvalid(String),
    /// The bootstrap did not finish in time.
    #[error("{0}")]
    BootstrapTimedOut(String),
    /// The engine failed while starting, reading or stopping the bootstrap.
    #[error("{0}")]
    Bootstrap(String),
    /// The workload cluster's Node could not be given its providerID.
    #[error("{0}")]
    NodeInitialization(String),
}

impl MachineError {
    /// The event reason it is published under.
    pub fn reason(&self) -> &'static str {
        match self {
            MachineError::InvalidCluster(_) => events::INVALID_CLUSTER,
            MachineError::Node(NodeError::NameClash { .. }) => events::CONTAINER_NAME_CLASH,
            MachineError::Node(NodeError::InvalidMachine(_)) => events::INVALID_MACHINE,
            MachineError::Node(NodeError::Pull { .. }) => events::IMAGE_PULL_FAILED,
            MachineError::Node(
                NodeError::Inspect { .. } | NodeError::Create { .. } | NodeError::Vanished(_),
            )
            | MachineError::ContainerLog(_) => events::CONTAINER_FAILED,
            MachineError::LoadBalancerConfig(_) => events::LOAD_BALANCER_CONFIG_FAILED,
            MachineError::PreLoadImages(_) => events::PRE_LOAD_IMAGES_FAILED,
            MachineError::ProviderId(_) => events::PROVIDER_ID_FAILED,
            MachineError::BootstrapDataInvalid(_) => events::BOOTSTRAP_DATA_INVALID,
            MachineError::BootstrapTimedOut(_) => events::BOOTSTRAP_TIMED_OUT,
            MachineError::Bootstrap(_) => events::BOOTSTRAP_FAILED,
            MachineError::NodeInitialization(_) => events::NODE_INITIALIZATION_FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::DockerError;

    #[test]
    fn node_failures_keep_their_message_and_get_their_reason() {
        let clash = MachineError::from(NodeError::NameClash {
            name: "n".into(),
            owner: None,
        });
        assert_eq!(clash.reason(), "ContainerNameClash");
        assert_eq!(
            clash.to_string(),
            "Container n already exists and belongs to another owner; capd-rs will not adopt or remove it"
        );
        let create = MachineError::from(NodeError::Create {
            name: "n".into(),
            source: DockerError::Engine("no space left".into()),
        });
        assert_eq!(create.reason(), "ContainerFailed");
        assert!(
            create
                .to_string()
                .starts_with("Failed to create container n: ")
        );
        let pull = MachineError::from(NodeError::Pull {
            image: "i".into(),
            message: "denied".into(),
        });
        assert_eq!(
            (pull.reason(), pull.to_string().as_str()),
            ("ImagePullFailed", "Cannot pull image i: denied")
        );
    }

    #[test]
    fn every_other_kind_has_its_own_reason() {
        let reasons: Vec<&str> = [
            MachineError::InvalidCluster(String::new()),
            MachineError::ContainerLog(String::new()),
            MachineError::LoadBalancerConfig(String::new()),
            MachineError::PreLoadImages(String::new()),
            MachineError::ProviderId(String::new()),
            MachineError::BootstrapDataInvalid(String::new()),
            MachineError::BootstrapTimedOut(String::new()),
            MachineError::Bootstrap(String::new()),
            MachineError::NodeInitialization(String::new()),
        ]
        .iter()
        .map(MachineError::reason)
        .collect();
        assert_eq!(
            reasons,
            [
                "InvalidCluster",
                "ContainerFailed",
                "LoadBalancerConfigFailed",
                "PreLoadImagesFailed",
                "ProviderIDFailed",
                "BootstrapDataInvalid",
                "BootstrapTimedOut",
                "BootstrapFailed",
                "NodeInitializationFailed"
            ]
        );
    }
}
