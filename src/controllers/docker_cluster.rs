//! The DockerCluster reconciler: one HAProxy load-balancer container per cluster, the
//! control-plane endpoint pointing at it, and the contract's status.
//!
//! Guards first (externally managed, owner Cluster not set yet, paused), then the finalizer,
//! then [`apply`] or [`cleanup`]. Status is written only when it changed.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

use super::conditions::{self, Status, names};
use super::{Context, Error, lb_backends, shared};
use crate::api::capi::{Cluster, MANAGED_BY_ANNOTATION};
use crate::api::{CLUSTER_FINALIZER, DockerCluster, DockerClusterStatus};
use crate::docker::labels::{self, Owner};
use crate::docker::load_balancer::{self, Change, LoadBalancerError, LoadBalancerState};
use crate::docker::pulls::ImagePulls;
use crate::metrics::ControllerMetrics;

const KIND: &str = "DockerCluster";
/// controller-runtime's name for this controller (its metrics' `controller` label).
const CONTROLLER: &str = "dockercluster";

/// The reconciler's own state: background image pulls that wake it.
struct Reconciler {
    ctx: Arc<Context>,
    pulls: ImagePulls<ObjectRef<DockerCluster>>,
    metrics: ControllerMetrics,
}

/// Runs the DockerCluster controller until `shutdown` resolves; `synced` is sent once its
/// cache is filled.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    synced: oneshot::Sender<()>,
) {
    let (clusters, docker_clusters) = (
        shared::watched_api::<Cluster>(&ctx),
        shared::watched_api::<DockerCluster>(&ctx),
    );
    let (wake, woken) = mpsc::unbounded();
    let metrics = ctx
        .metrics
        .controller(CONTROLLER, ctx.settings.docker_cluster_concurrency);
    let reconciler = Arc::new(Reconciler {
        pulls: ImagePulls::new(ctx.runtime.clone(), wake.clone()),
        ctx: ctx.clone(),
        metrics: metrics.clone(),
    });
    let shutdown = shutdown.shared();
    let config = kube::runtime::controller::Config::default()
        .concurrency(ctx.settings.docker_cluster_concurrency);
    // Status-only changes (our own writes) do not trigger reconciles: only what the reconciler
    // acts on does, so a changing condition message cannot drive a write-reconcile loop.
    let (reader, docker_clusters) =
        shared::watch_acted_on(docker_clusters, ctx.settings.watcher_config(), synced);
    let (reconcile_all, all) = mpsc::unbounded();
    // A load balancer that dies or is removed behind our back is recreated at once.
    tokio::spawn(shared::forward_container_events(
        ctx.clone(),
        KIND,
        &["die", "destroy", "stop"],
        wake,
        reconcile_all,
        shutdown.clone(),
    ));
    let (queued, store) = (metrics.clone(), reader.clone());
    Controller::for_stream(
        shared::queued_stream(metrics.clone(), docker_clusters),
        reader,
    )
    .watches(
        clusters,
        ctx.settings.watcher_config(),
        shared::queued(metrics.clone(), cluster_to_docker_cluster),
    )
    .reconcile_all_on(shared::queued_all(metrics.clone(), store, all))
    .reconcile_on(woken.inspect(move |o| queued.enqueued(&shared::queue_key(o))))
    .with_config(config)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, reconciler)
    .for_each(|result| {
        shared::report_run_error(&metrics, KIND, result);
        futures::future::ready(())
    })
    .await;
}

/// A Cluster maps to the DockerCluster its `spec.infrastructureRef` names.
fn cluster_to_docker_cluster(cluster: Cluster) -> Option<ObjectRef<DockerCluster>> {
    let infra = &cluster.spec.infrastructure_ref;
    (infra.kind == KIND && infra.api_group == crate::api::GROUP && !infra.name.is_empty())
        .then(|| ObjectRef::new(&infra.name).within(&cluster.namespace().unwrap_or_default()))
}

fn error_policy(dc: Arc<DockerCluster>, _: &Error, reconciler: Arc<Reconciler>) -> Action {
    shared::retry_with_backoff(&reconciler.ctx, KIND, dc.as_ref())
}

async fn reconcile(dc: Arc<DockerCluster>, reconciler: Arc<Reconciler>) -> Result<Action, Error> {
    let (ctx, metrics) = (&reconciler.ctx, &reconciler.metrics);
    let guarded = reconcile_guarded(&dc, &reconciler);
    shared::reconcile_instrumented(ctx, metrics, KIND, dc.as_ref(), guarded).await
}

async fn reconcile_guarded(
    dc: &Arc<DockerCluster>,
    reconciler: &Arc<Reconciler>,
) -> Result<Action, Error> {
    let ctx = &reconciler.ctx;
    let namespace = dc.namespace().unwrap_or_default();
    let api: Api<DockerCluster> = Api::namespaced(ctx.kube.clone(), &namespace);
    if dc.annotations().contains_key(MANAGED_BY_ANNOTATION) {
        return Ok(Action::await_change());
    }
    let deleting = dc.meta().deletion_timestamp.is_some();
    let Some(cluster_name) = shared::capi_owner(dc.as_ref(), "Cluster") else {
        // Core Cluster API sets the owner reference; until then there is nothing to do. An
        // object deleted before it was ever owned only needs its finalizer gone.
        if deleting && dc.finalizers().iter().any(|f| f == CLUSTER_FINALIZER) {
            shared::remove_finalizer(&api, dc.as_ref(), CLUSTER_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    };
    let cluster = Api::<Cluster>::namespaced(ctx.kube.clone(), &namespace)
        .get_opt(&cluster_name)
        .await?;
    if cluster.is_none() && !deleting {
        return Ok(Action::await_change());
    }
    if let Some(reason) = shared::paused(dc.as_ref(), KIND, cluster.as_ref()) {
        let old = dc.status.clone().unwrap_or_default();
        shared::write_paused(&api, dc.as_ref(), &old, |s| &mut s.conditions, &reason).await?;
        return Ok(Action::await_change());
    }
    finalizer(&api, CLUSTER_FINALIZER, dc.clone(), |event| async {
        match event {
            finalizer::Event::Apply(dc) => apply(&dc, &cluster_name, reconciler).await,
            finalizer::Event::Cleanup(dc) => cleanup(&dc, &cluster_name, ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn owner(dc: &DockerCluster) -> Owner {
    Owner::of(KIND, dc)
}

/// Puts the control-plane nodes behind a load balancer that was just (re)created with none;
/// a failure is reported, and the control-plane machines' reconciles try again.
async fn configure_backends(ctx: &Context, dc: &DockerCluster, cluster_name: &str) {
    let namespace = dc.namespace().unwrap_or_default();
    let configured = match Api::<Cluster>::namespaced(ctx.kube.clone(), &namespace)
        .get_opt(cluster_name)
        .await
    {
        Ok(Some(cluster)) => lb_backends::configure(ctx, &cluster).await.map(drop),
        Ok(None) => Ok(()),
        Err(e) => Err(format!("Cannot read Cluster {cluster_name}: {e}")),
    };
    if let Err(message) = configured {
        shared::publish(ctx, dc, EventType::Warning, events::CONFIG_FAILED, message).await;
    }
}

async fn apply(
    dc: &DockerCluster,
    cluster_name: &str,
    reconciler: &Reconciler,
) -> Result<Action, Error> {
    let ctx = &reconciler.ctx;
    let api: Api<DockerCluster> =
        Api::namespaced(ctx.kube.clone(), &dc.namespace().unwrap_or_default());
    let mut status = dc.status.clone().unwrap_or_default();
    status.failure_domains = dc.spec.failure_domains.clone();
    let availability = load_balancer(dc, cluster_name, reconciler, &mut status).await?;
    let (available, message) = match &availability {
        Ok(Availability::Available(_)) => (true, String::new()),
        Ok(Availability::Unavailable { message, .. }) => (false, message.clone()),
        Err(e) => (false, e.to_string()),
    };
    let now = Timestamp::now();
    let generation = dc.meta().generation;
    conditions::set(
        &mut status.conditions,
        names::PAUSED,
        Status::False,
        names::REASON_NOT_PAUSED,
        "",
        generation,
        now,
    );
    let (state, reason) = if available {
        (Status::True, names::REASON_AVAILABLE)
    } else {
        (Status::False, names::REASON_NOT_AVAILABLE)
    };
    conditions::set(
        &mut status.conditions,
        names::LOAD_BALANCER_AVAILABLE,
        state,
        reason,
        &message,
        generation,
        now,
    );
    summarize_ready(&mut status, generation, now);
    shared::write_status(&api, dc, &dc.status.clone().unwrap_or_default(), &status).await?;
    match availability {
        Ok(Availability::Available(next) | Availability::Unavailable { next, .. }) => Ok(next),
        Err(error) => {
            let message = error.to_string();
            shared::publish(ctx, dc, EventType::Warning, error.reason(), message.clone()).await;
            Err(Error::Infrastructure(message))
        }
    }
}

/// The load balancer runs (made, found, or recreated with backoff) and the control-plane
/// endpoint names it: whether it is available and what to do next, or why it is not; the outer
/// `Err` is an apiserver failure, retried without a status write. Marks `status` provisioned
/// once the endpoint is known.
async fn load_balancer(
    dc: &DockerCluster,
    cluster_name: &str,
    reconciler: &Reconciler,
    status: &mut DockerClusterStatus,
) -> Result<Result<Availability, ClusterError>, Error> {
    let ctx = &reconciler.ctx;
    let api: Api<DockerCluster> =
        Api::namespaced(ctx.kube.clone(), &dc.namespace().unwrap_or_default());
    let key = shared::backoff_key(KIND, dc);
    let port = load_balancer::frontend_port(dc);
    let owner = owner(dc);
    let spec = load_balancer::container_spec(
        cluster_name,
        &owner,
        &dc.spec.load_balancer,
        port,
        &ctx.settings.network,
    );
    let may_restart = ctx.backoff.remaining(&key).is_none();
    let outcome = load_balancer::ensure(
        ctx.runtime.as_ref(),
        &reconciler.pulls,
        &spec,
        &owner,
        ObjectRef::from_obj(dc),
        may_restart,
    )
    .await;

    Ok(match outcome {
        Ok(LoadBalancerState::Running { container, change }) => {
            let ip = container
                .networks
                .get(&ctx.settings.network)
                .map(|(v4, _)| v4.clone())
                .unwrap_or_default();
            if ip.is_empty() {
                Err(ClusterError::NoAddress(format!(
                    "Failed to get ip for the load balancer: container {} has no IP address on network {}",
                    spec.name, ctx.settings.network
                )))
            } else {
                if dc.spec.control_plane_endpoint.host.is_empty() {
                    let patch =
                        json!({"spec": {"controlPlaneEndpoint": {"host": ip, "port": port}}});
                    api.patch(
                        &dc.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?;
                }
                status.initialization.provisioned = Some(true);
                let next = match change {
                    Change::Unchanged => {
                        ctx.backoff.succeeded(&key);
                        Action::await_change()
                    }
                    Change::Created => {
                        let note = format!("Created load balancer container {} ({ip})", spec.name);
                        shared::publish(ctx, dc, EventType::Normal, events::CREATED, note).await;
                        configure_backends(ctx, dc, cluster_name).await;
                        ctx.backoff.succeeded(&key);
                        Action::await_change()
                    }
                    Change::Recreated => {
                        // Counted as a failure, so a crashing HAProxy is recreated with backoff;
                        // the check after the delay resets it if it keeps running.
                        let delay = ctx.backoff.failed(&key);
                        let note = format!(
                            "Recreated load balancer container {}, which had stopped",
                            spec.name
                        );
                        shared::publish(ctx, dc, EventType::Warning, events::RECREATED, note).await;
                        configure_backends(ctx, dc, cluster_name).await;
                        Action::requeue(delay + Duration::from_secs(1))
                    }
                };
                Ok(Availability::Available(next))
            }
        }
        Ok(LoadBalancerState::Pulling(progress)) => Ok(Availability::Unavailable {
            message: format!("Pulling image {}: {progress}", spec.image),
            next: Action::await_change(),
        }),
        Err(LoadBalancerError::Stopped(name)) => {
            let wait = ctx.backoff.remaining(&key).unwrap_or_default();
            Ok(Availability::Unavailable {
                message: format!(
                    "Load balancer container {name} is not running; it is recreated in {}s",
                    wait.as_secs().max(1)
                ),
                next: Action::requeue(wait),
            })
        }
        Err(e) => Err(ClusterError::LoadBalancer(e)),
    })
}

/// Whether the load balancer is available, and what to do next.
enum Availability {
    /// It runs and the endpoint is known.
    Available(Action),
    /// It is on its way (an image pull, a recreation with backoff); the message says how.
    Unavailable {
        /// The condition's message.
        message: String,
        /// When to look again.
        next: Action,
    },
}

/// The event reasons of the DockerCluster controller. Each kind of failure has its own reason,
/// because the event recorder folds events with the same reason into one series.
mod events {
    /// The load-balancer container was created.
    pub const CREATED: &str = "LoadBalancerCreated";
    /// It had stopped and was created again.
    pub const RECREATED: &str = "LoadBalancerRecreated";
    /// It was removed.
    pub const DELETED: &str = "LoadBalancerDeleted";
    /// A container with its name is not this cluster's, so it was left in place.
    pub const NOT_OWNED: &str = "LoadBalancerNotOwned";
    /// A container with its name belongs to another object.
    pub const NAME_CLASH: &str = "LoadBalancerNameClash";
    /// Its image could not be pulled.
    pub const IMAGE_PULL_FAILED: &str = "LoadBalancerImagePullFailed";
    /// The engine failed, or the container has no address.
    pub const FAILED: &str = "LoadBalancerFailed";
    /// The control-plane nodes could not be put behind it.
    pub const CONFIG_FAILED: &str = "LoadBalancerConfigFailed";
}

/// Why the DockerCluster's load balancer is not available; [`ClusterError::reason`] is its
/// event reason.
#[derive(Debug, thiserror::Error)]
enum ClusterError {
    /// The container runs but has no address on the clusters' network.
    #[error("{0}")]
    NoAddress(String),
    /// The container cannot be made to run.
    #[error("{}", match .0 {
        LoadBalancerError::NameClash { .. } => format!("Cannot use the load balancer container: {}", .0),
        _ => format!("Failed to create load balancer: {}", .0),
    })]
    LoadBalancer(LoadBalancerError),
}

impl ClusterError {
    /// The event reason it is published under.
    fn reason(&self) -> &'static str {
        match self {
            ClusterError::LoadBalancer(LoadBalancerError::NameClash { .. }) => events::NAME_CLASH,
            ClusterError::LoadBalancer(LoadBalancerError::Pull { .. }) => events::IMAGE_PULL_FAILED,
            ClusterError::LoadBalancer(_) | ClusterError::NoAddress(_) => events::FAILED,
        }
    }
}

async fn cleanup(dc: &DockerCluster, cluster_name: &str, ctx: &Context) -> Result<Action, Error> {
    let api: Api<DockerCluster> =
        Api::namespaced(ctx.kube.clone(), &dc.namespace().unwrap_or_default());
    let now = Timestamp::now();
    let generation = dc.meta().generation;
    let mut status = dc.status.clone().unwrap_or_default();
    conditions::set(
        &mut status.conditions,
        names::LOAD_BALANCER_AVAILABLE,
        Status::False,
        names::REASON_DELETING,
        "",
        generation,
        now,
    );
    summarize_ready(&mut status, generation, now);
    shared::write_status(&api, dc, &dc.status.clone().unwrap_or_default(), &status).await?;
    let name = labels::load_balancer_name(cluster_name);
    let reasons = (events::DELETED, events::NOT_OWNED);
    shared::remove_and_report(ctx, dc, &name, &owner(dc), "load balancer", reasons).await?;
    ctx.backoff.succeeded(&shared::backoff_key(KIND, dc));
    Ok(Action::await_change())
}

/// `Ready` summarizes `LoadBalancerAvailable`.
fn summarize_ready(status: &mut DockerClusterStatus, generation: Option<i64>, now: Timestamp) {
    let lb = conditions::get(&status.conditions, names::LOAD_BALANCER_AVAILABLE).cloned();
    let (state, reason, message) = match lb {
        Some(c) if c.status == "True" => (Status::True, names::REASON_READY, String::new()),
        Some(c) => {
            let detail = if c.message.is_empty() {
                c.reason.clone()
            } else {
                c.message.clone()
            };
            (
                Status::False,
                names::REASON_NOT_READY,
                format!("* LoadBalancerAvailable: {detail}"),
            )
        }
        None => (
            Status::Unknown,
            "ReadyUnknown",
            "* LoadBalancerAvailable: Condition not yet reported".into(),
        ),
    };
    conditions::set(
        &mut status.conditions,
        names::READY,
        state,
        reason,
        &message,
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DockerClusterSpec;
    use crate::api::capi::{ClusterSpec, ContractVersionedObjectReference, PAUSED_ANNOTATION};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn each_load_balancer_failure_has_its_reason_and_message() {
        let clash = ClusterError::LoadBalancer(LoadBalancerError::NameClash {
            name: "c-lb".into(),
            owner: None,
        });
        assert_eq!(clash.reason(), "LoadBalancerNameClash");
        assert!(
            clash.to_string().starts_with(
                "Cannot use the load balancer container: container c-lb already exists"
            ),
            "{clash}"
        );
        let pull = ClusterError::LoadBalancer(LoadBalancerError::Pull {
            image: "kindest/haproxy:x".into(),
            message: "denied".into(),
        });
        assert_eq!(
            (pull.reason(), pull.to_string().as_str()),
            (
                "LoadBalancerImagePullFailed",
                "Failed to create load balancer: cannot pull image kindest/haproxy:x: denied"
            )
        );
        let down = ClusterError::LoadBalancer(LoadBalancerError::Docker(
            crate::docker::DockerError::Engine("down".into()),
        ));
        assert_eq!(down.reason(), "LoadBalancerFailed");
        assert!(
            down.to_string()
                .starts_with("Failed to create load balancer: ")
        );
        let no_address = ClusterError::NoAddress("no IP".into());
        assert_eq!(
            (no_address.reason(), no_address.to_string().as_str()),
            ("LoadBalancerFailed", "no IP")
        );
    }

    fn owned_by(api_version: &str, kind: &str) -> DockerCluster {
        let mut dc = DockerCluster::new("dc", DockerClusterSpec::default());
        dc.metadata.owner_references = Some(vec![OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "my-cluster".into(),
            uid: "u".into(),
            controller: None,
            block_owner_deletion: None,
        }]);
        dc
    }

    #[test]
    fn any_owner_reference_to_a_capi_cluster_counts() {
        assert_eq!(
            shared::capi_owner(&owned_by("cluster.x-k8s.io/v1beta2", "Cluster"), "Cluster")
                .as_deref(),
            Some("my-cluster")
        );
        assert_eq!(
            shared::capi_owner(&owned_by("cluster.x-k8s.io/v1beta1", "Cluster"), "Cluster")
                .as_deref(),
            Some("my-cluster")
        );
        assert_eq!(
            shared::capi_owner(&owned_by("example.com/v1", "Cluster"), "Cluster"),
            None
        );
        assert_eq!(
            shared::capi_owner(&owned_by("cluster.x-k8s.io/v1beta2", "Machine"), "Cluster"),
            None
        );
        assert_eq!(
            shared::capi_owner(
                &DockerCluster::new("dc", DockerClusterSpec::default()),
                "Cluster"
            ),
            None
        );
    }

    #[test]
    fn pause_comes_from_the_cluster_or_the_annotation() {
        let mut dc = DockerCluster::new("dc", DockerClusterSpec::default());
        let mut cluster = Cluster::new("c", ClusterSpec::default());
        assert_eq!(shared::paused(&dc, KIND, Some(&cluster)), None);
        cluster.spec.paused = Some(true);
        assert_eq!(
            shared::paused(&dc, KIND, Some(&cluster)).as_deref(),
            Some("Cluster spec.paused is set to true")
        );
        dc.metadata.annotations = Some([(PAUSED_ANNOTATION.to_owned(), String::new())].into());
        assert_eq!(
            shared::paused(&dc, KIND, Some(&cluster)).as_deref(),
            Some(
                "Cluster spec.paused is set to true, DockerCluster has the cluster.x-k8s.io/paused annotation"
            )
        );
        assert!(
            shared::paused(&dc, KIND, None).is_some(),
            "the annotation pauses even without the Cluster"
        );
    }

    #[test]
    fn clusters_map_to_their_docker_cluster_only() {
        let mut cluster = Cluster::new("c", ClusterSpec::default());
        cluster.metadata.namespace = Some("ns".into());
        assert_eq!(cluster_to_docker_cluster(cluster.clone()), None);
        cluster.spec.infrastructure_ref = ContractVersionedObjectReference {
            kind: "DockerCluster".into(),
            name: "dc".into(),
            api_group: "infrastructure.cluster.x-k8s.io".into(),
        };
        assert_eq!(
            cluster_to_docker_cluster(cluster.clone()),
            Some(ObjectRef::new("dc").within("ns"))
        );
        cluster.spec.infrastructure_ref.kind = "AWSCluster".into();
        assert_eq!(cluster_to_docker_cluster(cluster), None);
    }

    #[test]
    fn ready_summarizes_the_load_balancer() {
        let now = Timestamp::from_second(100).unwrap();
        let mut status = DockerClusterStatus::default();
        summarize_ready(&mut status, Some(1), now);
        assert_eq!(
            conditions::get(&status.conditions, names::READY)
                .unwrap()
                .status,
            "Unknown"
        );
        conditions::set(
            &mut status.conditions,
            names::LOAD_BALANCER_AVAILABLE,
            Status::False,
            names::REASON_NOT_AVAILABLE,
            "engine down",
            Some(1),
            now,
        );
        summarize_ready(&mut status, Some(1), now);
        let ready = conditions::get(&status.conditions, names::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.message.as_str()),
            ("False", "* LoadBalancerAvailable: engine down")
        );
        conditions::set(
            &mut status.conditions,
            names::LOAD_BALANCER_AVAILABLE,
            Status::True,
            names::REASON_AVAILABLE,
            "",
            Some(1),
            now,
        );
        summarize_ready(&mut status, Some(1), now);
        assert!(conditions::is_true(&status.conditions, names::READY));
    }
}
