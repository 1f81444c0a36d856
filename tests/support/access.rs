//! ServiceAccounts, their tokens and RBAC for tests that act as a user of the provider (a
//! metrics scraper, a manager with least privilege), and scraping with them.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};

use super::{TestContext, control_plane, kubectl, wait_for};

/// Cluster-scoped RBAC objects a test creates (a namespace's deletion does not take them);
/// deleted on drop, also when the test fails halfway.
pub struct ClusterRbac {
    /// The ClusterRole's and ClusterRoleBinding's name.
    pub name: String,
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
pub async fn allow_metrics(
    kube: &kube::Client,
    name: &str,
    namespace: &str,
    service_account: &str,
) {
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
pub async fn service_account_token(ctx: &TestContext, name: &str) -> String {
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    ctx.api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let token = mint_token(&ctx.kube, &ctx.namespace, name, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(!token.is_empty(), "an empty token for {name}");
    token
}

/// A token of ServiceAccount `namespace/account`, valid for `lifetime`, from the TokenRequest
/// API.
pub async fn mint_token(
    client: &kube::Client,
    namespace: &str,
    account: &str,
    lifetime: Duration,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(i64::try_from(lifetime.as_secs())?),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("a token for ServiceAccount {namespace}/{account}"))?;
    Ok(answer
        .status
        .context("a TokenRequest without status")?
        .token)
}

/// Waits until the apiserver authenticates `token` (ServiceAccount lookups go through caches).
pub async fn wait_authenticated(kube: &kube::Client, token: &str) {
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
pub async fn wait_allowed(kube: &kube::Client, user: &str, namespace: &str) {
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
pub async fn scrape(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> (u16, String, String) {
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

/// Two ServiceAccount tokens of a test's namespace, ready to use against the apiserver: one
/// allowed to `get` `/metrics` (through the ClusterRole and binding `rbac`), one not.
pub struct MetricsTokens {
    /// The token of `reader`, allowed.
    pub reader: String,
    /// The token of `stranger`, not allowed.
    pub stranger: String,
}

impl MetricsTokens {
    /// Creates both ServiceAccounts and the grant, and waits until the apiserver authenticates
    /// both tokens and authorizes the reader.
    pub async fn mint(ctx: &TestContext, rbac: &ClusterRbac) -> Self {
        let reader = service_account_token(ctx, "reader").await;
        let stranger = service_account_token(ctx, "stranger").await;
        allow_metrics(&ctx.kube, &rbac.name, &ctx.namespace, "reader").await;
        let reader_user = format!("system:serviceaccount:{}:reader", ctx.namespace);
        wait_allowed(&ctx.kube, &reader_user, &ctx.namespace).await;
        wait_authenticated(&ctx.kube, &reader).await;
        wait_authenticated(&ctx.kube, &stranger).await;
        Self { reader, stranger }
    }
}

/// An HTTP client for a server with a self-signed certificate (the diagnostics server's
/// default), accepting it: for tests only.
pub fn trusting_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("an HTTP client")
}

/// A kubeconfig for the test control plane that authenticates with `token` (a ServiceAccount's),
/// with `namespace` as its default namespace.
pub fn token_kubeconfig(token: &str, namespace: &str) -> String {
    let cp = control_plane::control_plane();
    let admin = std::fs::read_to_string(&cp.kubeconfig).unwrap();
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data:"))
        .expect("the test kubeconfig's CA")
        .trim()
        .to_owned();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: '{}', certificate-authority-data: {ca}}}\nusers:\n- name: sa\n  user: {{token: '{token}'}}\ncontexts:\n- name: sa\n  context: {{cluster: test, user: sa, namespace: '{namespace}'}}\ncurrent-context: sa\n",
        cp.server
    )
}
