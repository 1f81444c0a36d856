//! Round trips of every kind: all fields set, none set, CAPD-style manifests, and bad documents.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::common::{ApiEndpoint, MachineAddressType};
use super::parse::{self, ParseError};
use super::*;

/// Parses a fixture as `T`, serializes it again and checks nothing was lost or added.
fn round_trip<T: DeserializeOwned + Serialize>(yaml: &str) -> T {
    let original: Value = serde_saphyr::from_str(yaml).expect("fixture is YAML");
    let typed: T = parse::from_value(original.clone()).expect("fixture parses");
    assert_eq!(serde_json::to_value(&typed).unwrap(), original);
    typed
}

macro_rules! fixture {
    ($dir:literal, $name:literal) => {
        include_str!(concat!("../../tests/fixtures/", $dir, "/", $name, ".yaml"))
    };
}

#[test]
fn every_field_of_every_kind_round_trips() {
    let cluster: DockerCluster = round_trip(fixture!("full", "dockercluster"));
    let status = cluster.status.unwrap();
    assert_eq!(status.initialization.provisioned, Some(true));
    assert_eq!(status.conditions.len(), 2);
    assert_eq!(
        status.deprecated.unwrap().v1beta1.unwrap().conditions[0].severity,
        "Warning"
    );

    let machine: DockerMachine = round_trip(fixture!("full", "dockermachine"));
    assert_eq!(
        machine.spec.provider_id,
        "docker:////full-cluster-control-plane-x1"
    );
    let status = machine.status.unwrap();
    assert!(status.load_balancer_configured);
    assert_eq!(status.addresses[1].type_, MachineAddressType::InternalIp);

    let template: DockerClusterTemplate = round_trip(fixture!("full", "dockerclustertemplate"));
    assert_eq!(
        template.spec.template.spec.control_plane_endpoint.port,
        7443
    );

    let template: DockerMachineTemplate = round_trip(fixture!("full", "dockermachinetemplate"));
    assert_eq!(template.status.unwrap().capacity["memory"].0, "24Gi");
}

#[test]
fn capd_manifests_parse_and_round_trip() {
    let cluster: DockerCluster = round_trip(fixture!("capd", "dockercluster"));
    let fds = &cluster.spec.failure_domains;
    assert_eq!(fds.len(), 3);
    assert_eq!(
        (
            fds[0].control_plane,
            fds[1].control_plane,
            fds[2].control_plane
        ),
        (Some(true), Some(false), None)
    );
    assert_eq!(fds[0].attributes["rack"], "r1");
    let lb = &cluster.spec.load_balancer;
    assert_eq!(lb.image_repository, "registry.example.com/kindest");
    assert_eq!(
        lb.custom_haproxy_config_template_ref.as_ref().unwrap().name,
        "my-cluster-haproxy-template"
    );

    let machine: DockerMachine = round_trip(fixture!("capd", "dockermachine"));
    assert_eq!(machine.spec.custom_image, "kindest/node:v1.35.0");
    assert_eq!(machine.spec.pre_load_images.len(), 2);
    assert!(!machine.spec.extra_mounts[0].read_only);
    assert!(machine.spec.extra_mounts[1].read_only);
    assert_eq!(machine.spec.bootstrap_timeout.as_deref(), Some("10m"));

    let template: DockerClusterTemplate = round_trip(fixture!("capd", "dockerclustertemplate"));
    assert_eq!(
        template.spec.template.metadata.annotations["example.com/owner"],
        "platform-team"
    );

    let template: DockerMachineTemplate = round_trip(fixture!("capd", "dockermachinetemplate"));
    assert_eq!(
        template.spec.template.metadata.labels["node-role.example.com/control-plane"],
        "true"
    );
    assert_eq!(
        template.spec.template.spec.extra_mounts[0].host_path,
        "/var/run/docker.sock"
    );
}

#[test]
fn nothing_set_serializes_nothing() {
    let cluster = DockerCluster::new("c", DockerClusterSpec::default());
    assert_eq!(
        serde_json::to_value(&cluster).unwrap(),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerCluster",
               "metadata": {"name": "c"}, "spec": {}})
    );
    assert_eq!(
        serde_json::to_value(DockerClusterStatus::default()).unwrap(),
        json!({})
    );
    assert_eq!(
        serde_json::to_value(DockerMachineSpec::default()).unwrap(),
        json!({})
    );
    // Go serializes loadBalancerConfigured without omitempty; so does capd-rs.
    assert_eq!(
        serde_json::to_value(DockerMachineStatus::default()).unwrap(),
        json!({"loadBalancerConfigured": false})
    );
    assert_eq!(
        serde_json::to_value(DockerMachineTemplateStatus::default()).unwrap(),
        json!({})
    );
    let template = DockerMachineTemplateSpec::default();
    assert_eq!(
        serde_json::to_value(template).unwrap(),
        json!({"template": {"spec": {}}})
    );
}

#[test]
fn half_set_structs_send_only_what_is_set() {
    let host_only = ApiEndpoint {
        host: "10.0.0.1".into(),
        port: 0,
    };
    assert_eq!(
        serde_json::to_value(host_only).unwrap(),
        json!({"host": "10.0.0.1"})
    );
    let port_only = ApiEndpoint {
        host: String::new(),
        port: 6443,
    };
    assert_eq!(
        serde_json::to_value(port_only).unwrap(),
        json!({"port": 6443})
    );
    let status = DockerClusterStatus {
        initialization: common::InitializationStatus {
            provisioned: Some(false),
        },
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(status).unwrap(),
        json!({"initialization": {"provisioned": false}})
    );
}

#[test]
fn missing_spec_and_unknown_fields_are_tolerated() {
    let machine: DockerMachine = parse::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerMachine",
        "metadata": {"name": "m"}, "spec": {"someFutureField": 1}
    }))
    .unwrap();
    assert_eq!(machine.spec, DockerMachineSpec::default());
}

/// The field path of the error from parsing `body` (the part after metadata) as `T`.
fn error_path<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
    let doc = format!(
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nmetadata:\n  name: x\n{body}"
    );
    match parse::from_yaml::<T>(&doc).unwrap_err() {
        ParseError::Field { path, .. } => path,
        other => panic!("expected a field error, got {other}"),
    }
}

#[test]
fn bad_documents_name_the_field_path() {
    let body = "spec:\n  failureDomains:\n  - name: a\n  - name: b\n    controlPlane: maybe\n";
    assert_eq!(
        error_path::<DockerCluster>(body),
        "spec.failureDomains[1].controlPlane"
    );
    let body = "spec:\n  controlPlaneEndpoint:\n    port: http\n";
    assert_eq!(
        error_path::<DockerCluster>(body),
        "spec.controlPlaneEndpoint.port"
    );
    let body = "spec:\n  extraMounts:\n  - readOnly: [1]\n";
    assert_eq!(
        error_path::<DockerMachine>(body),
        "spec.extraMounts[0].readOnly"
    );
    let body = "spec:\n  preLoadImages: busybox\n";
    assert_eq!(error_path::<DockerMachine>(body), "spec.preLoadImages");
    let body = "spec:\n  template:\n    metadata:\n      labels: [a]\n";
    assert_eq!(
        error_path::<DockerMachineTemplate>(body),
        "spec.template.metadata.labels"
    );

    let status = json!({"status": {"addresses": [{"type": "Hostname", "address": "a"}, {"type": "Bogus", "address": "b"}]}});
    let err = parse::from_value::<DockerMachine>(status).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("status.addresses[1].type: unknown variant `Bogus`"),
        "{err}"
    );

    let err = parse::from_yaml::<DockerCluster>("spec: [unclosed").unwrap_err();
    assert!(matches!(err, ParseError::Syntax(_)), "{err}");
}

#[test]
fn capi_shims_read_what_core_cluster_api_writes() {
    let cluster: capi::Cluster = parse::from_yaml(
        r#"
apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata: {name: my-cluster, namespace: default}
spec:
  paused: true
  clusterNetwork:
    pods: {cidrBlocks: [192.168.0.0/16]}
    services: {cidrBlocks: [10.128.0.0/12]}
    serviceDomain: cluster.local
  controlPlaneRef: {apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: cp}
  infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DockerCluster, name: my-cluster}
  topology: {classRef: {name: quick-start}, version: v1.35.0}
status:
  phase: Provisioned
  initialization: {infrastructureProvisioned: true, controlPlaneInitialized: false}
  conditions:
  - {type: ControlPlaneInitialized, status: "False", reason: NotInitialized, message: "", lastTransitionTime: "2026-11-01T10:00:00Z"}
"#,
    )
    .unwrap();
    assert_eq!(cluster.spec.paused, Some(true));
    assert_eq!(
        cluster.spec.cluster_network.pods.cidr_blocks,
        ["192.168.0.0/16"]
    );
    assert_eq!(cluster.spec.infrastructure_ref.kind, "DockerCluster");
    assert!(!cluster.spec.control_plane_ref.is_empty());
    let status = cluster.status.unwrap();
    assert_eq!(
        status.initialization.unwrap().control_plane_initialized,
        Some(false)
    );
    assert_eq!(status.conditions[0].type_, "ControlPlaneInitialized");

    let machine: capi::Machine = parse::from_yaml(
        r#"
apiVersion: cluster.x-k8s.io/v1beta2
kind: Machine
metadata: {name: m, namespace: default, labels: {cluster.x-k8s.io/cluster-name: my-cluster}}
spec:
  clusterName: my-cluster
  bootstrap: {configRef: {apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfig, name: m}, dataSecretName: m-bootstrap}
  infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DockerMachine, name: m}
  version: v1.35.0
  failureDomain: fd1
status:
  nodeRef: {name: m}
  addresses: [{type: InternalIP, address: 172.18.0.4}]
"#,
    )
    .unwrap();
    assert_eq!(
        machine.spec.bootstrap.data_secret_name.as_deref(),
        Some("m-bootstrap")
    );
    assert_eq!(
        (
            machine.spec.version.as_str(),
            machine.spec.failure_domain.as_str()
        ),
        ("v1.35.0", "fd1")
    );
    assert_eq!(machine.status.unwrap().node_ref.unwrap().name, "m");

    let crd_names: Vec<String> = crds::all_crds()
        .unwrap()
        .into_iter()
        .map(|c| c.spec.group)
        .collect();
    assert!(
        crd_names.iter().all(|g| g == GROUP),
        "a core Cluster API shim leaked into the CRDs: {crd_names:?}"
    );
}
