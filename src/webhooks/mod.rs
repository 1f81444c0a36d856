//! The admission webhooks: defaulting and validation of the provider's kinds over HTTPS, on
//! CAPD's paths (`/mutate-infrastructure-cluster-x-k8s-io-v1beta2-<kind>`, `/validate-...`).
//!
//! The rules are pure functions per kind ([`docker_cluster`], [`docker_machine`]); [`admission`]
//! adapts them to AdmissionReview; this module routes and serves them with a reloading
//! certificate ([`tls`]).

pub mod admission;
pub mod docker_cluster;
pub mod docker_machine;
pub mod field;
pub mod rules;
pub mod tls;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use tower_http::timeout::TimeoutLayer;

use crate::tls::TlsOptions;
use admission::{Action, AdmissionKind, Features};
use docker_cluster::{DockerClusterTemplateWebhook, DockerClusterWebhook};
use docker_machine::{DockerMachineTemplateWebhook, DockerMachineWebhook};
use tls::{CertFiles, ReloadingCert, TlsError};

/// The largest request body accepted: an AdmissionReview carries the object twice (new and
/// old) and the apiserver stores objects up to 1.5 MiB.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long one request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL path of a webhook, as CAPD (controller-runtime) names it.
pub fn path(action: Action, kind: &str) -> String {
    let verb = match action {
        Action::Mutate => "mutate",
        Action::Validate => "validate",
    };
    format!(
        "/{verb}-infrastructure-cluster-x-k8s-io-v1beta2-{}",
        kind.to_lowercase()
    )
}

fn route<K: AdmissionKind + 'static>(router: Router, action: Action, features: Features) -> Router {
    router.route(
        &path(action, K::KIND),
        post(move |body: Bytes| async move {
            match admission::review::<K>(action, &body, features) {
                Ok(review) => axum::Json(review).into_response(),
                Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            }
        }),
    )
}

/// The webhook routes: mutating for the kinds with defaults, validating for all four.
pub fn router(features: Features) -> Router {
    let mut router = Router::new();
    router = route::<DockerClusterWebhook>(router, Action::Mutate, features);
    router = route::<DockerClusterTemplateWebhook>(router, Action::Mutate, features);
    router = route::<DockerClusterWebhook>(router, Action::Validate, features);
    router = route::<DockerClusterTemplateWebhook>(router, Action::Validate, features);
    router = route::<DockerMachineWebhook>(router, Action::Validate, features);
    router = route::<DockerMachineTemplateWebhook>(router, Action::Validate, features);
    router
        .fallback(|| async { (StatusCode::NOT_FOUND, "no webhook at this path").into_response() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

/// Errors that stop the webhook server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The serving certificate could not be loaded at start.
    #[error("webhook certificate: {0}")]
    Tls(#[from] TlsError),
    /// The listener failed.
    #[error("webhook server: {0}")]
    Io(#[from] std::io::Error),
}

/// How the webhook server serves.
pub struct ServeOptions {
    /// The certificate files, checked for a new pair every `reload_every`.
    pub cert: CertFiles,
    /// How often the certificate files are checked.
    pub reload_every: Duration,
    /// The TLS options (`--tls-min-version`, `--tls-cipher-suites`).
    pub tls: TlsOptions,
    /// The feature gates the rules depend on.
    pub features: Features,
    /// Where admission requests are counted and timed.
    pub metrics: crate::metrics::Metrics,
}

/// Serves the webhooks over TLS on `listener` as `options` say, until `shutdown` resolves;
/// `serving` is called once the server accepts connections.
pub async fn serve(
    listener: std::net::TcpListener,
    options: ServeOptions,
    serving: impl FnOnce() + Send + 'static,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let cert = ReloadingCert::load(options.cert, options.tls)?;
    let server_config = cert.config();
    let follower = tokio::spawn(cert.follow(options.reload_every));
    let handle = axum_server::Handle::new();
    listener.set_nonblocking(true)?;
    let app = metered(router(options.features), options.metrics);
    let server = axum_server::from_tcp_rustls(listener, server_config)?
        .handle(handle.clone())
        .serve(app.into_make_service());
    let listening = handle.clone();
    tokio::spawn(async move {
        if listening.listening().await.is_some() {
            serving();
        }
    });
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
            server.await
        }
    };
    follower.abort();
    Ok(result?)
}

/// `router` with each admission request counted and timed by webhook path and HTTP status
/// (controller-runtime's `controller_runtime_webhook_*` metrics).
pub fn metered(router: Router, metrics: crate::metrics::Metrics) -> Router {
    router.route_layer(axum::middleware::from_fn_with_state(metrics, record))
}

async fn record(
    axum::extract::State(metrics): axum::extract::State<crate::metrics::Metrics>,
    path: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let _in_flight = metrics.webhook_in_flight(path.as_str());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.webhook_request(path.as_str(), response.status().as_u16(), started.elapsed());
    response
}
