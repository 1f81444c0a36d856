//! The diagnostics server for real: metrics over HTTPS with a self-signed certificate, every
//! scrape reviewed by the test apiserver (TokenReview, then SubjectAccessReview for `get` on
//! `/metrics`) with ServiceAccount tokens from the TokenRequest API; and plain HTTP when insecure.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use capd::diagnostics::{self, DiagnosticsError, Security, ServingCert};
use capd::tls::TlsOptions;
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::support::{TestContext, kubectl, wait_for, wait_gone};

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

/// Cluster-scoped RBAC objects a test creates (a namespace's deletion does not take them);
/// deleted on drop, also when the test fails halfway.
struct ClusterRbac {
    name: String,
}

impl Drop for ClusterRbac {
    fn drop(&mut self) {
        let (ok, _, err) = kubectl(&[
            "delete",
            &format!("clusterrolebinding/{}", self.name),
            &format!("clusterrole/{}", self.name),
            "--ignore-not-found",
            "--wait=false",
        ]);
        if !ok {
            eprintln!("deleting the ClusterRole/Binding {}: {err}", self.name);
        }
    }
}

/// Allows `service_account` in `namespace` to `get` the non-resource URL `/metrics`.
async fn allow_metrics(kube: &kube::Client, name: &str, namespace: &str, service_account: &str) {
    let post = PostParams::default();
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            non_resource_urls: Some(vec!["/metrics".to_owned()]),
            verbs: vec!["get".to_owned()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(kube.clone())
        .create(&post, &role)
        .await
        .unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: service_account.to_owned(),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(kube.clone())
        .create(&post, &binding)
        .await
        .unwrap();
}

/// Creates ServiceAccount `name` and mints a 10-minute token for it.
async fn service_account_token(ctx: &TestContext, name: &str) -> String {
    let api = ctx.api::<ServiceAccount>();
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &account).await.unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(600),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let token = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .expect("a TokenRequest status")
        .token;
    assert!(!token.is_empty(), "an empty token for {name}");
    token
}

/// Waits until the apiserver authenticates `token` (ServiceAccount lookups go through caches).
async fn wait_authenticated(kube: &kube::Client, token: &str) {
    let api = Api::<TokenReview>::all(kube.clone());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: None,
        },
        ..Default::default()
    };
    wait_for(
        "the token to be authenticated",
        Duration::from_secs(30),
        || async {
            let answer = api.create(&PostParams::default(), &review).await.ok()?;
            answer.status?.authenticated?.then_some(())
        },
    )
    .await;
}

/// Waits until RBAC lets `user` (a ServiceAccount of `namespace`) get `/metrics`: the
/// apiserver's authorizer sees new bindings through its informers, and the server under test
/// caches a denial for 30 s, so it must not be asked before.
async fn wait_allowed(kube: &kube::Client, user: &str, namespace: &str) {
    let api = Api::<SubjectAccessReview>::all(kube.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_owned(),
            ]),
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some("/metrics".to_owned()),
                verb: Some("get".to_owned()),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    wait_for(
        "RBAC to allow the reader",
        Duration::from_secs(30),
        || async {
            let answer = api.create(&PostParams::default(), &review).await.ok()?;
            answer.status?.allowed.then_some(())
        },
    )
    .await;
}

/// GETs `url`, with `token` as bearer when given; returns the status, content type and body.
async fn scrape(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.unwrap())
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

    let reader = service_account_token(&ctx, "reader").await;
    let stranger = service_account_token(&ctx, "stranger").await;
    allow_metrics(&ctx.kube, &rbac.name, &ctx.namespace, "reader").await;
    let reader_user = format!("system:serviceaccount:{}:reader", ctx.namespace);
    wait_allowed(&ctx.kube, &reader_user, &ctx.namespace).await;
    wait_authenticated(&ctx.kube, &reader).await;
    wait_authenticated(&ctx.kube, &stranger).await;

    // The self-signed certificate is accepted in this test only.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
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
