//! The manager on exactly the bundle's RBAC: run as a ServiceAccount granted only the rules of
//! config/rbac (as config/default renders them) and the bundle Deployment's arguments, it
//! becomes ready and leads, provisions a DockerCluster and a bootstrapped control-plane
//! DockerMachine behind its load balancer, gives the workload Node its providerID, serves
//! secure metrics, cleans up on deletion and releases its Lease, and is refused nothing; the
//! apiserver's audit log shows that it used every permission the bundle grants.

use std::collections::BTreeSet;
use std::time::Duration;

use capd::api::DockerMachine;
use capd::api::capi::Cluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::access::{
    ClusterRbac, MetricsTokens, scrape, service_account_token, token_kubeconfig, trusting_client,
    wait_authenticated,
};
use crate::support::bundle::{find, rendered_components};
use crate::support::capi::{
    SENTINEL, TIMEOUT, cluster, kubeconfig_secret, machine, wait_condition,
};
use crate::support::docker::HAPROXY_IMAGE;
use crate::support::manager::ManagerProcess;
use crate::support::webhook::Pki;
use crate::support::{
    TestContext, control_plane, crds, kubectl, kubectl_async, wait_for, wait_gone,
};

/// Deletes the cluster-scoped Node when dropped (also when the test fails).
struct NodeCleanup(String);

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        kubectl(&["delete", "node", &self.0, "--wait=false"]);
    }
}

/// Grants `account` of the test namespace the bundle's ClusterRole (as ClusterRole and binding
/// `cluster_role`) and leader-election Role (in the test namespace).
async fn grant_bundle_rbac(ctx: &TestContext, docs: &[Value], account: &str, cluster_role: &str) {
    let post = PostParams::default();
    let subjects = json!([{"kind": "ServiceAccount", "name": account, "namespace": ctx.namespace}]);
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": cluster_role},
        "rules": find(docs, "ClusterRole", "capd-rs-manager-role")["rules"],
    }))
    .unwrap();
    Api::<ClusterRole>::all(ctx.kube.clone())
        .create(&post, &role)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": cluster_role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": subjects,
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(ctx.kube.clone())
        .create(&post, &binding)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "leader-election"},
        "rules": find(docs, "Role", "capd-rs-leader-election-role")["rules"],
    }))
    .unwrap();
    ctx.api::<Role>().create(&post, &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "leader-election"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leader-election"},
        "subjects": subjects,
    }))
    .unwrap();
    ctx.api::<RoleBinding>()
        .create(&post, &binding)
        .await
        .unwrap();
}

/// The bundle Deployment's manager arguments, but for the addresses and the node profile, which
/// the test sets (free ports; these machines refuse privileged containers).
fn deployment_args(docs: &[Value]) -> Vec<String> {
    let deployment = find(docs, "Deployment", "capd-rs-controller-manager");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|a| {
            !a.starts_with("--diagnostics-address=") && !a.starts_with("--privileged-nodes=")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_needs_nothing_beyond_the_bundles_rbac() {
    let ctx = TestContext::new("e2e-rbac").await;
    crds::install(&ctx.kube).await;
    let docs = rendered_components(&[]);
    let token = service_account_token(&ctx, "manager").await;
    let rbac = ClusterRbac {
        name: ctx.name("manager-role"),
    };
    grant_bundle_rbac(&ctx, &docs, "manager", &rbac.name).await;
    wait_authenticated(&ctx.kube, &token).await;

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, token_kubeconfig(&token, &ctx.namespace)).unwrap();
    let mut args = deployment_args(&docs);
    args.extend([
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--namespace={}", ctx.namespace),
        "-v=4".to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pki = Pki::mint("e2e-rbac-ca");
    let mut manager = ManagerProcess::start(
        &pki,
        &args,
        &[
            ("POD_NAMESPACE", ctx.namespace.as_str()),
            ("POD_NAME", "capd-rs-controller-manager-0"),
        ],
    );
    // Ready: every watch listed (RBAC bindings reach the authorizer within moments; the watches
    // retry until then) and the Lease taken.
    manager
        .wait_healthy("/readyz", Duration::from_secs(90))
        .await;
    let leases = Api::<Lease>::namespaced(ctx.kube.clone(), &ctx.namespace);
    wait_for("the Lease to be held", Duration::from_secs(30), || async {
        let lease = leases.get_opt(capd::leader::LEASE_NAME).await.ok()??;
        let holder = lease.spec?.holder_identity?;
        (!holder.is_empty()).then_some(())
    })
    .await;

    // A cluster as core Cluster API makes it: the Cluster, its DockerCluster, a control-plane
    // Machine with bootstrap data, then the kubeconfig Secret and the workload's Node.
    let cluster_name = ctx.name("c");
    cluster(&ctx, &cluster_name, false, false).await;
    ctx.api::<Cluster>()
        .patch(
            &cluster_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"infrastructureRef": {
                "apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerCluster", "name": cluster_name}}})),
        )
        .await
        .unwrap();
    let uid = ctx
        .api::<Cluster>()
        .get(&cluster_name)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    // The load balancer image is <imageRepository>/haproxy:<imageTag>: the local test image.
    let (repository, tag) = HAPROXY_IMAGE
        .strip_suffix(":local")
        .and_then(|r| r.strip_suffix("/haproxy"))
        .map(|r| (r, "local"))
        .expect("the HAProxy test image is <repository>/haproxy:local");
    let docker_cluster = format!(
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerCluster\nmetadata:\n  name: {cluster_name}\n  labels: {{cluster.x-k8s.io/cluster-name: {cluster_name}}}\n  ownerReferences:\n  - {{apiVersion: cluster.x-k8s.io/v1beta2, kind: Cluster, name: {cluster_name}, uid: {uid}}}\nspec:\n  loadBalancer: {{imageRepository: {repository}, imageTag: {tag}}}\n"
    );
    let (ok, _, err) =
        kubectl_async(&["apply", "-n", &ctx.namespace, "-f", "-"], &docker_cluster).await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl_async(
        &[
            "wait",
            "-n",
            &ctx.namespace,
            &format!("dockercluster/{cluster_name}"),
            "--for=jsonpath={.status.initialization.provisioned}=true",
            "--timeout=90s",
        ],
        "",
    )
    .await;
    assert!(ok, "the DockerCluster was not provisioned: {err}");

    let name = format!("{cluster_name}-cp0");
    let cloud_config = format!("#cloud-config\nruncmd:\n- {SENTINEL}\n");
    machine(&ctx, &cluster_name, &name, true, Some(&cloud_config), None).await;
    wait_condition(&ctx, &name, "BootstrapCompleted", |c| c.status == "True").await;
    let _node_cleanup = NodeCleanup(name.clone());
    let nodes = Api::<Node>::all(ctx.kube.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let admin = std::fs::read(&control_plane::control_plane().kubeconfig).unwrap();
    kubeconfig_secret(&ctx, &cluster_name, admin).await;
    wait_for("the Node's providerID", TIMEOUT, || async {
        let node = nodes.get(&name).await.ok()?;
        (node.spec?.provider_id? == format!("docker:////{name}")).then_some(())
    })
    .await;
    wait_condition(&ctx, &name, "Ready", |c| c.status == "True").await;

    // Secure metrics: the manager reviews the scraper's token and access.
    let metrics_rbac = ClusterRbac {
        name: ctx.name("metrics-reader"),
    };
    let MetricsTokens { reader, .. } = MetricsTokens::mint(&ctx, &metrics_rbac).await;
    let url = format!("https://127.0.0.1:{}/metrics", manager.diagnostics_port);
    let (status, _, body) = scrape(&trusting_client(), &url, Some(&reader)).await;
    assert_eq!(status, 200, "{body}");

    // Deletion: containers removed, finalizers taken off.
    let machines = ctx.api::<DockerMachine>();
    machines
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&machines, &name, Duration::from_secs(60)).await;
    let clusters = ctx.api::<capd::api::DockerCluster>();
    clusters
        .delete(&cluster_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&clusters, &cluster_name, Duration::from_secs(60)).await;

    // Its events were published (the LeaderElection event at least).
    let (ok, events, err) = kubectl_async(
        &[
            "get",
            "events.events.k8s.io",
            "-n",
            &ctx.namespace,
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(events.contains("LeaderElection"), "events: {events}");

    // SIGTERM: a clean exit, the Lease released.
    manager.signal(libc::SIGTERM);
    let status = manager.wait_exit(Duration::from_secs(15)).await;
    let log = manager.log();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    let lease = leases.get(capd::leader::LEASE_NAME).await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(""),
        "the Lease was not released"
    );
    // Nothing was refused along the way.
    let lower = log.to_lowercase();
    for refusal in [
        "forbidden",
        "cannot publish",
        "unauthorized",
        "status_code=401",
        "status_code=403",
    ] {
        assert!(
            !lower.contains(refusal),
            "the manager was refused something ({refusal}):\n{log}"
        );
    }

    // And every permission was used, but for those this run cannot need: the apiserver's audit
    // log records every request of the manager's ServiceAccount (its requests to the workload
    // cluster's Nodes use that cluster's kubeconfig, another identity, and are not among them).
    let username = format!("system:serviceaccount:{}:manager", ctx.namespace);
    let (used, refused) =
        audited_requests(&control_plane::control_plane().audit_events(), &username);
    assert!(
        !used.is_empty(),
        "no requests of {username} in the audit log"
    );
    assert!(refused.is_empty(), "the apiserver refused: {refused:#?}");
    let granted = permissions(&find(&docs, "ClusterRole", "capd-rs-manager-role")["rules"])
        .into_iter()
        .chain(permissions(
            &find(&docs, "Role", "capd-rs-leader-election-role")["rules"],
        ))
        .collect::<BTreeSet<_>>();
    eprintln!("requests the manager made: {used:#?}");
    let not_granted: Vec<_> = used.difference(&granted).collect();
    assert!(
        not_granted.is_empty(),
        "used but not granted: {not_granted:?}"
    );
    let unused: Vec<_> = granted
        .difference(&used)
        .filter(|(group, resource, verb)| {
            // An event is patched only when it repeats (kube's Recorder counts a series).
            !(group == "events.k8s.io" && resource == "events" && verb == "patch")
        })
        .collect();
    assert!(unused.is_empty(), "granted but never used: {unused:?}");
}

/// (API group, resource[/subresource], verb) of a request or a permission.
type Permission = (String, String, String);

/// The permissions `rules` grant (resourceNames aside).
fn permissions(rules: &Value) -> BTreeSet<Permission> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in rules.as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

/// The requests user `username` made, as the apiserver's audit `events` record them (verb and
/// objectRef; non-resource requests such as `/version` aside), and those it refused (403).
fn audited_requests(events: &[Value], username: &str) -> (BTreeSet<Permission>, Vec<String>) {
    let mut used = BTreeSet::new();
    let mut refused = Vec::new();
    for event in events.iter().filter(|e| e["user"]["username"] == username) {
        let object = &event["objectRef"];
        let Some(resource) = object["resource"].as_str() else {
            continue;
        };
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        let group = object["apiGroup"].as_str().unwrap_or_default().to_owned();
        let verb = event["verb"].as_str().unwrap_or_default().to_owned();
        if event["responseStatus"]["code"] == 403 {
            refused.push(format!(
                "{verb} {group}/{resource}: {}",
                event["requestURI"]
            ));
        }
        used.insert((group, resource, verb));
    }
    (used, refused)
}
