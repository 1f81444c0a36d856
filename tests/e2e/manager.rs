//! The manager binary serves the admission webhooks over TLS, turns a DockerCluster into a
//! load-balancer container and removes it again, and stops cleanly on SIGTERM.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::webhook::{Pki, Registration, wait_until_active};
use crate::support::{TestContext, control_plane, crds, kubectl_async};

/// The manager process; killed on drop if the test did not stop it.
struct Manager(Child, std::path::PathBuf);

impl Manager {
    fn start(webhook_port: u16, cert_dir: &std::path::Path, namespace: &str) -> Self {
        let log_path = cert_dir.join("manager.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_manager"))
            .args(["--webhook-port", &webhook_port.to_string()])
            .arg("--webhook-cert-dir")
            .arg(cert_dir)
            .args(["--namespace", namespace])
            .args(["--diagnostics-address", "127.0.0.1:0"])
            .env("KUBECONFIG", &control_plane::control_plane().kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the manager");
        Self(child, log_path)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: signals a child process this test spawned.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Manager {
    /// Kills the manager if it still runs; when the test failed, prints its log, which lives in
    /// a temporary directory that is about to go.
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            eprintln!("--- manager log ---\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_serves_webhooks_reconciles_clusters_and_stops_on_sigterm() {
    let ctx = TestContext::new("e2e-manager").await;
    crds::install(&ctx.kube).await;
    let pki = Pki::mint("e2e-ca");
    let dir = tempfile::tempdir().unwrap();
    pki.install(dir.path());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut manager = Manager::start(port, dir.path(), &ctx.namespace);
    let _registration = Registration::register(&ctx, port, &pki.ca_pem);
    wait_until_active(&ctx.namespace).await;

    let apply_args = ["apply", "-n", &ctx.namespace, "-f", "-"];
    let (ok, _, err) = kubectl_async(
        &apply_args,
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerMachine\nmetadata:\n  name: m\nspec:\n  bootstrapTimeout: forever\n",
    )
    .await;
    assert!(
        !ok && err.contains("spec.bootstrapTimeout: Invalid value"),
        "{err}"
    );
    let (ok, _, err) = kubectl_async(
        &apply_args,
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerCluster\nmetadata:\n  name: c\nspec:\n  failureDomains: [{name: a}]\n",
    )
    .await;
    assert!(ok, "{err}");
    let (_, out, _) = kubectl_async(
        &[
            "get",
            "dockercluster",
            "c",
            "-n",
            &ctx.namespace,
            "-o",
            "jsonpath={.spec.controlPlaneEndpoint.port} {.spec.failureDomains[0].controlPlane}",
        ],
        "",
    )
    .await;
    assert_eq!(out, "6443 false");

    // A Cluster and the DockerCluster it owns, as core Cluster API would create them.
    let name = ctx.name("c");
    let cluster = format!(
        "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  infrastructureRef:\n    apiGroup: infrastructure.cluster.x-k8s.io\n    kind: DockerCluster\n    name: {name}\n"
    );
    let (ok, _, err) = kubectl_async(&apply_args, &cluster).await;
    assert!(ok, "{err}");
    let (_, uid, _) = kubectl_async(
        &[
            "get",
            "cluster",
            &name,
            "-n",
            &ctx.namespace,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        "",
    )
    .await;
    let docker_cluster = format!(
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerCluster\nmetadata:\n  name: {name}\n  ownerReferences:\n  - {{apiVersion: cluster.x-k8s.io/v1beta2, kind: Cluster, name: {name}, uid: {uid}}}\nspec:\n  loadBalancer: {{imageRepository: capd-rs-test, imageTag: local}}\n"
    );
    let (ok, _, err) = kubectl_async(&apply_args, &docker_cluster).await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl_async(
        &[
            "wait",
            "dockercluster",
            &name,
            "-n",
            &ctx.namespace,
            "--for=jsonpath={.status.initialization.provisioned}=true",
            "--timeout=60s",
        ],
        "",
    )
    .await;
    assert!(ok, "the DockerCluster was not provisioned: {err}");
    let (_, host, _) = kubectl_async(
        &[
            "get",
            "dockercluster",
            &name,
            "-n",
            &ctx.namespace,
            "-o",
            "jsonpath={.spec.controlPlaneEndpoint.host}",
        ],
        "",
    )
    .await;
    let lb_ip = docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.kind.IPAddress}}",
        &format!("{name}-lb"),
    ]);
    assert_eq!(host, lb_ip.trim(), "the endpoint is the LB container's IP");

    let (ok, _, err) = kubectl_async(
        &[
            "delete",
            "dockercluster",
            &name,
            "-n",
            &ctx.namespace,
            "--timeout=60s",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &format!("name=^/{name}-lb$")]),
        "",
        "the LB container outlived its DockerCluster"
    );

    let status = tokio::task::spawn_blocking(move || manager.terminate(Duration::from_secs(15)))
        .await
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("manager.log")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "manager did not exit cleanly on SIGTERM ({status:?}):\n{log}"
    );
    assert!(
        log.contains("serving the admission webhooks") && log.contains("shutting down"),
        "{log}"
    );
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
