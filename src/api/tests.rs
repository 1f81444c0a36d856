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
        initialization: DockerClusterInitializationStatus {
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
