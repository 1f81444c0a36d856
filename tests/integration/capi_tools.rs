//! The test harness's real tools, each proven against a real apiserver: a second control plane
//! and the audit log, a webhook behind a Service reached through an EndpointSlice on a test
//! host, cert-manager issuing and injecting, and Cluster API's own managers with their webhooks.

use std::time::Duration;

use capd::features::Features;
use capd::tls::TlsOptions;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DynamicObject, ObjectMeta, PostParams};
use serde_json::json;

use crate::support::cert_manager::{self, CertManager};
use crate::support::cluster_api::ClusterApi;
use crate::support::control_plane::{self, ControlPlane};
use crate::support::netns::{self, NetNs};
use crate::support::process::Process;
use crate::support::setup::{Tool, tools};
use crate::support::webhook::{self, Pki, Registration, WebhookServer};
use crate::support::{TestContext, access, crds, http_get_at, wait_for};

/// Creates namespace `name` in `cp`.
async fn create_namespace(cp: &ControlPlane, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(cp.client().await.unwrap())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_control_plane_is_independent_and_goes_away_when_dropped() {
    let shared = tokio::task::spawn_blocking(control_plane::control_plane)
        .await
        .unwrap();
    let extra = control_plane::start_extra_async().await.unwrap();
    assert_ne!(extra.server, shared.server);
    create_namespace(&extra, "only-in-the-extra-one").await;
    let (found, _, _) = shared
        .kubectl_async(&["get", "namespace", "only-in-the-extra-one"], "")
        .await;
    assert!(
        !found,
        "the shared control plane sees the extra one's objects"
    );

    let dir = extra.dir.clone();
    drop(extra);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let (ok, out, err) = shared.kubectl_async(&["get", "--raw", "/readyz"], "").await;
    assert!(
        ok && out == "ok",
        "the shared control plane suffered: {out}{err}"
    );
}

#[tokio::test]
async fn the_audit_log_records_service_accounts_requests_only() {
    let ctx = TestContext::new("audit").await;
    let cp = control_plane::control_plane();
    let token = access::service_account_token(&ctx, "auditee").await;
    access::wait_authenticated(&ctx.kube, &token).await;
    let (allowed, _, err) = cp
        .kubectl_async(
            &["--token", &token, "get", "configmaps", "-n", &ctx.namespace],
            "",
        )
        .await;
    assert!(!allowed, "the ServiceAccount has no RBAC, yet: {err}");

    let user = format!("system:serviceaccount:{}:auditee", ctx.namespace);
    let event = wait_for(
        "the request in the audit log",
        Duration::from_secs(30),
        || async {
            cp.audit_events().into_iter().find(|e| {
                e["user"]["username"] == user.as_str() && e["objectRef"]["resource"] == "configmaps"
            })
        },
    )
    .await;
    assert_eq!(event["level"], "Metadata");
    assert_eq!(event["verb"], "list");
    assert_eq!(event["responseStatus"]["code"], 403);
    assert!(event.get("requestObject").is_none(), "{event}");
    // The test's own admin requests (creating the ServiceAccount, minting its token) are not
    // logged.
    assert!(
        cp.audit_events()
            .iter()
            .all(|e| e["user"]["username"] != "admin"),
        "admin requests were audited"
    );
}

#[tokio::test]
async fn a_webhook_behind_a_service_is_called_through_an_endpoint_slice_on_a_test_host() {
    let ctx = TestContext::new("svc-webhook").await;
    crds::install(&ctx.kube).await;
    let cp = control_plane::control_plane();
    let host = NetNs::create().unwrap();
    let service = "capd-rs-webhook-service";
    let dns_name = format!("{service}.{}.svc", ctx.namespace);
    let pki = Pki::mint_for("capd-rs-test-svc-ca", &[&dns_name], &[]);
    // On the host, listening on the host end's address: no process inside the namespace needed.
    let server = WebhookServer::start_on(
        &pki,
        Features::default(),
        TlsOptions::default(),
        host.host_addr.into(),
    );
    let _registration = Registration::register_service(&ctx, service, &pki.ca_pem);

    let invalid = "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerCluster\nmetadata:\n  name: probe\nspec:\n  failureDomains: [{name: b}, {name: a}]\n";
    let dry_run = ["apply", "--dry-run=server", "-n", &ctx.namespace, "-f", "-"];
    // Without an endpoint the apiserver cannot call it (failurePolicy Fail)...
    let err = wait_for(
        "the webhook to be tried",
        Duration::from_secs(30),
        || async {
            let (ok, _, err) = cp.kubectl_async(&dry_run, invalid).await;
            (!ok && err.contains("failed calling webhook")).then_some(err)
        },
    )
    .await;
    assert!(err.contains(&dns_name) || err.contains(service), "{err}");

    // ...and with one, it reaches the server at the test host's address, verifying its
    // certificate for <service>.<namespace>.svc.
    let _exposed = netns::expose(
        cp,
        &ctx.namespace,
        service,
        443,
        host.host_addr.into(),
        server.port,
    )
    .await
    .unwrap();
    wait_for("the webhook to refuse", Duration::from_secs(30), || async {
        let (ok, _, err) = cp.kubectl_async(&dry_run, invalid).await;
        (!ok && err.contains("failure domains must be sorted")).then_some(())
    })
    .await;
    let valid = invalid.replace("[{name: b}, {name: a}]", "[{name: a}, {name: b}]");
    let (ok, _, err) = cp.kubectl_async(&dry_run, &valid).await;
    assert!(ok, "a valid DockerCluster was refused: {err}");
}

#[tokio::test]
async fn the_manager_inside_a_test_host_namespace_serves_webhooks_behind_a_service() {
    let ctx = TestContext::new("netns-manager").await;
    crds::install(&ctx.kube).await;
    let cp = control_plane::control_plane();
    let host = NetNs::create().unwrap();
    let access = host.api_access(cp).unwrap();
    let service = "capd-rs-webhook-service";
    let pki = Pki::mint_for(
        "capd-rs-test-netns-ca",
        &[&format!("{service}.{}.svc", ctx.namespace)],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    pki.install(&certs);
    // CAPD's default ports (webhooks 9443, probes 9440, metrics 8443): inside a namespace of its
    // own, the manager runs with its Deployment's settings without clashing with anything.
    let mut command = host.command(env!("CARGO_BIN_EXE_manager"));
    command
        .env("KUBECONFIG", &access.kubeconfig)
        .env_remove("RUST_LOG")
        .args(["--namespace", &ctx.namespace, "--privileged-nodes=false"])
        .arg(format!("--webhook-cert-dir={}", certs.display()));
    let mut manager = Process::spawn("manager-in-netns", command, dir.path()).unwrap();
    let _exposed = netns::expose(cp, &ctx.namespace, service, 443, host.ns_addr.into(), 9443)
        .await
        .unwrap();
    let _registration = Registration::register_service(&ctx, service, &pki.ca_pem);
    webhook::wait_until_active(&ctx.namespace).await;
    // Ready means its caches synced: it reaches the apiserver through the relay.
    let readyz = std::net::SocketAddr::from((host.ns_addr, 9440));
    wait_for(
        "the manager to be ready",
        Duration::from_secs(60),
        || async {
            let answer = http_get_at(readyz, "/readyz").await?;
            (answer.split_whitespace().nth(1) == Some("200")).then_some(())
        },
    )
    .await;
    manager.check_running().unwrap();
}

#[tokio::test]
async fn cert_manager_issues_a_certificate_and_injects_its_ca() {
    let cp = control_plane::start_extra_async().await.unwrap();
    let mut cert_manager = CertManager::start(&cp).await.unwrap();
    let client = cp.client().await.unwrap();
    let ns = "cert-manager-test";
    create_namespace(&cp, ns).await;

    let issuer = DynamicObject::new("selfsigned", &cert_manager::issuer())
        .within(ns)
        .data(json!({"spec": {"selfSigned": {}}}));
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &cert_manager::issuer())
        .create(&PostParams::default(), &issuer)
        .await
        .unwrap();
    let certificate = DynamicObject::new("serving-cert", &cert_manager::certificate())
        .within(ns)
        .data(json!({"spec": {
            "dnsNames": ["webhook-service.cert-manager-test.svc"],
            "issuerRef": {"kind": "Issuer", "name": "selfsigned"},
            "secretName": "serving-cert-tls",
        }}));
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &cert_manager::certificate())
        .create(&PostParams::default(), &certificate)
        .await
        .unwrap();
    cert_manager
        .wait_certificate_ready(&client, ns, "serving-cert", Duration::from_secs(60))
        .await
        .unwrap();
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get("serving-cert-tls")
        .await
        .unwrap();
    let data = secret.data.unwrap_or_default();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(
            data.get(key).is_some_and(|v| !v.0.is_empty()),
            "{key} missing"
        );
    }

    // cainjector fills caBundle of a webhook configuration annotated with the Certificate.
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": "capd-rs-test-injected",
            "annotations": {"cert-manager.io/inject-ca-from": format!("{ns}/serving-cert")},
        },
        "webhooks": [{
            "name": "injected.capd-rs.test",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "clientConfig": {"service": {"name": "webhook-service", "namespace": ns, "path": "/validate"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nothing-here"}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
        }],
    });
    let (ok, _, err) = cp
        .kubectl_async(&["create", "-f", "-"], &config.to_string())
        .await;
    assert!(ok, "{err}");
    let ca = data["ca.crt"].0.clone();
    let api =
        Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
            client,
        );
    wait_for("the CA to be injected", Duration::from_secs(60), || async {
        let config = api.get("capd-rs-test-injected").await.ok()?;
        let bundle = config.webhooks?.first()?.client_config.ca_bundle.clone()?;
        (bundle.0 == ca).then_some(())
    })
    .await;
    cert_manager.check_running().unwrap();
}

#[tokio::test]
async fn cluster_api_managers_start_and_their_webhooks_admit_and_convert() {
    let cp = control_plane::start_extra_async().await.unwrap();
    let mut capi = ClusterApi::start(&cp).await.unwrap();
    // The provider's CRDs too: converting a Cluster to v1beta1 looks up the version of its
    // infrastructureRef's kind by the CRD's contract label.
    let ours = capd::api::crds::all_crds().unwrap();
    crds::apply_and_wait(&cp.client().await.unwrap(), &ours)
        .await
        .unwrap();
    let ns = "capi-test";
    create_namespace(&cp, ns).await;
    let dry_run = ["apply", "--dry-run=server", "-n", ns, "-f", "-"];

    // Core's webhook: a Cluster referring to nothing is refused (the CRD's schema allows it).
    let bad_cluster = "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: bad\nspec:\n  paused: false\n";
    wait_for(
        "core's webhook to refuse",
        Duration::from_secs(30),
        || async {
            let (ok, _, err) = cp.kubectl_async(&dry_run, bad_cluster).await;
            (!ok && err.contains(
                "one of spec.controlPlaneRef, spec.infrastructureRef or spec.topology must be set",
            ))
            .then_some(())
        },
    )
    .await;
    let cluster = "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: good\nspec:\n  infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DockerCluster, name: good}\n";
    let (ok, _, err) = cp
        .kubectl_async(&["apply", "-n", ns, "-f", "-"], cluster)
        .await;
    assert!(ok, "a valid Cluster was refused: {err}");

    // Core's conversion webhook serves the Cluster as v1beta1.
    let (ok, out, err) = cp
        .kubectl_async(
            &[
                "get",
                "clusters.v1beta1.cluster.x-k8s.io",
                "good",
                "-n",
                ns,
                "-o",
                "jsonpath={.apiVersion} {.spec.infrastructureRef.kind}",
            ],
            "",
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(out, "cluster.x-k8s.io/v1beta1 DockerCluster");

    // The kubeadm control-plane manager's webhook.
    let kcp = "apiVersion: controlplane.cluster.x-k8s.io/v1beta2\nkind: KubeadmControlPlane\nmetadata:\n  name: kcp\nspec:\n  version: not-a-version\n  machineTemplate:\n    spec:\n      infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DockerMachineTemplate, name: cp}\n";
    let (ok, _, err) = cp.kubectl_async(&dry_run, kcp).await;
    assert!(
        !ok && err.contains("must be a valid semantic version"),
        "{err}"
    );
    // The kubeadm bootstrap manager's webhook: Ignition needs a feature gate.
    let config = "apiVersion: bootstrap.cluster.x-k8s.io/v1beta2\nkind: KubeadmConfig\nmetadata:\n  name: kc\nspec:\n  format: ignition\n";
    let (ok, _, err) = cp.kubectl_async(&dry_run, config).await;
    assert!(
        !ok && err.contains("KubeadmBootstrapFormatIgnition"),
        "{err}"
    );

    for manager in capi.managers() {
        assert_eq!(manager.health("/healthz").await, Some(200));
        assert!(
            manager.metrics().await.contains("controller_runtime_"),
            "{} serves no metrics",
            manager.process.name()
        );
    }
    capi.check_running().unwrap();
    let (ok, _, err) = cp
        .kubectl_async(&["delete", "cluster", "good", "-n", ns, "--wait=false"], "")
        .await;
    assert!(ok, "{err}");
}

#[tokio::test]
async fn clusterctl_knows_its_release() {
    let dir = tokio::task::spawn_blocking(|| tools(Tool::Clusterctl))
        .await
        .unwrap()
        .unwrap();
    let out = std::process::Command::new(dir.join("clusterctl"))
        .args(["version", "-o", "short"])
        // No update check: it would ask GitHub.
        .env("CLUSTERCTL_DISABLE_VERSIONCHECK", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1.14.2");
}
