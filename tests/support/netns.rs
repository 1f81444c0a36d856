//! A "test host" at a non-loopback address, for webhooks registered behind a Service.
//!
//! clusterctl installs webhooks as `clientConfig.service`; the test apiserver (started with
//! `--enable-aggregator-routing=true`) resolves such a Service through its EndpointSlices, and
//! EndpointSlice addresses may not be loopback. [`NetNs::create`] makes a network namespace joined
//! to this host by a veth pair on a /30 of its own (in 100.100.0.0/16, RFC 6598 space nothing here
//! uses), and [`expose`] gives a Service an EndpointSlice pointing at an address and port.
//!
//! Which end to serve on (verified): a process **on the host** listening on the host end's address
//! ([`NetNs::host_addr`], or on every address) is reached by the apiserver through an EndpointSlice
//! naming that address; so is a process **inside** the namespace (`ip netns exec`, see
//! [`NetNs::command`]) listening on [`NetNs::ns_addr`]. The namespace is not needed for the
//! address, only for isolation (a process inside can use fixed ports such as CAPD's 9443 without
//! clashing with other tests); but such a process cannot reach the test apiserver, which listens
//! on the host's 127.0.0.1 only.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for `ip netns`). Dropping the [`NetNs`] deletes
//! the namespace and the veth pair; stop processes running inside it first.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use super::control_plane::ControlPlane;
use super::process::output_of;

/// The prefix of every namespace this harness creates: `capdrs-<pid>-<n>`.
const NAME_PREFIX: &str = "capdrs-";

/// A network namespace joined to the host by a veth pair; deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    /// The namespace's name (`ip netns` name).
    pub name: String,
    /// The host end's address: a non-loopback address of this machine, unique to this namespace.
    pub host_addr: Ipv4Addr,
    /// The namespace end's address, for processes run inside with [`NetNs::command`].
    pub ns_addr: Ipv4Addr,
    host_if: String,
    /// Whether [`NetNs::route_to_containers`] let the namespace through Docker's firewall.
    forwarded: bool,
}

impl NetNs {
    /// Creates the namespace and the veth pair, each end up with its address on a /30 no
    /// interface of this host uses yet. Removes namespaces left by test binaries that were killed.
    pub fn create() -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let (host_addr, ns_addr) = free_subnet(pid, n)?;
        let name = format!("{NAME_PREFIX}{pid}-{n}");
        // Interface names are limited to 15 bytes: "cr" + pid (<= 7 digits) + "-" + n + end.
        let host_if = format!("cr{pid}-{n}h");
        let ns_if = format!("cr{pid}-{n}n");
        let netns = Self {
            name,
            host_addr,
            ns_addr,
            host_if,
            forwarded: false,
        };
        ip(&["netns", "add", &netns.name]).context(
            "creating a network namespace (needs root: CAP_NET_ADMIN and CAP_SYS_ADMIN)",
        )?;
        // From here on, dropping `netns` undoes what was done.
        ip(&[
            "link",
            "add",
            &netns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
            "netns",
            &netns.name,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{host_addr}/30"),
            "dev",
            &netns.host_if,
        ])?;
        ip(&["link", "set", &netns.host_if, "up"])?;
        netns.exec_ip(&["addr", "add", &format!("{ns_addr}/30"), "dev", &ns_if])?;
        netns.exec_ip(&["link", "set", &ns_if, "up"])?;
        netns.exec_ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// A command running `program` inside the namespace (`ip netns exec <name> <program>`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Lets processes inside reach the Docker engine's containers by their addresses, as Pods of
    /// a kind management cluster reach the node containers of the clusters it manages: a default
    /// route through the host end, and a rule in Docker's `DOCKER-USER` chain (the chain Docker
    /// leaves to its users) accepting what the namespace sends, which Docker's forwarding policy
    /// would otherwise drop. The rule goes with the namespace.
    pub fn route_to_containers(&mut self) -> Result<()> {
        self.exec_ip(&[
            "route",
            "add",
            "default",
            "via",
            &self.host_addr.to_string(),
        ])?;
        iptables(&["-I", DOCKER_USER, "-i", &self.host_if, "-j", "ACCEPT"])
            .context("letting the namespace through Docker's firewall")?;
        self.forwarded = true;
        Ok(())
    }

    fn exec_ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting either end of a veth pair deletes both; the namespace goes once no process is
        // left in it.
        if self.forwarded {
            let _ = iptables(&["-D", DOCKER_USER, "-i", &self.host_if, "-j", "ACCEPT"]);
        }
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Runs `ip <args>`, failing with its error output.
fn ip(args: &[&str]) -> Result<()> {
    output_of("ip", args, "Debian: apt-get install iproute2").map(drop)
}

/// Docker's chain for its users' forwarding rules, consulted before its own.
const DOCKER_USER: &str = "DOCKER-USER";

/// Runs `iptables <args>`, failing with its error output.
fn iptables(args: &[&str]) -> Result<()> {
    output_of("iptables", args, "Debian: apt-get install iptables").map(drop)
}

/// The host and namespace addresses of a /30 in 100.100.0.0/16 that no interface uses, starting
/// from one derived from `pid` and `n` so parallel test binaries rarely try the same one.
fn free_subnet(pid: u32, n: u32) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .context("running ip (Debian: apt-get install iproute2)")?;
    let used = String::from_utf8_lossy(&output.stdout).into_owned();
    const SUBNETS: u32 = 1 << 14; // /30s in a /16
    let start = (pid.wrapping_mul(64) + n) % SUBNETS;
    for i in 0..SUBNETS {
        let base = u32::from(Ipv4Addr::new(100, 100, 0, 0)) + ((start + i) % SUBNETS) * 4;
        let (host, ns) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        if !used.contains(&format!(" {host}/")) && !used.contains(&format!(" {ns}/")) {
            return Ok((host, ns));
        }
    }
    bail!("no free /30 left in 100.100.0.0/16")
}

/// Deletes the namespaces (and so their veth pairs) of test binaries that no longer run.
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
    // And their firewall rules, which name their host ends ("cr<pid>-<n>h").
    let Ok(rules) = Command::new("iptables").args(["-S", DOCKER_USER]).output() else {
        return;
    };
    for rule in String::from_utf8_lossy(&rules.stdout).lines() {
        let Some(host_if) = rule
            .strip_prefix(&format!("-A {DOCKER_USER} -i "))
            .and_then(|rest| rest.strip_suffix(" -j ACCEPT"))
        else {
            continue;
        };
        let pid = host_if
            .strip_prefix("cr")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = iptables(&["-D", DOCKER_USER, "-i", host_if, "-j", "ACCEPT"]);
        }
    }
}

/// A Service and the EndpointSlice that points it at a test host; both deleted on drop.
pub struct Exposed {
    kubeconfig: std::path::PathBuf,
    namespace: String,
    service: String,
    slice: String,
}

/// Creates Service `service` in `namespace` (port `service_port`, targeting `target_port`) and an
/// EndpointSlice for it (label `kubernetes.io/service-name`) with one ready endpoint
/// `addr:target_port`, as the EndpointSlice controller would for a Pod there. A webhook with
/// `clientConfig.service: {name: service, namespace, port: service_port}` then reaches `addr`.
pub async fn expose(
    cp: &ControlPlane,
    namespace: &str,
    service: &str,
    service_port: u16,
    addr: IpAddr,
    target_port: u16,
) -> Result<Exposed> {
    let client = cp.client().await?;
    let exposed = Exposed {
        kubeconfig: cp.kubeconfig.clone(),
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        slice: format!("{service}-test-host"),
    };
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(service.to_owned()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: service_port.into(),
                target_port: Some(IntOrString::Int(target_port.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &svc)
        .await
        .with_context(|| format!("creating Service {namespace}/{service}"))?;
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(exposed.slice.clone()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                service.to_owned(),
            )])),
            ..Default::default()
        },
        address_type: if addr.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![addr.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }],
        // The port's name must be the Service port's name: both empty here.
        ports: Some(vec![EndpointPort {
            name: Some(String::new()),
            port: Some(target_port.into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    Api::<EndpointSlice>::namespaced(client, namespace)
        .create(&PostParams::default(), &slice)
        .await
        .with_context(|| format!("creating EndpointSlice {namespace}/{}", exposed.slice))?;
    Ok(exposed)
}

impl Drop for Exposed {
    fn drop(&mut self) {
        let slice = format!("endpointslice.discovery.k8s.io/{}", self.slice);
        let service = format!("service/{}", self.service);
        let _ = super::control_plane::kubectl_at(
            &self.kubeconfig,
            &[
                "delete",
                "-n",
                &self.namespace,
                &slice,
                &service,
                "--ignore-not-found",
                "--wait=false",
            ],
            "",
        );
    }
}

/// Access to a control plane from inside a [`NetNs`]: the apiserver listens on the host's
/// 127.0.0.1 only, which a process inside the namespace cannot reach, so a TCP relay on the host
/// end's address forwards to it, and a kubeconfig names the relay (verifying the apiserver's
/// certificate for `kubernetes`, one of its names). The relay stops when this is dropped.
pub struct ApiAccess {
    /// A kubeconfig for processes inside the namespace (admin credentials).
    pub kubeconfig: std::path::PathBuf,
    /// The relay's address (the host end's address and a free port).
    pub relay: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _dir: tempfile::TempDir,
}

impl NetNs {
    /// Makes `cp`'s apiserver reachable from inside this namespace; see [`ApiAccess`].
    pub fn api_access(&self, cp: &ControlPlane) -> Result<ApiAccess> {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let api: std::net::SocketAddr = cp
            .server
            .trim_start_matches("https://")
            .parse()
            .with_context(|| format!("the apiserver's address in {}", cp.server))?;
        let listener = std::net::TcpListener::bind((self.host_addr, 0))?;
        let relay = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name(format!("relay-{relay}"))
            .spawn(move || {
                for client in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let (Ok(client), Ok(server)) = (client, std::net::TcpStream::connect(api))
                    else {
                        continue;
                    };
                    pipe(&client, &server);
                    pipe(&server, &client);
                }
            })?;

        let dir = tempfile::tempdir()?;
        let text = std::fs::read_to_string(&cp.kubeconfig)?;
        let mut kubeconfig: serde_json::Value = serde_saphyr::from_str(&text)?;
        for cluster in kubeconfig["clusters"].as_array_mut().into_iter().flatten() {
            cluster["cluster"]["server"] = format!("https://{relay}").into();
            cluster["cluster"]["tls-server-name"] = "kubernetes".into();
        }
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig.to_string())?;
        Ok(ApiAccess {
            kubeconfig: path,
            relay,
            stop,
            _dir: dir,
        })
    }
}

/// Copies from `from` to `to` on a thread of its own until `from` ends, then ends `to`'s writes.
fn pipe(from: &std::net::TcpStream, to: &std::net::TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("relay-pipe".into())
        .spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
}

impl Drop for ApiAccess {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(self.relay);
    }
}
