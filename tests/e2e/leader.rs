//! Leader election between manager processes on the real apiserver: one reconciles, both serve;
//! a SIGKILLed leader is replaced within the lease, with nothing made or run twice; a SIGTERMed
//! leader hands over at once; a leader that cannot renew stops and exits non-zero.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capd::api::DockerMachine;
use capd::leader::LEASE_NAME;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::support::access::trusting_client;
use crate::support::capi::{SENTINEL, cluster, condition, kubeconfig_secret, machine, node_sh};
use crate::support::manager::{ManagerProcess, sample_sum};
use crate::support::webhook::Pki;
use crate::support::{TestContext, control_plane, crds, wait_for, wait_gone};

/// Short lease timings, so a takeover after a kill takes seconds.
const FAST_LEASE: [&str; 3] = [
    "--leader-elect-lease-duration=6s",
    "--leader-elect-renew-deadline=4s",
    "--leader-elect-retry-period=1s",
];
const LEASE_DURATION: Duration = Duration::from_secs(6);
const RETRY_PERIOD: Duration = Duration::from_secs(1);
const MACHINES: usize = 20;

/// Two managers competing for the test namespace's Lease, with plain-HTTP metrics to count
/// their reconciles and JSON logs at the highest verbosity (to search them for secrets).
fn start_pair(ctx: &TestContext, pki: &Pki, lease: &[&str]) -> [ManagerProcess; 2] {
    let mut args = vec![
        "--leader-elect",
        "--insecure-diagnostics",
        "--namespace",
        &ctx.namespace,
        "--logging-format=json",
        "-v=5",
    ];
    args.extend_from_slice(lease);
    let env = [("POD_NAMESPACE", ctx.namespace.as_str())];
    [
        ManagerProcess::start(pki, &args, &env),
        ManagerProcess::start(pki, &args, &env),
    ]
}

/// Whether `manager` reports holding the Lease.
async fn leads(manager: &ManagerProcess) -> bool {
    let metrics = manager.metrics().await;
    sample_sum(
        &metrics,
        "leader_election_master_status",
        &[("name", LEASE_NAME)],
    ) == 1.0
}

/// The index of the manager that holds the Lease, once one does.
async fn leader_of(managers: &[ManagerProcess; 2], timeout: Duration) -> usize {
    wait_for("a leader", timeout, || async {
        for (i, manager) in managers.iter().enumerate() {
            if leads(manager).await {
                return Some(i);
            }
        }
        None
    })
    .await
}

/// How many DockerMachine reconciles `manager` has finished.
async fn machine_reconciles(manager: &ManagerProcess) -> f64 {
    sample_sum(
        &manager.metrics().await,
        "controller_runtime_reconcile_total",
        &[("controller", "dockermachine")],
    )
}

/// The Lease's holder, as the apiserver has it.
async fn holder(ctx: &TestContext) -> Option<String> {
    Api::<Lease>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get_opt(LEASE_NAME)
        .await
        .ok()??
        .spec?
        .holder_identity
}

/// An admission review of a DockerMachine, answered by `manager`'s webhook server itself.
async fn admits(manager: &ManagerProcess) -> bool {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "1", "kind": {"group": "infrastructure.cluster.x-k8s.io", "version": "v1beta2", "kind": "DockerMachine"},
            "resource": {"group": "infrastructure.cluster.x-k8s.io", "version": "v1beta2", "resource": "dockermachines"},
            "operation": "CREATE", "userInfo": {}, "name": "m", "namespace": "ns",
            "object": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerMachine",
                       "metadata": {"name": "m", "namespace": "ns"}, "spec": {}}}
    });
    let client = trusting_client();
    let url = format!(
        "https://127.0.0.1:{}/validate-infrastructure-cluster-x-k8s-io-v1beta2-dockermachine",
        manager.webhook_port
    );
    let Ok(response) = client.post(url).json(&review).send().await else {
        return false;
    };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["response"]["allowed"] == json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_reconciles_and_a_killed_one_is_replaced_without_duplicates() {
    let ctx = TestContext::new("e2e-leader").await;
    crds::install(&ctx.kube).await;
    let marker = format!("capd-rs-secret-marker-{}", std::process::id());
    let pki = Pki::mint("e2e-leader-ca");
    let mut managers = start_pair(&ctx, &pki, &FAST_LEASE);
    for manager in &managers {
        manager
            .wait_healthy("/readyz", Duration::from_secs(60))
            .await;
    }
    let first = leader_of(&managers, Duration::from_secs(30)).await;
    let standby = 1 - first;
    for manager in &managers {
        assert!(admits(manager).await, "a replica does not serve webhooks");
    }

    // A cluster whose kubeconfig Secret holds the marker, and machines whose bootstrap data
    // does: three counted steps, two seconds apart, so the leader dies mid-bootstrap.
    let cluster_name = ctx.name("c");
    cluster(&ctx, &cluster_name, false, false).await;
    let mut kubeconfig = std::fs::read(&control_plane::control_plane().kubeconfig).unwrap();
    kubeconfig.extend_from_slice(format!("\n# {marker}\n").as_bytes());
    kubeconfig_secret(&ctx, &cluster_name, kubeconfig).await;
    let step = |n: u8| format!("echo {n} >> /var/capd-rs-test-steps");
    let cloud_config = format!(
        "#cloud-config\nwrite_files:\n- path: /etc/capd-rs-test/secret\n  content: {marker}\nruncmd:\n- {}\n- sleep 2\n- {}\n- sleep 2\n- {}\n- {SENTINEL}\n",
        step(1),
        step(2),
        step(3)
    );
    let names: Vec<String> = (0..MACHINES)
        .map(|i| format!("{cluster_name}-m{i}"))
        .collect();
    for name in &names {
        machine(&ctx, &cluster_name, name, false, Some(&cloud_config), None).await;
    }

    // Kill the leader once nodes run but before their bootstraps can have ended.
    let prefix = format!("name=^/{cluster_name}-m");
    wait_for("node containers", Duration::from_secs(60), || async {
        let running = docker(&["ps", "-q", "--filter", &prefix]).lines().count();
        (running >= 5).then_some(())
    })
    .await;
    assert!(
        machine_reconciles(&managers[first]).await > 0.0,
        "the leader reconciled nothing"
    );
    assert_eq!(
        machine_reconciles(&managers[standby]).await,
        0.0,
        "the standby reconciled while another replica led"
    );
    let bootstrapped_before = bootstrapped(&ctx, &names).await;
    managers[first].signal(libc::SIGKILL);
    let killed = Instant::now();
    assert!(
        managers[first]
            .wait_exit(Duration::from_secs(10))
            .await
            .is_some(),
        "the leader survived SIGKILL"
    );
    assert!(
        bootstrapped_before < MACHINES,
        "every machine was bootstrapped before the kill: nothing was interrupted"
    );

    // The standby sees the Lease unrenewed for its duration (on its own clock, from when it
    // saw the last renewal, which may be one jittered retry late) and takes over.
    let bound = LEASE_DURATION + RETRY_PERIOD.mul_f64(2.2) + Duration::from_secs(1);
    wait_for(
        "the standby to lead",
        bound + Duration::from_secs(10),
        || async { leads(&managers[standby]).await.then_some(()) },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL of the leader: {takeover:?} (lease 6 s, retry 1 s)");
    assert!(
        takeover <= bound,
        "takeover took {takeover:?}, more than the lease duration allows ({bound:?})"
    );

    for name in &names {
        wait_for(
            &format!("{name} to be bootstrapped"),
            Duration::from_secs(120),
            || async {
                let dm = ctx.api::<DockerMachine>().get(name).await.ok()?;
                let done = condition(&dm, "BootstrapCompleted").is_some_and(|c| c.status == "True")
                    && dm.status.as_ref()?.initialization.provisioned == Some(true);
                done.then_some(())
            },
        )
        .await;
    }
    assert!(machine_reconciles(&managers[standby]).await > 0.0);

    // One container per machine, and every step ran exactly once in each node.
    let containers = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=capd-rs.x-k8s.io/owner-namespace={}", ctx.namespace),
    ]);
    let mut found: Vec<&str> = containers.lines().collect();
    found.sort_unstable();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(found, expected, "one node container per machine");
    for name in &names {
        let steps = node_sh(name, "cat /var/capd-rs-test-steps").await;
        assert_eq!(steps, "1\n2\n3\n", "{name}: the steps ran as {steps:?}");
    }

    // Neither manager logged the bootstrap data or the kubeconfig, at -v=5.
    for manager in &managers {
        let log = manager.log();
        assert!(
            !log.contains(&marker),
            "a secret reached the manager's log:\n{log}"
        );
    }
    let survivor_log = managers[standby].log();
    let reconcile_line = survivor_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["controllerKind"] == "DockerMachine")
        .unwrap_or_else(|| panic!("no JSON line from a DockerMachine reconcile:\n{survivor_log}"));
    for field in ["ts", "caller", "msg", "controller", "reconcileID"] {
        assert!(
            reconcile_line.get(field).is_some(),
            "{field} missing: {reconcile_line}"
        );
    }
    assert_eq!(reconcile_line["controller"], "dockermachine");
    assert_eq!(
        reconcile_line["DockerMachine"]["namespace"],
        json!(ctx.namespace)
    );

    // Deleting the machines removes their nodes (the survivor's finalizers).
    let api = ctx.api::<DockerMachine>();
    for name in &names {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in &names {
        wait_gone(&api, name, Duration::from_secs(60)).await;
    }
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &prefix]),
        "",
        "node containers outlived their machines"
    );
}

/// How many of `names` have completed their bootstrap.
async fn bootstrapped(ctx: &TestContext, names: &[String]) -> usize {
    let mut done = 0;
    for name in names {
        if let Ok(dm) = ctx.api::<DockerMachine>().get(name).await
            && condition(&dm, "BootstrapCompleted").is_some_and(|c| c.status == "True")
        {
            done += 1;
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_at_once() {
    let ctx = TestContext::new("e2e-handover").await;
    crds::install(&ctx.kube).await;
    let pki = Pki::mint("e2e-handover-ca");
    // CAPD's timings: without a release the successor would wait 15 s.
    let mut managers = start_pair(&ctx, &pki, &[]);
    let first = leader_of(&managers, Duration::from_secs(30)).await;
    let standby = 1 - first;
    managers[standby]
        .wait_healthy("/readyz", Duration::from_secs(60))
        .await;
    let old = holder(&ctx).await.expect("a holder");

    managers[first].signal(libc::SIGTERM);
    let stopped = Instant::now();
    let status = managers[first].wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the leader did not exit cleanly on SIGTERM: {status:?}"
    );
    wait_for("the standby to lead", Duration::from_secs(15), || async {
        leads(&managers[standby]).await.then_some(())
    })
    .await;
    let handover = stopped.elapsed();
    eprintln!("handover after SIGTERM of the leader: {handover:?} (lease 15 s)");
    // A released Lease is taken at the successor's next try (at most 2.2 retry periods).
    assert!(
        handover < Duration::from_secs(8),
        "the handover took {handover:?}: the Lease was not released; the old leader's log:\n{}",
        managers[first].log()
    );
    let new = holder(&ctx).await.expect("a holder");
    assert_ne!(old, new);
    assert!(
        managers[first].log().contains("released the leader lease"),
        "{}",
        managers[first].log()
    );
}

/// A TCP proxy to the test apiserver that the test can cut, as a network partition would.
struct Proxy {
    port: u16,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (target, connections) = (target.to_owned(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let connection = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections.lock().unwrap().push(connection);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { port, tasks }
    }

    /// Refuses new connections and drops the open ones.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_and_exits_non_zero() {
    let ctx = TestContext::new("e2e-renew").await;
    crds::install(&ctx.kube).await;
    let cp = control_plane::control_plane();
    let apiserver = cp.server.trim_start_matches("https://").to_owned();
    let proxy = Proxy::start(&apiserver).await;
    let kubeconfig_text = std::fs::read_to_string(&cp.kubeconfig)
        .unwrap()
        .replace(&cp.server, &format!("https://127.0.0.1:{}", proxy.port));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_text).unwrap();

    let pki = Pki::mint("e2e-renew-ca");
    let mut args = vec![
        "--leader-elect",
        "--insecure-diagnostics",
        "--namespace",
        &ctx.namespace,
    ];
    args.extend_from_slice(&FAST_LEASE);
    let kubeconfig_arg = format!("--kubeconfig={}", kubeconfig.display());
    args.push(&kubeconfig_arg);
    let mut manager =
        ManagerProcess::start(&pki, &args, &[("POD_NAMESPACE", ctx.namespace.as_str())]);
    wait_for("the manager to lead", Duration::from_secs(30), || async {
        leads(&manager).await.then_some(())
    })
    .await;

    proxy.cut();
    let cut = Instant::now();
    let status = manager.wait_exit(Duration::from_secs(30)).await;
    let took = cut.elapsed();
    eprintln!("exit after the apiserver was cut off: {took:?} (renew deadline 4 s)");
    let log = manager.log();
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "the manager did not exit with status 1 after losing the lease: {status:?}\n{log}"
    );
    // It gives up within the renew deadline (4 s) after its last renewal, before the Lease
    // (6 s) lets anyone else lead.
    assert!(
        took < LEASE_DURATION,
        "it kept running for {took:?} without the Lease\n{log}"
    );
    assert!(log.contains("leader election lost"), "{log}");
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
