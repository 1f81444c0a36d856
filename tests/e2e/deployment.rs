//! The manager as CAPD's own Deployment runs it: CAPD v1.14.0's container arguments (a fixture)
//! on CAPD's ports, serving webhooks, probes and secure metrics, leading, and releasing its
//! Lease on SIGTERM. And readiness that waits for the controllers' caches, with a manager that
//! runs as a ServiceAccount.

use std::time::Duration;

use capd::leader::LEASE_NAME;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::support::access::{
    ClusterRbac, MetricsTokens, scrape, service_account_token, token_kubeconfig, trusting_client,
    wait_authenticated,
};
use crate::support::manager::{ManagerProcess, sample_sum};
use crate::support::webhook::{Pki, Registration, wait_until_active};
use crate::support::{TestContext, crds, kubectl_async, wait_for};

/// CAPD v1.14.0's manager container arguments, as clusterctl renders them.
fn capd_deployment_args() -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Deployment {
        args: Vec<String>,
    }
    let fixture = std::fs::read_to_string(
        crate::support::setup::repo_root().join("tests/fixtures/capd/manager-deployment-args.yaml"),
    )
    .unwrap();
    serde_saphyr::from_str::<Deployment>(&fixture).unwrap().args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capds_deployment_arguments_start_a_manager_that_serves_and_leads() {
    let ctx = TestContext::new("e2e-capd-args").await;
    crds::install(&ctx.kube).await;
    let rbac = ClusterRbac {
        name: ctx.name("metrics-reader"),
    };
    let pki = Pki::mint("e2e-capd-args-ca");
    // A Deployment mounts the webhook certificate and sets POD_NAMESPACE; the rest is CAPD's,
    // including its empty DOCKER_HOST (the default socket), unless the tests' engine is elsewhere.
    let args = capd_deployment_args();
    let mut env = vec![
        ("POD_NAMESPACE", ctx.namespace.as_str()),
        ("POD_NAME", "capd-rs-controller-manager-0"),
    ];
    if std::env::var_os("DOCKER_HOST").is_none() {
        env.push(("DOCKER_HOST", ""));
    }
    let mut manager = ManagerProcess::start_as_deployed(&pki, &args, &env);
    manager
        .wait_healthy("/healthz", Duration::from_secs(60))
        .await;
    manager
        .wait_healthy("/readyz", Duration::from_secs(60))
        .await;

    // It leads: the Lease in its namespace names it.
    let lease = wait_for("the Lease", Duration::from_secs(30), || async {
        Api::<Lease>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .get_opt(LEASE_NAME)
            .await
            .ok()?
    })
    .await;
    let holder = lease.spec.unwrap().holder_identity.unwrap_or_default();
    assert!(!holder.is_empty(), "nobody holds the Lease");

    // Its webhooks refuse a bad object through the apiserver.
    let _registration = Registration::register(&ctx, manager.webhook_port, &pki.ca_pem);
    wait_until_active(&ctx.namespace).await;
    let (ok, _, err) = kubectl_async(
        &["apply", "-n", &ctx.namespace, "-f", "-"],
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerMachine\nmetadata:\n  name: m\nspec:\n  bootstrapTimeout: forever\n",
    )
    .await;
    assert!(!ok && err.contains("spec.bootstrapTimeout"), "{err}");

    // Secure metrics: a token allowed to get /metrics reads controller-runtime's series; one
    // that is not gets 403; none gets 401.
    let MetricsTokens { reader, stranger } = MetricsTokens::mint(&ctx, &rbac).await;
    // The diagnostics certificate is self-signed (as CAPD's).
    let client = trusting_client();
    let url = format!("https://127.0.0.1:{}/metrics", manager.diagnostics_port);
    let (status, _, body) = scrape(&client, &url, Some(&reader)).await;
    assert_eq!(status, 200, "{body}");
    let webhook = "/validate-infrastructure-cluster-x-k8s-io-v1beta2-dockermachine";
    for (name, labels) in [
        (
            "controller_runtime_reconcile_total",
            vec![("controller", "dockermachine"), ("result", "success")],
        ),
        (
            "controller_runtime_max_concurrent_reconciles",
            vec![("controller", "dockercluster")],
        ),
        (
            "workqueue_depth",
            vec![("name", "dockermachine"), ("controller", "dockermachine")],
        ),
        (
            "controller_runtime_webhook_requests_total",
            vec![("webhook", webhook), ("code", "200")],
        ),
        ("leader_election_master_status", vec![("name", LEASE_NAME)]),
    ] {
        let line = format!("{name}{{");
        assert!(
            body.lines().any(|l| l.starts_with(&line)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))),
            "no {name} series with {labels:?}:\n{body}"
        );
    }
    assert_eq!(
        sample_sum(
            &body,
            "controller_runtime_max_concurrent_reconciles",
            &[("controller", "dockermachine")]
        ),
        100.0,
        "CAPD's --dockermachine-concurrency default"
    );
    assert!(
        sample_sum(
            &body,
            "controller_runtime_webhook_requests_total",
            &[("webhook", webhook)]
        ) >= 1.0
    );
    let (status, _, _) = scrape(&client, &url, Some(&stranger)).await;
    assert_eq!(status, 403);
    let (status, _, _) = scrape(&client, &url, None).await;
    assert_eq!(status, 401);

    // SIGTERM: a clean exit that leaves the Lease free for a successor.
    manager.signal(libc::SIGTERM);
    let status = manager.wait_exit(Duration::from_secs(15)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let lease = Api::<Lease>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get(LEASE_NAME)
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(""),
        "the Lease was not released"
    );
    let log = manager.log();
    assert!(
        !log.contains('\u{1b}'),
        "escape sequences in a log file:\n{log}"
    );
}

/// A Role in the test namespace allowing `verbs` on `resources` of `group`.
fn role_rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    }
}

/// Grants ServiceAccount `account` the `rules` in the test namespace (Role and RoleBinding
/// `name`; the namespace's deletion takes them).
async fn grant(ctx: &TestContext, name: &str, account: &str, rules: Vec<PolicyRule>) {
    let post = PostParams::default();
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        rules: Some(rules),
    };
    ctx.api::<Role>().create(&post, &role).await.unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.to_owned(),
            namespace: Some(ctx.namespace.clone()),
            ..Default::default()
        }]),
    };
    ctx.api::<RoleBinding>()
        .create(&post, &binding)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_until_the_controllers_caches_are_filled() {
    let ctx = TestContext::new("e2e-readyz").await;
    crds::install(&ctx.kube).await;
    // The manager runs as a ServiceAccount that may do its work but not yet list
    // DockerMachines, so that cache cannot fill.
    let token = service_account_token(&ctx, "manager").await;
    let all = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    grant(
        &ctx,
        "manager",
        "manager",
        vec![
            role_rule(
                "infrastructure.cluster.x-k8s.io",
                &[
                    "dockerclusters",
                    "dockerclusters/status",
                    "dockermachines/status",
                ],
                &all,
            ),
            role_rule(
                "cluster.x-k8s.io",
                &["clusters", "machines"],
                &["get", "list", "watch"],
            ),
            role_rule("", &["secrets"], &["get", "list", "watch"]),
            role_rule("events.k8s.io", &["events"], &["create", "patch"]),
        ],
    )
    .await;
    wait_authenticated(&ctx.kube, &token).await;
    let kubeconfig = token_kubeconfig(&token, &ctx.namespace);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    let kubeconfig_arg = format!("--kubeconfig={}", path.display());
    let pki = Pki::mint("e2e-readyz-ca");
    let manager = ManagerProcess::start(
        &pki,
        &[
            &kubeconfig_arg,
            "--namespace",
            &ctx.namespace,
            "--diagnostics-address=0",
        ],
        &[],
    );

    // Alive and serving webhooks, but not ready: the DockerMachine cache stays empty.
    manager
        .wait_healthy("/healthz", Duration::from_secs(60))
        .await;
    manager
        .wait_healthy("/readyz/webhook", Duration::from_secs(60))
        .await;
    let (status, body) = manager.health("/readyz").await.expect("an answer");
    assert_eq!(
        (status, body.as_str()),
        (
            500,
            "[-]controllers failed: reason withheld\n[+]webhook ok\nhealthz check failed\n"
        )
    );
    let (status, body) = manager.health("/readyz/controllers").await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("not synced"), "{body}");

    // Allowed to list them, the cache fills and the manager becomes ready.
    grant(
        &ctx,
        "manager-machines",
        "manager",
        vec![role_rule(
            "infrastructure.cluster.x-k8s.io",
            &["dockermachines"],
            &all,
        )],
    )
    .await;
    manager
        .wait_healthy("/readyz", Duration::from_secs(90))
        .await;
    assert_eq!(
        manager.health("/readyz?verbose").await,
        Some((
            200,
            "[+]controllers ok\n[+]webhook ok\nhealthz check passed\n".to_owned()
        ))
    );
}
