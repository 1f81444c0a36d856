//! capd-rs as users install and drive it, with Cluster API's real tools: `clusterctl init` from a
//! local repository (capd-rs's release next to Cluster API's own release assets) on a management
//! cluster with cert-manager; every manager run from the Deployment clusterctl installed
//! (`tests/support/kubelet.rs` plays the kubelet the test control plane lacks) and reached through
//! the webhook Services as installed; `clusterctl generate cluster` for both flavors; a cluster
//! of each flavor driven by Cluster API's core, kubeadm bootstrap and kubeadm control-plane
//! controllers through capd-rs; `clusterctl describe`; `clusterctl move` to a second management
//! cluster, where capd-rs adopts the cluster's containers; deletion.
//!
//! What cannot be real here: node containers run the test node image (privileged containers are
//! refused), whose `kubeadm` only records its calls. So workers first wait for the control plane,
//! as they would on a real cluster until `kubeadm init` has finished; then the test does what
//! kubeadm and the kubelets would (`tests/support/workload.rs`): a real etcd and kube-apiserver
//! in the control-plane node's network namespace with the certificates CABPK wrote there, reached
//! through capd-rs's load balancer with the kubeconfig the kubeadm control-plane provider wrote,
//! kubeadm's `kubeadm-config` upload, and one Ready Node per machine.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::support::TestContext;
use crate::support::controller_manager::remove_dangling_owner_references;
use crate::support::docker::{HAPROXY_IMAGE, NODE_IMAGE};
use crate::support::management::{Management, Repository};
use crate::support::process::wait_until;
use crate::support::setup::{Tool, tools};
use crate::support::workload::WorkloadControlPlane;

/// The workload clusters' Kubernetes version (kind has an image for it).
const KUBERNETES_VERSION: &str = "v1.34.2";
/// The load-balancer image capd-rs runs by default (CAPD's), tagged from the local test image.
const DEFAULT_LB_IMAGE: &str = "kindest/haproxy:v20230606-42a2262b";
/// clusterctl init's variables: ClusterClass support, and node containers without
/// `--privileged`, which these machines refuse.
const INIT_VARIABLES: &[(&str, &str)] = &[
    ("CLUSTER_TOPOLOGY", "true"),
    ("CAPD_RS_PRIVILEGED_NODES", "false"),
];
/// How long one step (an install, a machine's provisioning, a deletion) may take.
const STEP: Duration = Duration::from_secs(180);

/// Condition `type_` of object `obj`, if set.
fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The names and IDs of the containers of workload cluster `cluster` (kind's label).
fn containers(cluster: &str) -> Vec<(String, String)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=io.x-k8s.kind.cluster={cluster}"),
            "--format",
            "{{.Names}} {{.ID}}",
        ])
        .output()
        .expect("docker ps");
    let mut found: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_owned(), i.to_owned()))
        .collect();
    found.sort();
    found
}

/// What `script` prints when run by `sh` in container `name`.
fn node_sh(name: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", name, "sh", "-c", script])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Tags the local HAProxy test image as capd-rs's default load-balancer image (no registry
/// here), as `hack/run.sh` does.
fn tag_default_lb_image() {
    let status = Command::new("docker")
        .args(["tag", HAPROXY_IMAGE, DEFAULT_LB_IMAGE])
        .status()
        .expect("docker tag");
    assert!(
        status.success(),
        "tagging {HAPROXY_IMAGE} as {DEFAULT_LB_IMAGE}"
    );
}

/// Generates workload cluster `name` (flavor `flavor`, `None` for the default) into `namespace`
/// with the test node image, checks it with a server-side dry run, and applies it.
async fn create_cluster(
    management: &Management,
    repository: &Repository,
    namespace: &str,
    name: &str,
    flavor: Option<&str>,
) -> Result<()> {
    let mut args = vec![
        name,
        "--infrastructure",
        "docker-rs",
        "--kubernetes-version",
        KUBERNETES_VERSION,
        "--control-plane-machine-count",
        "1",
        "--worker-machine-count",
        "1",
        "--target-namespace",
        namespace,
    ];
    if let Some(flavor) = flavor {
        args.extend(["--flavor", flavor]);
    }
    repository
        .create_cluster(management, &args, &[("CAPD_RS_NODE_IMAGE", NODE_IMAGE)])
        .await
}

/// Waits until workload cluster `cluster`'s infrastructure is provisioned and its first
/// control-plane machine has run its kubeadm bootstrap data (`BootstrapCompleted`) and reports
/// its providerID and addresses on its Machine; returns that Machine's name.
async fn wait_control_plane_machine(
    management: &Management,
    namespace: &str,
    cluster: &str,
) -> Result<String> {
    let selector =
        format!("cluster.x-k8s.io/cluster-name={cluster},cluster.x-k8s.io/control-plane");
    wait_until(
        &format!("cluster {cluster}'s infrastructure"),
        STEP,
        || async {
            let clusters = management
                .list(
                    "dockerclusters",
                    namespace,
                    &format!("cluster.x-k8s.io/cluster-name={cluster}"),
                )
                .await;
            Ok(clusters
                .iter()
                .any(|dc| dc["status"]["initialization"]["provisioned"] == true)
                .then_some(()))
        },
    )
    .await?;
    let name = wait_until(
        &format!("cluster {cluster}'s control-plane machine to be bootstrapped"),
        STEP,
        || async {
            for machine in management.list("machines", namespace, &selector).await {
                let name = machine["metadata"]["name"].as_str().unwrap_or_default();
                let reported = machine["spec"]["providerID"] == format!("docker:////{name}")
                    && machine["status"]["addresses"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty());
                let docker_machine = machine["spec"]["infrastructureRef"]["name"]
                    .as_str()
                    .unwrap_or_default();
                let bootstrapped = match management
                    .get("dockermachine", namespace, docker_machine)
                    .await
                {
                    Some(dm) => {
                        condition(&dm, "BootstrapCompleted").is_some_and(|c| c["status"] == "True")
                    }
                    None => false,
                };
                if reported && bootstrapped {
                    return Ok(Some(name.to_owned()));
                }
            }
            Ok(None)
        },
    )
    .await?;
    Ok(name)
}

/// Whether Machine `machine` has a Node.
fn has_node(machine: &Value) -> bool {
    machine["status"]["nodeRef"]["name"].is_string()
}

/// Registers the Nodes of cluster `cluster`'s machines in `workload` as their kubelets would
/// once kubeadm has run: the control-plane machine's first, then, once Cluster API reports the
/// control plane initialized and capd-rs has run each worker's join, the workers'. Waits until
/// every Machine has its nodeRef.
async fn register_nodes(
    management: &Management,
    workload: &WorkloadControlPlane,
    namespace: &str,
    cluster: &str,
) -> Result<()> {
    let of_cluster = format!("cluster.x-k8s.io/cluster-name={cluster}");
    for machine in management
        .list(
            "machines",
            namespace,
            &format!("{of_cluster},cluster.x-k8s.io/control-plane"),
        )
        .await
    {
        let name = machine["metadata"]["name"].as_str().unwrap_or_default();
        let provider_id = machine["spec"]["providerID"].as_str().unwrap_or_default();
        workload.register_node(name, provider_id, true).await?;
    }
    wait_until("the control plane initialized", STEP, || async {
        let cluster = management.get("cluster", namespace, cluster).await;
        Ok(cluster
            .filter(|c| {
                condition(c, "ControlPlaneInitialized").is_some_and(|c| c["status"] == "True")
            })
            .map(|_| ()))
    })
    .await?;
    let workers = format!("{of_cluster},!cluster.x-k8s.io/control-plane");
    let joined = wait_until("the workers bootstrapped", STEP, || async {
        let machines = management.list("dockermachines", namespace, &workers).await;
        let bootstrapped = machines
            .iter()
            .all(|dm| condition(dm, "BootstrapCompleted").is_some_and(|c| c["status"] == "True"));
        Ok((!machines.is_empty() && bootstrapped).then_some(()))
    });
    joined.await?;
    for machine in management.list("machines", namespace, &workers).await {
        let name = machine["metadata"]["name"].as_str().unwrap_or_default();
        let provider_id = machine["spec"]["providerID"].as_str().unwrap_or_default();
        workload.register_node(name, provider_id, false).await?;
    }
    wait_until("every Machine's nodeRef", STEP, || async {
        let machines = management.list("machines", namespace, &of_cluster).await;
        Ok((!machines.is_empty() && machines.iter().all(has_node)).then_some(()))
    })
    .await
}

/// Waits until `target` has reconciled moved cluster `cluster`: unpaused, its infrastructure
/// provisioned, every DockerMachine provisioned and bootstrapped, every Machine with its Node.
async fn wait_moved(target: &Management, namespace: &str, cluster: &str) -> Result<()> {
    let of_cluster = format!("cluster.x-k8s.io/cluster-name={cluster}");
    wait_until(
        &format!("moved cluster {cluster} reconciled"),
        STEP,
        || async {
            let Some(object) = target.get("cluster", namespace, cluster).await else {
                return Ok(None);
            };
            if object["spec"]["paused"] == true {
                return Ok(None);
            }
            let docker_clusters = target.list("dockerclusters", namespace, &of_cluster).await;
            let docker_machines = target.list("dockermachines", namespace, &of_cluster).await;
            let machines = target.list("machines", namespace, &of_cluster).await;
            let provisioned = |o: &Value| o["status"]["initialization"]["provisioned"] == true;
            let done = docker_clusters.len() == 1
                && docker_clusters.iter().all(provisioned)
                && docker_machines.len() == 2
                && docker_machines.iter().all(|dm| {
                    provisioned(dm)
                        && condition(dm, "BootstrapCompleted")
                            .is_some_and(|c| c["status"] == "True")
                })
                && machines.len() == 2
                && machines.iter().all(has_node);
            Ok(done.then_some(()))
        },
    )
    .await
}

/// Deletes Cluster `namespace/name` and waits until every one of its containers is gone.
async fn delete_cluster(management: &Management, namespace: &str, name: &str) -> Result<()> {
    let (ok, _, err) = management
        .kubectl(
            &["delete", "cluster", name, "-n", namespace, "--wait=false"],
            "",
        )
        .await;
    if !ok {
        bail!("deleting Cluster {namespace}/{name}: {err}");
    }
    wait_until(
        &format!("cluster {name}'s containers to go"),
        STEP,
        || async { Ok(containers(name).is_empty().then_some(())) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterctl_installs_capd_rs_and_cluster_api_drives_clusters_through_it() {
    // For its container-name prefix: every container this test makes starts with it, and
    // leaving the test (even by a panic) removes them.
    let ctx = TestContext::new("e2e-capi").await;
    let capi_tools = tokio::task::spawn_blocking(|| tools(Tool::ClusterApi))
        .await
        .unwrap()
        .expect("Cluster API's tools");
    let repository = Repository::write(&capi_tools).expect("the local repository");
    tag_default_lb_image();

    let mut source = Management::install(&repository, &capi_tools, INIT_VARIABLES)
        .await
        .expect("a management cluster");
    let namespace = "e2e";
    let (ok, _, err) = source
        .kubectl(&["create", "namespace", namespace], "")
        .await;
    assert!(ok, "{err}");

    // The installed webhook, behind its Service with cert-manager's certificate, refuses a bad
    // object naming the field.
    let (ok, _, err) = source
        .kubectl(
            &["apply", "-n", namespace, "-f", "-"],
            "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerCluster\nmetadata:\n  name: bad\nspec:\n  failureDomains: [{name: b}, {name: a}]\n",
        )
        .await;
    assert!(
        !ok && err.contains("spec.failureDomains"),
        "the installed webhook did not refuse: {err}"
    );

    // A template variable without a default must be given.
    let (ok, _, err) = repository
        .clusterctl(
            source.kubeconfig(),
            &["generate", "cluster", "x", "--infrastructure", "docker-rs"],
            &[],
        )
        .await;
    assert!(!ok && err.contains("KUBERNETES_VERSION"), "{err}");

    // Both flavors at once, each in a namespace of its own (clusterctl moves a namespace); the
    // second management cluster is installed while they provision.
    let topology_namespace = "e2e-topology";
    let (ok, _, err) = source
        .kubectl(&["create", "namespace", topology_namespace], "")
        .await;
    assert!(ok, "{err}");
    let clusters = [
        (namespace, ctx.name("w"), None),
        (topology_namespace, ctx.name("t"), Some("topology")),
    ];
    for (namespace, cluster, flavor) in &clusters {
        create_cluster(&source, &repository, namespace, cluster, *flavor)
            .await
            .unwrap_or_else(|e| panic!("the {flavor:?} flavor: {e:#}"));
    }
    let mut target = Management::install(&repository, &capi_tools, INIT_VARIABLES)
        .await
        .expect("a second management cluster");
    let [default, topology] = &clusters;
    tokio::join!(
        drive_and_move(&source, &target, &repository, default.0, &default.1),
        drive_and_move(&source, &target, &repository, topology.0, &topology.1),
    );
    source.check_running().expect("the source's managers");
    target.check_running().expect("the target's managers");
}

/// Takes cluster `namespace/cluster`, applied on `source`, as far as Cluster API goes here and
/// then further with the test in kubeadm's and the kubelets' place: its control-plane machine
/// bootstrapped with CABPK's data, its worker waiting, `clusterctl describe`, `clusterctl move`
/// refused without Nodes, the workload control plane and Nodes, `clusterctl move` to `target`
/// (capd-rs there adopting the containers), and deletion from `target`.
async fn drive_and_move(
    source: &Management,
    target: &Management,
    repository: &Repository,
    namespace: &str,
    cluster: &str,
) {
    let control_plane = wait_control_plane_machine(source, namespace, cluster)
        .await
        .expect("the control-plane machine");
    let kubeadm = node_sh(&control_plane, "cat /var/lib/capd-rs-test/kubeadm.log");
    assert_eq!(
        kubeadm
            .lines()
            .filter(|l| l.starts_with("kubeadm init"))
            .count(),
        1,
        "CABPK's kubeadm init did not run once: {kubeadm:?}"
    );
    // Workers wait for the control plane to be initialized (no kubeadm here brings it up).
    let worker = wait_until("a worker DockerMachine waiting", STEP, || async {
        let machines = source
            .list(
                "dockermachines",
                namespace,
                &format!("cluster.x-k8s.io/cluster-name={cluster},!cluster.x-k8s.io/control-plane"),
            )
            .await;
        Ok(machines.into_iter().find(|dm| {
            condition(dm, "ContainerProvisioned")
                .is_some_and(|c| c["reason"] == "WaitingForControlPlaneInitialized")
        }))
    })
    .await
    .expect("a waiting worker");
    assert!(worker["status"]["initialization"]["provisioned"].is_null());
    let (ok, describe, err) = repository
        .clusterctl(
            source.kubeconfig(),
            &["describe", "cluster", cluster, "-n", namespace],
            &[],
        )
        .await;
    assert!(ok, "{err}");
    for line in [
        format!("Cluster {namespace}/{cluster}"),
        format!("DockerCluster {namespace}/{cluster}"),
        format!("KubeadmControlPlane {namespace}/{cluster}-"),
    ] {
        assert!(describe.contains(&line), "no {line:?} in:\n{describe}");
    }

    // clusterctl moves only clusters whose machines have Nodes: it refuses while there are
    // none, naming the cluster's machines, which shows it found capd-rs's objects in its graph.
    let (ok, _, err) = repository.move_namespace(source, namespace, target).await;
    assert!(
        !ok && err.contains("is still provisioning the node")
            && err.contains(&format!("{namespace}/{cluster}")),
        "clusterctl move did not refuse the cluster: {err}"
    );

    // What kubeadm and the kubelets would do next (see the module's doc): the workload control
    // plane comes up in the control-plane node behind its load balancer, the workers join, and
    // every node registers. Cluster API sees the control plane initialized and every Machine
    // gets its nodeRef.
    let kubeconfig = source
        .secret_value(namespace, &format!("{cluster}-kubeconfig"))
        .await
        .expect("the cluster's kubeconfig");
    let workload = WorkloadControlPlane::start(&control_plane, &kubeconfig)
        .await
        .expect("the workload control plane");
    workload.upload_config().await.expect("kubeadm-config");
    register_nodes(source, &workload, namespace, cluster)
        .await
        .expect("the nodes registered");
    let cluster_object = source.get("cluster", namespace, cluster).await.unwrap();
    assert!(
        condition(&cluster_object, "ControlPlaneInitialized")
            .is_some_and(|c| c["status"] == "True")
    );
    for node in containers(cluster).iter().map(|(name, _)| name) {
        if node.ends_with("-lb") {
            continue;
        }
        let kubeadm = node_sh(node, "cat /var/lib/capd-rs-test/kubeadm.log");
        assert_eq!(kubeadm.lines().count(), 1, "{node}: {kubeadm:?}");
    }

    // clusterctl move: the cluster leaves the source, and capd-rs on the target adopts its
    // containers: none recreated, no bootstrap step run again.
    let before = containers(cluster);
    let kubeadm_before: Vec<String> = before
        .iter()
        .map(|(node, _)| node_sh(node, "cat /var/lib/capd-rs-test/kubeadm.log 2>/dev/null"))
        .collect();
    // The garbage collector's part (see controller_manager.rs): the topology flavor's control
    // plane and infrastructure cluster still name their deleted "shim" owner, which clusterctl
    // would take for an owner outside the cluster.
    let client = source.client().await.expect("a client");
    remove_dangling_owner_references(&client, namespace)
        .await
        .expect("dangling owner references removed");
    let (ok, out, err) = repository.move_namespace(source, namespace, target).await;
    assert!(ok, "clusterctl move failed:\n{out}\n{err}");
    assert!(source.get("cluster", namespace, cluster).await.is_none());
    let left: Vec<String> = source
        .list("dockermachines", namespace, "")
        .await
        .iter()
        .map(|dm| format!("{} {}", dm["metadata"], dm["status"]))
        .collect();
    assert!(
        left.is_empty(),
        "DockerMachines of {namespace} left on the source after the move:\n{out}\n{err}\n{left:#?}"
    );
    wait_moved(target, namespace, cluster)
        .await
        .expect("the moved cluster reconciled by the target");
    assert_eq!(
        containers(cluster),
        before,
        "containers changed by the move"
    );
    let kubeadm_after: Vec<String> = before
        .iter()
        .map(|(node, _)| node_sh(node, "cat /var/lib/capd-rs-test/kubeadm.log 2>/dev/null"))
        .collect();
    assert_eq!(
        kubeadm_after, kubeadm_before,
        "a bootstrap ran again after the move"
    );
    // Deleting the Cluster, now on the target, removes every container.
    delete_cluster(target, namespace, cluster)
        .await
        .expect("the moved cluster deleted");
    drop(workload);
}
