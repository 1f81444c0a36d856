//! The manager's Prometheus metrics, with controller-runtime's names and labels where it has
//! them (so Cluster API's dashboards work unchanged), and capd-rs's own for the Docker engine
//! and the in-node bootstrap. Served by [`crate::diagnostics`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// controller-runtime's buckets for `controller_runtime_reconcile_time_seconds`.
const RECONCILE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0,
    25.0, 30.0, 40.0, 50.0, 60.0,
];
/// Prometheus's default buckets, for Docker operations.
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// controller-runtime's buckets for the work queue's and the webhooks' latencies
/// (`ExponentialBuckets(10e-9, 10, 12)`: 10 ns to 1000 s by powers of ten).
const EXPONENTIAL_BUCKETS: &[f64] = &[
    1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0,
];
/// Bootstrap steps run from milliseconds (a file write) to minutes (`kubeadm init`).
const STEP_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    name: &'static str,
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabel {
    webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookCodeLabels {
    webhook: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabel {
    name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationResultLabels {
    operation: &'static str,
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>(
    constructor: fn() -> Histogram,
) -> HistogramFamily<L> {
    Family::new_with_constructor(constructor)
}

/// Every metric the manager exports. Cheap to clone: the values are shared.
#[derive(Clone)]
pub struct Metrics {
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabel, Counter>,
    reconcile_time: HistogramFamily<ControllerLabel>,
    max_concurrent: Family<ControllerLabel, Gauge>,
    active_workers: Family<ControllerLabel, Gauge>,
    queue_depth: Family<QueueLabels, Gauge>,
    queue_adds: Family<QueueLabels, Counter>,
    queue_duration: HistogramFamily<QueueLabels>,
    webhook_requests: Family<WebhookCodeLabels, Counter>,
    webhook_in_flight: Family<WebhookLabel, Gauge>,
    webhook_latency: HistogramFamily<WebhookLabel>,
    docker_requests: Family<OperationResultLabels, Counter>,
    docker_duration: HistogramFamily<OperationLabel>,
    bootstrap_steps: Histogram,
    leader: Family<LeaseLabel, Gauge>,
}

impl Metrics {
    /// The metrics, and the registry that exports them.
    pub fn new() -> (Self, Registry) {
        let metrics = Self {
            reconcile_total: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_time: histograms(|| Histogram::new(RECONCILE_BUCKETS.iter().copied())),
            max_concurrent: Family::default(),
            active_workers: Family::default(),
            queue_depth: Family::default(),
            queue_adds: Family::default(),
            queue_duration: histograms(|| Histogram::new(EXPONENTIAL_BUCKETS.iter().copied())),
            webhook_requests: Family::default(),
            webhook_in_flight: Family::default(),
            webhook_latency: histograms(|| Histogram::new(EXPONENTIAL_BUCKETS.iter().copied())),
            docker_requests: Family::default(),
            docker_duration: histograms(|| Histogram::new(DEFAULT_BUCKETS.iter().copied())),
            bootstrap_steps: Histogram::new(STEP_BUCKETS.iter().copied()),
            leader: Family::default(),
        };
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        (metrics, registry)
    }

    fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            self.reconcile_total.clone(),
        );
        r.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            self.reconcile_errors.clone(),
        );
        r.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            self.reconcile_time.clone(),
        );
        r.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            self.max_concurrent.clone(),
        );
        r.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            self.active_workers.clone(),
        );
        r.register(
            "workqueue_depth",
            "Current depth of workqueue",
            self.queue_depth.clone(),
        );
        r.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            self.queue_adds.clone(),
        );
        r.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            self.queue_duration.clone(),
        );
        r.register(
            "controller_runtime_webhook_requests",
            "Total number of admission requests by HTTP status code",
            self.webhook_requests.clone(),
        );
        r.register(
            "controller_runtime_webhook_requests_in_flight",
            "Current number of admission requests being served",
            self.webhook_in_flight.clone(),
        );
        r.register(
            "controller_runtime_webhook_latency_seconds",
            "Histogram of the latency of processing admission requests",
            self.webhook_latency.clone(),
        );
        r.register(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
            self.leader.clone(),
        );
        r.register(
            "capd_rs_docker_requests",
            "Docker engine operations by operation and result (success or error)",
            self.docker_requests.clone(),
        );
        r.register(
            "capd_rs_docker_request_duration_seconds",
            "How long Docker engine operations took (streams are counted, not timed)",
            self.docker_duration.clone(),
        );
        r.register(
            "capd_rs_bootstrap_step_duration_seconds",
            "How long each bootstrap step ran inside a node, as followed by the manager",
            self.bootstrap_steps.clone(),
        );
    }

    /// The metrics of controller `name` (controller-runtime's name: the kind in lower case),
    /// which runs at most `concurrency` reconciles at once; its series start at zero, as
    /// controller-runtime's do.
    pub fn controller(&self, name: &'static str, concurrency: u16) -> ControllerMetrics {
        let label = ControllerLabel { controller: name };
        self.max_concurrent
            .get_or_create(&label)
            .set(i64::from(concurrency));
        // Created at zero: a series appears before its first change.
        let queue = QueueLabels {
            name,
            controller: name,
        };
        let _ = self.queue_depth.get_or_create(&queue);
        let _ = self.queue_adds.get_or_create(&queue);
        let _ = self.active_workers.get_or_create(&label);
        let _ = self.reconcile_errors.get_or_create(&label);
        for result in ["success", "error", "requeue", "requeue_after"] {
            let _ = self.reconcile_total.get_or_create(&ResultLabels {
                controller: name,
                result,
            });
        }
        ControllerMetrics {
            name,
            metrics: self.clone(),
            queued: Arc::default(),
        }
    }

    /// Records an admission request to `webhook` (its path) answered with HTTP `code` after
    /// `elapsed`.
    pub fn webhook_request(&self, webhook: &str, code: u16, elapsed: Duration) {
        let webhook = webhook.to_owned();
        self.webhook_requests
            .get_or_create(&WebhookCodeLabels {
                webhook: webhook.clone(),
                code: code.to_string(),
            })
            .inc();
        self.webhook_latency
            .get_or_create(&WebhookLabel { webhook })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an admission request to `webhook` in flight until the guard is dropped.
    pub fn webhook_in_flight(&self, webhook: &str) -> InFlight {
        let gauge = self.webhook_in_flight.get_or_create_owned(&WebhookLabel {
            webhook: webhook.to_owned(),
        });
        gauge.inc();
        InFlight(gauge)
    }

    /// Records a Docker engine `operation` that ended (`ok` or not); `elapsed` is `None` for
    /// streams, which are counted but not timed.
    pub fn docker_request(&self, operation: &'static str, ok: bool, elapsed: Option<Duration>) {
        let result = if ok { "success" } else { "error" };
        self.docker_requests
            .get_or_create(&OperationResultLabels { operation, result })
            .inc();
        if let Some(elapsed) = elapsed {
            self.docker_duration
                .get_or_create(&OperationLabel { operation })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Records whether this replica holds the leader Lease `lease`.
    pub fn leading(&self, lease: &'static str, leading: bool) {
        self.leader
            .get_or_create(&LeaseLabel { name: lease })
            .set(i64::from(leading));
    }

    /// Records a bootstrap step that ran for `elapsed`.
    pub fn bootstrap_step(&self, elapsed: Duration) {
        self.bootstrap_steps.observe(elapsed.as_secs_f64());
    }
}

/// An admission request in flight; dropping it ends it.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How a reconcile ended, as controller-runtime labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Done until something changes (`success`).
    Success,
    /// Done, to be looked at again after a while (`requeue_after`).
    RequeueAfter,
    /// Failed, retried with backoff (`error`).
    Error,
}

impl ReconcileResult {
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::RequeueAfter => "requeue_after",
            Self::Error => "error",
        }
    }
}

/// One controller's metrics, and its queue of objects waiting for a worker.
#[derive(Clone)]
pub struct ControllerMetrics {
    name: &'static str,
    metrics: Metrics,
    /// Objects triggered and not yet picked up, with when they were first triggered.
    queued: Arc<Mutex<HashMap<String, Instant>>>,
}

impl ControllerMetrics {
    fn queue_labels(&self) -> QueueLabels {
        QueueLabels {
            name: self.name,
            controller: self.name,
        }
    }

    fn set_depth(&self, depth: usize) {
        self.metrics
            .queue_depth
            .get_or_create(&self.queue_labels())
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Object `key` (`namespace/name`) was triggered (by a watch, a Docker event, a background
    /// task or a resync): it waits for a worker until [`started`](Self::started).
    pub fn enqueued(&self, key: &str) {
        self.metrics
            .queue_adds
            .get_or_create(&self.queue_labels())
            .inc();
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        queued.entry(key.to_owned()).or_insert_with(Instant::now);
        self.set_depth(queued.len());
    }

    /// Object `key` left the queue without a reconcile (it is gone).
    pub fn forget(&self, key: &str) {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        queued.remove(key);
        self.set_depth(queued.len());
    }

    /// A worker starts reconciling object `key`; the returned timer records the reconcile when
    /// [`finish`](ReconcileTimer::finish)ed.
    pub fn started(&self, key: &str) -> ReconcileTimer {
        let waited = {
            let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            let waited = queued.remove(key);
            self.set_depth(queued.len());
            waited
        };
        if let Some(since) = waited {
            self.metrics
                .queue_duration
                .get_or_create(&self.queue_labels())
                .observe(since.elapsed().as_secs_f64());
        }
        let active = self
            .metrics
            .active_workers
            .get_or_create_owned(&ControllerLabel {
                controller: self.name,
            });
        active.inc();
        ReconcileTimer {
            controller: self.clone(),
            started: Instant::now(),
            active,
        }
    }
}

/// A running reconcile; it counts as an active worker until dropped.
pub struct ReconcileTimer {
    controller: ControllerMetrics,
    started: Instant,
    active: Gauge,
}

impl ReconcileTimer {
    /// Records the reconcile's `result` and duration.
    pub fn finish(self, result: ReconcileResult) {
        let (metrics, controller) = (&self.controller.metrics, self.controller.name);
        metrics
            .reconcile_total
            .get_or_create(&ResultLabels {
                controller,
                result: result.label(),
            })
            .inc();
        if result == ReconcileResult::Error {
            metrics
                .reconcile_errors
                .get_or_create(&ControllerLabel { controller })
                .inc();
        }
        metrics
            .reconcile_time
            .get_or_create(&ControllerLabel { controller })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn reconciles_are_exported_under_controller_runtimes_names() {
        let (metrics, registry) = Metrics::new();
        let controller = metrics.controller("dockermachine", 100);
        controller.enqueued("ns/a");
        controller.enqueued("ns/a");
        controller.enqueued("ns/b");
        let timer = controller.started("ns/a");
        let during = text(&registry);
        assert!(
            during.contains("controller_runtime_active_workers{controller=\"dockermachine\"} 1"),
            "{during}"
        );
        assert!(
            during
                .contains("workqueue_depth{name=\"dockermachine\",controller=\"dockermachine\"} 1"),
            "{during}"
        );
        timer.finish(ReconcileResult::Success);
        controller.started("ns/b").finish(ReconcileResult::Error);
        let after = text(&registry);
        for line in [
            "controller_runtime_reconcile_total{controller=\"dockermachine\",result=\"success\"} 1",
            "controller_runtime_reconcile_total{controller=\"dockermachine\",result=\"error\"} 1",
            "controller_runtime_reconcile_errors_total{controller=\"dockermachine\"} 1",
            "controller_runtime_reconcile_time_seconds_count{controller=\"dockermachine\"} 2",
            "controller_runtime_max_concurrent_reconciles{controller=\"dockermachine\"} 100",
            "controller_runtime_active_workers{controller=\"dockermachine\"} 0",
            "workqueue_depth{name=\"dockermachine\",controller=\"dockermachine\"} 0",
            "workqueue_adds_total{name=\"dockermachine\",controller=\"dockermachine\"} 3",
            "workqueue_queue_duration_seconds_count{name=\"dockermachine\",controller=\"dockermachine\"} 2",
        ] {
            assert!(after.contains(line), "missing {line}:\n{after}");
        }
    }

    #[test]
    fn a_dropped_reconcile_frees_its_worker() {
        let (metrics, registry) = Metrics::new();
        let controller = metrics.controller("dockercluster", 50);
        drop(controller.started("ns/c"));
        let out = text(&registry);
        assert!(
            out.contains("controller_runtime_active_workers{controller=\"dockercluster\"} 0"),
            "{out}"
        );
        // Not finished, so not counted: the series stay at their initial zero.
        assert!(
            out.lines()
                .filter(|l| l.starts_with("controller_runtime_reconcile_total{"))
                .all(|l| l.ends_with(" 0")),
            "{out}"
        );
        controller.enqueued("ns/gone");
        controller.forget("ns/gone");
        assert!(
            text(&registry)
                .contains("workqueue_depth{name=\"dockercluster\",controller=\"dockercluster\"} 0")
        );
    }

    #[test]
    fn webhooks_docker_and_bootstrap_are_exported() {
        let (metrics, registry) = Metrics::new();
        let path = "/validate-infrastructure-cluster-x-k8s-io-v1beta2-dockermachine";
        {
            let _in_flight = metrics.webhook_in_flight(path);
            assert!(text(&registry).contains(&format!(
                "controller_runtime_webhook_requests_in_flight{{webhook=\"{path}\"}} 1"
            )));
        }
        metrics.webhook_request(path, 200, Duration::from_millis(3));
        metrics.docker_request("inspect_container", true, Some(Duration::from_millis(2)));
        metrics.docker_request("pull_image", false, None);
        metrics.bootstrap_step(Duration::from_secs(3));
        let out = text(&registry);
        for line in [
            format!(
                "controller_runtime_webhook_requests_total{{webhook=\"{path}\",code=\"200\"}} 1"
            ),
            format!("controller_runtime_webhook_latency_seconds_count{{webhook=\"{path}\"}} 1"),
            format!("controller_runtime_webhook_requests_in_flight{{webhook=\"{path}\"}} 0"),
            "capd_rs_docker_requests_total{operation=\"inspect_container\",result=\"success\"} 1"
                .into(),
            "capd_rs_docker_requests_total{operation=\"pull_image\",result=\"error\"} 1".into(),
            "capd_rs_docker_request_duration_seconds_count{operation=\"inspect_container\"} 1"
                .into(),
            "capd_rs_bootstrap_step_duration_seconds_count 1".into(),
        ] {
            assert!(out.contains(&line), "missing {line}:\n{out}");
        }
        assert!(
            !out.contains(
                "capd_rs_docker_request_duration_seconds_count{operation=\"pull_image\"}"
            )
        );
    }
}
