//! The DockerMachine's provisioning, one phase per concern, in the order [`provision`] runs
//! them. Every phase has one contract: it takes what it needs, sets only its own condition, and
//! returns `Continue` (with what later phases need), `Break` with what the reconciler should do
//! while it waits (a background task or a watch wakes it), or a [`MachineError`].

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::warn;

use super::errors::{MachineError, events};
use super::tasks::Phase;
use super::{
    Inputs, Outcome, Reconciler, bootstrap_error, bootstrap_plan, bootstrap_timeout, follow,
    image_for, initialize_node, key, load_images, owner, reasons, waits_for_control_plane,
};
use crate::api::DockerMachine;
use crate::api::capi::CONTROL_PLANE_LABEL;
use crate::api::ip_family::IpFamily;
use crate::bootstrap::runner::Progress;
use crate::controllers::conditions::Status;
use crate::controllers::{lb_backends, shared};
use crate::docker::node::{self, Node, NodeRequest, Role};
use crate::docker::node_bootstrap;

/// One reconcile's machine: the object, its owners, the reconciler and the node container's
/// name.
pub(super) struct Provisioning<'a> {
    pub reconciler: &'a Arc<Reconciler>,
    pub dm: &'a DockerMachine,
    pub inputs: &'a Inputs,
    pub container: String,
}

/// What the first phase found out for the later ones.
#[derive(Debug)]
pub(super) struct Ready {
    ip_family: IpFamily,
    role: Role,
    secret_name: String,
}

/// Takes a phase's result: its value on `Continue`; on `Break`, returns the action from the
/// enclosing function.
macro_rules! phase {
    ($result:expr) => {
        match $result? {
            ControlFlow::Continue(value) => value,
            ControlFlow::Break(action) => return Ok(action),
        }
    };
}

/// The provisioning phases in order; an `Err` is published as an event under its reason and
/// retried with backoff.
pub(super) async fn provision(
    p: &Provisioning<'_>,
    api: &Api<DockerMachine>,
    out: &mut Outcome,
) -> Result<Action, MachineError> {
    let ready = phase!(prerequisites(p.inputs, out));
    phase!(container(p, &ready, out).await);
    if ready.role == Role::ControlPlane {
        load_balancer(p).await?;
    }
    let progress = phase!(boot(p, out).await);
    phase!(pre_load_images(p, out).await);
    provider_id(p, api, out).await?;
    bootstrap(p, &ready, progress, out).await
}

/// The cluster's infrastructure is provisioned, its network is usable, and the machine has its
/// bootstrap data (workers wait for the control plane to be initialized first); until then the
/// container's condition says what it waits for. Pure: it reads only the owners.
fn prerequisites(
    inputs: &Inputs,
    out: &mut Outcome,
) -> Result<ControlFlow<Action, Ready>, MachineError> {
    let Inputs {
        machine,
        cluster,
        cluster_name,
    } = inputs;
    let infrastructure_ready = cluster
        .status
        .as_ref()
        .and_then(|s| s.initialization.as_ref())
        .and_then(|i| i.infrastructure_provisioned)
        == Some(true);
    if !infrastructure_ready {
        out.blocked(
            reasons::CONTAINER_PROVISIONED,
            reasons::WAITING_FOR_INFRASTRUCTURE,
            "",
            reasons::WAITING_FOR_CONTAINER,
        );
        return Ok(ControlFlow::Break(Action::await_change()));
    }
    let ip_family = IpFamily::of(&cluster.spec.cluster_network).map_err(|e| {
        let message = format!("Cluster {cluster_name} spec.clusterNetwork: {e}");
        out.blocked(
            reasons::CONTAINER_PROVISIONED,
            reasons::NOT_PROVISIONED,
            &message,
            reasons::WAITING_FOR_CONTAINER,
        );
        MachineError::InvalidCluster(message)
    })?;
    let role = if machine.labels().contains_key(CONTROL_PLANE_LABEL) {
        Role::ControlPlane
    } else {
        Role::Worker
    };
    let Some(secret_name) = machine.spec.bootstrap.data_secret_name.clone() else {
        let reason = if role == Role::Worker && waits_for_control_plane(cluster) {
            reasons::WAITING_FOR_CONTROL_PLANE
        } else {
            reasons::WAITING_FOR_BOOTSTRAP_DATA
        };
        out.blocked(
            reasons::CONTAINER_PROVISIONED,
            reason,
            "",
            reasons::WAITING_FOR_CONTAINER,
        );
        return Ok(ControlFlow::Break(Action::await_change()));
    };
    Ok(ControlFlow::Continue(Ready {
        ip_family,
        role,
        secret_name,
    }))
}

/// The node container runs (made, or found and adopted); its addresses and failure domain.
async fn container(
    p: &Provisioning<'_>,
    ready: &Ready,
    out: &mut Outcome,
) -> Result<ControlFlow<Action>, MachineError> {
    let (reconciler, dm, inputs, container) = (p.reconciler, p.dm, p.inputs, p.container.as_str());
    let ctx = &reconciler.ctx;
    let runtime = ctx.runtime.as_ref();
    let Inputs {
        machine,
        cluster_name,
        ..
    } = inputs;
    let Ready {
        ip_family, role, ..
    } = *ready;
    let not_provisioned = |out: &mut Outcome, message: String| {
        out.blocked(
            reasons::CONTAINER_PROVISIONED,
            reasons::NOT_PROVISIONED,
            &message,
            reasons::WAITING_FOR_CONTAINER,
        );
        message
    };
    let owner = owner(dm);
    let image = image_for(dm, machine);
    let request = NodeRequest {
        name: container,
        owner: &owner,
        provisioned: !dm.spec.provider_id.is_empty(),
        node: image.as_ref().map_err(Clone::clone).map(|image| Node {
            cluster: cluster_name,
            name: container,
            owner: &owner,
            role,
            failure_domain: &machine.spec.failure_domain,
            image,
            extra_mounts: &dm.spec.extra_mounts,
            network: &ctx.settings.network,
            ip_family,
        }),
        options: &ctx.settings.node_options,
    };
    let running = match node::ensure(
        runtime,
        &reconciler.pulls,
        &request,
        ObjectRef::from_obj(dm),
    )
    .await
    {
        Ok(node::NodeState::Running {
            container: c,
            created,
        }) => {
            if created {
                shared::publish(
                    ctx,
                    dm,
                    EventType::Normal,
                    events::CONTAINER_CREATED,
                    format!("Created node container {container}"),
                )
                .await;
            }
            c
        }
        Ok(node::NodeState::Pulling { image, progress }) => {
            not_provisioned(out, format!("Pulling image {image}: {progress}"));
            return Ok(ControlFlow::Break(Action::await_change()));
        }
        Ok(node::NodeState::NotRunning) => {
            not_provisioned(out, format!("Container {container} is not running anymore"));
            return Ok(ControlFlow::Break(Action::await_change()));
        }
        Err(e) => {
            not_provisioned(out, e.to_string());
            return Err(e.into());
        }
    };
    out.set(
        reasons::CONTAINER_PROVISIONED,
        Status::True,
        reasons::PROVISIONED,
        "",
    );
    let ips = running
        .networks
        .get(&ctx.settings.network)
        .cloned()
        .unwrap_or_default();
    out.status.addresses = node::addresses(container, &ips, ip_family);
    out.status.failure_domain = machine.spec.failure_domain.clone();
    Ok(ControlFlow::Continue(()))
}

/// The cluster's load balancer sends to this control-plane node.
async fn load_balancer(p: &Provisioning<'_>) -> Result<(), MachineError> {
    lb_backends::configure(&p.reconciler.ctx, &p.inputs.cluster)
        .await
        .map(drop)
        .map_err(MachineError::LoadBalancerConfig)
}

/// The node has booted, read from the node (a follower wakes the reconciler when it has). A
/// runner that runs or has succeeded says the node booted (it starts only after the boot, and a
/// node restart stops it); otherwise the log of the node's current run, then `crictl ps`.
async fn boot(
    p: &Provisioning<'_>,
    out: &mut Outcome,
) -> Result<ControlFlow<Action, Progress>, MachineError> {
    let (reconciler, dm, container) = (p.reconciler, p.dm, p.container.as_str());
    let ctx = &reconciler.ctx;
    let runtime = ctx.runtime.as_ref();
    let progress = node_bootstrap::progress(runtime, container)
        .await
        .map_err(bootstrap_error("read the progress of", container))?;
    let booted = progress.running
        || progress.succeeded
        || (node_bootstrap::boot_logged(runtime, container)
            .await
            .map_err(|e| {
                MachineError::ContainerLog(format!("Cannot read the log of {container}: {e}"))
            })?
            && node_bootstrap::crictl_works(runtime, container).await);
    let progress = booted.then_some(progress);
    let Some(progress) = progress else {
        out.blocked(
            reasons::CGROUPS_READY,
            reasons::NOT_READY,
            "Waiting for the node to boot",
            reasons::WAITING_FOR_CGROUPS,
        );
        follow(reconciler, dm, container, Phase::Boot);
        return Ok(ControlFlow::Break(Action::await_change()));
    };
    out.set(reasons::CGROUPS_READY, Status::True, reasons::READY, "");
    Ok(ControlFlow::Continue(progress))
}

/// The images to pre-load are in the node, loaded in the background (what is loaded is
/// recorded in the node).
async fn pre_load_images(
    p: &Provisioning<'_>,
    out: &mut Outcome,
) -> Result<ControlFlow<Action>, MachineError> {
    let (reconciler, dm, container) = (p.reconciler, p.dm, p.container.as_str());
    let ctx = &reconciler.ctx;
    let runtime = ctx.runtime.as_ref();
    let images = &dm.spec.pre_load_images;
    let missing = if images.is_empty() {
        Ok(Vec::new())
    } else {
        node_bootstrap::images_to_load(runtime, container, images).await
    };
    let missing = missing.map_err(|e| {
        MachineError::PreLoadImages(format!(
            "Cannot read the pre-loaded images of {container}: {e}"
        ))
    })?;
    if !missing.is_empty() {
        if let Some(message) = reconciler.tasks.take_load_failure(&key(dm)) {
            out.blocked(
                reasons::PRELOADED_IMAGES_READY,
                reasons::NOT_READY,
                &message,
                "WaitingForPreloadedImages",
            );
            return Err(MachineError::PreLoadImages(message));
        }
        load_images(reconciler, dm, container, missing.clone());
        let message = format!(
            "Loading image {} of {}: {}",
            images.len() - missing.len() + 1,
            images.len(),
            missing[0]
        );
        out.blocked(
            reasons::PRELOADED_IMAGES_READY,
            reasons::NOT_READY,
            &message,
            "WaitingForPreloadedImages",
        );
        return Ok(ControlFlow::Break(Action::await_change()));
    }
    out.set(
        reasons::PRELOADED_IMAGES_READY,
        Status::True,
        reasons::READY,
        "",
    );
    Ok(ControlFlow::Continue(()))
}

/// Provisioned, as the contract means it: the infrastructure is there (before the bootstrap),
/// and `spec.providerID` names it.
async fn provider_id(
    p: &Provisioning<'_>,
    api: &Api<DockerMachine>,
    out: &mut Outcome,
) -> Result<(), MachineError> {
    let (dm, container) = (p.dm, p.container.as_str());
    if dm.spec.provider_id.is_empty() {
        let patch = json!({"spec": {"providerID": format!("docker:////{container}")}});
        api.patch(
            &dm.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(|e| MachineError::ProviderId(format!("Cannot set spec.providerID: {e}")))?;
    }
    out.status.initialization.provisioned = Some(true);
    Ok(())
}

/// The bootstrap, run in the node by the runner, its progress read from the node; once it has
/// succeeded, the workload cluster's Node.
async fn bootstrap(
    p: &Provisioning<'_>,
    ready: &Ready,
    progress: Progress,
    out: &mut Outcome,
) -> Result<Action, MachineError> {
    let (reconciler, dm, inputs, container) = (p.reconciler, p.dm, p.inputs, p.container.as_str());
    let runtime = reconciler.ctx.runtime.as_ref();
    match next_bootstrap_step(&progress, bootstrap_timeout(dm)) {
        BootstrapStep::Done => {
            out.set(
                reasons::BOOTSTRAP_COMPLETED,
                Status::True,
                reasons::COMPLETED,
                "",
            );
            // What a cloud provider would do for the workload cluster's Node.
            return initialize_node(reconciler, dm, inputs, container, &out.status.addresses).await;
        }
        BootstrapStep::TimedOut { reason, message } => {
            node_bootstrap::abort(runtime, container, &reason)
                .await
                .map_err(bootstrap_error("stop", container))?;
            bootstrap_failed(out, &message);
            return Err(MachineError::BootstrapTimedOut(message));
        }
        BootstrapStep::Failed(message) => {
            bootstrap_failed(out, &message);
            return Ok(Action::await_change());
        }
        BootstrapStep::Start => match start_bootstrap(p, &ready.secret_name).await {
            Ok(message) => bootstrap_running(out, &message),
            Err(MachineError::BootstrapDataInvalid(message)) => {
                bootstrap_running(out, &message);
                return Err(MachineError::BootstrapDataInvalid(message));
            }
            Err(error) => return Err(error),
        },
        BootstrapStep::Running { resume, message } => {
            if resume {
                node_bootstrap::start(runtime, container)
                    .await
                    .map_err(bootstrap_error("resume", container))?;
            }
            bootstrap_running(out, &message);
        }
    }
    follow(reconciler, dm, container, Phase::Bootstrap);
    Ok(Action::await_change())
}

/// What the bootstrap phase does next, from the runner's progress in the node.
#[derive(Debug, PartialEq, Eq)]
enum BootstrapStep {
    /// It succeeded: the workload cluster's Node is next.
    Done,
    /// It ran past `bootstrapTimeout`: stop it (recording `reason` in the node) and fail.
    TimedOut {
        /// Why it is stopped.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// A step failed (or none wrote the success sentinel): reported, left to remediation.
    Failed(String),
    /// Not installed yet: install the plan and start it.
    Start,
    /// Running; `resume` when the runner stopped without an outcome (the node restarted), so it
    /// resumes after the last finished step.
    Running {
        /// Whether to start the runner again.
        resume: bool,
        /// The condition's message.
        message: String,
    },
}

/// Decides the bootstrap's next step from `progress` and the bootstrap timeout (pure).
fn next_bootstrap_step(progress: &Progress, timeout: Duration) -> BootstrapStep {
    if progress.succeeded {
        return BootstrapStep::Done;
    }
    if progress.installed
        && progress.failed.is_none()
        && progress.elapsed_seconds > timeout.as_secs()
    {
        let reason = format!(
            "the bootstrap did not complete within bootstrapTimeout ({}s)",
            timeout.as_secs()
        );
        let message = format!(
            "Step {} of {} did not complete: {reason}",
            progress.done + 1,
            progress.total
        );
        return BootstrapStep::TimedOut { reason, message };
    }
    if let Some((step, code, tail)) = &progress.failed {
        return BootstrapStep::Failed(if *step == 0 {
            format!("The bootstrap did not succeed: {tail}")
        } else {
            format!(
                "Step {step} of {} failed with exit code {code}:\n{tail}",
                progress.total
            )
        });
    }
    if !progress.installed {
        return BootstrapStep::Start;
    }
    BootstrapStep::Running {
        resume: !progress.running,
        message: format!(
            "Running step {} of {}",
            (progress.done + 1).min(progress.total),
            progress.total
        ),
    }
}

/// Installs the machine's bootstrap plan (from Secret `secret_name`) in the node and starts the
/// runner; the condition's message for it.
async fn start_bootstrap(p: &Provisioning<'_>, secret_name: &str) -> Result<String, MachineError> {
    let (ctx, dm, container) = (&p.reconciler.ctx, p.dm, p.container.as_str());
    let plan = bootstrap_plan(ctx, dm, secret_name)
        .await
        .map_err(MachineError::BootstrapDataInvalid)?;
    for warning in &plan.warnings {
        warn!(dockermachine = %key(dm), "{warning}");
    }
    let runtime = ctx.runtime.as_ref();
    let started = async {
        node_bootstrap::install(runtime, container, &plan).await?;
        node_bootstrap::start(runtime, container).await
    };
    started.await.map_err(bootstrap_error("start", container))?;
    Ok(format!("Running step 1 of {}", plan.commands.len()))
}

/// Sets `BootstrapCompleted` to not completed yet, with `message`.
fn bootstrap_running(out: &mut Outcome, message: &str) {
    out.set(
        reasons::BOOTSTRAP_COMPLETED,
        Status::False,
        reasons::NOT_COMPLETED,
        message,
    );
}

/// Sets `BootstrapCompleted` to failed with `message`.
fn bootstrap_failed(out: &mut Outcome, message: &str) {
    out.set(
        reasons::BOOTSTRAP_COMPLETED,
        Status::False,
        reasons::FAILED,
        message,
    );
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::api::capi::{Cluster, Machine};
    use crate::controllers::conditions;

    /// Machine `m` of cluster `c` (a control-plane one when `control_plane`), with bootstrap
    /// data when `data`; its Cluster, with its infrastructure provisioned when `provisioned`, a
    /// control plane initialized or not, and `pods` as its pod CIDRs.
    fn inputs(control_plane: bool, data: bool, provisioned: bool, pods: &[&str]) -> Inputs {
        let mut labels = json!({"cluster.x-k8s.io/cluster-name": "c"});
        if control_plane {
            labels[CONTROL_PLANE_LABEL] = json!("");
        }
        let machine: Machine = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m", "namespace": "ns", "labels": labels},
            "spec": {
                "clusterName": "c",
                "bootstrap": if data { json!({"dataSecretName": "m-data"}) } else { json!({}) },
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerMachine", "name": "m"},
            },
        }))
        .unwrap();
        let cluster: Cluster = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {
                "clusterNetwork": {"pods": {"cidrBlocks": pods}},
                "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KubeadmControlPlane", "name": "c"},
            },
            "status": {"initialization": {"infrastructureProvisioned": provisioned}},
        }))
        .unwrap();
        Inputs {
            machine,
            cluster,
            cluster_name: "c".into(),
        }
    }

    fn outcome() -> Outcome {
        Outcome {
            status: Default::default(),
            generation: Some(1),
            now: Timestamp::now(),
        }
    }

    /// The reason of condition `type_` in `out`.
    fn reason(out: &Outcome, type_: &str) -> String {
        conditions::get(&out.status.conditions, type_)
            .map(|c| c.reason.clone())
            .unwrap_or_default()
    }

    #[test]
    fn nothing_happens_before_the_cluster_infrastructure_is_provisioned() {
        let mut out = outcome();
        let next = prerequisites(&inputs(true, true, false, &[]), &mut out).unwrap();
        assert!(next.is_break());
        assert_eq!(
            reason(&out, reasons::CONTAINER_PROVISIONED),
            "WaitingForClusterInfrastructureReady"
        );
        assert_eq!(
            reason(&out, reasons::BOOTSTRAP_COMPLETED),
            "WaitingForContainer"
        );
    }

    #[test]
    fn workers_wait_for_the_control_plane_and_control_planes_for_their_data() {
        let mut out = outcome();
        let worker = prerequisites(&inputs(false, false, true, &[]), &mut out).unwrap();
        assert!(worker.is_break());
        assert_eq!(
            reason(&out, reasons::CONTAINER_PROVISIONED),
            "WaitingForControlPlaneInitialized"
        );
        let mut out = outcome();
        let control_plane = prerequisites(&inputs(true, false, true, &[]), &mut out).unwrap();
        assert!(control_plane.is_break());
        assert_eq!(
            reason(&out, reasons::CONTAINER_PROVISIONED),
            "WaitingForBootstrapData"
        );
    }

    #[test]
    fn a_cluster_network_that_cannot_be_used_is_named() {
        let mut out = outcome();
        let error =
            prerequisites(&inputs(true, true, true, &["not-a-cidr"]), &mut out).unwrap_err();
        assert_eq!(error.reason(), "InvalidCluster");
        assert!(
            error
                .to_string()
                .starts_with("Cluster c spec.clusterNetwork: pods: "),
            "{error}"
        );
        assert_eq!(
            reason(&out, reasons::CONTAINER_PROVISIONED),
            "NotProvisioned"
        );
    }

    fn progress(installed: bool, running: bool, done: usize, elapsed: u64) -> Progress {
        Progress {
            installed,
            running,
            done,
            total: 3,
            elapsed_seconds: elapsed,
            ..Default::default()
        }
    }

    #[test]
    fn the_bootstrap_starts_resumes_reports_and_times_out_from_the_nodes_progress() {
        let timeout = Duration::from_secs(300);
        assert_eq!(
            next_bootstrap_step(&progress(false, false, 0, 0), timeout),
            BootstrapStep::Start
        );
        assert_eq!(
            next_bootstrap_step(&progress(true, true, 1, 10), timeout),
            BootstrapStep::Running {
                resume: false,
                message: "Running step 2 of 3".into()
            }
        );
        // The node restarted: the runner resumes after the last finished step.
        assert_eq!(
            next_bootstrap_step(&progress(true, false, 3, 10), timeout),
            BootstrapStep::Running {
                resume: true,
                message: "Running step 3 of 3".into()
            }
        );
        assert_eq!(
            next_bootstrap_step(&progress(true, true, 1, 301), timeout),
            BootstrapStep::TimedOut {
                reason: "the bootstrap did not complete within bootstrapTimeout (300s)".into(),
                message: "Step 2 of 3 did not complete: the bootstrap did not complete within bootstrapTimeout (300s)".into()
            }
        );
        let failed = Progress {
            failed: Some((2, 1, "boom".into())),
            ..progress(true, false, 1, 400)
        };
        assert_eq!(
            next_bootstrap_step(&failed, timeout),
            BootstrapStep::Failed("Step 2 of 3 failed with exit code 1:\nboom".into()),
            "a failure is reported as it is, not as a timeout"
        );
        let no_sentinel = Progress {
            failed: Some((0, 1, "none wrote it".into())),
            ..progress(true, false, 3, 10)
        };
        assert_eq!(
            next_bootstrap_step(&no_sentinel, timeout),
            BootstrapStep::Failed("The bootstrap did not succeed: none wrote it".into())
        );
        let succeeded = Progress {
            succeeded: true,
            ..progress(true, false, 3, 1000)
        };
        assert_eq!(
            next_bootstrap_step(&succeeded, timeout),
            BootstrapStep::Done
        );
    }

    #[test]
    fn with_everything_there_the_role_family_and_data_go_on() {
        let mut out = outcome();
        let next = prerequisites(&inputs(true, true, true, &["fd00::/64"]), &mut out).unwrap();
        let ControlFlow::Continue(ready) = next else {
            panic!("stopped: {:?}", out.status.conditions);
        };
        assert_eq!(ready.role, Role::ControlPlane);
        assert_eq!(ready.ip_family, IpFamily::V6);
        assert_eq!(ready.secret_name, "m-data");
        assert!(out.status.conditions.is_empty(), "it set a condition");
    }
}
