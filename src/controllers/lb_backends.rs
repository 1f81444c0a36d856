//! The control-plane nodes behind a cluster's load balancer (CAPD's
//! `reconcileLoadBalancerConfiguration`), for both reconcilers: control-plane machines when
//! their node appears or goes, the DockerCluster controller when it (re)creates the load
//! balancer.

use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use super::Context;
use crate::api::DockerCluster;
use crate::api::capi::{
    CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, Cluster, MANAGED_BY_ANNOTATION, Machine,
};
use crate::api::ip_family::IpFamily;
use crate::docker::labels::Owner;
use crate::docker::load_balancer::{self, Configured};
use crate::docker::node;

/// Puts `cluster`'s control-plane nodes behind its load balancer: every control-plane
/// Machine's node weighs 100, or 0 (drained) while its Machine is being deleted and others
/// remain. Nothing to do without its DockerCluster or a running load balancer of that
/// DockerCluster, or when the DockerCluster is managed by someone else. Calls for one cluster
/// run one at a time.
pub async fn configure(ctx: &Context, cluster: &Cluster) -> Result<Configured, String> {
    let namespace = &cluster.namespace().unwrap_or_default();
    let cluster_name = &cluster.name_any();
    let lock = ctx.load_balancer_lock(&format!("{namespace}/{cluster_name}"));
    let _held = lock.lock().await;
    let infra = &cluster.spec.infrastructure_ref;
    if infra.kind != "DockerCluster" || infra.name.is_empty() {
        return Ok(Configured::NoLoadBalancer);
    }
    let Some(dc) = Api::<DockerCluster>::namespaced(ctx.kube.clone(), namespace)
        .get_opt(&infra.name)
        .await
        .map_err(|e| format!("Cannot read DockerCluster {}: {e}", infra.name))?
    else {
        return Ok(Configured::NoLoadBalancer);
    };
    if dc.annotations().contains_key(MANAGED_BY_ANNOTATION) {
        return Ok(Configured::NoLoadBalancer);
    }
    let ip_family = IpFamily::of(&cluster.spec.cluster_network)
        .map_err(|e| format!("Cluster {cluster_name} spec.clusterNetwork: {e}"))?;
    let selector = format!("{CONTROL_PLANE_LABEL},{CLUSTER_NAME_LABEL}={cluster_name}");
    let machines = Api::<Machine>::namespaced(ctx.kube.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("Cannot list the control-plane Machines: {e}"))?
        .items;
    let several = machines.len() > 1;
    let weights = machines
        .iter()
        .map(|m| {
            let draining = several && m.meta().deletion_timestamp.is_some();
            let name = node::container_name(cluster_name, &m.name_any());
            (name, if draining { 0 } else { 100 })
        })
        .collect();
    load_balancer::configure(
        ctx.runtime.as_ref(),
        &load_balancer::Target {
            cluster: cluster_name,
            owner: &Owner::of("DockerCluster", &dc),
            network: &ctx.settings.network,
            frontend_port: load_balancer::frontend_port(&dc),
            ipv6: ip_family == IpFamily::V6,
        },
        &weights,
    )
    .await
    .map_err(|e| format!("Cannot configure the load balancer of cluster {cluster_name}: {e}"))
}
