//! Types shared by the provider's kinds, with the JSON names and limits of their Cluster API
//! counterparts (`sigs.k8s.io/cluster-api/api/core/v1beta2`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An endpoint to reach a Kubernetes API server. Unset fields are not serialized: the v1beta2
/// schema refuses an empty host and port 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct ApiEndpoint {
    /// host is the hostname on which the API server is serving.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 512))]
    pub host: String,

    /// port is the port on which the API server is serving.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl ApiEndpoint {
    /// True when neither host nor port is set (Go's zero value, omitted on the wire).
    pub fn is_zero(&self) -> bool {
        self.host.is_empty() && self.port == 0
    }
}

fn is_zero(port: &i32) -> bool {
    *port == 0
}

/// A failure domain: a slot for machines, for example an availability zone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureDomain {
    /// name is the name of the failure domain.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,

    /// controlPlane determines if this failure domain is suitable for use by control plane machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<bool>,

    /// attributes is a free form map of attributes an infrastructure provider might use or require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// The kind of a machine address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MachineAddressType {
    /// The machine's hostname.
    Hostname,
    /// An IP address reachable from outside the cluster's network.
    #[serde(rename = "ExternalIP")]
    ExternalIp,
    /// An IP address on the cluster's network.
    #[serde(rename = "InternalIP")]
    InternalIp,
    /// A DNS name reachable from outside the cluster's network.
    #[serde(rename = "ExternalDNS")]
    ExternalDns,
    /// A DNS name on the cluster's network.
    #[serde(rename = "InternalDNS")]
    InternalDns,
}

/// An address of a machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineAddress {
    /// type is the machine address type, one of Hostname, ExternalIP, InternalIP, ExternalDNS or InternalDNS.
    #[serde(rename = "type")]
    pub type_: MachineAddressType,

    /// address is the machine address.
    #[schemars(length(min = 1, max = 256))]
    pub address: String,
}

/// The labels and annotations a template stamps onto the objects made from it
/// (Cluster API's `ObjectMeta`, not Kubernetes' full one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct TemplateObjectMeta {
    /// labels is a map of string keys and values that can be used to organize and categorize
    /// (scope and select) objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// annotations is an unstructured key value map stored with a resource that may be set by
    /// external tools to store and retrieve arbitrary metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl TemplateObjectMeta {
    /// True when there are neither labels nor annotations (omitted on the wire).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// A Cluster API v1beta1 condition, kept under `status.deprecated.v1beta1.conditions` for
/// clients of the v1beta1 contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Beta1Condition {
    /// type of condition in CamelCase or in foo.example.com/CamelCase.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 256))]
    pub type_: String,

    /// status of the condition, one of True, False, Unknown.
    pub status: String,

    /// severity provides an explicit classification of Reason code, so the users or machines can
    /// immediately understand the current situation and act accordingly.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 32))]
    pub severity: String,

    /// lastTransitionTime is the last time the condition transitioned from one status to another.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub last_transition_time: Time,

    /// reason is the reason for the condition's last transition in CamelCase.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 256))]
    pub reason: String,

    /// message is a human readable message indicating details about the transition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 10240))]
    pub message: String,
}

/// Conditions of the v1beta1 contract, for clients that still read them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Beta1DeprecatedStatus {
    /// conditions defines current service state of the object (v1beta1 conditions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<V1Beta1Condition>,
}

/// The deprecated part of a status, kept for compatibility with the v1beta1 contract.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeprecatedStatus {
    /// v1beta1 groups all the status fields that are deprecated and will be removed when
    /// support for v1beta1 is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1beta1: Option<V1Beta1DeprecatedStatus>,
}

/// The infrastructure provisioning milestone of a DockerCluster or DockerMachine
/// (`status.initialization`; CAPD's `Docker{Cluster,Machine}InitializationStatus`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct InitializationStatus {
    /// provisioned is true when the infrastructure provider reports that the object's
    /// infrastructure is fully provisioned. NOTE: this field is part of the Cluster API contract,
    /// and it is used to orchestrate initial provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
}

impl InitializationStatus {
    /// True when nothing is reported yet (omitted on the wire).
    pub fn is_empty(&self) -> bool {
        self.provisioned.is_none()
    }
}
