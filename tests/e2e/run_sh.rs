//! `hack/run.sh`, the README's main-job command, as a user runs it on this machine: a local
//! control plane, cert-manager, Cluster API's three providers and capd-rs installed by
//! `clusterctl init` from this checkout's release, every manager run from its Deployment, and the
//! sample cluster provisioned through them. This engine refuses privileged containers, so the
//! script must detect it and fall back to non-privileged nodes with the test node image (what the
//! user gets there: provisioning up to kubeadm, see `tests/e2e/clusterctl.rs`). SIGTERM (what
//! Ctrl+C becomes for its background jobs) stops everything it started.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::support::TestContext;
use crate::support::control_plane::kubectl_at;
use crate::support::process::{Process, WorkDir, wait_until};
use crate::support::setup::{Tool, repo_root, tools};

/// How long the script may take to get the management cluster up once its tools are built.
const START: Duration = Duration::from_secs(300);
/// How long the sample cluster's control-plane machine may take to be bootstrapped.
const STEP: Duration = Duration::from_secs(180);

/// `hack/run.sh`, stopped with SIGTERM (its trap's way out) when dropped, also on panic.
struct RunSh(Process);

impl Drop for RunSh {
    fn drop(&mut self) {
        self.0.stop(Duration::from_secs(60));
    }
}

/// A port whose next two are free as well (the script puts etcd there).
fn three_free_ports() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if port < 65000 && (1..3).all(|i| TcpListener::bind(("127.0.0.1", port + i)).is_ok()) {
            return port;
        }
    }
    panic!("no three consecutive free ports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_sh_installs_cluster_api_and_capd_rs_and_provisions_the_sample_cluster() {
    let ctx = TestContext::new("run-sh").await;
    // Built (or found cached) before the script's clock starts.
    tokio::task::spawn_blocking(|| {
        for tool in [Tool::Clusterctl, Tool::ClusterApi, Tool::CertManager] {
            tools(tool).expect("the tools hack/run.sh installs");
        }
    })
    .await
    .unwrap();
    let state = WorkDir::new("capd-rs-run-sh-").unwrap();
    let sample = ctx.name("sample");
    let port = three_free_ports();
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("hack/run.sh"))
        .env("LOCAL_STATE", state.path().join("local"))
        .env("LOCAL_API_PORT", port.to_string())
        .env("SAMPLE_CLUSTER", &sample)
        .env_remove("CAPD_RS_PRIVILEGED_NODES")
        .env_remove("CAPD_RS_NODE_IMAGE");
    let namespaces_before = network_namespaces();
    let mut run = RunSh(Process::spawn("hack-run-sh", command, state.path()).unwrap());

    wait_until("hack/run.sh's management cluster", START, || {
        let up = run.0.log().contains("The management cluster is up.");
        let exited = run.0.check_running();
        async move {
            exited?;
            Ok(up.then_some(()))
        }
    })
    .await
    .unwrap();
    let log = run.0.log();
    for line in [
        "this Docker engine refuses privileged containers",
        "the sample cluster uses the local test node image capd-rs-test/node:local",
        "clusterctl init: cert-manager, Cluster API core",
        &format!("describe cluster {sample} --config"),
        "Ctrl+C stops everything",
    ] {
        assert!(
            log.contains(line),
            "no {line:?} in hack/run.sh's output:\n{log}"
        );
    }

    // The sample cluster goes as far as this machine allows: its control-plane machine is
    // bootstrapped, its worker waits for the control plane.
    let kubeconfig = state.path().join("local/kubeconfig");
    let get = |resource: &'static str| {
        let (_, out, _) = kubectl_at(
            &kubeconfig,
            &[
                "get",
                resource,
                "-n",
                "default",
                "-l",
                &format!("cluster.x-k8s.io/cluster-name={sample}"),
                "-o",
                "json",
            ],
            "",
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_default()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let condition = |object: &serde_json::Value, type_: &str| -> Option<serde_json::Value> {
        object["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
    };
    wait_until("the sample cluster's machines", STEP, || {
        let machines = get("dockermachines");
        let bootstrapped = machines
            .iter()
            .any(|m| condition(m, "BootstrapCompleted").is_some_and(|c| c["status"] == "True"));
        let waiting = machines.iter().any(|m| {
            condition(m, "ContainerProvisioned")
                .is_some_and(|c| c["reason"] == "WaitingForControlPlaneInitialized")
        });
        let exited = run.0.check_running();
        async move {
            exited?;
            Ok((bootstrapped && waiting).then_some(()))
        }
    })
    .await
    .unwrap();

    // SIGTERM stops the managers (removing their Pods' network namespaces) and the control plane.
    let pid = run.0.pid();
    run.0.stop(Duration::from_secs(60));
    let log = run.0.log();
    assert!(
        log.contains("stopping the managers and cert-manager"),
        "the runner did not stop cleanly:\n{log}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the apiserver still answers after hack/run.sh stopped"
    );
    let leftover: Vec<String> = network_namespaces()
        .into_iter()
        .filter(|n| !namespaces_before.contains(n))
        .filter(|n| {
            // Those of other tests running now stay.
            let owner = n
                .strip_prefix("capdrs-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            owner.is_some_and(|owner| !std::path::Path::new(&format!("/proc/{owner}")).exists())
        })
        .collect();
    assert!(
        leftover.is_empty(),
        "hack/run.sh (pid {pid}) left network namespaces behind: {leftover:?}"
    );
}

/// The names of this host's network namespaces.
fn network_namespaces() -> Vec<String> {
    let output = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}
