//! A workload cluster's control plane where `kubeadm init` would have started it, and a kubelet's
//! registration of each node: what the test node image cannot run (no privileged containers
//! here, so no kubelet and no static Pods; its `kubeadm` only records its calls).
//!
//! [`WorkloadControlPlane::start`] runs a real etcd and kube-apiserver **in the node container's
//! network namespace** (`nsenter --net`), serving on the node's address and port 6443 as
//! kubeadm's static Pods would, so the cluster's load balancer (real HAProxy, configured by
//! capd-rs) forwards to it and the `<cluster>-kubeconfig` Secret that the kubeadm control-plane
//! provider wrote reaches it unchanged. Its certificates come from the node: the cluster CA and
//! service-account keys that CABPK's bootstrap data wrote to `/etc/kubernetes/pki`. Then
//! [`WorkloadControlPlane::upload_config`] does kubeadm init's upload of the
//! `ClusterConfiguration` it was given (the signal the control-plane provider takes for "the
//! control plane is initialized"), and [`WorkloadControlPlane::register_node`] does a kubelet's
//! registration (a Node with the machine's providerID, Ready), which Cluster API turns into the
//! Machine's `nodeRef`.
//!
//! Dropping it stops both processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::control_plane::kubectl_at_async;
use super::process::{Process, WorkDir, output_of};

/// Where kubeadm keeps the cluster's certificates and keys in a node.
const PKI: &str = "/etc/kubernetes/pki";
/// Where CABPK's bootstrap data puts `kubeadm init`'s configuration.
const KUBEADM_INIT_CONFIG: &str = "/run/kubeadm/kubeadm.yaml";

/// etcd and kube-apiserver running in a node container's network namespace.
pub struct WorkloadControlPlane {
    /// The cluster's admin kubeconfig (through its load balancer).
    pub kubeconfig: PathBuf,
    node: String,
    processes: Vec<Process>,
    _dir: WorkDir,
}

impl WorkloadControlPlane {
    /// Starts the control plane in node container `node`, with `kubeconfig` (the
    /// `<cluster>-kubeconfig` Secret's value) as the admin's, and waits until it answers ready
    /// through that kubeconfig's server (the load balancer).
    pub async fn start(node: &str, kubeconfig: &str) -> Result<Self> {
        let dir = WorkDir::new("capd-rs-workload-")?;
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki)?;
        for file in ["ca.crt", "ca.key", "sa.key", "sa.pub"] {
            let content = docker(&["exec", node, "cat", &format!("{PKI}/{file}")])
                .with_context(|| format!("reading {PKI}/{file} (written by CABPK) in {node}"))?;
            std::fs::write(pki.join(file), content)?;
        }
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", node])?;
        let node_ip = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            node,
        ])?;
        let node_ip = node_ip
            .split_whitespace()
            .next()
            .context("node without IP")?;
        let server_ip = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: https://"))
            .and_then(|rest| rest.rsplit_once(':'))
            .map(|(host, _)| host.to_owned())
            .context("no https server in the cluster's kubeconfig")?;
        sign_serving_certificate(&pki, &[&server_ip, node_ip, "127.0.0.1"])?;
        let admin = dir.path().join("kubeconfig");
        std::fs::write(&admin, kubeconfig)?;

        let bins = super::setup::control_plane_binaries()?;
        let in_node = |binary: &str| {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net=/proc/{}/ns/net", pid.trim()))
                .arg("--")
                .arg(bins.join(binary));
            command
        };
        let mut etcd = in_node("etcd");
        etcd.args([
            &format!("--data-dir={}", dir.path().join("etcd").display()),
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--unsafe-no-fsync=true",
        ]);
        let pki_file = |name: &str| pki.join(name).display().to_string();
        let mut apiserver = in_node("kube-apiserver");
        apiserver.args([
            "--etcd-servers=http://127.0.0.1:2379",
            "--secure-port=6443",
            "--bind-address=0.0.0.0",
            &format!("--advertise-address={node_ip}"),
            &format!("--cert-dir={}", dir.path().join("certs").display()),
            &format!("--tls-cert-file={}", pki_file("apiserver.crt")),
            &format!("--tls-private-key-file={}", pki_file("apiserver.key")),
            &format!("--client-ca-file={}", pki_file("ca.crt")),
            &format!("--service-account-key-file={}", pki_file("sa.pub")),
            &format!("--service-account-signing-key-file={}", pki_file("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.128.0.0/12",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            // No controller-manager makes ServiceAccount tokens here.
            "--disable-admission-plugins=ServiceAccount",
        ]);
        let mut processes = Vec::new();
        for (name, command) in [("workload-etcd", etcd), ("workload-apiserver", apiserver)] {
            processes.push(Process::spawn(
                &format!("{name}-{node}"),
                command,
                dir.path(),
            )?);
        }
        let mut workload = Self {
            kubeconfig: admin,
            node: node.to_owned(),
            processes,
            _dir: dir,
        };
        workload.wait_ready().await?;
        Ok(workload)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let kubeconfig = self.kubeconfig.clone();
        let node = self.node.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            for process in &mut self.processes {
                process.check_running()?;
            }
            let (ok, out, _) = self.kubectl(&["get", "--raw", "/readyz"], "").await;
            if ok && out == "ok" {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "the workload apiserver in {node} did not answer ready through {} in 120 s",
                    kubeconfig.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs kubectl against the workload cluster as its admin.
    pub async fn kubectl(&self, args: &[&str], input: &str) -> (bool, String, String) {
        kubectl_at_async(&self.kubeconfig, args, input).await
    }

    /// kubeadm init's upload: the `ClusterConfiguration` that CABPK gave `kubeadm init` in the
    /// node, as ConfigMap `kube-system/kubeadm-config`.
    pub async fn upload_config(&self) -> Result<()> {
        let init = docker(&["exec", &self.node, "cat", KUBEADM_INIT_CONFIG])?;
        let cluster_configuration = init
            .split("\n---")
            .find(|doc| doc.contains("kind: ClusterConfiguration"))
            .with_context(|| format!("no ClusterConfiguration in {KUBEADM_INIT_CONFIG}"))?
            .trim_start_matches("---")
            .trim();
        let config_map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": format!("{cluster_configuration}\n")},
        });
        self.apply(&config_map.to_string()).await
    }

    /// A kubelet's registration of node container `name` as Node `name` with `provider_id`,
    /// reporting Ready; control-plane nodes carry kubeadm's role label.
    pub async fn register_node(
        &self,
        name: &str,
        provider_id: &str,
        control_plane: bool,
    ) -> Result<()> {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if control_plane {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"providerID": provider_id},
        });
        self.apply(&node.to_string()).await?;
        let ready = json!({"status": {"conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "registered by the test in the kubelet's place",
        }]}});
        let (ok, _, err) = self
            .kubectl(
                &[
                    "patch",
                    "node",
                    name,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &ready.to_string(),
                ],
                "",
            )
            .await;
        if !ok {
            bail!("reporting Node {name} Ready: {err}");
        }
        Ok(())
    }

    async fn apply(&self, manifest: &str) -> Result<()> {
        let (ok, _, err) = self.kubectl(&["apply", "-f", "-"], manifest).await;
        if !ok {
            bail!("applying to the workload cluster: {err}");
        }
        Ok(())
    }
}

/// Signs `pki/apiserver.crt` (with a new `pki/apiserver.key`) for `addresses` and the
/// `kubernetes` Service names with the cluster CA in `pki`, as `kubeadm init` does.
fn sign_serving_certificate(pki: &Path, addresses: &[&str]) -> Result<()> {
    let mut names: Vec<String> = addresses.iter().map(|a| format!("IP:{a}")).collect();
    names.extend(
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(|n| format!("DNS:{n}")),
    );
    std::fs::write(
        pki.join("apiserver.ext"),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
            names.join(",")
        ),
    )?;
    for args in [
        vec![
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-subj",
            "/CN=kube-apiserver",
            "-out",
            "apiserver.csr",
        ],
        vec![
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "apiserver.ext",
            "-out",
            "apiserver.crt",
        ],
    ] {
        let output = Command::new("openssl")
            .args(&args)
            .current_dir(pki)
            .output()
            .context("running openssl")?;
        if !output.status.success() {
            bail!(
                "openssl {}: {}",
                args[0],
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(())
}

/// What `docker <args>` prints, failing with its error output.
fn docker(args: &[&str]) -> Result<String> {
    output_of("docker", args, "the Docker CLI")
}
