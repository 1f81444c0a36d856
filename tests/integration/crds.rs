//! The generated CRDs on a real apiserver: accepted and Established, every field stored as sent,
//! printer columns listed, and the schema's own limits enforced with the field named.

use capd::api::{DockerCluster, DockerClusterTemplate, DockerMachine, DockerMachineTemplate};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::support::{TestContext, crds, kubectl};

macro_rules! full_fixture {
    ($name:literal) => {
        include_str!(concat!("../fixtures/full/", $name, ".yaml"))
    };
}

/// Creates the fixture in the test's namespace, writes its status through the status
/// subresource, and returns what the apiserver stored next to what was sent, as JSON.
async fn store<K>(ctx: &TestContext, yaml: &str) -> (Value, Value)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let mut sent: K = capd::api::parse::from_yaml(yaml).expect("fixture parses");
    sent.meta_mut().namespace = Some(ctx.namespace.clone());
    let api: Api<K> = ctx.api();
    let created = api
        .create(&PostParams::default(), &sent)
        .await
        .expect("create");
    let sent = serde_json::to_value(&sent).unwrap();
    if let Some(status) = sent.get("status") {
        api.patch_status(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .expect("write status");
    }
    let stored = serde_json::to_value(api.get(&created.name_any()).await.expect("get")).unwrap();
    (sent, stored)
}

fn assert_stored_as_sent(kind: &str, (sent, stored): (Value, Value)) {
    for part in ["spec", "status"] {
        assert_eq!(
            stored.get(part),
            sent.get(part),
            "{kind} {part} changed on the way through the apiserver"
        );
    }
    assert!(
        sent["spec"].as_object().is_some_and(|s| !s.is_empty()),
        "{kind} fixture has no spec"
    );
}

#[tokio::test]
async fn every_field_of_every_kind_is_stored_unchanged() {
    let ctx = TestContext::new("crd-fields").await;
    crds::install(&ctx.kube).await;
    assert_stored_as_sent(
        "DockerCluster",
        store::<DockerCluster>(&ctx, full_fixture!("dockercluster")).await,
    );
    assert_stored_as_sent(
        "DockerMachine",
        store::<DockerMachine>(&ctx, full_fixture!("dockermachine")).await,
    );
    assert_stored_as_sent(
        "DockerClusterTemplate",
        store::<DockerClusterTemplate>(&ctx, full_fixture!("dockerclustertemplate")).await,
    );
    let (sent, stored) =
        store::<DockerMachineTemplate>(&ctx, full_fixture!("dockermachinetemplate")).await;
    assert_eq!(
        stored["status"]["capacity"],
        json!({"cpu": "2", "memory": "24Gi"})
    );
    assert_stored_as_sent("DockerMachineTemplate", (sent, stored));
}

#[tokio::test]
async fn a_machine_without_spec_is_stored_with_an_empty_one() {
    let ctx = TestContext::new("crd-nospec").await;
    crds::install(&ctx.kube).await;
    let api = dynamic_api(&ctx, "DockerMachine");
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerMachine",
        "metadata": {"name": "bare"}
    }))
    .unwrap();
    let stored = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create without spec");
    assert_eq!(stored.data["spec"], json!({}));
}

#[tokio::test]
async fn printer_columns_and_category_list_the_objects() {
    let ctx = TestContext::new("crd-columns").await;
    crds::install(&ctx.kube).await;
    store::<DockerMachine>(&ctx, full_fixture!("dockermachine")).await;
    store::<DockerCluster>(&ctx, full_fixture!("dockercluster")).await;

    let (ok, out, err) = kubectl(&["get", "dockermachines", "-o", "wide", "-n", &ctx.namespace]);
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "CLUSTER",
            "PROVIDER ID",
            "FAILURE DOMAIN",
            "IP",
            "PAUSED",
            "PROVISIONED",
            "AGE"
        ]
    );
    assert_eq!(
        lines[1][..7],
        [
            "full",
            "full-cluster",
            "docker:////full-cluster-control-plane-x1",
            "fd1",
            "172.18.0.3",
            "False",
            "true"
        ]
    );
    let (ok, out, _) = kubectl(&["get", "dockermachines", "-n", &ctx.namespace]);
    assert!(
        ok && !out.contains("PROVIDER ID"),
        "priority-10 columns shown without -o wide:\n{out}"
    );

    let (ok, out, err) = kubectl(&["get", "dockerclusters", "-n", &ctx.namespace]);
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CLUSTER", "AGE"]);
    assert!(out.lines().nth(1).unwrap().starts_with("full "), "{out}");

    let (ok, out, err) = kubectl(&["get", "cluster-api", "-n", &ctx.namespace, "-o", "name"]);
    assert!(ok, "{err}");
    let mut names: Vec<&str> = out.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "dockercluster.infrastructure.cluster.x-k8s.io/full",
            "dockermachine.infrastructure.cluster.x-k8s.io/full"
        ]
    );
}

fn dynamic_api(ctx: &TestContext, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(capd::api::GROUP, capd::api::VERSION, kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()));
    Api::namespaced_with(ctx.kube.clone(), &ctx.namespace, &resource)
}

/// Sends a raw object (bypassing the Rust types, which never send these values) and expects the
/// apiserver to refuse it with an error that names `field`; checks nothing was stored.
async fn assert_refused(
    ctx: &TestContext,
    kind: &str,
    name: &str,
    spec: Value,
    field: &str,
    rule: &str,
) {
    let api = dynamic_api(ctx, kind);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": kind,
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{kind} {name}: {status:?}");
            assert!(
                status.message.contains(field),
                "{kind} {name}: error does not name {field}: {}",
                status.message
            );
            assert!(
                status.message.contains(rule),
                "{kind} {name}: error does not say {rule:?}: {}",
                status.message
            );
        }
        other => panic!("{kind} {name} was not refused: {other:?}"),
    }
    assert!(
        api.get_opt(name).await.unwrap().is_none(),
        "{kind} {name} was stored"
    );
}

#[tokio::test]
async fn the_apiserver_enforces_the_schema_limits() {
    let ctx = TestContext::new("crd-limits").await;
    crds::install(&ctx.kube).await;

    let long_id = format!("docker:////{}", "x".repeat(502));
    assert_refused(
        &ctx,
        "DockerMachine",
        "long-id",
        json!({"providerID": long_id}),
        "spec.providerID",
        "Too long",
    )
    .await;
    assert_refused(
        &ctx,
        "DockerMachine",
        "empty-id",
        json!({"providerID": ""}),
        "spec.providerID",
        "at least 1",
    )
    .await;
    for (name, port, rule) in [
        ("port-0", 0, "greater than or equal to 1"),
        ("port-70000", 70000, "less than or equal to 65535"),
    ] {
        let spec = json!({"controlPlaneEndpoint": {"host": "10.0.0.1", "port": port}});
        assert_refused(
            &ctx,
            "DockerCluster",
            name,
            spec,
            "spec.controlPlaneEndpoint.port",
            rule,
        )
        .await;
    }
    let spec = json!({"controlPlaneEndpoint": {}});
    assert_refused(
        &ctx,
        "DockerCluster",
        "empty-endpoint",
        spec,
        "spec.controlPlaneEndpoint",
        "at least 1",
    )
    .await;
    let spec = json!({"failureDomains": [{"name": "a"}, {"name": "a"}]});
    assert_refused(
        &ctx,
        "DockerCluster",
        "dup-fd",
        spec,
        "spec.failureDomains[1]",
        "Duplicate value",
    )
    .await;
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"name": format!("fd{i:03}")}))
        .collect();
    assert_refused(
        &ctx,
        "DockerCluster",
        "many-fd",
        json!({"failureDomains": many}),
        "spec.failureDomains",
        "Too many",
    )
    .await;
    let spec = json!({"template": {"spec": {"failureDomains": []}}});
    assert_refused(
        &ctx,
        "DockerClusterTemplate",
        "no-fd",
        spec,
        "spec.template.spec.failureDomains",
        "at least 1",
    )
    .await;
    let spec = json!({"template": {"metadata": {}, "spec": {}}});
    assert_refused(
        &ctx,
        "DockerMachineTemplate",
        "empty-meta",
        spec,
        "spec.template.metadata",
        "at least 1",
    )
    .await;
    assert_refused(
        &ctx,
        "DockerMachineTemplate",
        "no-template",
        json!({}),
        "spec.template",
        "Required value",
    )
    .await;

    // Status is validated too: an unknown address type through the status subresource.
    let api = dynamic_api(&ctx, "DockerMachine");
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerMachine",
        "metadata": {"name": "addr"}, "spec": {}
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");
    let status = json!({"status": {"addresses": [{"type": "PublicIP", "address": "1.2.3.4"}]}});
    let err = api
        .patch_status("addr", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("status.addresses[0].type") && message.contains("Unsupported value"),
        "{message}"
    );
    let stored = api.get("addr").await.unwrap();
    assert!(
        stored
            .data
            .get("status")
            .and_then(|s| s.get("addresses"))
            .is_none(),
        "bad status stored: {stored:?}"
    );
}
