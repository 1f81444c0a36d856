//! A machine's node container, as kind runs its nodes: names, labels and the container options
//! CAPD uses, with the privileged profile relaxable for engines that refuse it (pure), and
//! [`ensure`], the steps that make the engine run it without ever touching a container that
//! belongs to another object.

use std::collections::BTreeMap;
use std::hash::Hash;

use super::kind_images::{Mapping, Mode};
use super::labels::{self, Owner};
use super::pulls::{ImagePulls, PullStatus};
use super::{Container, ContainerRuntime, ContainerSpec, DockerError, Found};

use crate::api::Mount;
use crate::api::common::{MachineAddress, MachineAddressType};
use crate::api::ip_family::IpFamily;

/// The label with the machine's failure domain.
pub const FAILURE_DOMAIN_LABEL: &str = "io.x-k8s.cluster.failureDomain";
/// The API server's port inside control-plane nodes, published on 127.0.0.1.
pub const API_SERVER_PORT: &str = "6443/tcp";

/// A node's role in the cluster (kind's role label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs the control plane.
    ControlPlane,
    /// Runs workloads.
    Worker,
}

impl Role {
    /// kind's value of the role label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ControlPlane => "control-plane",
            Self::Worker => "worker",
        }
    }
}

/// How node containers are run on this engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOptions {
    /// Run nodes privileged, as kind does (the default). Engines that refuse privileged
    /// containers (rootless setups, sandboxes) need `false`; real Kubernetes nodes then cannot
    /// run, but test images can.
    pub privileged: bool,
    /// Bind the host's `/lib/modules` read-only (kind does; skipped where the host has none).
    pub lib_modules: bool,
    /// Proxy variables passed to nodes (`HTTP_PROXY=...`).
    pub proxy_env: Vec<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            privileged: true,
            lib_modules: true,
            proxy_env: Vec::new(),
        }
    }
}

/// The node container's name (also its hostname and the Kubernetes Node's name): the machine's
/// name when it already starts with the cluster's, else `<cluster>-<machine>` (CAPD's rule).
pub fn container_name(cluster: &str, machine: &str) -> String {
    if machine.starts_with(cluster) {
        machine.to_owned()
    } else {
        format!("{cluster}-{machine}")
    }
}

/// A `host:container[:ro]` bind for an extra mount; the webhook has refused empty or relative
/// container paths, which are checked again here.
fn bind(mount: &Mount) -> Result<String, DockerError> {
    if mount.host_path.is_empty() || !mount.container_path.starts_with('/') {
        return Err(DockerError::Engine(format!(
            "extra mount {:?} -> {:?} needs a host path and an absolute container path",
            mount.host_path, mount.container_path
        )));
    }
    let ro = if mount.read_only { ":ro" } else { "" };
    Ok(format!("{}:{}{ro}", mount.host_path, mount.container_path))
}

/// Everything that decides a node container.
pub struct Node<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// The container's name ([`container_name`]).
    pub name: &'a str,
    /// The DockerMachine that owns it.
    pub owner: &'a Owner,
    /// Control plane or worker.
    pub role: Role,
    /// The machine's failure domain (may be empty).
    pub failure_domain: &'a str,
    /// The image and kind mode.
    pub image: &'a Mapping,
    /// The DockerMachine's extra mounts.
    pub extra_mounts: &'a [Mount],
    /// The Docker network.
    pub network: &'a str,
    /// The cluster's IP family: IPv6 and dual-stack nodes get IPv6 enabled.
    pub ip_family: IpFamily,
}

/// The node container: kind's labels (cluster, role) plus the failure domain and owner labels;
/// kind's options (seccomp and apparmor unconfined, tmpfs `/tmp` and `/run`, an anonymous
/// `/var` volume, `/lib/modules` read-only, a private cgroup namespace for kind v0.20+ images,
/// restart on failure once); the API server port on `127.0.0.1` for control planes; IPv6
/// enabled and forwarding for IPv6 and dual-stack clusters.
pub fn container_spec(
    node: &Node<'_>,
    options: &NodeOptions,
) -> Result<ContainerSpec, DockerError> {
    let mut labels = node.owner.labels();
    labels.insert(labels::KIND_CLUSTER.into(), node.cluster.into());
    labels.insert(labels::KIND_ROLE.into(), node.role.label().into());
    if !node.failure_domain.is_empty() {
        labels.insert(FAILURE_DOMAIN_LABEL.into(), node.failure_domain.into());
    }
    let mut binds = Vec::new();
    if options.lib_modules {
        binds.push("/lib/modules:/lib/modules:ro".to_owned());
    }
    for mount in node.extra_mounts {
        binds.push(bind(mount)?);
    }
    let mut env = options.proxy_env.clone();
    let mut published_ports = Vec::new();
    if node.role == Role::ControlPlane {
        env.push("KUBECONFIG=/etc/kubernetes/admin.conf".into());
        published_ports.push((API_SERVER_PORT.to_owned(), "127.0.0.1".to_owned()));
    }
    Ok(ContainerSpec {
        name: node.name.into(),
        image: node.image.image.clone(),
        labels,
        network: node.network.into(),
        published_ports,
        env,
        privileged: options.privileged,
        security_opt: vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()],
        tmpfs: vec!["/tmp".into(), "/run".into()],
        anonymous_volumes: vec!["/var".into()],
        binds,
        cgroupns_private: node.image.mode == Mode::V0_20,
        restart_on_failure: Some(1),
        sysctls: if node.ip_family.has_v6() {
            BTreeMap::from([
                ("net.ipv6.conf.all.disable_ipv6".into(), "0".into()),
                ("net.ipv6.conf.all.forwarding".into(), "1".into()),
            ])
        } else {
            BTreeMap::new()
        },
        ..Default::default()
    })
}

/// A node's addresses as CAPD reports them: its name as `Hostname`, then each of its IPs on
/// the cluster's network for the cluster's IP family (IPv4 first) as both `InternalIP` and
/// `ExternalIP`. An IP the engine did not assign is left out.
pub fn addresses(name: &str, ips: &(String, String), family: IpFamily) -> Vec<MachineAddress> {
    let (v4, v6) = ips;
    let mut addresses = vec![MachineAddress {
        type_: MachineAddressType::Hostname,
        address: name.to_owned(),
    }];
    let wanted = [(family.has_v4(), v4), (family.has_v6(), v6)];
    for (_, ip) in wanted.into_iter().filter(|(w, ip)| *w && !ip.is_empty()) {
        for type_ in [
            MachineAddressType::InternalIp,
            MachineAddressType::ExternalIp,
        ] {
            addresses.push(MachineAddress {
                type_,
                address: ip.clone(),
            });
        }
    }
    addresses
}

/// The node container a machine wants, for [`ensure`].
pub struct NodeRequest<'a> {
    /// The container's name.
    pub name: &'a str,
    /// Its owner.
    pub owner: &'a Owner,
    /// Whether the machine was provisioned before (it has its providerID): then a container that
    /// is gone is not made again.
    pub provisioned: bool,
    /// The node to make when there is no container, or why there is none to make (reported only
    /// then).
    pub node: Result<Node<'a>, String>,
    /// How node containers are run.
    pub options: &'a NodeOptions,
}

/// Where the node container stands after [`ensure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// The image is being pulled.
    Pulling {
        /// The image.
        image: String,
        /// The pull's progress.
        progress: String,
    },
    /// The container runs.
    Running {
        /// The container as the engine reports it.
        container: Container,
        /// Whether this call created it.
        created: bool,
    },
    /// The container stopped, or is gone after the machine was provisioned: like CAPD, capd-rs
    /// leaves such a machine to remediation rather than give it a fresh, unbootstrapped node
    /// under the same name.
    NotRunning,
}

/// Why the node container could not be made to run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// The engine could not say what has the container's name.
    #[error("Failed to inspect container {name}: {source}")]
    Inspect {
        /// The container's name.
        name: String,
        /// The engine's error.
        source: DockerError,
    },
    /// A container has the name but is not this machine's.
    #[error("Container {name} already exists and belongs to {}; capd-rs will not adopt or remove it", owner.as_ref().map_or("another owner".to_owned(), ToString::to_string))]
    NameClash {
        /// The container's name.
        name: String,
        /// Its owner, when it names one.
        owner: Option<Owner>,
    },
    /// The machine does not say what to run.
    #[error("{0}")]
    InvalidMachine(String),
    /// The image could not be pulled.
    #[error("Cannot pull image {image}: {message}")]
    Pull {
        /// The image.
        image: String,
        /// The engine's message.
        message: String,
    },
    /// The engine failed to create or start the container.
    #[error("Failed to create container {name}: {source}")]
    Create {
        /// The container's name.
        name: String,
        /// The engine's error.
        source: DockerError,
    },
    /// The container was gone right after it was created.
    #[error("Container {0} vanished after it was created")]
    Vanished(String),
}

/// Makes the node container of `request` run: finds it by name (checking it is the machine's),
/// or pulls its image in the background (`waiter` is woken when the pull ends) and creates it,
/// with its network when missing. A container that stopped, or vanished after provisioning, is
/// reported as [`NodeState::NotRunning`] and left alone.
pub async fn ensure<W: Clone + Eq + Hash + Send + 'static>(
    runtime: &dyn ContainerRuntime,
    pulls: &ImagePulls<W>,
    request: &NodeRequest<'_>,
    waiter: W,
) -> Result<NodeState, NodeError> {
    let name = request.name;
    match super::find_owned(runtime, name, request.owner).await {
        Err(source) => {
            return Err(NodeError::Inspect {
                name: name.to_owned(),
                source,
            });
        }
        Ok(Found::NotOurs(owner)) => {
            return Err(NodeError::NameClash {
                name: name.to_owned(),
                owner,
            });
        }
        Ok(Found::Ours(container)) if container.running => {
            return Ok(NodeState::Running {
                container,
                created: false,
            });
        }
        Ok(Found::Ours(_)) => return Ok(NodeState::NotRunning),
        Ok(Found::Absent) if request.provisioned => return Ok(NodeState::NotRunning),
        Ok(Found::Absent) => {}
    }
    let node = request
        .node
        .as_ref()
        .map_err(|message| NodeError::InvalidMachine(message.clone()))?;
    let create_error = |source| NodeError::Create {
        name: name.to_owned(),
        source,
    };
    let image = &node.image.image;
    match pulls.ensure(image, waiter).await.map_err(create_error)? {
        PullStatus::Present => {}
        PullStatus::Pulling(progress) => {
            return Ok(NodeState::Pulling {
                image: image.clone(),
                progress,
            });
        }
        PullStatus::Failed(message) => {
            return Err(NodeError::Pull {
                image: image.clone(),
                message,
            });
        }
    }
    let created = async {
        let spec = container_spec(node, request.options)?;
        runtime.ensure_network(&spec.network).await?;
        runtime.run_container(&spec).await?;
        runtime.inspect_container(name).await
    };
    match created.await.map_err(create_error)? {
        Some(container) => Ok(NodeState::Running {
            container,
            created: true,
        }),
        None => Err(NodeError::Vanished(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::kind_images::mapping;

    /// Worker `c1-w` of cluster `c1` on network `kind`, IPv4, no mounts.
    fn worker<'a>(owner: &'a Owner, image: &'a Mapping) -> Node<'a> {
        Node {
            cluster: "c1",
            name: "c1-w",
            owner,
            role: Role::Worker,
            failure_domain: "",
            image,
            extra_mounts: &[],
            network: "kind",
            ip_family: IpFamily::V4,
        }
    }

    fn owner() -> Owner {
        Owner {
            kind: "DockerMachine".into(),
            namespace: "ns".into(),
            name: "m".into(),
        }
    }

    #[test]
    fn names_follow_capd() {
        assert_eq!(
            container_name("c1", "c1-control-plane-x"),
            "c1-control-plane-x"
        );
        assert_eq!(container_name("c1", "worker-x"), "c1-worker-x");
    }

    #[test]
    fn control_plane_spec_is_kinds() {
        let image = mapping("v1.35.5", "").unwrap();
        let mounts = [Mount {
            container_path: "/data".into(),
            host_path: "/srv".into(),
            read_only: true,
        }];
        let owner = owner();
        let node = Node {
            name: "c1-cp",
            role: Role::ControlPlane,
            failure_domain: "fd1",
            extra_mounts: &mounts,
            ..worker(&owner, &image)
        };
        let options = NodeOptions {
            proxy_env: vec!["HTTP_PROXY=http://proxy:3128".into()],
            ..Default::default()
        };
        let spec = container_spec(&node, &options).unwrap();
        assert_eq!(spec.labels["io.x-k8s.kind.cluster"], "c1");
        assert_eq!(spec.labels["io.x-k8s.kind.role"], "control-plane");
        assert_eq!(spec.labels[FAILURE_DOMAIN_LABEL], "fd1");
        assert_eq!(Owner::from_labels(&spec.labels), Some(owner.clone()));
        assert!(spec.privileged && spec.cgroupns_private);
        assert_eq!(
            spec.security_opt,
            ["seccomp=unconfined", "apparmor=unconfined"]
        );
        assert_eq!(
            (spec.tmpfs.as_slice(), spec.anonymous_volumes.as_slice()),
            (
                &["/tmp".to_owned(), "/run".to_owned()][..],
                &["/var".to_owned()][..]
            )
        );
        assert_eq!(
            spec.binds,
            ["/lib/modules:/lib/modules:ro", "/srv:/data:ro"]
        );
        assert_eq!(
            spec.published_ports,
            [("6443/tcp".to_owned(), "127.0.0.1".to_owned())]
        );
        assert_eq!(
            spec.env,
            [
                "HTTP_PROXY=http://proxy:3128",
                "KUBECONFIG=/etc/kubernetes/admin.conf"
            ]
        );
        assert_eq!(spec.restart_on_failure, Some(1));
        assert!(spec.image.starts_with("kindest/node:v1.35.5@sha256:"));
    }

    #[test]
    fn workers_publish_nothing_and_the_profile_relaxes() {
        let image = mapping("v1.35.5", "capd-rs-test/node:local").unwrap();
        let owner = owner();
        let node = worker(&owner, &image);
        let relaxed = NodeOptions {
            privileged: false,
            lib_modules: false,
            proxy_env: Vec::new(),
        };
        let spec = container_spec(&node, &relaxed).unwrap();
        assert!(
            !spec.privileged
                && spec.binds.is_empty()
                && spec.published_ports.is_empty()
                && spec.env.is_empty()
        );
        assert!(!spec.labels.contains_key(FAILURE_DOMAIN_LABEL));
        assert_eq!(spec.image, "capd-rs-test/node:local");
    }

    #[test]
    fn a_relative_extra_mount_is_refused() {
        let image = mapping("v1.35.5", "").unwrap();
        let owner = owner();
        let mounts = [Mount {
            container_path: "data".into(),
            host_path: "/srv".into(),
            read_only: false,
        }];
        let node = Node {
            extra_mounts: &mounts,
            ..worker(&owner, &image)
        };
        assert!(
            container_spec(&node, &NodeOptions::default())
                .unwrap_err()
                .to_string()
                .contains("absolute container path")
        );
    }

    #[test]
    fn ipv6_clusters_get_ipv6_enabled_nodes() {
        let image = mapping("v1.35.5", "").unwrap();
        let owner = owner();
        let mut node = worker(&owner, &image);
        let options = NodeOptions::default();
        assert!(container_spec(&node, &options).unwrap().sysctls.is_empty());
        for family in [IpFamily::V6, IpFamily::Dual] {
            node.ip_family = family;
            let sysctls = container_spec(&node, &options).unwrap().sysctls;
            assert_eq!(sysctls["net.ipv6.conf.all.disable_ipv6"], "0");
            assert_eq!(sysctls["net.ipv6.conf.all.forwarding"], "1");
        }
    }

    #[test]
    fn addresses_follow_the_cluster_ip_family() {
        let ips = ("172.18.0.3".to_owned(), "fc00:f853:ccd:e793::3".to_owned());
        let render = |ips: &(String, String), family| -> Vec<String> {
            addresses("n", ips, family)
                .into_iter()
                .map(|a| format!("{:?}={}", a.type_, a.address))
                .collect()
        };
        assert_eq!(
            render(&ips, IpFamily::V4),
            [
                "Hostname=n",
                "InternalIp=172.18.0.3",
                "ExternalIp=172.18.0.3"
            ]
        );
        assert_eq!(
            render(&ips, IpFamily::V6),
            [
                "Hostname=n",
                "InternalIp=fc00:f853:ccd:e793::3",
                "ExternalIp=fc00:f853:ccd:e793::3"
            ]
        );
        assert_eq!(render(&ips, IpFamily::Dual).len(), 5);
        assert_eq!(
            render(&ips, IpFamily::Dual)[3],
            "InternalIp=fc00:f853:ccd:e793::3"
        );
        // A network without IPv6 gives a dual-stack node its IPv4 addresses only.
        let v4_only = (ips.0.clone(), String::new());
        assert_eq!(render(&v4_only, IpFamily::Dual).len(), 3);
    }

    /// The ensure tests: a fake engine whose image pulls wake a channel, and requests for worker
    /// `c1-w` of `owner()` with kind's image for v1.34.0.
    mod ensure {
        use std::sync::Arc;

        use futures::StreamExt as _;
        use futures::channel::mpsc::UnboundedReceiver;

        use super::*;
        use crate::docker::fake::FakeRuntime;

        fn image() -> Mapping {
            mapping("v1.34.0", "").unwrap()
        }

        /// A fake engine, the image pulls on it, and what the pulls wake.
        struct Engine {
            fake: Arc<FakeRuntime>,
            pulls: ImagePulls<u8>,
            woken: UnboundedReceiver<u8>,
        }

        impl Engine {
            /// An engine with the node image present.
            fn with_image() -> Self {
                let engine = Self::without_image();
                engine.fake.add_image(&image().image);
                engine
            }

            fn without_image() -> Self {
                let fake = Arc::new(FakeRuntime::default());
                let (tx, woken) = futures::channel::mpsc::unbounded();
                let pulls = ImagePulls::new(fake.clone(), tx);
                Self { fake, pulls, woken }
            }

            /// [`ensure`] for the worker (`provisioned` as given; with no node to make, for the
            /// reason `no_node`, when it is `Some`), woken as `waiter`.
            async fn ensure(
                &self,
                provisioned: bool,
                no_node: Option<&str>,
                waiter: u8,
            ) -> Result<NodeState, NodeError> {
                let (image, options, owner) = (image(), NodeOptions::default(), owner());
                let request = NodeRequest {
                    name: "c1-w",
                    owner: &owner,
                    provisioned,
                    node: match no_node {
                        Some(reason) => Err(reason.to_owned()),
                        None => Ok(worker(&owner, &image)),
                    },
                    options: &options,
                };
                ensure(self.fake.as_ref(), &self.pulls, &request, waiter).await
            }

            /// Adds container `c1-w` labelled for `owner` (none: unlabelled).
            fn add_container(&self, owner: Option<&Owner>, running: bool) {
                self.fake.add_container(Container {
                    name: "c1-w".into(),
                    labels: owner.map(Owner::labels).unwrap_or_default(),
                    running,
                    ..Default::default()
                });
            }
        }

        #[tokio::test]
        async fn creates_the_node_once_then_adopts_it() {
            let engine = Engine::with_image();
            let first = engine.ensure(false, None, 0).await.unwrap();
            assert!(
                matches!(first, NodeState::Running { created: true, ref container } if container.running),
                "{first:?}"
            );
            assert_eq!(engine.fake.networks(), ["kind"]);
            let spec = engine.fake.spec("c1-w").unwrap();
            assert_eq!(Owner::from_labels(&spec.labels), Some(owner()));
            // A restarted manager, or the next reconcile, finds it and makes nothing.
            let again = engine.ensure(false, None, 0).await.unwrap();
            assert!(
                matches!(again, NodeState::Running { created: false, .. }),
                "{again:?}"
            );
            assert_eq!(engine.fake.names(), ["c1-w"]);
        }

        #[tokio::test]
        async fn another_owners_container_is_a_clash_and_left_alone() {
            let engine = Engine::with_image();
            let other = Owner {
                namespace: "other".into(),
                ..owner()
            };
            engine.add_container(Some(&other), true);
            let error = engine.ensure(false, None, 0).await.unwrap_err();
            assert!(
                matches!(&error, NodeError::NameClash { owner: Some(o), .. } if *o == other),
                "{error:?}"
            );
            assert_eq!(
                error.to_string(),
                "Container c1-w already exists and belongs to DockerMachine other/m; capd-rs will not adopt or remove it"
            );
            assert_eq!(engine.fake.names(), ["c1-w"]);
            // An unlabelled container (kind's, say) is no one's: a clash too.
            let engine = Engine::with_image();
            engine.add_container(None, true);
            let error = engine.ensure(false, None, 0).await.unwrap_err();
            assert!(
                error.to_string().contains("belongs to another owner"),
                "{error}"
            );
        }

        #[tokio::test]
        async fn a_missing_image_is_pulled_in_the_background_and_a_failed_pull_is_named() {
            let mut engine = Engine::without_image();
            engine.fake.set_pullable(&image().image);
            let state = engine.ensure(false, None, 7).await.unwrap();
            assert!(
                matches!(&state, NodeState::Pulling { image: i, .. } if *i == image().image),
                "{state:?}"
            );
            assert!(
                engine.fake.names().is_empty(),
                "nothing is made while pulling"
            );
            assert_eq!(
                engine.woken.next().await,
                Some(7),
                "the pull wakes its waiter"
            );
            let state = engine.ensure(false, None, 7).await.unwrap();
            assert!(matches!(state, NodeState::Running { created: true, .. }));

            // An image no registry has.
            let mut engine = Engine::without_image();
            let first = engine.ensure(false, None, 1).await.unwrap();
            assert!(matches!(first, NodeState::Pulling { .. }), "{first:?}");
            assert_eq!(engine.woken.next().await, Some(1));
            let error = engine.ensure(false, None, 1).await.unwrap_err();
            assert!(
                matches!(&error, NodeError::Pull { image: i, .. } if *i == image().image),
                "{error:?}"
            );
            assert!(engine.fake.names().is_empty());
        }

        #[tokio::test]
        async fn an_engine_that_is_down_is_reported_and_nothing_is_made() {
            let engine = Engine::with_image();
            engine.fake.set_down(true);
            let error = engine.ensure(false, None, 0).await.unwrap_err();
            assert!(matches!(error, NodeError::Inspect { .. }), "{error:?}");
            assert!(
                error
                    .to_string()
                    .starts_with("Failed to inspect container c1-w: "),
                "{error}"
            );
            engine.fake.set_down(false);
            assert!(engine.fake.names().is_empty());
        }

        #[tokio::test]
        async fn a_stopped_or_vanished_node_is_left_to_remediation() {
            // Stopped: not restarted, not removed.
            let engine = Engine::with_image();
            engine.add_container(Some(&owner()), false);
            let state = engine.ensure(false, None, 0).await.unwrap();
            assert_eq!(state, NodeState::NotRunning);
            assert_eq!(engine.fake.names(), ["c1-w"]);
            // Gone after provisioning: no fresh, unbootstrapped node under the same name.
            let engine = Engine::with_image();
            let state = engine.ensure(true, None, 0).await.unwrap();
            assert_eq!(state, NodeState::NotRunning);
            assert!(engine.fake.names().is_empty());
        }

        #[tokio::test]
        async fn a_machine_without_an_image_is_named_only_when_a_node_must_be_made() {
            let engine = Engine::with_image();
            let no_image = Some("no image to run");
            let error = engine.ensure(false, no_image, 0).await.unwrap_err();
            assert_eq!(error.to_string(), "no image to run");
            assert!(engine.fake.names().is_empty());
            // Its running node is still found.
            engine.add_container(Some(&owner()), true);
            let state = engine.ensure(false, no_image, 0).await.unwrap();
            assert!(matches!(state, NodeState::Running { created: false, .. }));
        }
    }
}
