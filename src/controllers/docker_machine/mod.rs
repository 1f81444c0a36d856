//! The DockerMachine reconciler: a kind-style node container per machine, booted, then
//! bootstrapped from the machine's cloud-init or Ignition data by the in-node runner, and the
//! contract's `providerID`, addresses and `provisioned`.
//!
//! Slow work never blocks a reconcile: image pulls and waiting for the node run in the
//! background and wake the reconciler; the bootstrap runs inside the node and a follower task
//! wakes the reconciler when its progress changes. State comes from the node itself, so a
//! restarted manager picks up where the node stands.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::oneshot;

mod errors;
mod phases;
mod tasks;

use errors::{MachineError, events};
use tasks::{MachineTasks, Phase};

use super::conditions::{self, Status, names};
use super::workload_node::{NodeState, WorkloadClients};
use super::{Context, Error, lb_backends, shared, workload_node};
use crate::api::capi::{CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, Cluster, Machine};
use crate::api::{DockerCluster, DockerMachine, DockerMachineStatus, MACHINE_FINALIZER};
use crate::bootstrap::{self, Format};
use crate::docker::kind_images::{self, Mapping, Mode};
use crate::docker::labels::Owner;
use crate::docker::node;
use crate::docker::pulls::ImagePulls;
use crate::metrics::ControllerMetrics;

const KIND: &str = "DockerMachine";
/// controller-runtime's name for this controller (its metrics' `controller` label).
const CONTROLLER: &str = "dockermachine";
/// How long a bootstrap may take when `spec.bootstrapTimeout` is unset (CAPD's default).
const DEFAULT_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(300);

/// Condition types and reasons of machines (CAPD's names).
mod reasons {
    pub const CONTAINER_PROVISIONED: &str = "ContainerProvisioned";
    pub const CGROUPS_READY: &str = "CGroupsReady";
    pub const PRELOADED_IMAGES_READY: &str = "PreLoadedImagesReady";
    pub const BOOTSTRAP_COMPLETED: &str = "BootstrapCompleted";
    pub const WAITING_FOR_INFRASTRUCTURE: &str = "WaitingForClusterInfrastructureReady";
    pub const WAITING_FOR_CONTROL_PLANE: &str = "WaitingForControlPlaneInitialized";
    pub const WAITING_FOR_BOOTSTRAP_DATA: &str = "WaitingForBootstrapData";
    pub const WAITING_FOR_CONTAINER: &str = "WaitingForContainer";
    pub const WAITING_FOR_CGROUPS: &str = "WaitingForCGroups";
    pub const NOT_PROVISIONED: &str = "NotProvisioned";
    pub const PROVISIONED: &str = "Provisioned";
    pub const NOT_READY: &str = "NotReady";
    pub const READY: &str = "Ready";
    pub const NOT_COMPLETED: &str = "NotCompleted";
    pub const COMPLETED: &str = "Completed";
    pub const FAILED: &str = "Failed";
    pub const DELETING: &str = "Deleting";
}

/// The reconciler's own state: image pulls and the machines' background work, which wake it.
struct Reconciler {
    ctx: Arc<Context>,
    pulls: ImagePulls<ObjectRef<DockerMachine>>,
    /// Each machine's follower and image loader.
    tasks: MachineTasks,
    /// Clients for the workload clusters, to initialize their Nodes.
    workload: WorkloadClients,
    wake: mpsc::UnboundedSender<ObjectRef<DockerMachine>>,
    metrics: ControllerMetrics,
}

/// Runs the DockerMachine controller until `shutdown` resolves; `synced` is sent once its
/// cache is filled.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    synced: oneshot::Sender<()>,
) {
    let (wake, woken) = mpsc::unbounded();
    let metrics = ctx
        .metrics
        .controller(CONTROLLER, ctx.settings.docker_machine_concurrency);
    let reconciler = Arc::new(Reconciler {
        pulls: ImagePulls::new(ctx.runtime.clone(), wake.clone()),
        tasks: MachineTasks::default(),
        workload: WorkloadClients::new(ctx.settings.workload_rate_limit),
        wake,
        metrics: metrics.clone(),
        ctx: ctx.clone(),
    });
    let (reader, stream) = shared::watch_acted_on(
        shared::watched_api::<DockerMachine>(&ctx),
        ctx.settings.watcher_config(),
        synced,
    );
    let (clusters_store, docker_clusters_store, secrets_store) =
        (reader.clone(), reader.clone(), reader.clone());
    let config = kube::runtime::controller::Config::default()
        .concurrency(ctx.settings.docker_machine_concurrency);
    let shutdown = shutdown.shared();
    // A node that stops, dies, is removed or starts again (an engine restart) is looked at
    // at once: its conditions change, and an interrupted bootstrap resumes.
    let (reconcile_all, all) = mpsc::unbounded();
    tokio::spawn(shared::forward_container_events(
        ctx.clone(),
        KIND,
        &["die", "destroy", "stop", "start"],
        reconciler.wake.clone(),
        reconcile_all,
        shutdown.clone(),
    ));
    let (queued, store) = (metrics.clone(), reader.clone());
    Controller::for_stream(shared::queued_stream(metrics.clone(), stream), reader)
        .watches(
            shared::watched_api::<Machine>(&ctx),
            ctx.settings.watcher_config(),
            shared::queued(metrics.clone(), machine_to_docker_machine),
        )
        .watches(
            shared::watched_api::<Cluster>(&ctx),
            ctx.settings.watcher_config(),
            shared::queued(metrics.clone(), move |cluster: Cluster| {
                cluster_to_docker_machines(
                    &clusters_store,
                    &cluster.namespace().unwrap_or_default(),
                    &cluster.name_any(),
                )
            }),
        )
        .watches(
            shared::watched_api::<DockerCluster>(&ctx),
            ctx.settings.watcher_config(),
            shared::queued(metrics.clone(), move |dc: DockerCluster| {
                let cluster = dc
                    .labels()
                    .get(CLUSTER_NAME_LABEL)
                    .cloned()
                    .unwrap_or_default();
                cluster_to_docker_machines(
                    &docker_clusters_store,
                    &dc.namespace().unwrap_or_default(),
                    &cluster,
                )
            }),
        )
        // A workload cluster's kubeconfig Secret appearing lets its machines' Nodes be
        // initialized (only Secrets labelled with a cluster name are watched).
        .watches(
            shared::watched_api::<Secret>(&ctx),
            kube::runtime::watcher::Config::default().labels(CLUSTER_NAME_LABEL),
            shared::queued(metrics.clone(), move |secret: Secret| {
                let cluster = secret
                    .labels()
                    .get(CLUSTER_NAME_LABEL)
                    .cloned()
                    .unwrap_or_default();
                if secret.name_any() != format!("{cluster}-kubeconfig") {
                    return Vec::new();
                }
                cluster_to_docker_machines(
                    &secrets_store,
                    &secret.namespace().unwrap_or_default(),
                    &cluster,
                )
            }),
        )
        .reconcile_all_on(shared::queued_all(metrics.clone(), store, all))
        .reconcile_on(woken.inspect(move |o| queued.enqueued(&shared::queue_key(o))))
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, reconciler.clone())
        .for_each(|result| {
            shared::report_run_error(&metrics, KIND, result);
            futures::future::ready(())
        })
        .await;
    reconciler.tasks.cancel_all();
}

/// A Machine maps to the DockerMachine its `spec.infrastructureRef` names.
fn machine_to_docker_machine(machine: Machine) -> Option<ObjectRef<DockerMachine>> {
    let infra = &machine.spec.infrastructure_ref;
    (infra.kind == KIND && infra.api_group == crate::api::GROUP && !infra.name.is_empty())
        .then(|| ObjectRef::new(&infra.name).within(&machine.namespace().unwrap_or_default()))
}

/// A Cluster (or its DockerCluster) maps to every DockerMachine labelled with the cluster's
/// name in its namespace.
fn cluster_to_docker_machines(
    store: &Store<DockerMachine>,
    namespace: &str,
    cluster: &str,
) -> Vec<ObjectRef<DockerMachine>> {
    if cluster.is_empty() {
        return Vec::new();
    }
    store
        .state()
        .iter()
        .filter(|dm| {
            dm.namespace().as_deref() == Some(namespace)
                && dm.labels().get(CLUSTER_NAME_LABEL).map(String::as_str) == Some(cluster)
        })
        .map(|dm| ObjectRef::from_obj(dm.as_ref()))
        .collect()
}

fn key(dm: &DockerMachine) -> String {
    format!("{}/{}", dm.namespace().unwrap_or_default(), dm.name_any())
}

fn error_policy(dm: Arc<DockerMachine>, _: &Error, reconciler: Arc<Reconciler>) -> Action {
    shared::retry_with_backoff(&reconciler.ctx, KIND, dm.as_ref())
}

async fn reconcile(dm: Arc<DockerMachine>, reconciler: Arc<Reconciler>) -> Result<Action, Error> {
    let (ctx, metrics) = (&reconciler.ctx, &reconciler.metrics);
    let guarded = reconcile_guarded(&dm, &reconciler);
    shared::reconcile_instrumented(ctx, metrics, KIND, dm.as_ref(), guarded).await
}

/// The objects a DockerMachine is reconciled with.
struct Inputs {
    machine: Machine,
    cluster: Cluster,
    cluster_name: String,
}

async fn reconcile_guarded(
    dm: &Arc<DockerMachine>,
    reconciler: &Arc<Reconciler>,
) -> Result<Action, Error> {
    let ctx = &reconciler.ctx;
    let namespace = dm.namespace().unwrap_or_default();
    let api: Api<DockerMachine> = Api::namespaced(ctx.kube.clone(), &namespace);
    let deleting = dm.meta().deletion_timestamp.is_some();
    let machine = match shared::capi_owner(dm.as_ref(), "Machine") {
        Some(name) => {
            Api::<Machine>::namespaced(ctx.kube.clone(), &namespace)
                .get_opt(&name)
                .await?
        }
        None => None,
    };
    let cluster_name = machine
        .as_ref()
        .and_then(|m| m.labels().get(CLUSTER_NAME_LABEL).cloned())
        .or_else(|| dm.labels().get(CLUSTER_NAME_LABEL).cloned());
    let cluster = match &cluster_name {
        Some(name) => {
            Api::<Cluster>::namespaced(ctx.kube.clone(), &namespace)
                .get_opt(name)
                .await?
        }
        None => None,
    };
    if !deleting && (machine.is_none() || cluster.is_none()) {
        // Core Cluster API sets the owner Machine and the cluster label; wait for them.
        return Ok(Action::await_change());
    }
    if let Some(reason) = shared::paused(dm.as_ref(), KIND, cluster.as_ref()) {
        let old = dm.status.clone().unwrap_or_default();
        shared::write_paused(&api, dm.as_ref(), &old, |s| &mut s.conditions, &reason).await?;
        return Ok(Action::await_change());
    }
    let inputs =
        machine
            .zip(cluster)
            .zip(cluster_name)
            .map(|((machine, cluster), cluster_name)| Inputs {
                machine,
                cluster,
                cluster_name,
            });
    finalizer(&api, MACHINE_FINALIZER, dm.clone(), |event| async {
        match event {
            finalizer::Event::Apply(dm) => match &inputs {
                Some(inputs) => apply(&dm, inputs, reconciler).await,
                None => Ok(Action::await_change()),
            },
            finalizer::Event::Cleanup(dm) => cleanup(&dm, reconciler).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn owner(dm: &DockerMachine) -> Owner {
    Owner::of(KIND, dm)
}

/// The node container's name: recorded in `providerID` once known, else derived as CAPD does.
fn container_name(dm: &DockerMachine, cluster_name: &str, machine_name: &str) -> String {
    dm.spec
        .provider_id
        .strip_prefix("docker:////")
        .map(str::to_owned)
        .unwrap_or_else(|| node::container_name(cluster_name, machine_name))
}

/// The conditions and what to do next, built up by [`apply`].
struct Outcome {
    status: DockerMachineStatus,
    generation: Option<i64>,
    now: Timestamp,
}

impl Outcome {
    fn set(&mut self, type_: &str, status: Status, reason: &str, message: &str) {
        conditions::set(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
            self.generation,
            self.now,
        );
    }

    /// Sets `type_` False with `reason` and `message`, and the conditions after it waiting with
    /// `waiting`.
    fn blocked(&mut self, type_: &str, reason: &str, message: &str, waiting: &str) {
        self.set(type_, Status::False, reason, message);
        self.waiting(type_, waiting);
    }

    /// Marks the conditions after `from` as waiting for it.
    fn waiting(&mut self, from: &str, reason: &str) {
        let order = [
            reasons::CONTAINER_PROVISIONED,
            reasons::CGROUPS_READY,
            reasons::PRELOADED_IMAGES_READY,
            reasons::BOOTSTRAP_COMPLETED,
        ];
        let start = order
            .iter()
            .position(|t| *t == from)
            .map_or(order.len(), |i| i + 1);
        for type_ in &order[start..] {
            self.set(type_, Status::False, reason, "");
        }
    }

    /// `Ready` summarizes the four provisioning conditions.
    fn summarize(&mut self) {
        let parts = [
            reasons::CONTAINER_PROVISIONED,
            reasons::CGROUPS_READY,
            reasons::PRELOADED_IMAGES_READY,
            reasons::BOOTSTRAP_COMPLETED,
        ];
        let not_ready: Vec<String> = parts
            .iter()
            .filter(|t| !conditions::is_true(&self.status.conditions, t))
            .map(|t| {
                let c = conditions::get(&self.status.conditions, t);
                let detail = c
                    .map(|c| {
                        if c.message.is_empty() {
                            c.reason.clone()
                        } else {
                            c.message.clone()
                        }
                    })
                    .unwrap_or_default();
                format!("* {t}: {detail}")
            })
            .collect();
        if not_ready.is_empty() {
            self.set(names::READY, Status::True, names::REASON_READY, "");
        } else {
            self.set(
                names::READY,
                Status::False,
                names::REASON_NOT_READY,
                &not_ready.join("\n"),
            );
        }
    }
}

async fn apply(
    dm: &DockerMachine,
    inputs: &Inputs,
    reconciler: &Arc<Reconciler>,
) -> Result<Action, Error> {
    let ctx = &reconciler.ctx;
    let api: Api<DockerMachine> =
        Api::namespaced(ctx.kube.clone(), &dm.namespace().unwrap_or_default());
    let old = dm.status.clone().unwrap_or_default();
    let mut out = Outcome {
        status: old.clone(),
        generation: dm.meta().generation,
        now: Timestamp::now(),
    };
    out.set(names::PAUSED, Status::False, names::REASON_NOT_PAUSED, "");
    let provisioning = phases::Provisioning {
        reconciler,
        dm,
        inputs,
        container: container_name(dm, &inputs.cluster_name, &inputs.machine.name_any()),
    };
    let result = phases::provision(&provisioning, &api, &mut out).await;
    out.summarize();
    shared::write_status(&api, dm, &old, &out.status).await?;
    match result {
        Ok(action) => Ok(action),
        Err(error) => {
            let message = error.to_string();
            shared::publish(ctx, dm, EventType::Warning, error.reason(), message.clone()).await;
            Err(Error::Infrastructure(message))
        }
    }
}

/// Whether machines of `cluster` wait for its control plane: it has a control-plane reference
/// and the control plane is not initialized (a cluster without one has nothing to wait for).
fn waits_for_control_plane(cluster: &Cluster) -> bool {
    let initialized = cluster
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, "ControlPlaneInitialized"));
    !cluster.spec.control_plane_ref.is_empty() && !initialized
}

/// Gives the machine's Node in the workload cluster its providerID (and, when it waits for a
/// cloud provider, its InternalIPs without the `uninitialized` taint), as CAPD's
/// `reconcileNode` does. The workload cluster's kubeconfig Secret and a control plane that
/// finished initializing wake it through their watches; until the kubelet has registered the
/// Node, it looks again with backoff.
async fn initialize_node(
    reconciler: &Arc<Reconciler>,
    dm: &DockerMachine,
    inputs: &Inputs,
    container: &str,
    addresses: &[crate::api::common::MachineAddress],
) -> Result<Action, MachineError> {
    let ctx = &reconciler.ctx;
    if waits_for_control_plane(&inputs.cluster) {
        return Ok(Action::await_change());
    }
    let namespace = dm.namespace().unwrap_or_default();
    let retry = || Action::requeue(ctx.backoff.failed(&shared::backoff_key(KIND, dm)));
    let client = match reconciler
        .workload
        .get(&ctx.kube, &namespace, &inputs.cluster_name)
        .await
    {
        Ok(Some(client)) => client,
        // The Secret watch wakes us when core Cluster API writes it.
        Ok(None) => return Ok(Action::await_change()),
        Err(message) => return Err(MachineError::NodeInitialization(message)),
    };
    let provider_id = format!("docker:////{container}");
    match workload_node::initialize(&client, container, &provider_id, addresses).await {
        Ok(NodeState::Initialized) => {
            ctx.backoff.succeeded(&shared::backoff_key(KIND, dm));
            Ok(Action::await_change())
        }
        Ok(NodeState::Missing) => Ok(retry()),
        // The kubelet updated the Node meanwhile: look again.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(retry()),
        Err(e) => {
            reconciler.workload.forget(&namespace, &inputs.cluster_name);
            Err(MachineError::NodeInitialization(format!(
                "Cannot set Node {container}'s providerID in the workload cluster: {e}"
            )))
        }
    }
}

/// Turns a container-engine failure while `what`-ing the bootstrap in `container` into a
/// [`MachineError::Bootstrap`].
fn bootstrap_error(
    what: &'static str,
    container: &str,
) -> impl FnOnce(crate::docker::DockerError) -> MachineError {
    let container = container.to_owned();
    move |e| MachineError::Bootstrap(format!("Cannot {what} the bootstrap in {container}: {e}"))
}

/// `spec.bootstrapTimeout`, 5 minutes when unset (the webhook refuses invalid values; one stored
/// before it was installed also falls back to the default).
fn bootstrap_timeout(dm: &DockerMachine) -> Duration {
    dm.spec
        .bootstrap_timeout
        .as_deref()
        .and_then(|t| crate::formats::positive_duration(t).ok())
        .unwrap_or(DEFAULT_BOOTSTRAP_TIMEOUT)
}

/// The image for the machine: `customImage`, or kind's image for its Kubernetes version.
fn image_for(dm: &DockerMachine, machine: &Machine) -> Result<Mapping, String> {
    match (machine.spec.version.as_str(), dm.spec.custom_image.as_str()) {
        ("", "") => Err("Machine spec.version is not set and DockerMachine spec.customImage is empty: no image to run".into()),
        ("", custom) => Ok(Mapping { kubernetes_version: String::new(), mode: Mode::V0_20, image: custom.to_owned() }),
        (version, custom) => kind_images::mapping(version, custom),
    }
}

/// The bootstrap plan from the machine's data Secret (`value`, and `format`).
async fn bootstrap_plan(
    ctx: &Context,
    dm: &DockerMachine,
    secret_name: &str,
) -> Result<bootstrap::Plan, String> {
    let secrets: Api<Secret> =
        Api::namespaced(ctx.kube.clone(), &dm.namespace().unwrap_or_default());
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(|e| format!("Cannot read bootstrap data Secret {secret_name}: {e}"))?
        .ok_or_else(|| format!("Bootstrap data Secret {secret_name} not found"))?;
    let data = secret.data.unwrap_or_default();
    let value = data
        .get("value")
        .ok_or_else(|| format!("Bootstrap data Secret {secret_name} has no key \"value\""))?;
    let format = match data.get("format") {
        Some(f) => String::from_utf8_lossy(&f.0)
            .parse::<Format>()
            .map_err(|e| format!("Bootstrap data Secret {secret_name}: {e}"))?,
        None => Format::CloudConfig,
    };
    let options = bootstrap::Options {
        kubelet_cgroup_args: true,
    };
    bootstrap::plan(format, &value.0, &options)
        .map_err(|e| format!("Bootstrap data Secret {secret_name}: {e}"))
}

/// Starts (once per phase) the background task that wakes the reconciler when the node has
/// booted, or each time the bootstrap advances, until it has an outcome or the node stops.
fn follow(reconciler: &Arc<Reconciler>, dm: &DockerMachine, container: &str, phase: Phase) {
    let runtime = reconciler.ctx.runtime.clone();
    let wake_up = waker(reconciler, dm);
    let container = container.to_owned();
    let work = match phase {
        Phase::Boot => tasks::follow_boot(runtime, container).boxed(),
        Phase::Bootstrap => {
            let metrics = reconciler.ctx.metrics.clone();
            let timeout = bootstrap_timeout(dm);
            let wake_up = wake_up.clone();
            async move {
                tasks::follow_bootstrap(runtime.as_ref(), &metrics, &container, timeout, || {
                    wake_up()
                })
                .await
            }
            .boxed()
        }
    };
    reconciler
        .tasks
        .follow(&key(dm), phase, work, move || wake_up());
}

/// Starts (once) the background task that loads `images` into the node, then wakes the
/// reconciler; a failure is kept for it to report.
fn load_images(
    reconciler: &Arc<Reconciler>,
    dm: &DockerMachine,
    container: &str,
    images: Vec<String>,
) {
    let wake_up = waker(reconciler, dm);
    let each = wake_up.clone();
    let work = tasks::load_images(
        reconciler.ctx.runtime.clone(),
        container.to_owned(),
        images,
        move || each(),
    );
    reconciler.tasks.load(&key(dm), work, move || wake_up());
}

/// A function that wakes the reconciler for `dm`.
fn waker(reconciler: &Reconciler, dm: &DockerMachine) -> Arc<dyn Fn() + Send + Sync> {
    let wake = reconciler.wake.clone();
    let target = ObjectRef::from_obj(dm);
    Arc::new(move || {
        let _ = wake.unbounded_send(target.clone());
    })
}

async fn cleanup(dm: &DockerMachine, reconciler: &Arc<Reconciler>) -> Result<Action, Error> {
    let ctx = &reconciler.ctx;
    reconciler.tasks.cancel(&key(dm));
    let api: Api<DockerMachine> =
        Api::namespaced(ctx.kube.clone(), &dm.namespace().unwrap_or_default());
    let old = dm.status.clone().unwrap_or_default();
    let mut status = old.clone();
    conditions::set(
        &mut status.conditions,
        reasons::CONTAINER_PROVISIONED,
        Status::False,
        reasons::DELETING,
        "",
        dm.meta().generation,
        Timestamp::now(),
    );
    shared::write_status(&api, dm, &old, &status).await?;
    let cluster_name = dm
        .labels()
        .get(CLUSTER_NAME_LABEL)
        .cloned()
        .unwrap_or_default();
    let machine_name = shared::capi_owner(dm, "Machine").unwrap_or_default();
    let container = container_name(dm, &cluster_name, &machine_name);
    let reasons = (events::CONTAINER_DELETED, events::CONTAINER_NOT_OWNED);
    shared::remove_and_report(ctx, dm, &container, &owner(dm), "node", reasons).await?;
    // A removed control-plane node leaves the load balancer (a worker changes nothing there).
    if dm.labels().contains_key(CONTROL_PLANE_LABEL) && !cluster_name.is_empty() {
        let cluster =
            Api::<Cluster>::namespaced(ctx.kube.clone(), &dm.namespace().unwrap_or_default())
                .get_opt(&cluster_name)
                .await?;
        if let Some(cluster) = cluster {
            lb_backends::configure(ctx, &cluster)
                .await
                .map_err(Error::Infrastructure)?;
        }
    }
    ctx.backoff.succeeded(&shared::backoff_key(KIND, dm));
    Ok(Action::await_change())
}
