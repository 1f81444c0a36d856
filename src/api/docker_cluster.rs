//! `DockerCluster` and `DockerClusterTemplate`: the infrastructure of a cluster, an HAProxy
//! load-balancer container in front of the control plane.

// The repeated `printcolumn(type_ = .., priority = ..)` keys of the kube derive are separate
// columns, not duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    ApiEndpoint, DeprecatedStatus, FailureDomain, InitializationStatus, TemplateObjectMeta,
};
use super::schema;

/// DockerClusterSpec defines the desired state of DockerCluster.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "DockerCluster",
    plural = "dockerclusters",
    namespaced,
    status = "DockerClusterStatus",
    category = "cluster-api",
    derive = "PartialEq",
    derive = "Default",
    doc = "DockerCluster is the Schema for the dockerclusters API.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        description = "Cluster",
        json_path = ".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        description = "Time duration since creation of DockerCluster",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DockerClusterSpec {
    /// controlPlaneEndpoint represents the endpoint used to communicate with the control plane.
    #[serde(default, skip_serializing_if = "ApiEndpoint::is_zero")]
    pub control_plane_endpoint: ApiEndpoint,

    /// failureDomains are usually not defined in the spec. The docker provider is special since
    /// failure domains don't mean anything in a local docker environment. Instead, the docker
    /// cluster controller will simply copy these into the Status and allow the Cluster API
    /// controllers to do what they will with the defined failure domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::failure_domains")]
    pub failure_domains: Vec<FailureDomain>,

    /// loadBalancer allows defining configurations for the cluster load balancer.
    #[serde(default, skip_serializing_if = "DockerLoadBalancer::is_empty")]
    pub load_balancer: DockerLoadBalancer,
}

/// DockerLoadBalancer allows defining configurations for the cluster load balancer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerLoadBalancer {
    /// imageRepository sets the container registry to pull the haproxy image from.
    /// if not set, "kindest" will be used instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_repository: String,

    /// imageTag allows to specify a tag for the haproxy image.
    /// if not set, "v20230606-42a2262b" will be used instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_tag: String,

    /// customHAProxyConfigTemplateRef allows you to replace the default HAProxy config file.
    /// This field is a reference to a config map that contains the configuration template. The
    /// key of the config map should be equal to 'value'. The content of the config map will be
    /// processed and will replace the default HAProxy config file. Please use it with caution,
    /// as there are no checks to ensure the validity of the configuration. This template will
    /// support the following variables that will be passed by the controller: $IPv6 (bool)
    /// indicates if the cluster is IPv6, $FrontendControlPlanePort (string) indicates the
    /// frontend port for the control plane, $BackendControlPlanePort (string) indicates the
    /// backend port for the control plane, $BackendServers (map[string]string) indicates the
    /// backend server where the key is the server name and the value is the address. This map
    /// is dynamic and is updated every time a new control plane node is added or removed. The
    /// template will also support the JoinHostPort function to join the host and port of the
    /// backend server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "customHAProxyConfigTemplateRef")]
    pub custom_haproxy_config_template_ref: Option<LocalObjectReference>,
}

impl DockerLoadBalancer {
    /// True when nothing is configured (omitted on the wire).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A reference to an object in the same namespace, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct LocalObjectReference {
    /// Name of the referent. This field is effectively required, but due to backwards
    /// compatibility is allowed to be empty.
    #[serde(default)]
    pub name: String,
}

/// DockerClusterStatus defines the observed state of DockerCluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerClusterStatus {
    /// conditions represents the observations of a DockerCluster's current state.
    /// Known condition types are Ready, LoadBalancerAvailable and Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,

    /// initialization provides observations of the DockerCluster initialization process.
    /// NOTE: Fields in this struct are part of the Cluster API contract and are used to
    /// orchestrate initial Cluster provisioning.
    #[serde(default, skip_serializing_if = "InitializationStatus::is_empty")]
    pub initialization: InitializationStatus,

    /// failureDomains is a list of failure domain objects synced from the infrastructure provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::failure_domains")]
    pub failure_domains: Vec<FailureDomain>,

    /// deprecated groups all the status fields that are deprecated and will be removed when all
    /// the nested field are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<DeprecatedStatus>,
}

/// DockerClusterTemplateSpec defines the desired state of DockerClusterTemplate.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "DockerClusterTemplate",
    plural = "dockerclustertemplates",
    namespaced,
    category = "cluster-api",
    derive = "PartialEq",
    derive = "Default",
    doc = "DockerClusterTemplate is the Schema for the dockerclustertemplates API.",
    printcolumn(
        name = "Age",
        type_ = "date",
        description = "Time duration since creation of DockerClusterTemplate",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DockerClusterTemplateSpec {
    /// template defines the desired state of DockerClusterTemplate.
    pub template: DockerClusterTemplateResource,
}

/// DockerClusterTemplateResource describes the data needed to create a DockerCluster from a template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerClusterTemplateResource {
    /// metadata is the standard object's metadata.
    /// More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata
    #[serde(default, skip_serializing_if = "TemplateObjectMeta::is_empty")]
    pub metadata: TemplateObjectMeta,

    /// spec is the desired state of DockerCluster.
    pub spec: DockerClusterSpec,
}
