//! `DockerMachine` and `DockerMachineTemplate`: a machine of a cluster, a kind-style node
//! container bootstrapped from the machine's cloud-init or Ignition data.

// The repeated `printcolumn(type_ = .., priority = ..)` keys of the kube derive are separate
// columns, not duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeprecatedStatus, InitializationStatus, MachineAddress, TemplateObjectMeta};
use super::schema;

/// DockerMachineSpec defines the desired state of DockerMachine.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "DockerMachine",
    plural = "dockermachines",
    namespaced,
    status = "DockerMachineStatus",
    category = "cluster-api",
    derive = "PartialEq",
    derive = "Default",
    doc = "DockerMachine is the Schema for the dockermachines API.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        description = "Cluster",
        json_path = ".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']"
    ),
    printcolumn(
        name = "Provider ID",
        type_ = "string",
        description = "Provider ID",
        json_path = ".spec.providerID",
        priority = 10
    ),
    printcolumn(
        name = "Failure domain",
        type_ = "string",
        description = "The failure domain where the DockerMachine has been scheduled",
        json_path = ".status.failureDomain"
    ),
    printcolumn(
        name = "IP",
        type_ = "string",
        description = "IP of the Machine",
        json_path = ".status.addresses[?(@.type==\"InternalIP\")].address",
        priority = 10
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        description = "Reconciliation paused",
        json_path = ".status.conditions[?(@.type==\"Paused\")].status",
        priority = 10
    ),
    printcolumn(
        name = "Provisioned",
        type_ = "string",
        description = "DockerMachine is provisioned",
        json_path = ".status.initialization.provisioned"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        description = "Time duration since creation of DockerMachine",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DockerMachineSpec {
    /// providerID will be the container name in ProviderID format (docker:////<containername>)
    #[serde(
        rename = "providerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    #[schemars(length(min = 1, max = 512))]
    pub provider_id: String,

    /// customImage allows customizing the container image that is used for running the machine
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub custom_image: String,

    /// preLoadImages allows you to specify a list of images that will be pre-loaded into the
    /// node container; this is particularly useful when testing with a local image, for example
    /// images built locally that are not available in a registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_load_images: Vec<String>,

    /// extraMounts describes additional mount points for the node container
    /// These may be used to bind a hostPath
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_mounts: Vec<Mount>,

    /// bootstrapTimeout is the total amount of time to wait for the machine to bootstrap before
    /// timing out. The default value is 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_timeout: Option<String>,
}

/// Mount specifies a host volume to mount into a container.
/// This is a simplified version of kind v1alpha4.Mount types.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// containerPath is the path of the mount within the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_path: String,

    /// hostPath is the path of the mount on the host. If the hostPath doesn't exist, then
    /// runtimes should report error. If the hostpath is a symbolic link, runtimes should follow
    /// the symlink and mount the real destination to container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_path: String,

    /// readOnly specifies if the mount should be read-only.
    /// If set to true, the mount will be read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// DockerMachineStatus defines the observed state of DockerMachine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerMachineStatus {
    /// conditions represents the observations of a DockerMachine's current state.
    /// Known condition types are Ready, ContainerProvisioned, CGroupsReady,
    /// PreLoadedImagesReady, BootstrapCompleted and Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,

    /// initialization provides observations of the DockerMachine initialization process.
    /// NOTE: Fields in this struct are part of the Cluster API contract and are used to
    /// orchestrate initial Machine provisioning.
    #[serde(default, skip_serializing_if = "InitializationStatus::is_empty")]
    pub initialization: InitializationStatus,

    /// loadBalancerConfigured denotes that the machine has been added to the load balancer.
    /// Kept for compatibility: CAPD v1.14 never sets it, and neither does capd-rs.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub load_balancer_configured: bool,

    /// addresses contains the associated addresses for the docker machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,

    /// failureDomain is the failure domain where the DockerMachine has been scheduled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 256))]
    pub failure_domain: String,

    /// deprecated groups all the status fields that are deprecated and will be removed when all
    /// the nested field are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<DeprecatedStatus>,
}

/// DockerMachineTemplateSpec defines the desired state of DockerMachineTemplate.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "DockerMachineTemplate",
    plural = "dockermachinetemplates",
    namespaced,
    status = "DockerMachineTemplateStatus",
    category = "cluster-api",
    derive = "PartialEq",
    derive = "Default",
    doc = "DockerMachineTemplate is the schema for the Docker Machine Templates API.",
    printcolumn(
        name = "Age",
        type_ = "date",
        description = "Time duration since creation of DockerMachineTemplate",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DockerMachineTemplateSpec {
    /// template defines the desired state of DockerMachineTemplate.
    pub template: DockerMachineTemplateResource,
}

/// DockerMachineTemplateResource describes the data needed to create a DockerMachine from a template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerMachineTemplateResource {
    /// metadata is the standard object's metadata.
    /// More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata
    #[serde(default, skip_serializing_if = "TemplateObjectMeta::is_empty")]
    pub metadata: TemplateObjectMeta,

    /// spec is the specification of the desired behavior of the machine.
    pub spec: DockerMachineSpec,
}

/// DockerMachineTemplateStatus defines the observed state of a DockerMachineTemplate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerMachineTemplateStatus {
    /// capacity defines the resource capacity for this DockerMachineTemplate.
    /// This value is used for autoscaling from zero operations as defined in:
    /// https://github.com/kubernetes-sigs/cluster-api/blob/main/docs/proposals/20210310-opt-in-autoscaling-from-zero.md
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schema::resource_list")]
    pub capacity: BTreeMap<String, Quantity>,
}
