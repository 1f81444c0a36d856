//! The admission webhooks for real: the capd-rs server over TLS, registered in the test
//! apiserver, driven with `kubectl apply`; and certificate rotation without a restart.

use std::sync::Arc;
use std::time::Duration;

use capd::features::Features;
use capd::tls::{TlsOptions, TlsVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::support::webhook::{Pki, Registration, WebhookServer, wait_until_active};
use crate::support::{TestContext, crds, kubectl_async, wait_for};

/// A test namespace whose Docker* objects go through a capd-rs webhook server.
struct Admitted {
    ctx: TestContext,
    _registration: Registration,
    _server: WebhookServer,
}

impl Admitted {
    async fn new(label: &str, features: Features) -> Self {
        let ctx = TestContext::new(label).await;
        crds::install(&ctx.kube).await;
        let pki = Pki::mint("capd-rs-test-ca");
        let server = WebhookServer::start(&pki, features);
        let registration = Registration::register(&ctx, server.port, &pki.ca_pem);
        let admitted = Self {
            ctx,
            _registration: registration,
            _server: server,
        };
        wait_until_active(&admitted.ctx.namespace).await;
        admitted
    }

    async fn kubectl(&self, args: &[&str], input: &str) -> (bool, String, String) {
        let mut args = args.to_vec();
        args.extend(["-n", &self.ctx.namespace]);
        kubectl_async(&args, input).await
    }

    async fn apply(&self, yaml: &str) -> (bool, String, String) {
        self.kubectl(&["apply", "-f", "-"], yaml).await
    }

    async fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let (ok, out, _) = self.kubectl(&["get", kind, name, "-o", "json"], "").await;
        ok.then(|| serde_json::from_str(&out).unwrap())
    }
}

fn manifest(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_rejects_invalid_specs_naming_the_field() {
    let admitted = Admitted::new("wh-invalid", Features::default()).await;
    let cases = [
        (
            "DockerCluster",
            "  failureDomains:\n  - name: fd2\n  - name: fd1\n",
            "spec.failureDomains: Invalid value",
            "failure domains must be sorted by name",
        ),
        (
            "DockerCluster",
            "  controlPlaneEndpoint:\n    host: lb_1.example.com\n",
            "spec.controlPlaneEndpoint.host: Invalid value",
            "must be an IP address or a DNS name",
        ),
        (
            "DockerCluster",
            "  loadBalancer:\n    customHAProxyConfigTemplateRef:\n      name: \"\"\n",
            "spec.loadBalancer.customHAProxyConfigTemplateRef.name: Required value",
            "",
        ),
        (
            "DockerMachine",
            "  extraMounts:\n  - hostPath: /tmp\n",
            "spec.extraMounts[0].containerPath: Required value",
            "",
        ),
        (
            "DockerMachine",
            "  extraMounts:\n  - containerPath: data\n    hostPath: /tmp\n",
            "spec.extraMounts[0].containerPath: Invalid value",
            "must be an absolute path",
        ),
        (
            "DockerMachine",
            "  preLoadImages:\n  - busybox\n  - Not/An Image\n",
            "spec.preLoadImages[1]: Invalid value",
            "",
        ),
        (
            "DockerMachine",
            "  customImage: \"kindest/node:\"\n",
            "spec.customImage: Invalid value",
            "",
        ),
        (
            "DockerMachine",
            "  bootstrapTimeout: 5 minutes\n",
            "spec.bootstrapTimeout: Invalid value",
            "must be a duration",
        ),
        (
            "DockerMachine",
            "  bootstrapTimeout: 0s\n",
            "spec.bootstrapTimeout: Invalid value",
            "must be greater than zero",
        ),
        (
            "DockerMachine",
            "  bootstrapTimeout: -1m\n",
            "spec.bootstrapTimeout: Invalid value",
            "must be greater than zero",
        ),
        (
            "DockerMachineTemplate",
            "  template:\n    metadata:\n      labels:\n        \"bad key!\": x\n    spec: {}\n",
            "spec.template.metadata.labels: Invalid value",
            "",
        ),
        (
            "DockerMachineTemplate",
            "  template:\n    metadata:\n      annotations:\n        a/b/c: x\n    spec: {}\n",
            "spec.template.metadata.annotations: Invalid value",
            "",
        ),
        (
            "DockerClusterTemplate",
            "  template:\n    spec: {}\n",
            "spec: Forbidden",
            "can be set only if the ClusterTopology feature flag is enabled",
        ),
    ];
    for (i, (kind, spec, field, rule)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        let (ok, _, err) = admitted.apply(&manifest(kind, &name, spec)).await;
        assert!(!ok, "case {i}: {kind} was accepted:\n{spec}");
        assert!(
            err.contains(field),
            "case {i}: kubectl's error does not name {field:?}: {err}"
        );
        assert!(
            err.contains(rule),
            "case {i}: kubectl's error does not say {rule:?}: {err}"
        );
        assert!(
            admitted.get(kind, &name).await.is_none(),
            "case {i}: {kind} {name} was stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_specs_are_stored_with_defaults() {
    let admitted = Admitted::new(
        "wh-defaults",
        Features {
            cluster_topology: true,
        },
    )
    .await;
    let cluster = manifest(
        "DockerCluster",
        "c1",
        "  controlPlaneEndpoint:\n    host: 172.18.0.9\n  failureDomains:\n  - name: fd1\n  - name: fd2\n    controlPlane: true\n",
    );
    let (ok, _, err) = admitted.apply(&cluster).await;
    assert!(ok, "{err}");
    let stored = admitted.get("dockercluster", "c1").await.unwrap();
    assert_eq!(
        stored["spec"]["controlPlaneEndpoint"],
        serde_json::json!({"host": "172.18.0.9", "port": 6443})
    );
    assert_eq!(stored["spec"]["failureDomains"][0]["controlPlane"], false);
    assert_eq!(stored["spec"]["failureDomains"][1]["controlPlane"], true);

    let template = manifest(
        "DockerClusterTemplate",
        "t1",
        "  template:\n    spec:\n      failureDomains:\n      - name: a\n",
    );
    let (ok, _, err) = admitted.apply(&template).await;
    assert!(
        ok,
        "with ClusterTopology on, a DockerClusterTemplate is accepted: {err}"
    );
    let stored = admitted.get("dockerclustertemplate", "t1").await.unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["controlPlaneEndpoint"]["port"],
        6443
    );
    assert_eq!(
        stored["spec"]["template"]["spec"]["failureDomains"][0]["controlPlane"],
        false
    );

    let machine = manifest(
        "DockerMachine",
        "m1",
        "  customImage: kindest/node:v1.35.0\n  preLoadImages: [busybox:1.36]\n  extraMounts:\n  - {containerPath: /data, hostPath: /tmp}\n  bootstrapTimeout: 10m\n",
    );
    let (ok, _, err) = admitted.apply(&machine).await;
    assert!(ok, "{err}");
    assert_eq!(
        admitted.get("dockermachine", "m1").await.unwrap()["spec"]["bootstrapTimeout"],
        "10m"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_to_immutable_fields_are_rejected_and_change_nothing() {
    let admitted = Admitted::new(
        "wh-immutable",
        Features {
            cluster_topology: true,
        },
    )
    .await;
    let (ok, _, err) = admitted
        .apply(&manifest(
            "DockerMachine",
            "m1",
            "  customImage: kindest/node:v1.35.0\n",
        ))
        .await;
    assert!(ok, "{err}");
    let before = admitted.get("dockermachine", "m1").await.unwrap();
    let (ok, _, err) = admitted
        .apply(&manifest(
            "DockerMachine",
            "m1",
            "  customImage: kindest/node:v1.36.0\n",
        ))
        .await;
    assert!(
        !ok && err.contains("spec.customImage: Forbidden: cannot be modified"),
        "{err}"
    );
    assert_eq!(
        admitted.get("dockermachine", "m1").await.unwrap(),
        before,
        "the stored DockerMachine changed"
    );

    let template = |image: &str| {
        manifest(
            "DockerMachineTemplate",
            "t1",
            &format!("  template:\n    spec:\n      customImage: {image}\n"),
        )
    };
    let (ok, _, err) = admitted.apply(&template("kindest/node:v1.35.0")).await;
    assert!(ok, "{err}");
    let before = admitted.get("dockermachinetemplate", "t1").await.unwrap();
    let (ok, _, err) = admitted.apply(&template("kindest/node:v1.36.0")).await;
    assert!(!ok, "the template's spec changed");
    assert!(
        err.contains("spec.template.spec field is immutable")
            && err.contains(r#"customImage: "kindest/node:v1.35.0" -> "kindest/node:v1.36.0""#),
        "{err}"
    );
    assert_eq!(
        admitted.get("dockermachinetemplate", "t1").await.unwrap(),
        before
    );

    let cluster_template = |tag: &str| {
        manifest(
            "DockerClusterTemplate",
            "ct1",
            &format!("  template:\n    spec:\n      loadBalancer:\n        imageTag: {tag}\n"),
        )
    };
    let (ok, _, err) = admitted.apply(&cluster_template("v1")).await;
    assert!(ok, "{err}");
    let (ok, _, err) = admitted.apply(&cluster_template("v2")).await;
    assert!(
        !ok && err.contains("DockerClusterTemplate spec.template.spec field is immutable"),
        "{err}"
    );
}

/// Completes a TLS handshake with 127.0.0.1:`port` trusting only `ca_pem`.
async fn handshake(port: u16, ca_pem: &str) -> Result<(), String> {
    handshake_with(port, ca_pem, rustls::DEFAULT_VERSIONS).await
}

/// [`handshake`] offering only the protocol `versions`.
async fn handshake_with(
    port: u16,
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    connector
        .connect(name, tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let first = Pki::mint("first-ca");
    let server = WebhookServer::start(&first, Features::default());
    wait_for("the first certificate", Duration::from_secs(10), || async {
        handshake(server.port, &first.ca_pem).await.ok()
    })
    .await;

    let second = Pki::mint("second-ca");
    assert!(
        handshake(server.port, &second.ca_pem).await.is_err(),
        "the second CA is trusted before rotation"
    );
    second.install(&server.cert_dir);
    wait_for(
        "the rotated certificate",
        Duration::from_secs(10),
        || async { handshake(server.port, &second.ca_pem).await.ok() },
    )
    .await;
    let old = handshake(server.port, &first.ca_pem).await;
    assert!(
        old.is_err(),
        "the old certificate is still served after rotation"
    );
}

#[tokio::test]
async fn a_tls13_minimum_refuses_tls12_clients() {
    let pki = Pki::mint("tls13-ca");
    let tls = TlsOptions {
        min_version: TlsVersion::Tls13,
        ..TlsOptions::default()
    };
    let server = WebhookServer::start_with(&pki, Features::default(), tls);
    wait_for("a TLS 1.3 handshake", Duration::from_secs(10), || async {
        handshake_with(server.port, &pki.ca_pem, &[&rustls::version::TLS13])
            .await
            .ok()
    })
    .await;
    let refused = handshake_with(server.port, &pki.ca_pem, &[&rustls::version::TLS12])
        .await
        .expect_err("a TLS 1.2-only client was served");
    assert!(refused.contains("ProtocolVersion"), "{refused}");
}
