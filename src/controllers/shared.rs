//! What the reconcilers share: owner lookups, pause, the acted-on predicate, status writes as
//! merge patches, finalizer removal, events, and wake-ups from Docker's container events.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Error as ControllerError};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{Instrument, error, trace, warn};

use super::{Context, Error};
use crate::api::capi::{Cluster, PAUSED_ANNOTATION};
use crate::docker::Removal;
use crate::docker::labels::{self, Owner};
use crate::metrics::{ControllerMetrics, ReconcileResult};

/// The name of the owner of `kind` in group `cluster.x-k8s.io` (controller or not).
pub fn capi_owner(obj: &impl Resource, kind: &str) -> Option<String> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == kind && o.api_version.split('/').next() == Some("cluster.x-k8s.io"))
        .map(|o| o.name.clone())
}

/// Why reconciliation of `obj` (a `kind`) is paused, in CAPD's words, or `None`.
pub fn paused(obj: &impl Resource, kind: &str, cluster: Option<&Cluster>) -> Option<String> {
    let mut reasons = Vec::new();
    if cluster.is_some_and(|c| c.spec.paused == Some(true)) {
        reasons.push("Cluster spec.paused is set to true".to_owned());
    }
    if obj.annotations().contains_key(PAUSED_ANNOTATION) {
        reasons.push(format!("{kind} has the {PAUSED_ANNOTATION} annotation"));
    }
    (!reasons.is_empty()).then(|| reasons.join(", "))
}

/// The key of `obj`'s failures in the controllers' shared backoff: `<kind>/<namespace>/<name>`.
pub fn backoff_key(kind: &str, obj: &impl Resource) -> String {
    let namespace = obj.meta().namespace.as_deref().unwrap_or_default();
    let name = obj.meta().name.as_deref().unwrap_or_default();
    format!("{kind}/{namespace}/{name}")
}

/// Both controllers' error policy: the object is reconciled again after its next backoff
/// delay.
pub fn retry_with_backoff(ctx: &Context, kind: &str, obj: &impl Resource) -> Action {
    let key = backoff_key(kind, obj);
    let delay = ctx.backoff.failed(&key);
    tracing::debug!(object = %key, retry_in = ?delay, "retrying the failed reconcile");
    Action::requeue(delay)
}

/// A hash of what a reconciler acts on: the spec (generation), labels, annotations,
/// finalizers, owner references and deletion. Status is left out, so a reconciler's own status
/// writes do not trigger it again.
pub fn acted_on(obj: &impl Resource) -> Option<u64> {
    let meta = obj.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut hasher);
    for owner in meta.owner_references.iter().flatten() {
        (&owner.api_version, &owner.kind, &owner.name, &owner.uid).hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// An API for `K` over the namespace the manager watches (`--namespace`), or all of them.
pub fn watched_api<K>(ctx: &Context) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.kube.clone(), ns),
        None => Api::all(ctx.kube.clone()),
    }
}

/// The stream of a controller's primary objects: watched with `config`, cached in the returned
/// store, and filtered by [`acted_on`] so status-only changes do not trigger reconciles.
/// `synced` is sent once the store holds the first full list.
pub fn watch_acted_on<K>(
    api: Api<K>,
    config: watcher::Config,
    synced: tokio::sync::oneshot::Sender<()>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    // Read from the stream itself: kube's `Store::wait_until_ready` wakes only one of several
    // waiters, and the controller's runner is already one.
    let mut synced = Some(synced);
    let stream = watcher(api, config.any_semantic())
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone))
                && let Some(synced) = synced.take()
            {
                let _ = synced.send(());
            }
        })
        .applied_objects()
        .predicate_filter(acted_on, PredicateConfig::default());
    (reader, stream)
}

/// `namespace/name` of an object reference: the key of the work queue's metrics.
pub fn queue_key<K: Resource>(object: &ObjectRef<K>) -> String {
    format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or_default(),
        object.name
    )
}

/// `mapper` (from a watched object to the objects it triggers), with each object it triggers
/// counted as queued.
pub fn queued<A, K, I>(
    metrics: ControllerMetrics,
    mapper: impl Fn(A) -> I + Send + Sync + 'static,
) -> impl Fn(A) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource,
    I: IntoIterator<Item = ObjectRef<K>>,
{
    move |object| {
        let triggered: Vec<ObjectRef<K>> = mapper(object).into_iter().collect();
        for object in &triggered {
            metrics.enqueued(&queue_key(object));
        }
        triggered
    }
}

/// The primary objects' `stream`, with each object it delivers counted as queued.
pub fn queued_stream<K: Resource, E>(
    metrics: ControllerMetrics,
    stream: impl Stream<Item = Result<K, E>> + Send,
) -> impl Stream<Item = Result<K, E>> + Send {
    stream.inspect(move |item| {
        if let Ok(object) = item {
            let meta = object.meta();
            let namespace = meta.namespace.as_deref().unwrap_or_default();
            let name = meta.name.as_deref().unwrap_or_default();
            metrics.enqueued(&format!("{namespace}/{name}"));
        }
    })
}

/// The reconcile-everything trigger `all`, with every object in `store` counted as queued on
/// each of its ticks.
pub fn queued_all<K>(
    metrics: ControllerMetrics,
    store: Store<K>,
    all: impl Stream<Item = ()> + Send,
) -> impl Stream<Item = ()> + Send
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    all.inspect(move |()| {
        for object in store.state() {
            metrics.enqueued(&queue_key(&ObjectRef::from_obj(object.as_ref())));
        }
    })
}

/// Runs one reconcile of `obj` (a `kind`) as every controller runs it: in its span, timed and
/// counted with controller-runtime's metrics, and recorded for the per-object counts. A
/// reconcile that waits for a change is looked at again after the sync period anyway, as
/// controller-runtime's resync does.
pub async fn reconcile_instrumented<K: Resource>(
    ctx: &Context,
    metrics: &ControllerMetrics,
    kind: &'static str,
    obj: &K,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let (namespace, name) = (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    );
    let timer = metrics.started(&format!("{namespace}/{name}"));
    let span = crate::telemetry::reconcile_span(kind, &namespace, &name);
    let result = async {
        // controller-runtime's V(5) and error lines, inside the reconcile's span.
        trace!("Reconciling");
        let result = reconcile.await;
        match &result {
            Ok(action) => trace!(?action, "Reconcile done"),
            Err(e) => error!(error = %e, "Reconciler error"),
        }
        result
    }
    .instrument(span)
    .await;
    if obj.meta().deletion_timestamp.is_some() && result.is_ok() {
        ctx.forget(kind, &namespace, &name);
    } else {
        ctx.count_reconcile(kind, &namespace, &name);
    }
    timer.finish(match &result {
        Err(_) => ReconcileResult::Error,
        Ok(action) if *action == Action::await_change() => ReconcileResult::Success,
        Ok(_) => ReconcileResult::RequeueAfter,
    });
    result.map(|action| {
        if action == Action::await_change() {
            Action::requeue(ctx.settings.sync_period)
        } else {
            action
        }
    })
}

/// Logs a failed reconcile that the controller reports (not the object's own failure, which
/// `error_policy` logs); an object gone from the cache only leaves the queue.
pub fn report_run_error<K>(
    metrics: &ControllerMetrics,
    kind: &str,
    result: Result<(ObjectRef<K>, Action), ControllerError<Error, watcher::Error>>,
) where
    K: Resource,
{
    match result {
        Ok(_) => {}
        Err(ControllerError::ObjectNotFound(object)) => metrics.forget(&queue_key(&object)),
        Err(e) => warn!(error = %e, kind, "reconcile failed"),
    }
}

/// Records on `obj`, whose status is `old`, that it is paused for `reason` (its `Paused`
/// condition, found through `conditions`) and nothing else, as both reconcilers do before they
/// stop at a paused object.
pub async fn write_paused<K, S>(
    api: &Api<K>,
    obj: &K,
    old: &S,
    conditions: fn(&mut S) -> &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    reason: &str,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + Clone,
{
    let mut status = old.clone();
    super::conditions::set(
        conditions(&mut status),
        super::conditions::names::PAUSED,
        super::conditions::Status::True,
        super::conditions::names::REASON_PAUSED,
        reason,
        obj.meta().generation,
        k8s_openapi::jiff::Timestamp::now(),
    );
    write_status(api, obj, old, &status).await
}

/// Writes `new` through the status subresource of `obj` when it differs from `old`, as a merge
/// patch from `old` (so cleared fields are cleared).
pub async fn write_status<K, S>(api: &Api<K>, obj: &K, old: &S, new: &S) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let json_error =
        |e: serde_json::Error| Error::Infrastructure(format!("cannot serialize the status: {e}"));
    let old = serde_json::to_value(old).map_err(json_error)?;
    let new = serde_json::to_value(new).map_err(json_error)?;
    if old == new {
        return Ok(());
    }
    let patch = json!({ "status": merge_patch(&old, &new) });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: fields gone from `new` are
/// sent as `null`, so a cleared field (for example `failureDomains`) is removed, not kept.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(previous) if previous == value => {}
                    Some(previous) => {
                        patch.insert(key.clone(), merge_patch(previous, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// Removes `finalizer` from `obj` (guarded by its resourceVersion).
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let finalizers: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

/// Publishes an event about `obj`; a failure to publish is only logged.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, "cannot publish an event");
    }
}

/// Wakes the owner (of `kind`) of a container when the engine reports one of `actions` for it,
/// until `shutdown`. While the engine is away events are missed, so once it answers again after
/// the stream ended, all objects are reconciled once (`reconcile_all`); reconnects back off
/// from 0.5 s to 30 s.
pub async fn forward_container_events<K>(
    ctx: Arc<Context>,
    kind: &'static str,
    actions: &'static [&'static str],
    wake: mpsc::UnboundedSender<ObjectRef<K>>,
    reconcile_all: mpsc::UnboundedSender<()>,
    shutdown: impl std::future::Future<Output = ()>,
) where
    K: Resource<DynamicType = ()>,
{
    let filter = format!("{}={kind}", labels::OWNER_KIND);
    let watch = async {
        let mut delay = Duration::from_millis(500);
        let mut reconnecting = false;
        loop {
            let mut events = ctx.runtime.container_events(&filter);
            // Back after the stream ended: once the engine answers, look at everything once
            // for what happened while nobody listened.
            if reconnecting && ctx.runtime.ping().await.is_ok() {
                let _ = reconcile_all.unbounded_send(());
            }
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => {
                        delay = Duration::from_millis(500);
                        event
                    }
                    Err(e) => {
                        warn!(error = %e, kind, "Docker event stream failed; reconnecting");
                        break;
                    }
                };
                if !actions.contains(&event.action.as_str()) {
                    continue;
                }
                if let Some(owner) = Owner::from_labels(&event.labels).filter(|o| o.kind == kind) {
                    let _ =
                        wake.unbounded_send(ObjectRef::new(&owner.name).within(&owner.namespace));
                }
            }
            reconnecting = true;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    };
    tokio::select! {
        () = watch => {}
        () = shutdown => {}
    }
}

/// Removes `owner`'s container `name` (a `what`, such as "load balancer") with its volumes and
/// reports it on `obj` with event `removed`; a container someone else owns is left alone and
/// reported with the Warning event `not_owned`, naming its owner.
pub async fn remove_and_report<K>(
    ctx: &Context,
    obj: &K,
    name: &str,
    owner: &Owner,
    what: &str,
    (removed, not_owned): (&str, &str),
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>,
{
    match crate::docker::remove_owned(ctx.runtime.as_ref(), name, owner).await? {
        Removal::Removed => {
            let note = format!("Removed {what} container {name}");
            publish(ctx, obj, EventType::Normal, removed, note).await;
        }
        Removal::Absent => {}
        Removal::NotOurs(other) => {
            let note = format!(
                "Left container {name} alone: it belongs to {}",
                other.map_or("another owner".into(), |o| o.to_string())
            );
            publish(ctx, obj, EventType::Warning, not_owned, note).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patches_send_null_for_cleared_fields() {
        let old = json!({"failureDomains": [{"name": "a"}], "initialization": {"provisioned": true}, "conditions": [1]});
        let new = json!({"initialization": {"provisioned": true}, "conditions": [2]});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"failureDomains": null, "conditions": [2]})
        );
        assert_eq!(merge_patch(&new, &new), json!({}));
    }
}
