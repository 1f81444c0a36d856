//! The reconcilers and what they share: the [`Context`] (kube client, container runtime,
//! event recorder, background image pulls, backoff) and the controller plumbing.

pub mod backoff;
pub mod conditions;
pub mod docker_cluster;
pub mod docker_machine;
pub mod lb_backends;
pub mod shared;
pub mod workload_node;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};

use crate::docker::{ContainerRuntime, DockerError};
use crate::metrics::Metrics;
use backoff::Backoff;

/// Settings of the controllers that come from the manager's flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Docker network clusters are put on.
    pub network: String,
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
    /// How many DockerClusters are reconciled at once.
    pub docker_cluster_concurrency: u16,
    /// Reconcile only objects labelled `cluster.x-k8s.io/watch-filter=<this>` (all when `None`).
    pub watch_filter: Option<String>,
    /// How many DockerMachines are reconciled at once.
    pub docker_machine_concurrency: u16,
    /// How node containers are run (privileged or relaxed, proxy variables).
    pub node_options: crate::docker::node::NodeOptions,
    /// Every object is reconciled again at least this often (`--sync-period`).
    pub sync_period: Duration,
    /// The rate limit of clients for workload clusters.
    pub workload_rate_limit: crate::client::RateLimit,
}

/// The label that assigns objects to one of several provider instances (`--watch-filter`).
pub const WATCH_FILTER_LABEL: &str = "cluster.x-k8s.io/watch-filter";

impl Settings {
    /// The watcher configuration for objects this manager reconciles: limited to the
    /// `--watch-filter` label when one is set.
    pub fn watcher_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default();
        match &self.watch_filter {
            Some(value) => config.labels(&format!("{WATCH_FILTER_LABEL}={value}")),
            None => config,
        }
    }
}

/// Why a reconcile failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The container engine failed.
    #[error("Docker: {0}")]
    Docker(#[from] DockerError),
    /// The infrastructure could not be made as asked; the message says why.
    #[error("{0}")]
    Infrastructure(String),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What every reconcile gets.
pub struct Context {
    /// The Kubernetes client.
    pub kube: kube::Client,
    /// The container engine.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Publishes Kubernetes events (one recorder, so repeated events aggregate).
    pub recorder: Recorder,
    /// The manager's settings.
    pub settings: Settings,
    /// Per-object backoff of failing reconciles.
    pub backoff: Backoff,
    /// The manager's metrics.
    pub metrics: Metrics,
    reconciles: Mutex<HashMap<String, u64>>,
    /// Per cluster: held while its load balancer's configuration is rewritten.
    load_balancer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    /// A context for `kube` and `runtime`, recording into `metrics`.
    pub fn new(
        kube: kube::Client,
        runtime: Arc<dyn ContainerRuntime>,
        settings: Settings,
        metrics: Metrics,
    ) -> Self {
        let reporter = Reporter {
            controller: "capd-rs".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(kube.clone(), reporter),
            kube,
            runtime,
            settings,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            metrics,
            reconciles: Mutex::default(),
            load_balancer_locks: Mutex::default(),
        }
    }

    /// The lock held while cluster `key`'s (`namespace/name`) load-balancer configuration is
    /// rewritten, so two writers never interleave.
    pub fn load_balancer_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.load_balancer_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// How many reconciles of `namespace/name` of `kind` have finished (successfully or not):
    /// the count controller-runtime exports as `controller_runtime_reconcile_total`.
    pub fn reconciles(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        let key = format!("{kind}/{namespace}/{name}");
        *self
            .reconciles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .unwrap_or(&0)
    }

    /// Forgets the counts of an object that is gone.
    pub(crate) fn forget(&self, kind: &str, namespace: &str, name: &str) {
        let key = format!("{kind}/{namespace}/{name}");
        self.reconciles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    pub(crate) fn count_reconcile(&self, kind: &str, namespace: &str, name: &str) {
        let key = format!("{kind}/{namespace}/{name}");
        *self
            .reconciles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(0) += 1;
    }
}

/// Runs every controller until `shutdown` resolves; `synced` is called once all of them have
/// filled their caches.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    synced: impl FnOnce() + Send + 'static,
) {
    use futures::FutureExt;
    let shutdown = shutdown.shared();
    let (clusters_synced, clusters_ready) = tokio::sync::oneshot::channel();
    let (machines_synced, machines_ready) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let (Ok(()), Ok(())) = futures::join!(clusters_ready, machines_ready) {
            synced();
        }
    });
    futures::join!(
        docker_cluster::run(ctx.clone(), shutdown.clone(), clusters_synced),
        docker_machine::run(ctx, shutdown, machines_synced),
    );
}
