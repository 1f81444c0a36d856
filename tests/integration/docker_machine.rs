//! The DockerMachine controller against the real apiserver and Docker engine, with the test
//! node image, playing core Cluster API's part (Cluster, Machine, bootstrap Secret).

use std::collections::BTreeMap;
use std::time::Duration;

use capd::api::capi::{Cluster, Machine};
use capd::api::{DockerMachine, DockerMachineSpec};
use capd::docker::ContainerRuntime;
use capd::docker::engine::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::capi::{
    SENTINEL, TIMEOUT, cluster, condition, container, kubeconfig_secret, machine,
    machine_with_spec, node_sh, wait_condition, worker_of_new_cluster,
};
use crate::support::controller::RunningControllers;
use crate::support::docker::NODE_IMAGE;
use crate::support::{TestContext, crds, wait_for, wait_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_machine_is_provisioned_and_bootstrapped() {
    let (ctx, _controllers) = RunningControllers::started("dm-cp").await;
    let cluster_name = ctx.name("c");
    cluster(&ctx, &cluster_name, true, false).await;
    let name = format!("{cluster_name}-cp");
    let cloud_config = format!(
        "#cloud-config\nwrite_files:\n- path: /etc/capd-test/kubeadm.yaml\n  content: hello\nruncmd:\n- echo ran >> /var/lib/capd-rs-test/runs\n- {SENTINEL}\n"
    );
    machine(&ctx, &cluster_name, &name, true, Some(&cloud_config), None).await;

    let dm = wait_condition(&ctx, &name, "Ready", |c| c.status == "True").await;
    assert_eq!(dm.spec.provider_id, format!("docker:////{name}"));
    let status = dm.status.clone().unwrap();
    assert_eq!(status.initialization.provisioned, Some(true));
    let addresses: Vec<(String, String)> = status
        .addresses
        .iter()
        .map(|a| (format!("{:?}", a.type_), a.address.clone()))
        .collect();
    assert_eq!(addresses[0], ("Hostname".to_owned(), name.clone()));
    assert_eq!(addresses.len(), 3, "{addresses:?}");
    for type_ in [
        "ContainerProvisioned",
        "CGroupsReady",
        "PreLoadedImagesReady",
        "BootstrapCompleted",
    ] {
        assert_eq!(
            condition(&dm, type_).map(|c| c.status.as_str()),
            Some("True"),
            "{type_}"
        );
    }
    let node = container(&name).await.expect("node container");
    assert_eq!(node.labels["io.x-k8s.kind.role"], "control-plane");
    assert!(node.host_ports.contains_key("6443/tcp"));
    assert_eq!(node_sh(&name, "cat /etc/capd-test/kubeadm.yaml /var/lib/capd-rs-test/runs; test -f /run/cluster-api/bootstrap-success.complete && echo done").await, "helloran\ndone\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_the_control_plane_then_for_its_data() {
    let (ctx, _controllers) = RunningControllers::started("dm-wait").await;
    let cluster_name = ctx.name("c");
    cluster(&ctx, &cluster_name, true, false).await;
    let name = format!("{cluster_name}-w");
    machine(&ctx, &cluster_name, &name, false, None, None).await;
    wait_condition(&ctx, &name, "ContainerProvisioned", |c| {
        c.reason == "WaitingForControlPlaneInitialized"
    })
    .await;

    let initialized = json!({"status": {"conditions": [{"type": "ControlPlaneInitialized", "status": "True", "reason": "Test", "message": "", "lastTransitionTime": "2026-11-01T00:00:00Z"}]}});
    ctx.api::<Cluster>()
        .patch_status(
            &cluster_name,
            &PatchParams::default(),
            &Patch::Merge(initialized),
        )
        .await
        .unwrap();
    wait_condition(&ctx, &name, "ContainerProvisioned", |c| {
        c.reason == "WaitingForBootstrapData"
    })
    .await;
    assert!(
        container(&name).await.is_none(),
        "a container without bootstrap data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_shows_in_the_condition() {
    let (ctx, _controllers) = RunningControllers::started("dm-fail").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    machine(
        &ctx,
        &cluster_name,
        &name,
        false,
        Some("#cloud-config\nruncmd:\n- echo boom >&2; exit 3\n"),
        None,
    )
    .await;
    let dm = wait_condition(&ctx, &name, "BootstrapCompleted", |c| c.reason == "Failed").await;
    let message = &condition(&dm, "BootstrapCompleted").unwrap().message;
    assert!(
        message.contains("Step 1 of 1 failed with exit code 3") && message.contains("boom"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_restart_mid_bootstrap_runs_each_command_once() {
    let ctx = TestContext::new("dm-restart").await;
    crds::install(&ctx.kube).await;
    let controllers = RunningControllers::start(&ctx).await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    let cloud_config = format!(
        "#cloud-config\nruncmd:\n- echo start >> /var/lib/capd-rs-test/runs\n- sleep 3\n- echo end >> /var/lib/capd-rs-test/runs\n- {SENTINEL}\n"
    );
    machine(&ctx, &cluster_name, &name, false, Some(&cloud_config), None).await;
    wait_condition(&ctx, &name, "BootstrapCompleted", |c| {
        c.reason == "NotCompleted" && c.message.starts_with("Running step")
    })
    .await;
    // Killed, not stopped: every task of the controllers is aborted where it stands.
    drop(controllers);

    let _restarted = RunningControllers::start(&ctx).await;
    wait_condition(&ctx, &name, "BootstrapCompleted", |c| c.status == "True").await;
    assert_eq!(
        node_sh(&name, "cat /var/lib/capd-rs-test/runs").await,
        "start\nend\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_machine_removes_its_container() {
    let (ctx, _controllers) = RunningControllers::started("dm-delete").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    machine(
        &ctx,
        &cluster_name,
        &name,
        false,
        Some(&format!("#cloud-config\nruncmd:\n- {SENTINEL}\n")),
        None,
    )
    .await;
    wait_condition(&ctx, &name, "Ready", |c| c.status == "True").await;
    ctx.api::<DockerMachine>()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&ctx.api::<DockerMachine>(), &name, TIMEOUT).await;
    assert!(
        container(&name).await.is_none(),
        "the node container was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_works_when_the_container_or_the_cluster_is_already_gone() {
    let (ctx, _controllers) = RunningControllers::started("dm-delete-gone").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    let other = format!("{cluster_name}-w2");
    let cloud_config = format!("#cloud-config\nruncmd:\n- {SENTINEL}\n");
    for machine_name in [&name, &other] {
        machine(
            &ctx,
            &cluster_name,
            machine_name,
            false,
            Some(&cloud_config),
            None,
        )
        .await;
        wait_condition(&ctx, machine_name, "Ready", |c| c.status == "True").await;
    }
    let engine = Engine::connect().await.unwrap();

    // A provisioned machine's container removed by hand is reported, not replaced by a fresh
    // node under the same name (left to remediation, as CAPD does).
    engine.remove_container(&name).await.unwrap();
    wait_condition(&ctx, &name, "ContainerProvisioned", |c| {
        c.message == format!("Container {name} is not running anymore")
    })
    .await;
    assert_eq!(engine.inspect_container(&name).await.unwrap(), None);

    // The Cluster goes first; both DockerMachines can still be deleted.
    ctx.api::<Cluster>()
        .delete(&cluster_name, &DeleteParams::default())
        .await
        .unwrap();
    for machine_name in [&name, &other] {
        ctx.api::<DockerMachine>()
            .delete(machine_name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for machine_name in [&name, &other] {
        wait_gone(&ctx.api::<DockerMachine>(), machine_name, TIMEOUT).await;
    }
    assert_eq!(engine.inspect_container(&other).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_that_takes_too_long_is_stopped_and_reported() {
    let (ctx, _controllers) = RunningControllers::started("dm-timeout").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    // `; true` keeps the step's shell as the parent of `sleep`: stopping only the top process
    // of the step would leave `sleep` running.
    let cloud_config = "#cloud-config\nruncmd:\n- sleep 60; true\n- touch /tmp/after\n";
    machine(
        &ctx,
        &cluster_name,
        &name,
        false,
        Some(cloud_config),
        Some("2s"),
    )
    .await;
    let dm = wait_condition(&ctx, &name, "BootstrapCompleted", |c| c.reason == "Failed").await;
    let message = &condition(&dm, "BootstrapCompleted").unwrap().message;
    assert!(
        message.contains("did not complete within bootstrapTimeout (2s)"),
        "{message}"
    );
    assert_eq!(
        node_sh(&name, "test -e /tmp/after && echo ran || echo stopped").await,
        "stopped\n"
    );
    // The step's own process is stopped too, not only the runner.
    // (Within 10 s: left running, `sleep 60` would outlast the wait.)
    wait_for(
        "the step's process to stop",
        Duration::from_secs(10),
        || async {
            node_sh(&name, "ps | grep '[s]leep 60' || true")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pre_loaded_into_the_node() {
    let (ctx, _controllers) = RunningControllers::started("dm-preload").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    let spec = DockerMachineSpec {
        custom_image: NODE_IMAGE.into(),
        pre_load_images: vec![NODE_IMAGE.into()],
        ..Default::default()
    };
    let cloud_config = format!("#cloud-config\nruncmd:\n- {SENTINEL}\n");
    machine_with_spec(&ctx, &cluster_name, &name, false, Some(&cloud_config), spec).await;
    wait_condition(&ctx, &name, "Ready", |c| c.status == "True").await;
    // The test image's ctr records each import: one archive, not empty.
    let imported = node_sh(&name, "cat /var/lib/capd-rs-test/imported-images").await;
    let lines: Vec<&str> = imported.lines().collect();
    assert_eq!(lines.len(), 1, "{imported}");
    let size: u64 = lines[0].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        size > 1_000_000,
        "the archive is too small to be the image: {size} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pre_loaded_is_named_and_stops_the_bootstrap() {
    let (ctx, _controllers) = RunningControllers::started("dm-preload-bad").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    let absent = "capd-rs-test/absent:none";
    let spec = DockerMachineSpec {
        custom_image: NODE_IMAGE.into(),
        pre_load_images: vec![absent.into()],
        ..Default::default()
    };
    let cloud_config = "#cloud-config\nruncmd:\n- touch /tmp/bootstrapped\n";
    machine_with_spec(&ctx, &cluster_name, &name, false, Some(cloud_config), spec).await;
    let dm = wait_condition(&ctx, &name, "PreLoadedImagesReady", |c| {
        c.message.starts_with("Cannot pre-load")
    })
    .await;
    let message = &condition(&dm, "PreLoadedImagesReady").unwrap().message;
    assert!(
        // The engine's own words follow ("reference does not exist" from Docker 20.10).
        message.starts_with(&format!("Cannot pre-load image {absent}: "))
            && message.len() > format!("Cannot pre-load image {absent}: ").len(),
        "{message}"
    );
    assert_eq!(
        condition(&dm, "BootstrapCompleted").unwrap().reason,
        "WaitingForPreloadedImages"
    );
    assert_eq!(
        node_sh(
            &name,
            "test -e /tmp/bootstrapped && echo ran || echo waiting"
        )
        .await,
        "waiting\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bootstrap_data_is_named_in_the_condition_without_container_churn() {
    let (ctx, _controllers) = RunningControllers::started("dm-baddata").await;
    let cluster_name = ctx.name("c");
    cluster(&ctx, &cluster_name, false, false).await;
    let cases: [(&str, BTreeMap<String, ByteString>, &str); 3] = [
        (
            "novalue",
            BTreeMap::from([("format".to_owned(), ByteString(b"cloud-config".to_vec()))]),
            "has no key \"value\"",
        ),
        (
            "format",
            BTreeMap::from([
                ("value".to_owned(), ByteString(b"#cloud-config\n".to_vec())),
                ("format".to_owned(), ByteString(b"yaml".to_vec())),
            ]),
            "yaml",
        ),
        (
            "notyaml",
            BTreeMap::from([(
                "value".to_owned(),
                ByteString(b"write_files: [unclosed".to_vec()),
            )]),
            "YAML",
        ),
    ];
    for (suffix, data, expected) in cases {
        let name = format!("{cluster_name}-{suffix}");
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{name}-bootstrap")),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        ctx.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        machine(&ctx, &cluster_name, &name, false, Some("unused"), None).await;
        let dm = wait_condition(&ctx, &name, "BootstrapCompleted", |c| {
            c.message.contains("Bootstrap data Secret")
        })
        .await;
        let message = &condition(&dm, "BootstrapCompleted").unwrap().message;
        assert!(message.contains(expected), "{suffix}: {message}");
        let node = container(&name).await.expect("the node container stays");
        assert!(node.running, "{suffix}: the container was stopped");
    }
    let events = ctx
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&Default::default())
        .await
        .unwrap();
    let reasons: Vec<_> = events
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(
        reasons.iter().any(|r| r == "BootstrapDataInvalid"),
        "{reasons:?}"
    );
    let created: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ContainerCreated"))
        .collect();
    assert_eq!(
        created.len(),
        3,
        "one creation event per machine: {reasons:?}"
    );
    for event in created {
        assert!(
            event.series.is_none() && event.count.unwrap_or(1) == 1,
            "a container was created again: {event:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_named_and_picked_up_when_it_appears() {
    let (ctx, _controllers) = RunningControllers::started("dm-nosecret").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    machine(&ctx, &cluster_name, &name, false, None, None).await;
    // Core CAPI names the Secret; here it does not exist (yet).
    let secret_name = format!("{name}-late");
    ctx.api::<Machine>()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"bootstrap": {"dataSecretName": secret_name}}})),
        )
        .await
        .unwrap();
    let dm = wait_condition(&ctx, &name, "BootstrapCompleted", |c| {
        c.message.contains("not found")
    })
    .await;
    let message = &condition(&dm, "BootstrapCompleted").unwrap().message;
    assert_eq!(
        message,
        &format!("Bootstrap data Secret {secret_name} not found")
    );
    wait_for("a BootstrapDataInvalid event", TIMEOUT, || async {
        events(&ctx, "BootstrapDataInvalid").await.first().map(drop)
    })
    .await;

    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "value".to_owned(),
            ByteString(format!("#cloud-config\nruncmd:\n- {SENTINEL}\n").into_bytes()),
        )])),
        ..Default::default()
    };
    ctx.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    wait_condition(&ctx, &name, "Ready", |c| c.status == "True").await;
    assert_eq!(
        events(&ctx, "ContainerCreated").await.len(),
        1,
        "the node container was created once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_name_held_by_someone_else_is_never_adopted_or_removed() {
    let (ctx, _controllers) = RunningControllers::started("dm-clash").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    // Another namespace's machine's node, with the name this machine's node would get.
    let mut labels = capd::docker::labels::Owner {
        kind: "DockerMachine".into(),
        namespace: "elsewhere".into(),
        name: name.clone(),
    }
    .labels();
    labels.insert("io.x-k8s.kind.cluster".into(), cluster_name.clone());
    let spec = capd::docker::ContainerSpec {
        name: name.clone(),
        image: NODE_IMAGE.into(),
        labels,
        network: "kind".into(),
        ..Default::default()
    };
    let engine = Engine::connect().await.unwrap();
    engine.run_container(&spec).await.unwrap();
    let before = engine.inspect_container(&name).await.unwrap().unwrap();

    machine(
        &ctx,
        &cluster_name,
        &name,
        false,
        Some("#cloud-config\n"),
        None,
    )
    .await;
    let dm = wait_condition(&ctx, &name, "ContainerProvisioned", |c| {
        c.message.contains("already exists")
    })
    .await;
    let message = &condition(&dm, "ContainerProvisioned").unwrap().message;
    assert!(
        message.contains("belongs to DockerMachine elsewhere/")
            && message.contains("will not adopt"),
        "{message}"
    );
    wait_for("a ContainerNameClash event", TIMEOUT, || async {
        events(&ctx, "ContainerNameClash").await.first().map(drop)
    })
    .await;
    assert!(dm.spec.provider_id.is_empty(), "{:?}", dm.spec.provider_id);

    ctx.api::<DockerMachine>()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&ctx.api::<DockerMachine>(), &name, TIMEOUT).await;
    let after = engine.inspect_container(&name).await.unwrap();
    assert_eq!(
        after,
        Some(before),
        "the other machine's container was touched"
    );
    assert_eq!(events(&ctx, "ContainerNotOwned").await.len(), 1);
}

/// The events with `reason` in the test's namespace.
async fn events(ctx: &TestContext, reason: &str) -> Vec<k8s_openapi::api::core::v1::Event> {
    let events = ctx
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&Default::default())
        .await
        .unwrap();
    events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_network_of_mixed_ip_families_is_named_and_makes_no_container() {
    let (ctx, _controllers) = RunningControllers::started("dm-ipfamily").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    let network = json!({"spec": {"clusterNetwork": {
        "pods": {"cidrBlocks": ["192.168.0.0/16"]},
        "services": {"cidrBlocks": ["fd00:10:96::/112"]}
    }}});
    ctx.api::<Cluster>()
        .patch(
            &cluster_name,
            &PatchParams::default(),
            &Patch::Merge(network),
        )
        .await
        .unwrap();
    machine(
        &ctx,
        &cluster_name,
        &name,
        false,
        Some("#cloud-config\n"),
        None,
    )
    .await;
    let dm = wait_condition(&ctx, &name, "ContainerProvisioned", |c| {
        c.message.contains("clusterNetwork")
    })
    .await;
    assert_eq!(
        condition(&dm, "ContainerProvisioned").unwrap().message,
        format!("Cluster {cluster_name} spec.clusterNetwork: pods and services IP family mismatch")
    );
    wait_for("an InvalidCluster event", TIMEOUT, || async {
        events(&ctx, "InvalidCluster").await.first().map(drop)
    })
    .await;
    let engine = Engine::connect().await.unwrap();
    assert_eq!(engine.inspect_container(&name).await.unwrap(), None);
}

/// Deletes the cluster-scoped Node `0` when dropped (also when the test fails).
struct NodeCleanup(String);

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        crate::support::kubectl(&["delete", "node", &self.0, "--wait=false"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_node_gets_its_provider_id_and_addresses() {
    let (ctx, _controllers) = RunningControllers::started("dm-node").await;
    let (cluster_name, name) = worker_of_new_cluster(&ctx).await;
    let cloud_config = format!("#cloud-config\nruncmd:\n- {SENTINEL}\n");
    machine(&ctx, &cluster_name, &name, false, Some(&cloud_config), None).await;
    let dm = wait_condition(&ctx, &name, "Ready", |c| c.status == "True").await;
    let internal_ip = dm
        .status
        .unwrap()
        .addresses
        .into_iter()
        .find(|a| a.type_ == capd::api::common::MachineAddressType::InternalIp)
        .expect("an InternalIP")
        .address;

    // The kubelet registers its Node after the bootstrap, waiting for a cloud provider.
    let _cleanup = NodeCleanup(name.clone());
    let nodes = kube::Api::<Node>::all(ctx.kube.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"taints": [
            {"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"},
            {"key": "example.com/keep", "effect": "NoExecute"}
        ]}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"addresses": [{"type": "Hostname", "address": name}]}}),
            ),
        )
        .await
        .unwrap();

    // Then core CAPI writes the workload cluster's kubeconfig Secret (the test apiserver plays
    // the workload cluster); its watch wakes the machine.
    let kubeconfig =
        std::fs::read(&crate::support::control_plane::control_plane().kubeconfig).unwrap();
    kubeconfig_secret(&ctx, &cluster_name, kubeconfig).await;
    let node = wait_for("the Node to be initialized", TIMEOUT, || async {
        let node = nodes.get(&name).await.ok()?;
        let spec = node.spec.clone()?;
        (spec.provider_id.as_deref() == Some(&format!("docker:////{name}"))).then_some(node)
    })
    .await;
    let taints: Vec<String> = node
        .spec
        .unwrap()
        .taints
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.key)
        .collect();
    // (The apiserver's TaintNodesByCondition admission adds node.kubernetes.io/not-ready.)
    assert!(
        taints.contains(&"example.com/keep".to_owned())
            && !taints.contains(&"node.cloudprovider.kubernetes.io/uninitialized".to_owned()),
        "{taints:?}"
    );
    let addresses: Vec<(String, String)> = node
        .status
        .unwrap()
        .addresses
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses,
        [
            ("Hostname".to_owned(), name.clone()),
            ("InternalIP".to_owned(), internal_ip)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_nodes_are_put_behind_the_load_balancer() {
    let (ctx, _controllers) = RunningControllers::started("dm-lb").await;
    let cluster_name = ctx.name("c");
    let owner = cluster(&ctx, &cluster_name, false, false).await;
    // The cluster's DockerCluster, whose load balancer the DockerCluster controller runs.
    ctx.api::<Cluster>()
        .patch(
            &cluster_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"infrastructureRef": {
                "apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerCluster", "name": cluster_name
            }}})),
        )
        .await
        .unwrap();
    let mut dc = capd::api::DockerCluster::new(
        &cluster_name,
        capd::api::DockerClusterSpec {
            load_balancer: capd::api::DockerLoadBalancer {
                image_repository: "capd-rs-test".into(),
                image_tag: "local".into(),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    dc.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "cluster.x-k8s.io/v1beta2".into(),
            kind: "Cluster".into(),
            name: cluster_name.clone(),
            uid: kube::ResourceExt::uid(&owner).unwrap(),
            ..Default::default()
        },
    ]);
    ctx.api::<capd::api::DockerCluster>()
        .create(&PostParams::default(), &dc)
        .await
        .unwrap();
    let engine = Engine::connect().await.unwrap();
    let lb = wait_for("the load balancer", TIMEOUT, || async {
        let lb = engine
            .inspect_container(&format!("{cluster_name}-lb"))
            .await
            .ok()??;
        lb.running.then_some(lb)
    })
    .await;
    let lb_name = format!("{cluster_name}-lb");
    let first_stats_port = lb.host_ports["8404/tcp"];
    let servers = || async {
        // The stats page's host port: a recreated load balancer gets a new one.
        let lb = engine.inspect_container(&lb_name).await.ok()??;
        let csv = crate::support::http_get(*lb.host_ports.get("8404/tcp")?, "/stats;csv").await?;
        let servers: Vec<String> = csv
            .lines()
            .filter(|l| l.starts_with("kube-apiservers,") && !l.contains(",BACKEND,"))
            .map(|l| l.split(',').nth(1).unwrap_or_default().to_owned())
            .collect();
        Some(servers)
    };

    let cloud_config = format!("#cloud-config\nruncmd:\n- {SENTINEL}\n");
    let (first, second) = (format!("{cluster_name}-cp1"), format!("{cluster_name}-cp2"));
    for name in [&first, &second] {
        machine(&ctx, &cluster_name, name, true, Some(&cloud_config), None).await;
        wait_condition(&ctx, name, "Ready", |c| c.status == "True").await;
    }
    // HAProxy reloaded with both nodes as backends (read from its own stats page).
    wait_for("both nodes behind the load balancer", TIMEOUT, || async {
        let mut servers = servers().await?;
        servers.sort();
        (servers == [first.clone(), second.clone()]).then_some(())
    })
    .await;

    ctx.api::<DockerMachine>()
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the removed node to leave the load balancer",
        TIMEOUT,
        || async { (servers().await? == [second.clone()]).then_some(()) },
    )
    .await;

    // A load balancer removed by hand is recreated with its backends.
    engine.remove_container(&lb_name).await.unwrap();
    wait_for(
        "the recreated load balancer to have its backend",
        TIMEOUT,
        || async {
            let lb = engine.inspect_container(&lb_name).await.ok()??;
            (lb.host_ports.get("8404/tcp")? != &first_stats_port
                && servers().await? == [second.clone()])
            .then_some(())
        },
    )
    .await;
}
