//! Read-only shims of the core Cluster API objects the provider reads
//! (`cluster.x-k8s.io/v1beta2` Cluster and Machine), with only the fields it needs.
//!
//! Core Cluster API owns these CRDs; the shims have no schema and are never part of the
//! provider's generated CRDs. Unknown fields are ignored when parsing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::common::{ApiEndpoint, FailureDomain, MachineAddress};

/// The label core Cluster API puts on objects that belong to a cluster, with the cluster's name.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// The label on control-plane Machines (any value).
pub const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";
/// The annotation that pauses reconciliation of an object.
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
/// The annotation that marks an infrastructure cluster as managed by something else.
pub const MANAGED_BY_ANNOTATION: &str = "cluster.x-k8s.io/managed-by";
/// The annotation on template objects created by a topology server-side dry-run.
pub const TOPOLOGY_DRY_RUN_ANNOTATION: &str = "topology.cluster.x-k8s.io/dry-run";

/// ClusterSpec: the parts of a Cluster's desired state the provider reads.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cluster.x-k8s.io",
    version = "v1beta2",
    kind = "Cluster",
    plural = "clusters",
    namespaced,
    status = "ClusterStatus",
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterSpec {
    /// paused can be used to prevent controllers from processing the Cluster and all its associated objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// clusterNetwork represents the cluster network configuration.
    #[serde(skip_serializing_if = "ClusterNetwork::is_empty")]
    pub cluster_network: ClusterNetwork,
    /// controlPlaneEndpoint represents the endpoint used to communicate with the control plane.
    #[serde(skip_serializing_if = "ApiEndpoint::is_zero")]
    pub control_plane_endpoint: ApiEndpoint,
    /// controlPlaneRef is an optional reference to a provider-specific resource that holds the
    /// details for provisioning the Control Plane for a Cluster.
    #[serde(skip_serializing_if = "ContractVersionedObjectReference::is_empty")]
    pub control_plane_ref: ContractVersionedObjectReference,
    /// infrastructureRef is a reference to a provider-specific resource that holds the details
    /// for provisioning infrastructure for a cluster.
    #[serde(skip_serializing_if = "ContractVersionedObjectReference::is_empty")]
    pub infrastructure_ref: ContractVersionedObjectReference,
}

/// A reference to an object of a contract-versioned kind (apiGroup, kind, name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContractVersionedObjectReference {
    /// kind of the resource being referenced.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// name of the resource being referenced.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// apiGroup is the group of the resource being referenced.
    #[serde(rename = "apiGroup", skip_serializing_if = "String::is_empty")]
    pub api_group: String,
}

impl ContractVersionedObjectReference {
    /// True when the reference is unset (`IsDefined() == false` in Cluster API).
    pub fn is_empty(&self) -> bool {
        self.kind.is_empty() && self.name.is_empty() && self.api_group.is_empty()
    }
}

/// The cluster's pod and service networks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterNetwork {
    /// services is the network ranges from which service VIPs are allocated.
    #[serde(skip_serializing_if = "NetworkRanges::is_empty")]
    pub services: NetworkRanges,
    /// pods is the network ranges from which Pod networks are allocated.
    #[serde(skip_serializing_if = "NetworkRanges::is_empty")]
    pub pods: NetworkRanges,
}

impl ClusterNetwork {
    /// True when no ranges are set.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.pods.is_empty()
    }
}

/// A list of CIDR blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkRanges {
    /// cidrBlocks is a list of CIDR blocks.
    #[serde(rename = "cidrBlocks", skip_serializing_if = "Vec::is_empty")]
    pub cidr_blocks: Vec<String>,
}

impl NetworkRanges {
    /// True when there are no CIDR blocks.
    pub fn is_empty(&self) -> bool {
        self.cidr_blocks.is_empty()
    }
}

/// ClusterStatus: the parts of a Cluster's observed state the provider reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStatus {
    /// conditions of the Cluster, among them ControlPlaneInitialized.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// initialization provides observations of the Cluster initialization process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initialization: Option<ClusterInitializationStatus>,
    /// failureDomains is a slice of failure domain objects synced from the infrastructure provider.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure_domains: Vec<FailureDomain>,
}

/// ClusterInitializationStatus: the Cluster's provisioning milestones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInitializationStatus {
    /// infrastructureProvisioned is true when the infrastructure provider reports that the
    /// Cluster's infrastructure is fully provisioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infrastructure_provisioned: Option<bool>,
    /// controlPlaneInitialized denotes when the control plane is functional enough to accept requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_initialized: Option<bool>,
}

/// MachineSpec: the parts of a Machine's desired state the provider reads.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cluster.x-k8s.io",
    version = "v1beta2",
    kind = "Machine",
    plural = "machines",
    namespaced,
    status = "MachineStatus",
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineSpec {
    /// clusterName is the name of the Cluster this object belongs to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
    /// bootstrap is a reference to a local struct which encapsulates fields to configure the
    /// Machine's bootstrapping mechanism.
    pub bootstrap: Bootstrap,
    /// infrastructureRef is a required reference to a custom resource offered by an
    /// infrastructure provider.
    #[serde(skip_serializing_if = "ContractVersionedObjectReference::is_empty")]
    pub infrastructure_ref: ContractVersionedObjectReference,
    /// version defines the desired Kubernetes version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// failureDomain is the failure domain the machine will be created in.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failure_domain: String,
}

/// Bootstrap: where the Machine's bootstrap data is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Bootstrap {
    /// dataSecretName is the name of the secret that stores the bootstrap data script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,
}

/// MachineStatus: the parts of a Machine's observed state the provider reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineStatus {
    /// conditions of the Machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// nodeRef will point to the corresponding Node if it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ref: Option<MachineNodeReference>,
    /// addresses is a list of addresses assigned to the machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,
}

/// A reference from a Machine to its Node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineNodeReference {
    /// name of the node.
    pub name: String,
}
