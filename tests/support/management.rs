//! A management cluster as `clusterctl init` makes one, on the test control plane's binaries:
//! a clusterctl local repository ([`Repository`]: capd-rs's release from `hack/release.sh` next
//! to Cluster API's own release assets from `hack/tools.sh`), and [`Management`]: cert-manager
//! running, Cluster API's core, kubeadm bootstrap and kubeadm control-plane providers and capd-rs
//! installed by `clusterctl init`, and every provider's manager run from its installed Deployment
//! ([`super::kubelet`]). Used by the end-to-end test and by `hack/run.sh`
//! (`examples/local_cluster.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use base64::Engine as _;
use serde_json::Value;

use super::cert_manager::CertManager;
use super::control_plane::{ControlPlane, OwnedControlPlane, kubectl_at, start_extra_async};
use super::controller_manager::aggregate_cluster_roles;
use super::kubelet::{Pod, run_deployment};
use super::process::{WorkDir, wait_until};
use super::setup::{Tool, manager_binary, repo_root, tools};

/// The Cluster API release the management clusters run.
pub const CAPI_VERSION: &str = "v1.14.2";
/// The capd-rs release written to the local repository.
pub const VERSION: &str = "v0.1.0";
/// How long one step (installing a provider, a manager getting ready) may take.
const STEP: Duration = Duration::from_secs(180);

/// The clusterctl local repository: capd-rs's release and Cluster API's, and a configuration
/// file naming them.
pub struct Repository {
    /// Its directory, also clusterctl's home (`HOME`, `XDG_CONFIG_HOME`).
    pub dir: PathBuf,
    /// The clusterctl configuration naming every provider of the repository.
    pub config: PathBuf,
    _temporary: Option<WorkDir>,
}

impl Repository {
    /// Writes the repository into a temporary directory, removed on drop.
    pub fn write(capi_tools: &Path) -> Result<Self> {
        let temporary = WorkDir::new("capd-rs-clusterctl-repository-")?;
        let mut repository = Self::write_at(temporary.path(), capi_tools)?;
        repository._temporary = Some(temporary);
        Ok(repository)
    }

    /// Writes the repository into `dir` (kept).
    pub fn write_at(dir: &Path, capi_tools: &Path) -> Result<Self> {
        let release = Command::new("bash")
            .arg(repo_root().join("hack/release.sh"))
            .arg("--local-repository")
            .arg(dir)
            .args([VERSION, "capd-rs-manager:e2e"])
            .output()?;
        if !release.status.success() {
            bail!(
                "hack/release.sh failed: {}",
                String::from_utf8_lossy(&release.stderr)
            );
        }
        let assets = capi_tools.join("cluster-api/release");
        let mut providers = Vec::new();
        for (label, file, name, kind) in [
            (
                "cluster-api",
                "core-components.yaml",
                "cluster-api",
                "CoreProvider",
            ),
            (
                "bootstrap-kubeadm",
                "bootstrap-components.yaml",
                "kubeadm",
                "BootstrapProvider",
            ),
            (
                "control-plane-kubeadm",
                "control-plane-components.yaml",
                "kubeadm",
                "ControlPlaneProvider",
            ),
        ] {
            let version_dir = dir.join(label).join(CAPI_VERSION);
            std::fs::create_dir_all(&version_dir)?;
            std::fs::copy(assets.join(file), version_dir.join(file))?;
            std::fs::copy(
                assets.join("metadata.yaml"),
                version_dir.join("metadata.yaml"),
            )?;
            providers.push(format!(
                "- name: {name}\n  type: {kind}\n  url: {}\n",
                version_dir.join(file).display()
            ));
        }
        providers.push(format!(
            "- name: docker-rs\n  type: InfrastructureProvider\n  url: {}\n",
            dir.join("infrastructure-docker-rs")
                .join(VERSION)
                .join("infrastructure-components.yaml")
                .display()
        ));
        let config = dir.join("clusterctl-providers.yaml");
        std::fs::write(&config, format!("providers:\n{}", providers.concat()))?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            _temporary: None,
        })
    }

    /// Runs clusterctl with `args` against `kubeconfig`, as a user with this repository
    /// configured; the variables are clusterctl's environment.
    pub async fn clusterctl(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        variables: &[(&str, &str)],
    ) -> (bool, String, String) {
        let clusterctl = tools(Tool::Clusterctl)
            .expect("clusterctl")
            .join("clusterctl");
        let mut command = tokio::process::Command::new(clusterctl);
        // Only what is given here: the test runner's environment has KUBERNETES_VERSION and
        // other variables clusterctl would read (hack/lib.sh exports it).
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("CLUSTERCTL_DISABLE_VERSIONCHECK", "true")
            .env("XDG_CONFIG_HOME", self.dir.join("xdg"))
            .env("GOPROXY", "off");
        for (name, value) in variables {
            command.env(name, value);
        }
        let output = command.output().await.expect("running clusterctl");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `clusterctl move` of `namespace` from `source` to `target`.
    pub async fn move_namespace(
        &self,
        source: &Management,
        namespace: &str,
        target: &Management,
    ) -> (bool, String, String) {
        let to = target.kubeconfig().display().to_string();
        self.clusterctl(
            source.kubeconfig(),
            // Verbose: the objects it creates and deletes, for a failing test's message.
            &["move", "-n", namespace, "--to-kubeconfig", &to, "-v", "5"],
            &[],
        )
        .await
    }

    /// `clusterctl generate cluster` with `args` and `variables`, checked by a server-side dry
    /// run on `management`, then applied there.
    pub async fn create_cluster(
        &self,
        management: &Management,
        args: &[&str],
        variables: &[(&str, &str)],
    ) -> Result<()> {
        let mut generate = vec!["generate", "cluster"];
        generate.extend_from_slice(args);
        let (ok, yaml, err) = self
            .clusterctl(management.kubeconfig(), &generate, variables)
            .await;
        if !ok {
            bail!("clusterctl generate cluster {args:?} failed: {err}");
        }
        let (ok, _, err) = management
            .kubectl(&["apply", "--dry-run=server", "-f", "-"], &yaml)
            .await;
        if !ok {
            bail!("the generated cluster {args:?} fails a server-side dry run: {err}\n{yaml}");
        }
        let (ok, _, err) = management.kubectl(&["apply", "-f", "-"], &yaml).await;
        if !ok {
            bail!("applying the generated cluster {args:?}: {err}");
        }
        Ok(())
    }
}

/// The apiserver of a management cluster.
pub enum Apiserver {
    /// A control plane of its own, stopped with the [`Management`].
    Owned(OwnedControlPlane),
    /// A control plane that runs on its own (`hack/run.sh`'s).
    Running(ControlPlane),
}

impl std::ops::Deref for Apiserver {
    type Target = ControlPlane;

    fn deref(&self) -> &ControlPlane {
        match self {
            Apiserver::Owned(cp) => cp,
            Apiserver::Running(cp) => cp,
        }
    }
}

/// A management cluster: cert-manager, and the managers of Cluster API's three providers and
/// capd-rs running from their installed Deployments. Dropping it stops them.
pub struct Management {
    pods: Vec<Pod>,
    cert_manager: CertManager,
    cp: Apiserver,
}

/// The providers' Deployments, and the local programs of their images.
fn deployments(capi_tools: &Path) -> [(&'static str, &'static str, PathBuf); 4] {
    [
        (
            "capi-system",
            "capi-controller-manager",
            capi_tools.join("capi-core-manager"),
        ),
        (
            "capi-kubeadm-bootstrap-system",
            "capi-kubeadm-bootstrap-controller-manager",
            capi_tools.join("capi-kubeadm-bootstrap-manager"),
        ),
        (
            "capi-kubeadm-control-plane-system",
            "capi-kubeadm-control-plane-controller-manager",
            capi_tools.join("capi-kubeadm-control-plane-manager"),
        ),
        (
            "capd-rs-system",
            "capd-rs-controller-manager",
            manager_binary(),
        ),
    ]
}

impl Management {
    /// A new control plane of its own with everything installed by `clusterctl init` from
    /// `repository` with `variables`, and every manager ready.
    pub async fn install(
        repository: &Repository,
        capi_tools: &Path,
        variables: &[(&str, &str)],
    ) -> Result<Self> {
        let cp = Apiserver::Owned(start_extra_async().await?);
        Self::start(cp, repository, capi_tools, Some(variables)).await
    }

    /// Starts cert-manager on `cp`, runs `clusterctl init` from `repository` with `init`'s
    /// variables unless `init` is `None` (installed before), and runs every manager until it is
    /// ready.
    pub async fn start(
        cp: Apiserver,
        repository: &Repository,
        capi_tools: &Path,
        init: Option<&[(&str, &str)]>,
    ) -> Result<Self> {
        let mut cert_manager = CertManager::start(&cp).await?;
        if let Some(variables) = init {
            let (ok, out, err) = repository
                .clusterctl(
                    &cp.kubeconfig,
                    &[
                        "init",
                        &format!("--core=cluster-api:{CAPI_VERSION}"),
                        &format!("--bootstrap=kubeadm:{CAPI_VERSION}"),
                        &format!("--control-plane=kubeadm:{CAPI_VERSION}"),
                        &format!("--infrastructure=docker-rs:{VERSION}"),
                    ],
                    variables,
                )
                .await;
            if !ok {
                bail!("clusterctl init failed:\n{out}\n{err}");
            }
            cert_manager.check_running()?;
        }
        // The test control plane has no kube-controller-manager: do its part. Cluster API's
        // managers are bound to aggregated ClusterRoles, and clusterctl deleted its cert-manager
        // probe namespace, which needs the namespace controller to go.
        aggregate_cluster_roles(&cp.client().await?).await?;
        finalize_namespace(&cp.kubeconfig, "cert-manager-test");
        let mut pods = Vec::new();
        for (namespace, name, binary) in deployments(capi_tools) {
            let mut pod = run_deployment(&cp, namespace, name, &binary, STEP).await?;
            pod.wait_ready(STEP).await?;
            pods.push(pod);
        }
        Ok(Self {
            pods,
            cert_manager,
            cp,
        })
    }

    /// Its admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.cp.kubeconfig
    }

    /// A client with admin rights.
    pub async fn client(&self) -> Result<kube::Client> {
        self.cp.client().await
    }

    /// Runs kubectl against it as its admin.
    pub async fn kubectl(&self, args: &[&str], input: &str) -> (bool, String, String) {
        self.cp.kubectl_async(args, input).await
    }

    /// The object of `resource` `namespace/name` as JSON, or `None` when it is not there.
    pub async fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let (ok, out, _) = self
            .kubectl(&["get", resource, name, "-n", namespace, "-o", "json"], "")
            .await;
        ok.then(|| serde_json::from_str(&out).ok()).flatten()
    }

    /// The items of `resource` in `namespace` carrying `selector`.
    pub async fn list(&self, resource: &str, namespace: &str, selector: &str) -> Vec<Value> {
        let (_, out, _) = self
            .kubectl(
                &[
                    "get", resource, "-n", namespace, "-l", selector, "-o", "json",
                ],
                "",
            )
            .await;
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|list| list["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Key `value` of Secret `namespace/name` (such as a cluster's kubeconfig), once it exists.
    pub async fn secret_value(&self, namespace: &str, name: &str) -> Result<String> {
        wait_until(&format!("Secret {namespace}/{name}"), STEP, || async {
            let Some(secret) = self.get("secret", namespace, name).await else {
                return Ok(None);
            };
            let Some(value) = secret["data"]["value"].as_str() else {
                return Ok(None);
            };
            let bytes = base64::engine::general_purpose::STANDARD.decode(value)?;
            Ok(Some(String::from_utf8(bytes)?))
        })
        .await
    }

    /// The log files of the managers and of cert-manager.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .pods
            .iter()
            .map(|pod| pod.process.log_path().to_owned())
            .collect();
        paths.push(self.cert_manager.controller.log_path().to_owned());
        paths.push(self.cert_manager.cainjector.log_path().to_owned());
        paths
    }

    /// Fails when a manager or cert-manager has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.cert_manager.check_running()?;
        self.pods
            .iter_mut()
            .try_for_each(|pod| pod.process.check_running())
    }
}

/// Removes the finalizers of a namespace left Terminating (as the namespace controller would
/// once it is empty).
fn finalize_namespace(kubeconfig: &Path, name: &str) {
    let (ok, out, _) = kubectl_at(kubeconfig, &["get", "namespace", name, "-o", "json"], "");
    if !ok {
        return;
    }
    let Ok(mut namespace) = serde_json::from_str::<Value>(&out) else {
        return;
    };
    namespace["spec"]["finalizers"] = Value::Array(Vec::new());
    let _ = kubectl_at(
        kubeconfig,
        &[
            "replace",
            "--raw",
            &format!("/api/v1/namespaces/{name}/finalize"),
            "-f",
            "-",
        ],
        &namespace.to_string(),
    );
}
