//! cert-manager (v1.11, from `hack/tools.sh cert-manager`) run the way clusterctl's
//! `cert-manager.yaml` would, but as processes against a test control plane: its CRDs installed,
//! the controller (issues Certificates) and the cainjector (fills `caBundle` of objects annotated
//! `cert-manager.io/inject-ca-from`), both with leader election off. Its own admission webhook is
//! not run (nothing here needs cert-manager's validation).
//!
//! Dropping [`CertManager`] kills both processes (their logs' ends are printed when the test
//! panicked). The CRDs stay: run it on a control plane of the test's own
//! ([`super::control_plane::start_extra`]) when other tests must not see them.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};

use super::control_plane::ControlPlane;
use super::manager::free_port;
use super::process::{Process, WorkDir};
use super::setup::{Tool, tools};

/// cert-manager's controller and cainjector running against one control plane.
pub struct CertManager {
    /// The controller (`cert-manager-controller`).
    pub controller: Process,
    /// The cainjector (`cert-manager-cainjector`).
    pub cainjector: Process,
    // Dropped after the processes: it holds their logs.
    dir: WorkDir,
}

impl CertManager {
    /// Installs cert-manager's CRDs in `cp` (waiting until they are Established) and starts the
    /// controller and the cainjector against it. Builds cert-manager first if it is not cached.
    pub async fn start(cp: &ControlPlane) -> Result<Self> {
        let bin = tokio::task::spawn_blocking(|| tools(Tool::CertManager)).await??;
        let crds = super::crds::read_dir(&bin.join("cert-manager/crds"))?;
        super::crds::apply_and_wait(&cp.client().await?, &crds).await?;

        let dir = WorkDir::new("capd-rs-cert-manager-")?;
        let kubeconfig = format!("--kubeconfig={}", cp.kubeconfig.display());
        let mut controller = std::process::Command::new(bin.join("cert-manager-controller"));
        controller.args([
            &kubeconfig,
            "--leader-elect=false",
            // Its default is 0.0.0.0:9402, which parallel tests would share.
            &format!("--metrics-listen-address=127.0.0.1:{}", free_port()),
            "--v=2",
        ]);
        let mut cainjector = std::process::Command::new(bin.join("cert-manager-cainjector"));
        cainjector.args([&kubeconfig, "--leader-elect=false", "--v=2"]);
        Ok(Self {
            controller: Process::spawn("cert-manager-controller", controller, dir.path())?,
            cainjector: Process::spawn("cert-manager-cainjector", cainjector, dir.path())?,
            dir,
        })
    }

    /// The directory of the processes' logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fails, quoting its log, when either process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.controller.check_running()?;
        self.cainjector.check_running()
    }

    /// Waits until Certificate `namespace/name` has condition Ready=True and returns it; fails
    /// with its last status after `timeout`, or at once when a cert-manager process exits.
    pub async fn wait_certificate_ready(
        &mut self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<DynamicObject> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &certificate());
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            self.check_running()?;
            if let Some(cert) = api.get_opt(name).await? {
                let ready = cert.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if ready {
                    return Ok(cert);
                }
                last = Some(cert.data["status"].clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "Certificate {namespace}/{name} not Ready after {timeout:?}; its status: {last:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// cert-manager's `Certificate` (cert-manager.io/v1).
pub fn certificate() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cert-manager.io",
        "v1",
        "Certificate",
    ))
}

/// cert-manager's `Issuer` (cert-manager.io/v1).
pub fn issuer() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("cert-manager.io", "v1", "Issuer"))
}
