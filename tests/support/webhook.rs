//! A webhook server for tests: certificates minted with rcgen, the capd-rs webhook server
//! in-process on a loopback port, and the committed webhook configurations registered in the
//! test apiserver as URL webhooks limited to the test's namespace.

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use capd::features::Features;
use capd::tls::TlsOptions;
use capd::webhooks::tls::CertFiles;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use serde_json::{Value, json};

use super::{TestContext, kubectl};

/// A certificate authority and a serving certificate for 127.0.0.1 and localhost.
pub struct Pki {
    /// The CA certificate (PEM), for the apiserver's caBundle and clients' roots.
    pub ca_pem: String,
    /// The serving certificate (PEM).
    pub cert_pem: String,
    /// The serving key (PEM).
    pub key_pem: String,
}

impl Pki {
    /// Mints a new CA named `ca_name` and a serving certificate signed by it.
    pub fn mint(ca_name: &str) -> Self {
        Self::mint_for(ca_name, &["localhost"], &[[127, 0, 0, 1].into()])
    }

    /// Mints a new CA named `ca_name` and a serving certificate signed by it for `dns_names` and
    /// `ips` (a webhook behind a Service is called as `<service>.<namespace>.svc`).
    pub fn mint_for(ca_name: &str, dns_names: &[&str], ips: &[IpAddr]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().unwrap();
        let names = dns_names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<Vec<_>>();
        let mut leaf = CertificateParams::new(names).unwrap();
        leaf.subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        leaf.distinguished_name
            .push(DnType::CommonName, "capd-rs-webhook-test");
        let cert_pem = leaf.signed_by(&key, &issuer).unwrap().pem();
        Self {
            ca_pem,
            cert_pem,
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `tls.crt` and `tls.key` into `dir` the way kubelet updates a Secret volume: the
    /// files are symlinks through `..data`, which is swapped atomically to a new directory.
    pub fn install(&self, dir: &Path) {
        static VERSION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = VERSION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let version = dir.join(format!("..version-{n}"));
        std::fs::create_dir_all(&version).unwrap();
        std::fs::write(version.join("tls.crt"), &self.cert_pem).unwrap();
        std::fs::write(version.join("tls.key"), &self.key_pem).unwrap();
        let tmp_link = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(version.file_name().unwrap(), &tmp_link).unwrap();
        std::fs::rename(&tmp_link, dir.join("..data")).unwrap();
        for name in ["tls.crt", "tls.key"] {
            if std::fs::symlink_metadata(dir.join(name)).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
            }
        }
    }
}

/// The capd-rs webhook server running in the test's runtime; stops when dropped.
pub struct WebhookServer {
    /// The port it listens on (on 127.0.0.1 unless started with [`WebhookServer::start_on`]).
    pub port: u16,
    /// The directory of its certificate files (kubelet layout).
    pub cert_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl WebhookServer {
    /// Starts the server with `pki`'s certificate, reloading it every 100 ms.
    pub fn start(pki: &Pki, features: Features) -> Self {
        Self::start_with(pki, features, TlsOptions::default())
    }

    /// [`WebhookServer::start`] under the TLS options `tls`.
    pub fn start_with(pki: &Pki, features: Features, tls: TlsOptions) -> Self {
        Self::start_on(pki, features, tls, [127, 0, 0, 1].into())
    }

    /// [`WebhookServer::start_with`] listening on a free port of `addr` (a test host's address,
    /// say) instead of 127.0.0.1.
    pub fn start_on(pki: &Pki, features: Features, tls: TlsOptions, addr: IpAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        pki.install(dir.path());
        Self::serve(dir.path().to_owned(), Some(dir), features, tls, addr)
    }

    /// Starts the server on the `tls.crt` and `tls.key` already in `dir`, reloading them every
    /// 100 ms, as a manager started with `--webhook-cert-dir=<dir>`.
    pub fn start_in_dir(dir: &Path, features: Features) -> Self {
        let loopback = [127, 0, 0, 1].into();
        Self::serve(
            dir.to_owned(),
            None,
            features,
            TlsOptions::default(),
            loopback,
        )
    }

    fn serve(
        cert_dir: PathBuf,
        owned: Option<tempfile::TempDir>,
        features: Features,
        tls: TlsOptions,
        addr: IpAddr,
    ) -> Self {
        let listener = TcpListener::bind((addr, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let files = CertFiles::in_dir(&cert_dir, "tls.crt", "tls.key");
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let options = capd::webhooks::ServeOptions {
                cert: files,
                reload_every: Duration::from_millis(100),
                tls,
                features,
                metrics: capd::metrics::Metrics::new().0,
            };
            if let Err(e) = capd::webhooks::serve(listener, options, || {}, shutdown).await {
                panic!("webhook server failed: {e}");
            }
        });
        Self {
            port,
            cert_dir,
            _dir: owned,
            stop: Some(stop),
        }
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The committed webhook configurations, registered for one test namespace; deleted on drop.
pub struct Registration {
    names: Vec<(String, String)>,
}

impl Registration {
    /// Registers `config/webhook/manifests.yaml` with every webhook pointed at
    /// `https://127.0.0.1:<port><path>`, trusting `ca_pem`, and limited to the test's namespace.
    pub fn register(ctx: &TestContext, port: u16, ca_pem: &str) -> Self {
        Self::register_with(
            ctx,
            ca_pem,
            |path| json!({"url": format!("https://127.0.0.1:{port}{path}")}),
        )
    }

    /// Registers `config/webhook/manifests.yaml` as clusterctl installs it, every webhook behind
    /// Service `service` of the test's namespace on port 443 (as `<service>.<namespace>.svc`),
    /// trusting `ca_pem`, and limited to the test's namespace.
    pub fn register_service(ctx: &TestContext, service: &str, ca_pem: &str) -> Self {
        Self::register_with(
            ctx,
            ca_pem,
            |path| json!({"service": {"name": service, "namespace": ctx.namespace, "port": 443, "path": path}}),
        )
    }

    /// Registers `config/webhook/manifests.yaml` with each webhook's `clientConfig` from
    /// `client_config(path)` plus `caBundle`, limited to the test's namespace.
    fn register_with(
        ctx: &TestContext,
        ca_pem: &str,
        client_config: impl Fn(&str) -> Value,
    ) -> Self {
        let manifests = std::fs::read_to_string(
            super::setup::repo_root().join("config/webhook/manifests.yaml"),
        )
        .unwrap();
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let mut names = Vec::new();
        for doc in manifests.split("\n---\n").filter(|d| d.contains("kind:")) {
            let mut config: Value = serde_saphyr::from_str(doc).unwrap();
            let kind = config["kind"].as_str().unwrap().to_owned();
            let name = format!(
                "{}-{}",
                ctx.namespace,
                config["metadata"]["name"].as_str().unwrap()
            );
            config["metadata"] = json!({"name": name});
            for webhook in config["webhooks"].as_array_mut().unwrap() {
                let path = webhook["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                webhook["clientConfig"] = client_config(&path);
                webhook["clientConfig"]["caBundle"] = json!(ca);
                webhook["namespaceSelector"] =
                    json!({"matchLabels": {"kubernetes.io/metadata.name": ctx.namespace}});
                webhook["timeoutSeconds"] = json!(10);
            }
            let (ok, _, err) = super::kubectl_stdin(&["create", "-f", "-"], &config.to_string());
            assert!(ok, "registering {kind} {name}: {err}");
            names.push((kind.to_lowercase(), name));
        }
        assert_eq!(
            names.len(),
            2,
            "expected a mutating and a validating configuration"
        );
        Self { names }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for (kind, name) in &self.names {
            let _ = kubectl(&["delete", kind, name, "--ignore-not-found", "--wait=false"]);
        }
    }
}

/// Waits until the apiserver calls the webhooks for `namespace`: it picks new webhook
/// configurations up asynchronously, so a dry-run of an object only the webhook refuses is
/// repeated until it is refused.
pub async fn wait_until_active(namespace: &str) {
    let probe = "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DockerCluster\nmetadata:\n  name: probe\nspec:\n  failureDomains: [{name: b}, {name: a}]\n";
    super::wait_for(
        "the webhooks to be called",
        Duration::from_secs(30),
        || async {
            let (ok, _, err) = super::kubectl_async(
                &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
                probe,
            )
            .await;
            (!ok && err.contains("failure domains must be sorted")).then_some(())
        },
    )
    .await;
}
