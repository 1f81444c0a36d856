//! The DockerCluster controller against the real apiserver and Docker engine, with the test
//! HAProxy image, playing core Cluster API's part (a Cluster that owns the DockerCluster).

use std::sync::Arc;
use std::time::Duration;

use capd::api::capi::{Cluster, ClusterSpec, ContractVersionedObjectReference};
use capd::api::{DockerCluster, DockerClusterSpec, DockerLoadBalancer};
use capd::docker::ContainerRuntime;
use capd::docker::engine::Engine;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::controller::RunningControllers;
use crate::support::{TestContext, crds, http_get, wait_for, wait_gone};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The test HAProxy image (`capd-rs-test/haproxy:local`) as a DockerCluster load balancer.
fn test_load_balancer() -> DockerLoadBalancer {
    DockerLoadBalancer {
        image_repository: "capd-rs-test".into(),
        image_tag: "local".into(),
        ..Default::default()
    }
}

/// Creates a Cluster and a DockerCluster it owns (as core CAPI would), both named `name`.
async fn create_cluster(
    ctx: &TestContext,
    name: &str,
    mut spec: DockerClusterSpec,
    annotations: &[(&str, &str)],
) -> DockerCluster {
    let cluster = Cluster::new(
        name,
        ClusterSpec {
            infrastructure_ref: ContractVersionedObjectReference {
                kind: "DockerCluster".into(),
                name: name.into(),
                api_group: "infrastructure.cluster.x-k8s.io".into(),
            },
            ..Default::default()
        },
    );
    let cluster = ctx
        .api::<Cluster>()
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create Cluster");
    if spec.load_balancer == DockerLoadBalancer::default() {
        spec.load_balancer = test_load_balancer();
    }
    let mut dc = DockerCluster::new(name, spec);
    dc.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "cluster.x-k8s.io/v1beta2".into(),
        kind: "Cluster".into(),
        name: name.into(),
        uid: cluster.uid().unwrap(),
        ..Default::default()
    }]);
    dc.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    ctx.api::<DockerCluster>()
        .create(&PostParams::default(), &dc)
        .await
        .expect("create DockerCluster")
}

/// Waits until DockerCluster `name` is provisioned and its status reflects its latest spec.
async fn provisioned(ctx: &TestContext, name: &str) -> DockerCluster {
    wait_for(
        &format!("DockerCluster {name} to be provisioned"),
        TIMEOUT,
        || async {
            let dc = ctx.api::<DockerCluster>().get(name).await.ok()?;
            // Steady: the status reflects the latest spec (the endpoint the controller wrote).
            let ready = condition(&dc, "Ready")?;
            (dc.status.as_ref()?.initialization.provisioned == Some(true)
                && !dc.spec.control_plane_endpoint.host.is_empty()
                && ready.status == "True"
                && ready.observed_generation == dc.metadata.generation)
                .then_some(dc)
        },
    )
    .await
}

fn condition<'a>(
    dc: &'a DockerCluster,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    dc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The load-balancer container of cluster `name`, if there is one.
async fn lb(name: &str) -> Option<capd::docker::Container> {
    engine()
        .await
        .inspect_container(&format!("{name}-lb"))
        .await
        .expect("inspecting the LB")
}

/// Waits until DockerCluster `name` is gone (its finalizer removed).
async fn deleted(ctx: &TestContext, name: &str) {
    wait_gone(&ctx.api::<DockerCluster>(), name, TIMEOUT).await;
}

async fn engine() -> Engine {
    Engine::connect().await.expect("Docker")
}

/// Waits until the controllers have finished more reconciles of `name` than `before`.
async fn reconciled_after(
    controllers: &RunningControllers,
    ctx: &TestContext,
    name: &str,
    before: u64,
) {
    wait_for(&format!("a reconcile of {name}"), TIMEOUT, || async {
        (controllers.reconciles("DockerCluster", &ctx.namespace, name) > before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_gets_a_load_balancer_and_a_reachable_endpoint() {
    let (ctx, controllers) = RunningControllers::started("dc-provision").await;
    let name = ctx.name("c");
    let spec = DockerClusterSpec {
        failure_domains: vec![capd::api::common::FailureDomain {
            name: "fd1".into(),
            control_plane: Some(true),
            attributes: Default::default(),
        }],
        ..Default::default()
    };
    create_cluster(&ctx, &name, spec, &[]).await;
    let dc = provisioned(&ctx, &name).await;

    let lb = engine()
        .await
        .inspect_container(&format!("{name}-lb"))
        .await
        .unwrap()
        .expect("the LB container");
    assert!(lb.running);
    assert_eq!(lb.labels["io.x-k8s.kind.cluster"], name);
    assert_eq!(lb.labels["io.x-k8s.kind.role"], "external-load-balancer");
    assert_eq!(lb.labels["capd-rs.x-k8s.io/owner-namespace"], ctx.namespace);
    assert_eq!(
        dc.spec.control_plane_endpoint.host, lb.networks["kind"].0,
        "endpoint host is the LB's IP on the kind network"
    );
    assert_eq!(dc.spec.control_plane_endpoint.port, 6443);
    let status = dc.status.clone().unwrap();
    assert_eq!(status.failure_domains, dc.spec.failure_domains);
    assert_eq!(
        condition(&dc, "LoadBalancerAvailable").map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "Available"))
    );
    assert_eq!(
        condition(&dc, "Ready").map(|c| c.status.as_str()),
        Some("True")
    );
    assert_eq!(
        condition(&dc, "Paused").map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("False", "NotPaused"))
    );
    assert!(
        dc.finalizers()
            .contains(&capd::api::CLUSTER_FINALIZER.to_owned())
    );

    // HAProxy answers on both published ports.
    let stats = lb.host_ports["8404/tcp"];
    let page = wait_for("HAProxy's stats page", TIMEOUT, || async {
        http_get(stats, "/stats")
            .await
            .filter(|p| p.contains(" 200 "))
    })
    .await;
    assert!(
        page.contains("kube-apiservers"),
        "the provider's configuration is not the one served"
    );
    let frontend = lb.host_ports["6443/tcp"];
    tokio::net::TcpStream::connect(("127.0.0.1", frontend))
        .await
        .expect("the control-plane frontend accepts connections");

    // A steady cluster is not written again: touch the Cluster, wait for the reconcile it
    // causes, and the DockerCluster keeps its resourceVersion.
    let before = controllers.reconciles("DockerCluster", &ctx.namespace, &name);
    let touch = json!({"metadata": {"labels": {"touched": "yes"}}});
    ctx.api::<Cluster>()
        .patch(&name, &PatchParams::default(), &Patch::Merge(touch))
        .await
        .unwrap();
    reconciled_after(&controllers, &ctx, &name, before).await;
    let again = ctx.api::<DockerCluster>().get(&name).await.unwrap();
    assert_eq!(
        again.resource_version(),
        dc.resource_version(),
        "a steady DockerCluster was written"
    );

    // Clearing the spec's failure domains clears the status's (CAPI copies them from there).
    let clear = json!({"spec": {"failureDomains": null}});
    ctx.api::<DockerCluster>()
        .patch(&name, &PatchParams::default(), &Patch::Merge(clear))
        .await
        .unwrap();
    wait_for("status.failureDomains to be cleared", TIMEOUT, || async {
        let dc = ctx.api::<DockerCluster>().get(&name).await.ok()?;
        dc.status?.failure_domains.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_changes_nothing() {
    let (ctx, controllers) = RunningControllers::started("dc-restart").await;
    let name = ctx.name("c");
    create_cluster(&ctx, &name, DockerClusterSpec::default(), &[]).await;
    let dc = provisioned(&ctx, &name).await;
    controllers.stop().await;

    let restarted = RunningControllers::start(&ctx).await;
    reconciled_after(&restarted, &ctx, &name, 0).await;
    let after = ctx.api::<DockerCluster>().get(&name).await.unwrap();
    assert_eq!(
        after.resource_version(),
        dc.resource_version(),
        "the restarted controller wrote the DockerCluster"
    );
    let lbs = docker_names_with_label(&format!("io.x-k8s.kind.cluster={name}"));
    assert_eq!(lbs, [format!("{name}-lb")], "exactly one load balancer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_removed_by_hand_is_recreated() {
    let (ctx, _controllers) = RunningControllers::started("dc-recreate").await;
    let name = ctx.name("c");
    create_cluster(&ctx, &name, DockerClusterSpec::default(), &[]).await;
    let dc = provisioned(&ctx, &name).await;
    let engine = engine().await;
    engine
        .remove_container(&format!("{name}-lb"))
        .await
        .unwrap();
    let lb = wait_for("the LB to be recreated", TIMEOUT, || async {
        engine
            .inspect_container(&format!("{name}-lb"))
            .await
            .ok()
            .flatten()
            .filter(|c| c.running)
    })
    .await;
    let after = ctx.api::<DockerCluster>().get(&name).await.unwrap();
    assert_eq!(
        after.spec.control_plane_endpoint, dc.spec.control_plane_endpoint,
        "the endpoint is kept"
    );
    assert!(!lb.networks["kind"].0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_all_changes_and_unpause_resumes() {
    let (ctx, controllers) = RunningControllers::started("dc-pause").await;
    let name = ctx.name("c");
    create_cluster(&ctx, &name, DockerClusterSpec::default(), &[]).await;
    provisioned(&ctx, &name).await;

    let pause = |paused: bool| json!({"spec": {"paused": paused}});
    ctx.api::<Cluster>()
        .patch(&name, &PatchParams::default(), &Patch::Merge(pause(true)))
        .await
        .unwrap();
    let dc = wait_for("the Paused condition", TIMEOUT, || async {
        let dc = ctx.api::<DockerCluster>().get(&name).await.ok()?;
        (condition(&dc, "Paused")?.status == "True").then_some(dc)
    })
    .await;
    assert_eq!(
        condition(&dc, "Paused").unwrap().message,
        "Cluster spec.paused is set to true"
    );

    let before = controllers.reconciles("DockerCluster", &ctx.namespace, &name);
    let engine = engine().await;
    engine
        .remove_container(&format!("{name}-lb"))
        .await
        .unwrap();
    reconciled_after(&controllers, &ctx, &name, before).await; // the container's removal wakes it
    assert!(
        lb(&name).await.is_none(),
        "a paused cluster's LB was recreated"
    );
    let still = ctx.api::<DockerCluster>().get(&name).await.unwrap();
    assert_eq!(
        still.resource_version(),
        dc.resource_version(),
        "a paused DockerCluster was written"
    );

    ctx.api::<Cluster>()
        .patch(&name, &PatchParams::default(), &Patch::Merge(pause(false)))
        .await
        .unwrap();
    wait_for("the LB after unpausing", TIMEOUT, || async {
        engine
            .inspect_container(&format!("{name}-lb"))
            .await
            .ok()
            .flatten()
    })
    .await;
    wait_for("Paused=False", TIMEOUT, || async {
        let dc = ctx.api::<DockerCluster>().get(&name).await.ok()?;
        (condition(&dc, "Paused")?.status == "False").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_removes_the_container_and_the_finalizer() {
    let (ctx, _controllers) = RunningControllers::started("dc-delete").await;
    let engine = engine().await;
    let api = ctx.api::<DockerCluster>();

    // An ordinary deletion.
    let name = ctx.name("a");
    create_cluster(&ctx, &name, DockerClusterSpec::default(), &[]).await;
    provisioned(&ctx, &name).await;
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    deleted(&ctx, &name).await;
    assert!(
        lb(&name).await.is_none(),
        "the LB container was left behind"
    );

    // The container already gone and the owner Cluster deleted first.
    let name = ctx.name("b");
    create_cluster(&ctx, &name, DockerClusterSpec::default(), &[]).await;
    provisioned(&ctx, &name).await;
    engine
        .remove_container(&format!("{name}-lb"))
        .await
        .unwrap();
    ctx.api::<Cluster>()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    deleted(&ctx, &name).await;
    assert!(lb(&name).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_externally_managed_cluster_is_left_alone() {
    let (ctx, controllers) = RunningControllers::started("dc-external").await;
    let name = ctx.name("c");
    let created = create_cluster(
        &ctx,
        &name,
        DockerClusterSpec::default(),
        &[("cluster.x-k8s.io/managed-by", "someone-else")],
    )
    .await;
    reconciled_after(&controllers, &ctx, &name, 0).await;
    let dc = ctx.api::<DockerCluster>().get(&name).await.unwrap();
    assert_eq!(
        dc.resource_version(),
        created.resource_version(),
        "an externally managed DockerCluster was written"
    );
    assert!(dc.finalizers().is_empty() && dc.status.is_none());
    assert!(
        engine()
            .await
            .inspect_container(&format!("{name}-lb"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_named_cluster_in_another_namespace_is_never_adopted_or_deleted() {
    let first = TestContext::new("dc-clash-a").await;
    let second = TestContext::new("dc-clash-b").await;
    crds::install(&first.kube).await;
    let _a = RunningControllers::start(&first).await;
    let _b = RunningControllers::start(&second).await;
    let name = first.name("c");
    create_cluster(&first, &name, DockerClusterSpec::default(), &[]).await;
    provisioned(&first, &name).await;

    create_cluster(&second, &name, DockerClusterSpec::default(), &[]).await;
    let dc = wait_for("the clash to be reported", TIMEOUT, || async {
        let dc = second.api::<DockerCluster>().get(&name).await.ok()?;
        (condition(&dc, "LoadBalancerAvailable")?.status == "False").then_some(dc)
    })
    .await;
    let message = &condition(&dc, "LoadBalancerAvailable").unwrap().message;
    assert!(
        message.contains(&format!(
            "belongs to DockerCluster {}/{name}",
            first.namespace
        )),
        "{message}"
    );
    assert!(
        dc.spec.control_plane_endpoint.host.is_empty(),
        "the other cluster's endpoint was taken"
    );

    second
        .api::<DockerCluster>()
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the second DockerCluster to go", TIMEOUT, || async {
        second
            .api::<DockerCluster>()
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let lb = engine()
        .await
        .inspect_container(&format!("{name}-lb"))
        .await
        .unwrap()
        .expect("the first cluster's LB survives");
    assert_eq!(
        lb.labels["capd-rs.x-k8s.io/owner-namespace"],
        first.namespace
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_is_reported_with_the_engines_reason() {
    let (ctx, _controllers) = RunningControllers::started("dc-noimage").await;
    let name = ctx.name("c");
    let spec = DockerClusterSpec {
        load_balancer: DockerLoadBalancer {
            image_repository: "capd-rs-test-missing".into(),
            image_tag: "none".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    create_cluster(&ctx, &name, spec, &[]).await;
    let message = wait_for("the pull failure", TIMEOUT, || async {
        let dc = ctx.api::<DockerCluster>().get(&name).await.ok()?;
        let c = condition(&dc, "LoadBalancerAvailable")?;
        (c.status == "False" && c.message.contains("cannot pull image")).then(|| c.message.clone())
    })
    .await;
    assert!(
        message.starts_with(
            "Failed to create load balancer: cannot pull image capd-rs-test-missing/haproxy:none: "
        ),
        "{message}"
    );
    assert!(message.len() > "Failed to create load balancer: cannot pull image capd-rs-test-missing/haproxy:none: ".len(), "no engine reason");
    wait_for("a LoadBalancerFailed event", TIMEOUT, || async {
        failure_event(&ctx, &name, "LoadBalancerImagePullFailed").await
    })
    .await;
    assert!(
        docker_names_with_label(&format!("io.x-k8s.kind.cluster={name}")).is_empty(),
        "something was half made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_is_down_is_reported_and_retried() {
    let ctx = TestContext::new("dc-down").await;
    crds::install(&ctx.kube).await;
    // Nothing listens on port 1: every call fails as with an engine that is down.
    let client =
        bollard::Docker::connect_with_http("http://127.0.0.1:1", 5, bollard::API_DEFAULT_VERSION)
            .unwrap();
    let controllers = RunningControllers::with_runtime(
        &ctx,
        &ctx.namespace,
        Arc::new(Engine::from_client(client)),
        "kind",
    );
    let name = ctx.name("c");
    create_cluster(&ctx, &name, DockerClusterSpec::default(), &[]).await;
    let message = wait_for("the engine failure", TIMEOUT, || async {
        let dc = ctx.api::<DockerCluster>().get(&name).await.ok()?;
        let c = condition(&dc, "LoadBalancerAvailable")?;
        (c.status == "False").then(|| c.message.clone())
    })
    .await;
    assert!(
        message.contains("the Docker engine is unreachable"),
        "{message}"
    );
    wait_for("a LoadBalancerFailed event", TIMEOUT, || async {
        failure_event(&ctx, &name, "LoadBalancerFailed").await
    })
    .await;
    // Retried with backoff: 1 s, then 2 s...
    let first = controllers.reconciles("DockerCluster", &ctx.namespace, &name);
    reconciled_after(&controllers, &ctx, &name, first).await;
}

async fn failure_event(ctx: &TestContext, name: &str, reason: &str) -> Option<()> {
    let events = ctx.api::<Event>().list(&ListParams::default()).await.ok()?;
    events
        .items
        .iter()
        .any(|e| {
            e.reason.as_deref() == Some(reason) && e.involved_object.name.as_deref() == Some(name)
        })
        .then_some(())
}

fn docker_names_with_label(label: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_network_is_created() {
    let ctx = TestContext::new("dc-network").await;
    crds::install(&ctx.kube).await;
    let network = ctx.name("net");
    let _controllers =
        RunningControllers::with_runtime(&ctx, &ctx.namespace, Arc::new(engine().await), &network);
    let name = ctx.name("c");
    create_cluster(&ctx, &name, DockerClusterSpec::default(), &[]).await;
    let dc = provisioned(&ctx, &name).await;
    let container = lb(&name).await.expect("the LB container");
    assert_eq!(
        dc.spec.control_plane_endpoint.host, container.networks[&network].0,
        "the LB is on the new network"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_filter_limits_the_controller_to_its_labelled_clusters() {
    let ctx = TestContext::new("dc-filter").await;
    crds::install(&ctx.kube).await;
    let mut settings = RunningControllers::settings(&ctx.namespace, "kind");
    settings.watch_filter = Some("team-a".into());
    let controllers = RunningControllers::with_settings(&ctx, Arc::new(engine().await), settings);

    let other = ctx.name("other");
    create_cluster(&ctx, &other, DockerClusterSpec::default(), &[]).await;
    let mine = ctx.name("mine");
    create_cluster(&ctx, &mine, DockerClusterSpec::default(), &[]).await;
    let label = json!({"metadata": {"labels": {"cluster.x-k8s.io/watch-filter": "team-a"}}});
    ctx.api::<DockerCluster>()
        .patch(&mine, &PatchParams::default(), &Patch::Merge(label))
        .await
        .unwrap();
    provisioned(&ctx, &mine).await;

    // The unlabelled cluster was created first, so it would have been seen by now.
    assert_eq!(
        controllers.reconciles("DockerCluster", &ctx.namespace, &other),
        0
    );
    let dc = ctx.api::<DockerCluster>().get(&other).await.unwrap();
    assert!(
        dc.finalizers().is_empty() && dc.status.is_none(),
        "an unlabelled DockerCluster was reconciled"
    );
    assert!(lb(&other).await.is_none());
}
