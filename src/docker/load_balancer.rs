//! A cluster's load-balancer container: its spec (pure) and the steps that make the engine
//! match it, without ever touching a container that belongs to another object.

use std::collections::BTreeMap;
use std::hash::Hash;

use super::haproxy;
use super::labels::{self, Owner};
use super::node::Role;
use super::pulls::{ImagePulls, PullStatus};
use super::{Container, ContainerFile, ContainerRuntime, ContainerSpec, DockerError};
use crate::api::DockerLoadBalancer;

/// The image repository when `imageRepository` is unset.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "kindest";
/// The image tag when `imageTag` is unset (CAPD's code default; its API doc names an older one).
pub const DEFAULT_IMAGE_TAG: &str = "v20230606-42a2262b";
/// Where HAProxy reads its configuration.
pub const CONFIG_PATH: &str = "/usr/local/etc/haproxy/haproxy.cfg";

/// The HAProxy image: `<imageRepository or kindest>/haproxy:<imageTag or the default>`.
pub fn image(lb: &DockerLoadBalancer) -> String {
    let repository = if lb.image_repository.is_empty() {
        DEFAULT_IMAGE_REPOSITORY
    } else {
        &lb.image_repository
    };
    let tag = if lb.image_tag.is_empty() {
        DEFAULT_IMAGE_TAG
    } else {
        &lb.image_tag
    };
    format!("{repository}/haproxy:{tag}")
}

/// The container port of the control-plane frontend (`<port>/tcp`).
pub fn frontend_port_key(frontend_port: u16) -> String {
    format!("{frontend_port}/tcp")
}

/// The stats page's container port (`8404/tcp`).
pub fn stats_port_key() -> String {
    format!("{}/tcp", haproxy::STATS_PORT)
}

/// The load-balancer container of cluster `cluster` owned by `owner`: kind's labels plus the
/// owner's, random host ports for the frontend and the stats page, HAProxy in master-worker
/// mode with an initial configuration that has no backends yet. The frontend listens on the
/// endpoint's port, and that same port is published (CAPD always publishes 6443).
pub fn container_spec(
    cluster: &str,
    owner: &Owner,
    lb: &DockerLoadBalancer,
    frontend_port: u16,
    network: &str,
) -> ContainerSpec {
    let mut labels = owner.labels();
    labels.insert(labels::KIND_CLUSTER.into(), cluster.into());
    labels.insert(labels::KIND_ROLE.into(), labels::ROLE_LOAD_BALANCER.into());
    ContainerSpec {
        name: labels::load_balancer_name(cluster),
        image: image(lb),
        labels,
        entrypoint: ["haproxy", "-W", "-db", "-f", CONFIG_PATH]
            .map(String::from)
            .to_vec(),
        network: network.into(),
        published_ports: vec![
            (frontend_port_key(frontend_port), "0.0.0.0".into()),
            (stats_port_key(), "0.0.0.0".into()),
        ],
        files: vec![ContainerFile {
            path: CONFIG_PATH.into(),
            content: haproxy::render(frontend_port, false, &[]).into_bytes(),
            mode: 0o644,
        }],
        ..Default::default()
    }
}

/// Why the load balancer is not running.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadBalancerError {
    /// A container has the load balancer's name but is not this object's.
    #[error("container {name} already exists and belongs to {}; capd-rs will not adopt or remove it (clusters with the same name in different namespaces share kind's container names)", owner.as_ref().map_or("another owner (it has no capd-rs owner labels)".to_owned(), ToString::to_string))]
    NameClash {
        /// The container's name.
        name: String,
        /// Its owner, when it names one.
        owner: Option<Owner>,
    },
    /// The image could not be pulled.
    #[error("cannot pull image {image}: {message}")]
    Pull {
        /// The image.
        image: String,
        /// The engine's message.
        message: String,
    },
    /// The container exists but has stopped (HAProxy exited or someone stopped it).
    #[error("container {0} is not running")]
    Stopped(String),
    /// The engine failed.
    #[error("{0}")]
    Docker(#[from] DockerError),
}

/// What [`ensure`] had to do to get the load balancer running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// It was already running.
    Unchanged,
    /// It was created.
    Created,
    /// It had stopped and was removed and created again.
    Recreated,
}

/// Where the load balancer stands after [`ensure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadBalancerState {
    /// The image is being pulled; the text is the progress.
    Pulling(String),
    /// The container runs.
    Running {
        /// The container as the engine reports it.
        container: Container,
        /// What this call did.
        change: Change,
    },
}

/// The container named like `spec`, if it is `owner`'s; an error if it belongs to someone else.
async fn owned(
    runtime: &dyn ContainerRuntime,
    name: &str,
    owner: &Owner,
) -> Result<Option<Container>, LoadBalancerError> {
    match super::find_owned(runtime, name, owner).await? {
        super::Found::Absent => Ok(None),
        super::Found::Ours(container) => Ok(Some(container)),
        super::Found::NotOurs(found) => Err(LoadBalancerError::NameClash {
            name: name.to_owned(),
            owner: found,
        }),
    }
}

/// Makes the load balancer run as `spec` says: finds it by name (checking it is `owner`'s), or
/// pulls its image in the background and creates it (and its network, when missing). A stopped
/// container is recreated only when `may_restart` (the caller's backoff), so a crashing HAProxy is not restarted in a
/// hot loop; otherwise it is reported as [`LoadBalancerError::Stopped`].
pub async fn ensure<W: Clone + Eq + Hash + Send + 'static>(
    runtime: &dyn ContainerRuntime,
    pulls: &ImagePulls<W>,
    spec: &ContainerSpec,
    owner: &Owner,
    waiter: W,
    may_restart: bool,
) -> Result<LoadBalancerState, LoadBalancerError> {
    let mut recreating = false;
    if let Some(container) = owned(runtime, &spec.name, owner).await? {
        if container.running {
            return Ok(LoadBalancerState::Running {
                container,
                change: Change::Unchanged,
            });
        }
        if !may_restart {
            return Err(LoadBalancerError::Stopped(spec.name.clone()));
        }
        // Recreated rather than restarted: a container that never started (a manager killed
        // between create and start) would otherwise run without the provider's configuration.
        runtime.remove_container(&spec.name).await?;
        recreating = true;
    }
    match pulls.ensure(&spec.image, waiter).await? {
        PullStatus::Present => {}
        PullStatus::Pulling(progress) => return Ok(LoadBalancerState::Pulling(progress)),
        PullStatus::Failed(message) => {
            return Err(LoadBalancerError::Pull {
                image: spec.image.clone(),
                message,
            });
        }
    }
    runtime.ensure_network(&spec.network).await?;
    let mut change = Change::Unchanged;
    match runtime.run_container(spec).await {
        Ok(()) if recreating => change = Change::Recreated,
        Ok(()) => change = Change::Created,
        // Another reconcile (or manager) created it meanwhile: check whose it is below.
        Err(DockerError::NameTaken(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let container = owned(runtime, &spec.name, owner).await?.ok_or_else(|| {
        DockerError::Engine(format!(
            "container {} vanished right after it was started",
            spec.name
        ))
    })?;
    Ok(LoadBalancerState::Running { container, change })
}

/// The port the load balancer of `dc` listens on: its endpoint's port, 6443 when unset.
pub fn frontend_port(dc: &crate::api::DockerCluster) -> u16 {
    match dc.spec.control_plane_endpoint.port {
        0 => 6443,
        port => u16::try_from(port).unwrap_or(6443),
    }
}

/// What [`configure`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Configured {
    /// The configuration was rewritten and HAProxy reloaded.
    Reloaded,
    /// The load balancer already had this configuration.
    Unchanged,
    /// Cluster `cluster` has no running load balancer (not made yet, or externally managed).
    NoLoadBalancer,
}

/// The backends of cluster `cluster`'s load balancer: its control-plane node containers (kind's
/// labels, as CAPD lists them), each with its address on `network` (IPv6 when `ipv6`) and its
/// weight from `weights` (100 when absent). Nodes without an address yet are left out.
pub fn backends(
    containers: &[Container],
    network: &str,
    ipv6: bool,
    weights: &BTreeMap<String, u32>,
) -> Vec<haproxy::Backend> {
    containers
        .iter()
        .filter_map(|c| {
            let (v4, v6) = c.networks.get(network)?;
            let address = if ipv6 { v6 } else { v4 };
            (!address.is_empty()).then(|| haproxy::Backend {
                name: c.name.clone(),
                address: address.clone(),
                weight: weights.get(&c.name).copied().unwrap_or(100),
            })
        })
        .collect()
}

/// Whose load balancer [`configure`] writes, and how it listens.
pub struct Target<'a> {
    /// The cluster's name (kind's cluster label, and `<cluster>-lb`).
    pub cluster: &'a str,
    /// The DockerCluster that owns the load balancer: a same-named cluster in another
    /// namespace (or anyone else) is never written to, nor are its nodes listed.
    pub owner: &'a Owner,
    /// The Docker network the nodes' addresses are on.
    pub network: &'a str,
    /// The frontend's port.
    pub frontend_port: u16,
    /// IPv6 addresses and binds.
    pub ipv6: bool,
}

/// The copy of the configuration HAProxy was last told to load, next to it: a configuration
/// written but never signalled (the signal failed, the manager stopped) is signalled again.
const APPLIED_PATH: &str = "/usr/local/etc/haproxy/haproxy.cfg.applied";

/// Puts the target cluster's control-plane nodes behind its load balancer, weighted by
/// `weights` (container name to weight; 0 drains a node): renders the configuration, and
/// unless HAProxy was last told to load exactly that, writes it and has HAProxy reload it
/// (SIGHUP, in master-worker mode). A steady cluster costs one read.
pub async fn configure(
    runtime: &dyn ContainerRuntime,
    target: &Target<'_>,
    weights: &BTreeMap<String, u32>,
) -> Result<Configured, DockerError> {
    let name = labels::load_balancer_name(target.cluster);
    match super::find_owned(runtime, &name, target.owner).await? {
        super::Found::Ours(lb) if lb.running => {}
        _ => return Ok(Configured::NoLoadBalancer),
    }
    let nodes = runtime
        .list_containers(&[
            (labels::KIND_CLUSTER, target.cluster),
            (labels::KIND_ROLE, Role::ControlPlane.label()),
            (labels::OWNER_NAMESPACE, &target.owner.namespace),
        ])
        .await?;
    let backends = backends(&nodes, target.network, target.ipv6, weights);
    let config = haproxy::render(target.frontend_port, target.ipv6, &backends).into_bytes();
    if runtime.read_file(&name, APPLIED_PATH).await?.as_deref() == Some(config.as_slice()) {
        return Ok(Configured::Unchanged);
    }
    let file = |path: &str| ContainerFile {
        path: path.into(),
        content: config.clone(),
        mode: 0o644,
    };
    runtime.write_files(&name, &[file(CONFIG_PATH)]).await?;
    runtime.signal(&name, "SIGHUP").await?;
    runtime.write_files(&name, &[file(APPLIED_PATH)]).await?;
    Ok(Configured::Reloaded)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::docker::fake::FakeRuntime;
    use crate::docker::{Removal, remove_owned};
    use futures::StreamExt as _;

    fn owner(namespace: &str) -> Owner {
        Owner {
            kind: "DockerCluster".into(),
            namespace: namespace.into(),
            name: "c".into(),
        }
    }

    fn spec(namespace: &str) -> ContainerSpec {
        container_spec(
            "c",
            &owner(namespace),
            &DockerLoadBalancer::default(),
            6443,
            "kind",
        )
    }

    #[test]
    fn image_defaults_to_kindest_haproxy() {
        assert_eq!(
            image(&DockerLoadBalancer::default()),
            "kindest/haproxy:v20230606-42a2262b"
        );
        let custom = DockerLoadBalancer {
            image_repository: "registry.example.com/mirror".into(),
            image_tag: "v1".into(),
            ..Default::default()
        };
        assert_eq!(image(&custom), "registry.example.com/mirror/haproxy:v1");
    }

    #[test]
    fn spec_has_kind_labels_owner_labels_ports_and_config() {
        let spec = container_spec(
            "c",
            &owner("ns"),
            &DockerLoadBalancer::default(),
            7443,
            "kind",
        );
        assert_eq!(spec.name, "c-lb");
        assert_eq!(spec.labels[labels::KIND_CLUSTER], "c");
        assert_eq!(spec.labels[labels::KIND_ROLE], "external-load-balancer");
        assert_eq!(Owner::from_labels(&spec.labels), Some(owner("ns")));
        assert_eq!(
            spec.published_ports,
            [
                ("7443/tcp".to_owned(), "0.0.0.0".to_owned()),
                ("8404/tcp".to_owned(), "0.0.0.0".to_owned())
            ]
        );
        assert_eq!(spec.entrypoint, ["haproxy", "-W", "-db", "-f", CONFIG_PATH]);
        let config = String::from_utf8(spec.files[0].content.clone()).unwrap();
        assert!(config.contains("bind *:7443"));
    }

    fn new_pulls(
        fake: &Arc<FakeRuntime>,
    ) -> (
        ImagePulls<u8>,
        futures::channel::mpsc::UnboundedReceiver<u8>,
    ) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        (ImagePulls::new(fake.clone(), tx), rx)
    }

    #[tokio::test]
    async fn creates_once_then_finds_it_again() {
        let fake = Arc::new(FakeRuntime::default());
        fake.add_image(&image(&DockerLoadBalancer::default()));
        let (pulls, _rx) = new_pulls(&fake);
        let first = ensure(fake.as_ref(), &pulls, &spec("ns"), &owner("ns"), 0, true)
            .await
            .unwrap();
        assert!(matches!(
            first,
            LoadBalancerState::Running {
                change: Change::Created,
                ..
            }
        ));
        let again = ensure(fake.as_ref(), &pulls, &spec("ns"), &owner("ns"), 0, true)
            .await
            .unwrap();
        assert!(matches!(
            again,
            LoadBalancerState::Running {
                change: Change::Unchanged,
                ..
            }
        ));
        assert_eq!(fake.names(), ["c-lb"]);
        assert_eq!(
            fake.networks(),
            ["kind"],
            "the network is created with the first container"
        );
    }

    #[tokio::test]
    async fn pulls_a_missing_image_in_the_background() {
        let fake = Arc::new(FakeRuntime::default());
        fake.set_pullable(&image(&DockerLoadBalancer::default()));
        let (pulls, mut rx) = new_pulls(&fake);
        let state = ensure(fake.as_ref(), &pulls, &spec("ns"), &owner("ns"), 3, true)
            .await
            .unwrap();
        assert!(matches!(state, LoadBalancerState::Pulling(_)), "{state:?}");
        assert!(fake.names().is_empty());
        assert_eq!(rx.next().await, Some(3));
        let state = ensure(fake.as_ref(), &pulls, &spec("ns"), &owner("ns"), 3, true)
            .await
            .unwrap();
        assert!(matches!(
            state,
            LoadBalancerState::Running {
                change: Change::Created,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn never_adopts_or_removes_another_namespaces_container() {
        let fake = Arc::new(FakeRuntime::default());
        fake.add_image(&image(&DockerLoadBalancer::default()));
        let (pulls, _rx) = new_pulls(&fake);
        ensure(
            fake.as_ref(),
            &pulls,
            &spec("first"),
            &owner("first"),
            0,
            true,
        )
        .await
        .unwrap();
        let err = ensure(
            fake.as_ref(),
            &pulls,
            &spec("second"),
            &owner("second"),
            0,
            true,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("belongs to DockerCluster first/c"),
            "{err}"
        );
        assert_eq!(
            remove_owned(fake.as_ref(), "c-lb", &owner("second"))
                .await
                .unwrap(),
            Removal::NotOurs(Some(owner("first")))
        );
        assert_eq!(fake.names(), ["c-lb"]);
        assert_eq!(
            remove_owned(fake.as_ref(), "c-lb", &owner("first"))
                .await
                .unwrap(),
            Removal::Removed
        );
        assert_eq!(
            remove_owned(fake.as_ref(), "c-lb", &owner("first"))
                .await
                .unwrap(),
            Removal::Absent
        );
    }

    #[tokio::test]
    async fn a_stopped_load_balancer_is_recreated_and_an_unlabelled_one_is_not_touched() {
        let fake = Arc::new(FakeRuntime::default());
        fake.add_image(&image(&DockerLoadBalancer::default()));
        let mut stopped = Container {
            name: "c-lb".into(),
            labels: owner("ns").labels(),
            ..Default::default()
        };
        stopped.running = false;
        fake.add_container(stopped);
        let (pulls, _rx) = new_pulls(&fake);
        let err = ensure(fake.as_ref(), &pulls, &spec("ns"), &owner("ns"), 0, false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, LoadBalancerError::Stopped(_)),
            "not restarted while backing off: {err}"
        );
        let state = ensure(fake.as_ref(), &pulls, &spec("ns"), &owner("ns"), 0, true)
            .await
            .unwrap();
        assert!(
            matches!(state, LoadBalancerState::Running { change: Change::Recreated, container } if container.running)
        );

        let fake = Arc::new(FakeRuntime::default());
        fake.add_container(Container {
            name: "c-lb".into(),
            running: true,
            ..Default::default()
        });
        let (pulls, _rx) = new_pulls(&fake);
        let err = ensure(fake.as_ref(), &pulls, &spec("ns"), &owner("ns"), 0, true)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no capd-rs owner labels"), "{err}");
    }

    #[tokio::test]
    async fn a_network_that_cannot_be_created_is_reported_and_nothing_is_made() {
        let fake = Arc::new(FakeRuntime::default());
        fake.add_image(&image(&DockerLoadBalancer::default()));
        let (pulls, _rx) = new_pulls(&fake);
        let spec = container_spec(
            "c",
            &owner("ns"),
            &DockerLoadBalancer::default(),
            6443,
            "bad net",
        );
        let err = ensure(fake.as_ref(), &pulls, &spec, &owner("ns"), 0, true)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot create the Docker network bad net"),
            "{err}"
        );
        assert!(fake.names().is_empty());
    }

    #[tokio::test]
    async fn engine_errors_pass_through() {
        let fake = Arc::new(FakeRuntime::default());
        fake.set_down(true);
        let (pulls, _rx) = new_pulls(&fake);
        let err = ensure(fake.as_ref(), &pulls, &spec("ns"), &owner("ns"), 0, true)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("unreachable: connection refused"),
            "{err}"
        );
    }

    #[test]
    fn backends_are_the_addressed_nodes_with_their_weights() {
        let node = |name: &str, v4: &str, v6: &str| Container {
            name: name.into(),
            running: true,
            networks: BTreeMap::from([("kind".to_owned(), (v4.to_owned(), v6.to_owned()))]),
            ..Default::default()
        };
        let nodes = [
            node("c-cp1", "172.18.0.3", "fc00::3"),
            node("c-cp2", "172.18.0.4", ""),
            node("c-cp3", "", ""),
        ];
        let weights = BTreeMap::from([("c-cp2".to_owned(), 0)]);
        let v4: Vec<(String, String, u32)> = backends(&nodes, "kind", false, &weights)
            .into_iter()
            .map(|b| (b.name, b.address, b.weight))
            .collect();
        assert_eq!(
            v4,
            [
                ("c-cp1".to_owned(), "172.18.0.3".to_owned(), 100),
                ("c-cp2".to_owned(), "172.18.0.4".to_owned(), 0),
            ]
        );
        let v6 = backends(&nodes, "kind", true, &weights);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].address, "fc00::3");
        assert!(backends(&nodes, "other", false, &weights).is_empty());
    }
}
