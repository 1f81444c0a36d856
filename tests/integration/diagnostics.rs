//! The diagnostics server for real: metrics over HTTPS with a self-signed certificate, every
//! scrape reviewed by the test apiserver (TokenReview, then SubjectAccessReview for `get` on
//! `/metrics`) with ServiceAccount tokens from the TokenRequest API; and plain HTTP when insecure.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use capd::diagnostics::{self, DiagnosticsError, Security, ServingCert};
use capd::tls::TlsOptions;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::Api;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::support::access::{ClusterRbac, MetricsTokens, scrape, trusting_client};
use crate::support::{TestContext, wait_gone};

/// The diagnostics server in the test's runtime; stopped by [`Server::stop`] or on drop.
struct Server {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), DiagnosticsError>>>,
}

impl Server {
    /// Serves a registry holding `capd_rs_diagnostics_test_total` = 3 on a loopback port.
    fn start(security: Security) -> Self {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        counter.inc_by(3);
        registry.register("capd_rs_diagnostics_test", "A test counter", counter);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(diagnostics::serve(
            listener,
            Arc::new(registry),
            security,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            port,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and returns how it ended.
    async fn stop(mut self) -> Result<(), DiagnosticsError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("the server task");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the server stops within 30s")
            .expect("the server task")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_metrics_need_a_token_allowed_to_get_metrics() {
    let ctx = TestContext::new("diagnostics").await;
    let rbac = ClusterRbac {
        name: ctx.name("metrics-reader"),
    };
    let server = Server::start(Security::Secure {
        kube: ctx.kube.clone(),
        tls: TlsOptions::default(),
        cert: ServingCert::SelfSigned,
    });

    let MetricsTokens { reader, stranger } = MetricsTokens::mint(&ctx, &rbac).await;
    let client = trusting_client();
    let url = format!("https://127.0.0.1:{}/metrics", server.port);

    let (status, content_type, body) = scrape(&client, &url, Some(&reader)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, diagnostics::CONTENT_TYPE);
    assert!(
        body.contains("capd_rs_diagnostics_test_total 3"),
        "the counter's series is missing:\n{body}"
    );

    let (status, content_type, body) = scrape(&client, &url, Some(&stranger)).await;
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            format!(
                "Authorization denied for user system:serviceaccount:{}:stranger\n",
                ctx.namespace
            )
            .as_str()
        )
    );
    assert_eq!(content_type, "text/plain; charset=utf-8");

    let (status, _, body) = scrape(&client, &url, None).await;
    assert_eq!((status, body.as_str()), (401, "Unauthorized\n"));
    let (status, _, body) = scrape(&client, &url, Some("not-a-token")).await;
    assert_eq!((status, body.as_str()), (401, "Unauthorized\n"));

    // Cached decisions answer the same.
    let (status, _, _) = scrape(&client, &url, Some(&reader)).await;
    assert_eq!(status, 200);
    let (status, _, _) = scrape(&client, &url, Some(&stranger)).await;
    assert_eq!(status, 403);

    let other = format!("https://127.0.0.1:{}/other", server.port);
    let (status, _, body) = scrape(&client, &other, None).await;
    assert_eq!((status, body.as_str()), (404, "404 page not found\n"));

    server.stop().await.unwrap();

    let name = rbac.name.clone();
    drop(rbac);
    wait_gone(
        &Api::<ClusterRoleBinding>::all(ctx.kube.clone()),
        &name,
        Duration::from_secs(10),
    )
    .await;
    wait_gone(
        &Api::<ClusterRole>::all(ctx.kube.clone()),
        &name,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn secure_metrics_refuse_plain_http() {
    // No review happens before TLS, so no control plane is needed: any client will do.
    let kube =
        kube::Client::try_from(kube::Config::new("https://127.0.0.1:1".parse().unwrap())).unwrap();
    let server = Server::start(Security::Secure {
        kube,
        tls: TlsOptions::default(),
        cert: ServingCert::SelfSigned,
    });
    let plain = reqwest::get(format!("http://127.0.0.1:{}/metrics", server.port)).await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
        "metrics were served over plain HTTP"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn insecure_metrics_are_plain_http_without_a_token() {
    let server = Server::start(Security::Insecure);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/metrics", server.port);
    let (status, content_type, body) = scrape(&client, &url, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, diagnostics::CONTENT_TYPE);
    assert!(body.contains("capd_rs_diagnostics_test_total 3"), "{body}");
    server.stop().await.unwrap();
}
