//! A kubelet's part for the Deployments `clusterctl init` installs: the test control plane has
//! no kubelet, so [`run_deployment`] runs a Deployment's `manager` container as a process the
//! way a Pod would run it. The process gets:
//! - a network namespace of its own (the Pod's IP, [`NetNs::ns_addr`]), so every manager keeps its
//!   default ports (9443, 9440, 8443) without clashing, routed to the Docker engine's containers
//!   ([`NetNs::route_to_containers`]);
//! - the container's command (the image's binary mapped to a local one) and arguments, and its
//!   environment with the downward API's fields filled in;
//! - its ServiceAccount: a token from the TokenRequest API, in a kubeconfig that reaches the
//!   apiserver through [`ApiAccess`]'s relay, and the in-cluster files (`token`, `ca.crt`,
//!   `namespace`) at `/var/run/secrets/kubernetes.io/serviceaccount`, where controller-runtime
//!   reads its namespace;
//! - its Secret volumes at their mount paths (a private mount namespace, so processes do not see
//!   each other's) and its host paths (the Docker socket) as they are;
//! - EndpointSlices that point every Service selecting the Pod at its IP, as the EndpointSlice
//!   controller would, so webhooks installed as `clientConfig.service` reach it.
//!
//! Dropping the [`Pod`] stops the process and removes the EndpointSlices and the namespace.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Secret, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use super::access::mint_token;
use super::control_plane::{ControlPlane, kubectl_at};
use super::netns::{ApiAccess, NetNs};
use super::process::{Process, WorkDir, wait_until};

/// Where a Pod finds its ServiceAccount's credentials and namespace.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long a Pod's ServiceAccount token is valid: no kubelet renews it, and `hack/run.sh` keeps
/// its managers running for as long as the user wants.
const TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A Deployment's manager running in its Pod's place.
pub struct Pod {
    /// The process (its log is printed if the test panics).
    pub process: Process,
    /// The Pod's IP: the network namespace's address.
    pub ip: std::net::Ipv4Addr,
    kubeconfig: PathBuf,
    namespace: String,
    slices: Vec<String>,
    _access: ApiAccess,
    _netns: NetNs,
    _dir: WorkDir,
}

impl Pod {
    /// GET `path` on the Pod's `port` (plain HTTP, such as the health endpoint on 9440): the
    /// status code, or `None` while nothing answers.
    pub async fn http_status(&self, port: u16, path: &str) -> Option<u16> {
        let response = super::http_get_at((self.ip, port).into(), path).await?;
        response.split_whitespace().nth(1)?.parse().ok()
    }

    /// Waits until the Pod's readiness probe (`/readyz` on 9440) answers 200; fails at once
    /// when the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.process.check_running()?;
            if self.http_status(9440, "/readyz").await == Some(200) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "{} not ready after {timeout:?}; its log:\n{}",
                    self.process.name(),
                    self.process.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.process.stop(Duration::from_secs(10));
        for slice in &self.slices {
            let _ = kubectl_at(
                &self.kubeconfig,
                &[
                    "delete",
                    "-n",
                    &self.namespace,
                    &format!("endpointslice.discovery.k8s.io/{slice}"),
                    "--ignore-not-found",
                    "--wait=false",
                ],
                "",
            );
        }
    }
}

/// Runs Deployment `namespace/name`'s container `manager` with `binary` as its image's
/// program, waiting (up to `timeout`) for the Secrets it mounts (cert-manager issues them).
pub async fn run_deployment(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
    binary: &Path,
    timeout: Duration,
) -> Result<Pod> {
    let client = cp.client().await?;
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("Deployment {namespace}/{name}"))?;
    let template = deployment
        .spec
        .context("a Deployment without spec")?
        .template;
    let pod_labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
    let pod = template.spec.context("a Pod template without spec")?;
    let container = pod
        .containers
        .iter()
        .find(|c| c.name == "manager")
        .context("no container named manager")?
        .clone();
    let pod_name = format!("{name}-test-pod");
    let dir = WorkDir::new(&format!("capd-rs-pod-{name}-"))?;
    let mut netns = NetNs::create()?;
    // Cluster API's managers reach workload clusters' apiservers through their load balancers.
    netns.route_to_containers()?;
    let access = netns.api_access(cp)?;

    // The ServiceAccount's credentials, as a kubeconfig and at the in-cluster path.
    let account = pod
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    let token = mint_token(&client, namespace, &account, TOKEN_LIFETIME).await?;
    let kubeconfig = dir.path().join("kubeconfig");
    write_token_kubeconfig(&access.kubeconfig, &token, &kubeconfig)?;
    let sa_dir = dir.path().join("serviceaccount");
    std::fs::create_dir_all(&sa_dir)?;
    std::fs::write(sa_dir.join("token"), &token)?;
    std::fs::write(sa_dir.join("namespace"), namespace)?;
    std::fs::write(sa_dir.join("ca.crt"), cluster_ca(&cp.kubeconfig)?)?;
    let mut mounts = vec![(sa_dir, PathBuf::from(SERVICE_ACCOUNT_DIR))];
    mounts.extend(volume_mounts(&client, namespace, &pod, &container, dir.path(), timeout).await?);

    let mut command = netns.command("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c"]);
    command.arg(mount_script(&mounts)).arg("sh").arg(binary);
    command.args(container.command.iter().flatten().skip(1));
    command.args(container.args.iter().flatten());
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command.env("KUBECONFIG", &kubeconfig);
    for (key, value) in environment(&container, namespace, &pod_name, netns.ns_addr)? {
        command.env(key, value);
    }
    let process = Process::spawn(&pod_name, command, dir.path())?;

    let slices =
        endpoint_slices(&client, namespace, &pod_labels, &container, netns.ns_addr).await?;
    Ok(Pod {
        process,
        ip: netns.ns_addr,
        kubeconfig: cp.kubeconfig.clone(),
        namespace: namespace.to_owned(),
        slices,
        _access: access,
        _netns: netns,
        _dir: dir,
    })
}

/// Writes `admin` (a kubeconfig) to `path` with its user's credentials replaced by `token`.
fn write_token_kubeconfig(admin: &Path, token: &str, path: &Path) -> Result<()> {
    let mut config: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(admin)?)?;
    for user in config["users"].as_array_mut().into_iter().flatten() {
        user["user"] = serde_json::json!({ "token": token });
    }
    std::fs::write(path, config.to_string())?;
    Ok(())
}

/// The cluster CA of the kubeconfig at `path`, in PEM.
fn cluster_ca(path: &Path) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let config: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(path)?)?;
    let data = config["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .context("a kubeconfig without certificate-authority-data")?;
    Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
}

/// The container's volume mounts as (host directory, mount path) pairs: Secret volumes written
/// to `dir` (waiting for each Secret), host paths as they are (skipped when the path is the
/// same). Other volume kinds are refused.
async fn volume_mounts(
    client: &kube::Client,
    namespace: &str,
    pod: &k8s_openapi::api::core::v1::PodSpec,
    container: &Container,
    dir: &Path,
    timeout: Duration,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .with_context(|| format!("no volume {}", mount.name))?;
        let target = PathBuf::from(&mount.mount_path);
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let data: BTreeMap<String, ByteString> =
                wait_until(&format!("Secret {namespace}/{name}"), timeout, || async {
                    Ok(secrets.get_opt(&name).await?.and_then(|s| s.data))
                })
                .await?;
            let source = dir.join(format!("volume-{}", volume.name));
            std::fs::create_dir_all(&source)?;
            for (key, value) in data {
                std::fs::write(source.join(key), value.0)?;
            }
            mounts.push((source, target));
        } else if let Some(host) = &volume.host_path {
            if Path::new(&host.path) != target {
                mounts.push((PathBuf::from(&host.path), target));
            }
        } else {
            bail!("volume {} is neither a Secret nor a host path", volume.name);
        }
    }
    Ok(mounts)
}

/// A shell script that bind-mounts each (source, target), creating the targets, then runs its
/// arguments.
fn mount_script(mounts: &[(PathBuf, PathBuf)]) -> String {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let mut script = String::from("set -e\n");
    for (source, target) in mounts {
        let (source, target) = (quote(source), quote(target));
        let _ = writeln!(
            script,
            "mkdir -p {target} && mount --bind {source} {target}"
        );
    }
    script.push_str("exec \"$@\"\n");
    script
}

/// The container's environment with the downward API filled in as the kubelet would.
fn environment(
    container: &Container,
    namespace: &str,
    pod_name: &str,
    pod_ip: std::net::Ipv4Addr,
) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => {
                let field = from
                    .field_ref
                    .as_ref()
                    .with_context(|| format!("env {}: only fieldRef is supported", var.name))?;
                match field.field_path.as_str() {
                    "metadata.namespace" => namespace.to_owned(),
                    "metadata.name" => pod_name.to_owned(),
                    "metadata.uid" => format!("{pod_name}-uid"),
                    "status.podIP" => pod_ip.to_string(),
                    other => bail!("env {}: field {other} is not supported", var.name),
                }
            }
            (None, None) => String::new(),
        };
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

/// Gives every Service of `namespace` that selects `labels` an EndpointSlice with one ready
/// endpoint at `ip` (its target ports resolved against `container`'s ports); returns their names.
async fn endpoint_slices(
    client: &kube::Client,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    container: &Container,
    ip: std::net::Ipv4Addr,
) -> Result<Vec<String>> {
    let services = Api::<Service>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await?;
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace);
    let mut names = Vec::new();
    for service in services {
        let spec = service.spec.unwrap_or_default();
        let selector = spec.selector.unwrap_or_default();
        if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let mut ports = Vec::new();
        for port in spec.ports.unwrap_or_default() {
            let number = match port.target_port {
                Some(IntOrString::Int(n)) => n,
                Some(IntOrString::String(name)) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| p.container_port)
                    .with_context(|| format!("no container port named {name}"))?,
                None => port.port,
            };
            ports.push(EndpointPort {
                name: Some(port.name.unwrap_or_default()),
                port: Some(number),
                protocol: Some("TCP".into()),
                ..Default::default()
            });
        }
        let service_name = service.metadata.name.unwrap_or_default();
        let name = format!("{service_name}-test-pod");
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_owned(),
                    service_name.clone(),
                )])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ports: Some(ports),
        };
        slices
            .create(&PostParams::default(), &slice)
            .await
            .with_context(|| format!("EndpointSlice for Service {namespace}/{service_name}"))?;
        names.push(name);
    }
    Ok(names)
}
