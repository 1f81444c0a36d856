//! Cluster API's own managers (core, kubeadm bootstrap, kubeadm control plane; from
//! `hack/tools.sh capi`) as processes against a test control plane, set up the way their release
//! manifests would set them up, minus the Deployments:
//!
//! - their CRDs from `config/crd/bases`, with the labels of each component's
//!   `config/crd/kustomization.yaml` (the contract labels `cluster.x-k8s.io/v1beta1: v1beta1`,
//!   `cluster.x-k8s.io/v1beta2: v1beta2` on the kubeadm CRDs, which core looks for) and, for every
//!   CRD serving more than one version, a conversion webhook by URL to its manager's `/convert`;
//!   also the labels `clusterctl init` adds (`clusterctl.cluster.x-k8s.io`, by which `clusterctl
//!   move` finds the kinds to move, and `cluster.x-k8s.io/provider`); no Provider inventory;
//! - their `config/webhook/manifests.yaml` registered by URL `https://127.0.0.1:<port><path>`,
//!   trusting a test CA whose serving certificate (for 127.0.0.1) each manager serves;
//! - each manager with `--leader-elect=false`, its own `--webhook-port`, `--health-addr`,
//!   `--diagnostics-address` (plain HTTP with `--insecure-diagnostics`); core with the feature
//!   gate `ClusterTopology=true` (ClusterClass).
//!
//! The CRDs replace any Cluster API CRDs already there (the shared control plane's minimal ones
//! from `hack/capi-crds.yaml` included), and their conversion webhooks point at these processes:
//! run it on a control plane of the test's own ([`super::control_plane::start_extra`]).
//! Dropping [`ClusterApi`] kills the managers and deletes the webhook configurations; the ends of
//! their logs are printed when the test panicked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, WebhookClientConfig, WebhookConversion,
};
use serde_json::{Value, json};

use super::control_plane::{ControlPlane, kubectl_at};
use super::manager::free_port;
use super::process::{Process, WorkDir};
use super::setup::{Tool, tools};
use super::webhook::Pki;

/// One Cluster API component: where its files are in the tools directory, and how it runs.
struct Component {
    /// Its directory in the module (`core`, `bootstrap/kubeadm`, `controlplane/kubeadm`).
    path: &'static str,
    /// The manager binary in the tools directory.
    binary: &'static str,
    /// The name prefix its kustomize gives its objects (`namePrefix`).
    name_prefix: &'static str,
    /// Its clusterctl provider label (`cluster.x-k8s.io/provider`).
    provider: &'static str,
}

const COMPONENTS: [Component; 3] = [
    Component {
        path: "core",
        binary: "capi-core-manager",
        name_prefix: "capi-",
        provider: "cluster-api",
    },
    Component {
        path: "bootstrap/kubeadm",
        binary: "capi-kubeadm-bootstrap-manager",
        name_prefix: "capi-kubeadm-bootstrap-",
        provider: "bootstrap-kubeadm",
    },
    Component {
        path: "controlplane/kubeadm",
        binary: "capi-kubeadm-control-plane-manager",
        name_prefix: "capi-kubeadm-control-plane-",
        provider: "control-plane-kubeadm",
    },
];

/// Settings for [`ClusterApi::start_with`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Core's `--feature-gates` (default `ClusterTopology=true`).
    pub core_feature_gates: String,
    /// Extra arguments for every manager (for example `--v=4`).
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            core_feature_gates: "ClusterTopology=true".into(),
            extra_args: Vec::new(),
        }
    }
}

/// One running Cluster API manager and its ports on 127.0.0.1.
pub struct Manager {
    /// The process (its log, exit status).
    pub process: Process,
    /// Its webhook server's port (all interfaces, HTTPS).
    pub webhook_port: u16,
    /// `/healthz` and `/readyz`.
    pub health_port: u16,
    /// `/metrics`, plain HTTP.
    pub diagnostics_port: u16,
}

impl Manager {
    /// The HTTP status of GET `path` on the health endpoint, `None` while nothing answers.
    pub async fn health(&self, path: &str) -> Option<u16> {
        let response = super::http_get(self.health_port, path).await?;
        response.split_whitespace().nth(1)?.parse().ok()
    }

    /// The metrics (Prometheus text), empty while nothing answers.
    pub async fn metrics(&self) -> String {
        let response = super::http_get(self.diagnostics_port, "/metrics")
            .await
            .unwrap_or_default();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

/// Cluster API's core, kubeadm bootstrap and kubeadm control-plane managers against one control
/// plane.
pub struct ClusterApi {
    /// The core manager (Cluster, Machine, MachineDeployment, ClusterClass, ...).
    pub core: Manager,
    /// The kubeadm bootstrap manager (KubeadmConfig).
    pub bootstrap: Manager,
    /// The kubeadm control-plane manager (KubeadmControlPlane).
    pub control_plane: Manager,
    /// The CA the webhooks' serving certificate is signed by (PEM).
    pub ca_pem: String,
    /// The tools directory the binaries and manifests come from.
    pub tools_dir: PathBuf,
    // Fields drop in order: the managers are killed first, then the webhook configurations are
    // deleted, then the directory of logs and certificates goes.
    _registered: Registered,
    dir: WorkDir,
}

impl ClusterApi {
    /// [`ClusterApi::start_with`] the default options.
    pub async fn start(cp: &ControlPlane) -> Result<Self> {
        Self::start_with(cp, &Options::default()).await
    }

    /// Installs Cluster API's CRDs and webhook configurations in `cp`, starts the three
    /// managers and waits until each answers `/readyz` (so its webhook server is serving). Builds
    /// them first when they are not cached.
    pub async fn start_with(cp: &ControlPlane, options: &Options) -> Result<Self> {
        let tools_dir = tokio::task::spawn_blocking(|| tools(Tool::ClusterApi)).await??;
        let dir = WorkDir::new("capd-rs-cluster-api-")?;
        let pki = Pki::mint("capd-rs-test-cluster-api-ca");
        let cert_dir = dir.path().join("certs");
        std::fs::create_dir_all(&cert_dir)?;
        pki.install(&cert_dir);
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem);
        let ports: Vec<[u16; 3]> = COMPONENTS
            .iter()
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();

        let client = cp.client().await?;
        let mut crds = Vec::new();
        for (component, [webhook_port, ..]) in COMPONENTS.iter().zip(&ports) {
            let config = tools_dir
                .join("cluster-api")
                .join(component.path)
                .join("config");
            let mut labels = kustomize_labels(&config.join("crd/kustomization.yaml"))?;
            // What `clusterctl init` adds to every object it installs; `clusterctl move` finds
            // the kinds to move by the first.
            labels.insert("clusterctl.cluster.x-k8s.io".into(), String::new());
            labels.insert(
                "cluster.x-k8s.io/provider".into(),
                component.provider.into(),
            );
            for mut crd in super::crds::read_dir(&config.join("crd/bases"))? {
                crd.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .extend(labels.clone());
                if crd.spec.versions.len() > 1 {
                    crd.spec.conversion = Some(conversion(*webhook_port, &pki.ca_pem));
                }
                crds.push(crd);
            }
        }
        super::crds::apply_and_wait(&client, &crds).await?;

        // From here on, dropping `registered` deletes the webhook configurations again.
        let mut registered = Registered {
            kubeconfig: cp.kubeconfig.clone(),
            names: Vec::new(),
        };
        for (component, [webhook_port, ..]) in COMPONENTS.iter().zip(&ports) {
            let manifests = tools_dir
                .join("cluster-api")
                .join(component.path)
                .join("config/webhook/manifests.yaml");
            let text = std::fs::read_to_string(&manifests)
                .with_context(|| format!("reading {}", manifests.display()))?;
            for doc in super::crds::yaml_documents(&text) {
                let config =
                    webhook_configuration(doc, component.name_prefix, *webhook_port, &ca_bundle)
                        .with_context(|| format!("in {}", manifests.display()))?;
                let kind = config["kind"].as_str().unwrap_or_default().to_lowercase();
                let name = config["metadata"]["name"].as_str().unwrap_or_default();
                registered.names.push(format!("{kind}/{name}"));
                let (ok, _, err) = cp
                    .kubectl_async(&["create", "-f", "-"], &config.to_string())
                    .await;
                if !ok {
                    bail!("registering {kind} {name}: {err}");
                }
            }
        }

        let mut managers = Vec::new();
        for (component, [webhook_port, health_port, diagnostics_port]) in
            COMPONENTS.iter().zip(&ports)
        {
            let mut command = Command::new(tools_dir.join(component.binary));
            command
                .env("KUBECONFIG", &cp.kubeconfig)
                .arg("--leader-elect=false")
                .arg(format!("--webhook-port={webhook_port}"))
                .arg(format!("--webhook-cert-dir={}", cert_dir.display()))
                .arg(format!("--health-addr=127.0.0.1:{health_port}"))
                .arg(format!(
                    "--diagnostics-address=127.0.0.1:{diagnostics_port}"
                ))
                .arg("--insecure-diagnostics")
                .args(&options.extra_args);
            if component.path == "core" {
                command.arg(format!("--feature-gates={}", options.core_feature_gates));
            }
            let name = component.binary.trim_end_matches("-manager");
            managers.push(Manager {
                process: Process::spawn(name, command, dir.path())?,
                webhook_port: *webhook_port,
                health_port: *health_port,
                diagnostics_port: *diagnostics_port,
            });
        }
        let [core, bootstrap, control_plane]: [Manager; 3] = managers
            .try_into()
            .map_err(|_| anyhow::anyhow!("expected three managers"))?;
        let mut capi = Self {
            core,
            bootstrap,
            control_plane,
            ca_pem: pki.ca_pem.clone(),
            tools_dir,
            _registered: registered,
            dir,
        };
        capi.wait_ready(Duration::from_secs(120)).await?;
        Ok(capi)
    }

    /// The three managers.
    pub fn managers(&mut self) -> [&mut Manager; 3] {
        [&mut self.core, &mut self.bootstrap, &mut self.control_plane]
    }

    /// Fails, quoting its log, when a manager has exited.
    pub fn check_running(&mut self) -> Result<()> {
        for manager in self.managers() {
            manager.process.check_running()?;
        }
        Ok(())
    }

    /// Waits until every manager answers 200 on `/readyz`, failing at once when one exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let mut waiting = Vec::new();
            for manager in self.managers() {
                if manager.health("/readyz").await != Some(200) {
                    waiting.push(manager.process.name().to_owned());
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not ready after {timeout:?}: {}", waiting.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The directory of the managers' logs and certificate.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The webhook configurations registered for the managers; deleted on drop.
struct Registered {
    kubeconfig: PathBuf,
    names: Vec<String>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if !self.names.is_empty() {
            let mut args = vec!["delete", "--ignore-not-found", "--wait=false"];
            args.extend(self.names.iter().map(String::as_str));
            let _ = kubectl_at(&self.kubeconfig, &args, "");
        }
    }
}

/// The labels a component's `config/crd/kustomization.yaml` gives its CRDs (`labels[].pairs`).
fn kustomize_labels(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let kustomization: Value =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut labels = BTreeMap::new();
    for entry in kustomization["labels"].as_array().into_iter().flatten() {
        for (key, value) in entry["pairs"].as_object().into_iter().flatten() {
            labels.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(labels)
}

/// A conversion webhook by URL to the manager on `port` (`/convert`, as controller-runtime
/// serves it), trusting `ca_pem`.
fn conversion(port: u16, ca_pem: &str) -> CustomResourceConversion {
    CustomResourceConversion {
        strategy: "Webhook".into(),
        webhook: Some(WebhookConversion {
            client_config: Some(WebhookClientConfig {
                url: Some(format!("https://127.0.0.1:{port}/convert")),
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service: None,
            }),
            conversion_review_versions: vec!["v1".into()],
        }),
    }
}

/// A webhook configuration document of `manifests.yaml`, named with `prefix` and with every
/// webhook's `clientConfig.service` replaced by `https://127.0.0.1:<port><path>`.
fn webhook_configuration(doc: &str, prefix: &str, port: u16, ca_bundle: &str) -> Result<Value> {
    let mut config: Value = serde_saphyr::from_str(doc)?;
    let name = config["metadata"]["name"]
        .as_str()
        .context("a webhook configuration without a name")?;
    config["metadata"] = json!({"name": format!("{prefix}{name}")});
    for webhook in config["webhooks"].as_array_mut().into_iter().flatten() {
        let path = webhook["clientConfig"]["service"]["path"]
            .as_str()
            .context("a webhook without clientConfig.service.path")?
            .to_owned();
        webhook["clientConfig"] = json!({
            "url": format!("https://127.0.0.1:{port}{path}"),
            "caBundle": ca_bundle,
        });
    }
    Ok(config)
}
