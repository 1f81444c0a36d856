//! `hack/run.sh`'s management cluster: on the local control plane that `hack/run.sh` started,
//! cert-manager, Cluster API's core, kubeadm bootstrap and kubeadm control-plane providers and
//! capd-rs installed by `clusterctl init` from a local repository (capd-rs's release of this
//! checkout), every provider's manager run from its installed Deployment, and a sample cluster
//! from `templates/cluster-template.yaml`. It runs until Ctrl+C (or until a manager exits), then
//! stops the managers and cert-manager; the objects and containers stay, and the next run picks
//! them up.
//!
//! It reuses the end-to-end test's harness (`tests/support`): what plays the kubelet that the
//! local control plane lacks is the same code the tests check. Run it through `hack/run.sh`,
//! which sets its environment:
//!
//!   LOCAL_KUBECONFIG          the local control plane's admin kubeconfig
//!   LOCAL_STATE               a directory kept between runs (the clusterctl repository goes there)
//!   CAPD_RS_PRIVILEGED_NODES  `false` where the engine refuses privileged containers
//!   CAPD_RS_NODE_IMAGE        the sample cluster's node image (empty: kind's, by version)
//!   SAMPLE_CLUSTER            the sample cluster's name (empty: no sample cluster)
//!   SAMPLE_KUBERNETES_VERSION its Kubernetes version

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use support::control_plane::ControlPlane;
use support::management::{Apiserver, Management, Repository};
use support::setup::{Tool, tools};

/// The namespace of the sample cluster.
const NAMESPACE: &str = "default";

#[tokio::main]
async fn main() -> Result<()> {
    let kubeconfig = PathBuf::from(variable("LOCAL_KUBECONFIG")?);
    let state = PathBuf::from(variable("LOCAL_STATE")?);
    let privileged_nodes = variable("CAPD_RS_PRIVILEGED_NODES")?;
    let cp = running_control_plane(&kubeconfig, &state)?;

    let capi_tools = tokio::task::spawn_blocking(|| tools(Tool::ClusterApi)).await??;
    let repository_dir = state.join("clusterctl-repository");
    std::fs::create_dir_all(&repository_dir)?;
    let repository = Repository::write_at(&repository_dir, &capi_tools)?;

    let (_, providers, _) = cp
        .kubectl_async(&["get", "providers.clusterctl.cluster.x-k8s.io", "-A"], "")
        .await;
    let installed = providers.contains("infrastructure-docker-rs");
    let variables = [
        ("CLUSTER_TOPOLOGY", "true"),
        ("CAPD_RS_PRIVILEGED_NODES", privileged_nodes.as_str()),
    ];
    if installed {
        log("the providers are installed (clusterctl init ran before): starting their managers");
    } else {
        log(
            "clusterctl init: cert-manager, Cluster API core, kubeadm bootstrap and control plane, docker-rs",
        );
    }
    let init = (!installed).then_some(&variables[..]);
    let mut management =
        Management::start(Apiserver::Running(cp), &repository, &capi_tools, init).await?;
    log("every provider's manager is ready");

    let sample = std::env::var("SAMPLE_CLUSTER").unwrap_or_default();
    if !sample.is_empty() {
        create_sample(&management, &repository, &sample).await?;
    }
    print_guide(&management, &repository, &sample, &privileged_nodes)?;

    // hack/run.sh runs this in the background, where Ctrl+C reaches it as its SIGTERM.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = interval.tick() => management
                .check_running()
                .context("a manager of the management cluster stopped")?,
        }
    }
    log("stopping the managers and cert-manager (the cluster objects and containers stay)");
    Ok(())
}

/// The control plane `hack/run.sh` started, as the harness describes one.
fn running_control_plane(kubeconfig: &Path, state: &Path) -> Result<ControlPlane> {
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .context("no server in the local kubeconfig")?
        .to_owned();
    Ok(ControlPlane {
        server,
        kubeconfig: kubeconfig.to_owned(),
        dir: state.to_owned(),
        audit_log: state.join("audit.log"),
    })
}

/// Generates and applies the sample cluster unless it exists.
async fn create_sample(management: &Management, repository: &Repository, name: &str) -> Result<()> {
    if management.get("cluster", NAMESPACE, name).await.is_some() {
        log(&format!(
            "Cluster {NAMESPACE}/{name} exists: capd-rs picks up its containers"
        ));
        return Ok(());
    }
    let version = variable("SAMPLE_KUBERNETES_VERSION")?;
    let node_image = std::env::var("CAPD_RS_NODE_IMAGE").unwrap_or_default();
    log(&format!(
        "clusterctl generate cluster {name} (Kubernetes {version}, 1 control-plane machine, 1 worker) | kubectl apply -f -"
    ));
    repository
        .create_cluster(
            management,
            &[
                name,
                "--infrastructure",
                "docker-rs",
                "--kubernetes-version",
                &version,
                "--control-plane-machine-count",
                "1",
                "--worker-machine-count",
                "1",
                "--target-namespace",
                NAMESPACE,
            ],
            &[("CAPD_RS_NODE_IMAGE", &node_image)],
        )
        .await
}

/// What to look at, what this machine gives, and how to stop.
fn print_guide(
    management: &Management,
    repository: &Repository,
    sample: &str,
    privileged_nodes: &str,
) -> Result<()> {
    let clusterctl = tools(Tool::Clusterctl)?.join("clusterctl");
    let kubeconfig = management.kubeconfig().display();
    let config = repository.config.display();
    let mut guide = format!(
        "\nThe management cluster is up.\n  export KUBECONFIG={kubeconfig}\n  kubectl get clusters,machines,dockerclusters,dockermachines -A\n"
    );
    if !sample.is_empty() {
        guide += &format!(
            "  {} describe cluster {sample} --config {config}\n  docker ps --filter label=io.x-k8s.kind.cluster={sample}\n",
            clusterctl.display()
        );
    }
    guide += "Managers' logs:\n";
    for log_path in management.log_paths() {
        guide += &format!("  {}\n", log_path.display());
    }
    if privileged_nodes == "false" {
        guide += "\nThis Docker engine refuses privileged containers: node containers are created without\n\
--privileged, and until real nodes run there the sample cluster uses the test node image, whose\n\
kubeadm only records its calls. You get the whole provisioning up to kubeadm: the load balancer,\n\
the control-plane machine bootstrapped with CABPK's data and reporting its providerID and addresses,\n\
the worker waiting for the control plane to initialize (it never does: no Kubernetes runs in the node).\n";
    }
    guide += "\nCtrl+C stops everything; the objects and containers stay for the next run.\n\
To remove the sample cluster, delete it while this runs: kubectl delete cluster <name>.\n";
    println!("{guide}");
    Ok(())
}

/// Environment variable `name`, which `hack/run.sh` sets.
fn variable(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(_) => bail!("{name} is not set: run this through hack/run.sh"),
    }
}

fn log(line: &str) {
    eprintln!("[capd-rs] {line}");
}
