//! The provider's controllers running in the test's runtime, limited to one namespace (as the
//! manager's `--namespace` does), so parallel tests each have their own.

use std::sync::Arc;

use capd::controllers::{self, Context, Settings};
use capd::docker::ContainerRuntime;
use capd::docker::engine::Engine;

use super::TestContext;

/// Controllers started for a test; they stop when this is dropped or [`stop`](Self::stop)ped.
pub struct RunningControllers {
    /// The controllers' context (for reconcile counts).
    pub ctx: Arc<Context>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningControllers {
    /// A new test namespace (labelled `label`) with the CRDs installed and the controllers
    /// running for it against the real Docker engine.
    pub async fn started(label: &str) -> (TestContext, Self) {
        let test = TestContext::new(label).await;
        super::crds::install(&test.kube).await;
        let controllers = Self::start(&test).await;
        (test, controllers)
    }

    /// Starts the controllers for `test`'s namespace against the real Docker engine.
    pub async fn start(test: &TestContext) -> Self {
        let engine = Engine::connect().await.expect("connecting to Docker");
        Self::with_runtime(test, &test.namespace, Arc::new(engine), "kind")
    }

    /// Starts the controllers for `namespace` with `runtime` as the container engine, putting
    /// clusters on the Docker network `network`.
    pub fn with_runtime(
        test: &TestContext,
        namespace: &str,
        runtime: Arc<dyn ContainerRuntime>,
        network: &str,
    ) -> Self {
        Self::with_settings(test, runtime, Self::settings(namespace, network))
    }

    /// The settings the tests use: one namespace, a small concurrency, no watch filter.
    pub fn settings(namespace: &str, network: &str) -> Settings {
        Settings {
            network: network.into(),
            namespace: Some(namespace.to_owned()),
            docker_cluster_concurrency: 4,
            watch_filter: None,
            docker_machine_concurrency: 4,
            // These machines refuse privileged containers and have no /lib/modules.
            node_options: capd::docker::node::NodeOptions {
                privileged: false,
                lib_modules: false,
                proxy_env: Vec::new(),
            },
            sync_period: std::time::Duration::from_secs(600),
            workload_rate_limit: capd::client::RateLimit {
                qps: 20.0,
                burst: 30,
            },
        }
    }

    /// Starts the controllers with `settings` and `runtime` as the container engine.
    pub fn with_settings(
        test: &TestContext,
        runtime: Arc<dyn ContainerRuntime>,
        settings: Settings,
    ) -> Self {
        let (metrics, _) = capd::metrics::Metrics::new();
        let ctx = Arc::new(Context::new(test.kube.clone(), runtime, settings, metrics));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopping = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(controllers::run(ctx.clone(), stopping, || {}));
        Self {
            ctx,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the controllers and waits until they have.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("controllers task");
        }
    }

    /// How many reconciles of `kind` `namespace/name` these controllers have finished.
    pub fn reconciles(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        self.ctx.reconciles(kind, namespace, name)
    }
}

impl Drop for RunningControllers {
    /// Stops the controllers at once (a reconcile in flight is cancelled), so nothing they do
    /// outlives the test's cleanup.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
