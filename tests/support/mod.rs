//! The integration-test harness: a real kube-apiserver + etcd and a real Docker engine.
//!
//! [`TestContext::new`] gives each test its own namespace and container-name prefix, so tests
//! run in parallel without colliding, and fresh clients bound to the test's own async runtime.
//! Dropping the context (also on panic) removes the test's containers, networks and namespace;
//! the shared control plane goes away when the test binary exits.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod access;
pub mod bundle;
pub mod capi;
pub mod cert_manager;
pub mod cluster_api;
pub mod control_plane;
pub mod controller;
pub mod controller_manager;
pub mod crds;
pub mod docker;
pub mod envsubst;
pub mod kubelet;
pub mod management;
pub mod manager;
pub mod netns;
pub mod process;
pub mod setup;
pub mod webhook;
pub mod workload;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};

/// One test's clients, namespace and name prefix.
pub struct TestContext {
    /// A client for the test control plane with admin rights.
    pub kube: kube::Client,
    /// A client for the Docker engine (API version negotiated).
    pub docker: bollard::Docker,
    /// The namespace created for this test.
    pub namespace: String,
    /// The prefix every container and network name of this test starts with (ends with `-`).
    pub prefix: String,
}

impl TestContext {
    /// Starts (once) the control plane and the Docker environment, and creates a namespace.
    /// `label` is a short human-readable tag for the test, used in names.
    pub async fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let cp = tokio::task::spawn_blocking(|| {
            setup::docker_ready();
            control_plane::control_plane()
        })
        .await
        .expect("starting the test environment");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(24)
            .collect();
        let namespace = format!("{}{n}-{}", docker::run_prefix(), label.trim_matches('-'));
        let prefix = format!("{namespace}-");

        let config = control_plane::kube_config(&cp.kubeconfig)
            .await
            .expect("reading the test kubeconfig");
        let kube = kube::Client::try_from(config).expect("building the kube client");
        let docker = bollard::Docker::connect_with_defaults()
            .expect("connecting to Docker")
            .negotiate_version()
            .await
            .expect("negotiating the Docker API version");

        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        kube::Api::<Namespace>::all(kube.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        Self {
            kube,
            docker,
            namespace,
            prefix,
        }
    }

    /// A resource name unique to this test: the prefix plus `suffix`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// A namespaced API for `K` in the test's namespace.
    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::namespaced(self.kube.clone(), &self.namespace)
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        docker::remove_with_prefix(&self.prefix);
        let kubeconfig = &control_plane::control_plane().kubeconfig;
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["delete", "namespace", &self.namespace, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `kubectl` against the test control plane; returns (success, stdout, stderr).
pub fn kubectl(args: &[&str]) -> (bool, String, String) {
    kubectl_stdin(args, "")
}

/// Runs `kubectl` with `input` on its standard input; returns (success, stdout, stderr).
pub fn kubectl_stdin(args: &[&str], input: &str) -> (bool, String, String) {
    control_plane::control_plane().kubectl(args, input)
}

/// [`kubectl_stdin`] off the async runtime, so servers in the test's runtime keep answering.
pub async fn kubectl_async(args: &[&str], input: &str) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let input = input.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl_stdin(&args, &input)
    })
    .await
    .expect("kubectl task")
}

/// Waits until object `name` of `api` is gone (its finalizers removed), or panics after
/// `timeout`.
pub async fn wait_gone<K>(api: &kube::Api<K>, name: &str, timeout: Duration)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(&format!("{name} to go"), timeout, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A minimal HTTP/1.0 GET on loopback `port`; `None` while nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_at(([127, 0, 0, 1], port).into(), path).await
}

/// A minimal HTTP/1.0 GET on `addr`; `None` while nothing answers.
pub async fn http_get_at(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}
