//! The diagnostics server (`--diagnostics-address`, `--insecure-diagnostics`): Prometheus
//! metrics at `/metrics`, as CAPD serves them through controller-runtime's metrics server.
//!
//! Secure by default, as Cluster API's `util/flags/manager.go` (v1.14.0) configures it: HTTPS
//! under the manager's [`TlsOptions`], with a certificate from controller-runtime's default
//! directory or else a self-signed one made in memory at start, and every request to `/metrics`
//! authenticated with a TokenReview of its bearer token and authorized with a
//! SubjectAccessReview of its path and lowercase method (`get` on `/metrics`), as
//! controller-runtime's `filters.WithAuthenticationAndAuthorization` (v0.24.1) does, decisions
//! cached as it caches them, refusals answered with its statuses and texts ([`Verdict`]). With
//! `--insecure-diagnostics`: plain HTTP, no authentication.
//!
//! One deliberate difference: a bearer token that the TokenReview refuses is answered 401
//! `Unauthorized`, as a missing one is. controller-runtime answers it 500 `Authentication
//! failed`, because k8s.io/apiserver's bearer-token authenticator turns every refusal into an
//! error; capd-rs keeps 500 for reviews that could not be made.
//!
//! The metrics are encoded from a shared [`Registry`]; what is registered in it is decided
//! elsewhere. CAPD's secure server also serves `/debug/pprof/*` and `/debug/flags/v`; capd-rs
//! has neither (any other path is answered 404, as Go's mux does, without authentication).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::api::authentication::v1::{
    TokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo,
};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::{Api, PostParams};
use prometheus_client::registry::Registry;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{debug, error, info};

use crate::tls::TlsOptions;
use crate::webhooks::tls::{CertFiles, ReloadingCert, TlsError};

/// The default `--diagnostics-address` (CAPI's flag default).
pub const DEFAULT_ADDRESS: &str = ":8443";
/// The address controller-runtime's metrics server takes when given an empty one.
const CONTROLLER_RUNTIME_DEFAULT_ADDRESS: &str = ":8080";
/// The content type of the Prometheus text format (0.0.4), which controller-runtime serves.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How long a graceful shutdown waits for open requests (controller-runtime: one minute).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// How often certificate files are checked for a new certificate (controller-runtime's
/// certwatcher interval).
const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Parses a Go `host:port` listen address: an empty host is every interface (`[::]`, which
/// Linux serves dual-stack, as Go does), `localhost` is 127.0.0.1, IPv6 hosts are in brackets,
/// and an empty port is any free port. Other host names and service names are refused.
pub fn parse_bind_address(text: &str) -> Result<SocketAddr, String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("address {text}: missing port in address"));
    };
    let port: u16 = if port.is_empty() {
        0
    } else if port.bytes().all(|b| b.is_ascii_digit()) {
        port.parse()
            .map_err(|_| format!("address {text}: invalid port {port:?}"))?
    } else {
        return Err(format!(
            "address {text}: invalid port {port:?} (give a number; service names are not looked up)"
        ));
    };
    if let Some(inner) = host.strip_prefix('[') {
        let Some(ip) = inner.strip_suffix(']') else {
            return Err(format!("address {text}: missing ']' in address"));
        };
        // A zone, if any, must be numeric (SocketAddrV6 parses "fe80::1%2").
        return format!("[{ip}]:{port}")
            .parse::<SocketAddrV6>()
            .map(SocketAddr::V6)
            .map_err(|_| format!("address {text}: {ip:?} is not an IPv6 address"));
    }
    if host.contains(':') {
        return Err(format!("address {text}: too many colons in address"));
    }
    let ip = match host {
        "" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        host => host.parse().map_err(|_| {
            format!(
                "address {text}: host {host:?} is not an IP address (only localhost is resolved)"
            )
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Binds `addr`; every-interface IPv6 falls back to every IPv4 interface on hosts without IPv6.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr) {
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, addr.port())).map_err(|_| e)
        }
        result => result,
    }
}

/// A `--diagnostics-address` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagnosticsAddress {
    /// `0`: no diagnostics server (controller-runtime's `BindAddress == "0"`).
    Disabled,
    /// Listen there.
    Listen(SocketAddr),
}

impl FromStr for DiagnosticsAddress {
    type Err = String;

    /// `0` disables the server; an empty value is controller-runtime's default, `:8080`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "0" => Ok(Self::Disabled),
            "" => parse_bind_address(CONTROLLER_RUNTIME_DEFAULT_ADDRESS).map(Self::Listen),
            text => parse_bind_address(text).map(Self::Listen),
        }
    }
}

/// Where the secure server's certificate comes from.
#[derive(Clone, Debug)]
pub enum ServingCert {
    /// A certificate for `localhost` and 127.0.0.1, signed by a CA made with it, both in memory.
    SelfSigned,
    /// PEM files, reloaded when they change.
    Files(CertFiles),
}

impl ServingCert {
    /// controller-runtime's choice: `tls.crt` and `tls.key` in
    /// `$TMPDIR/k8s-metrics-server/serving-certs` when both exist, a self-signed certificate
    /// otherwise (a file that cannot be checked counts as existing, and then fails to load).
    pub fn controller_runtime_default() -> Self {
        let dir: PathBuf = std::env::temp_dir().join("k8s-metrics-server/serving-certs");
        let files = CertFiles::in_dir(&dir, "tls.crt", "tls.key");
        let exists = |path: &std::path::Path| !matches!(std::fs::metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if exists(&files.cert) && exists(&files.key) {
            Self::Files(files)
        } else {
            Self::SelfSigned
        }
    }
}

/// How the server is protected.
#[derive(Clone)]
pub enum Security {
    /// `--insecure-diagnostics`: plain HTTP, no authentication or authorization.
    Insecure,
    /// HTTPS; every request is reviewed by the Kubernetes API of `kube`.
    Secure {
        /// The client that creates TokenReviews and SubjectAccessReviews.
        kube: kube::Client,
        /// The manager's TLS options.
        tls: TlsOptions,
        /// The certificate served.
        cert: ServingCert,
    },
}

/// Why the diagnostics server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DiagnosticsError {
    /// The certificate files could not be loaded.
    #[error("diagnostics certificate: {0}")]
    Cert(#[from] TlsError),
    /// The self-signed certificate could not be made.
    #[error("self-signed diagnostics certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    /// The TLS options and the certificate do not make a server configuration.
    #[error("diagnostics TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The listener failed.
    #[error("diagnostics server: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the diagnostics on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    security: Security,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DiagnosticsError> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let mut follower = None;
    let result = match security {
        Security::Insecure => {
            let app = router(registry, None).into_make_service();
            let server = axum_server::from_tcp(listener)?
                .handle(handle.clone())
                .serve(app);
            run(server, &handle, shutdown).await
        }
        Security::Secure { kube, tls, cert } => {
            let config = match cert {
                ServingCert::SelfSigned => {
                    let (chain, key) = self_signed()?;
                    RustlsConfig::from_config(tls.server_config(chain, key)?)
                }
                ServingCert::Files(files) => {
                    let cert = ReloadingCert::load(files, tls)?;
                    let config = cert.config();
                    follower = Some(tokio::spawn(cert.follow(CERT_RELOAD_INTERVAL)));
                    config
                }
            };
            let app = router(registry, Some(Arc::new(Guard::new(kube)))).into_make_service();
            let server = axum_server::from_tcp_rustls(listener, config)?
                .handle(handle.clone())
                .serve(app);
            run(server, &handle, shutdown).await
        }
    };
    if let Some(follower) = follower {
        follower.abort();
    }
    Ok(result?)
}

async fn run(
    server: impl Future<Output = std::io::Result<()>>,
    handle: &axum_server::Handle<SocketAddr>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
            server.await
        }
    }
}

/// `/metrics`, behind the guard when there is one; 404 elsewhere.
fn router(registry: Arc<Registry>, guard: Option<Arc<Guard>>) -> Router {
    let mut metrics = Router::new().route(
        "/metrics",
        any(move || {
            let registry = registry.clone();
            async move { metrics(&registry) }
        }),
    );
    if let Some(guard) = guard {
        metrics = metrics.route_layer(middleware::from_fn_with_state(guard, authorize));
    }
    metrics.fallback(|| async { go_error(StatusCode::NOT_FOUND, "404 page not found") })
}

fn metrics(registry: &Registry) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut body, registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        // promhttp's HTTPErrorOnError answer.
        Err(e) => go_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("An error has occurred while serving metrics:\n\n{e}"),
        ),
    }
}

/// An answer as Go's `http.Error` writes it.
fn go_error(status: StatusCode, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    (status, headers, format!("{message}\n")).into_response()
}

/// The bearer token of an `Authorization` header, as k8s.io/apiserver's bearertoken
/// authenticator reads it: trimmed, scheme case-insensitive, split on single spaces, and none
/// when empty (so `Bearer  x`, with two spaces, has none).
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let auth = authorization?.trim();
    let mut parts = auth.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a TokenReview said of a token.
#[derive(Clone, Debug, PartialEq)]
pub enum Authentication {
    /// The token is valid: the user, with `system:authenticated` added as the apiserver's
    /// group adder does.
    User(UserInfo),
    /// The token is not valid; `error` is the review's explanation, if any.
    Refused {
        /// `status.error` of the review.
        error: Option<String>,
    },
}

impl Authentication {
    /// Reads a TokenReview's status.
    pub fn from_status(status: Option<&TokenReviewStatus>) -> Self {
        match status {
            Some(TokenReviewStatus {
                authenticated: Some(true),
                user,
                ..
            }) => Self::User(with_authenticated_group(user.clone().unwrap_or_default())),
            _ => Self::Refused {
                error: status
                    .and_then(|s| s.error.clone())
                    .filter(|e| !e.is_empty()),
            },
        }
    }
}

/// k8s.io/apiserver's `AuthenticatedGroupAdder`: every authenticated user but the anonymous one
/// is in `system:authenticated`, unless already in it or in `system:unauthenticated`.
fn with_authenticated_group(mut user: UserInfo) -> UserInfo {
    const AUTHENTICATED: &str = "system:authenticated";
    if user.username.as_deref() == Some("system:anonymous") {
        return user;
    }
    let groups = user.groups.get_or_insert_with(Vec::new);
    if !groups
        .iter()
        .any(|g| g == AUTHENTICATED || g == "system:unauthenticated")
    {
        groups.push(AUTHENTICATED.to_owned());
    }
    user
}

/// The SubjectAccessReview of `user` doing `verb` on the non-resource URL `path`.
pub fn access_review(user: &UserInfo, verb: &str, path: &str) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: user.username.clone(),
        uid: user.uid.clone(),
        groups: user.groups.clone(),
        extra: user.extra.clone(),
        non_resource_attributes: Some(NonResourceAttributes {
            path: Some(path.to_owned()),
            verb: Some(verb.to_owned()),
        }),
        resource_attributes: None,
    }
}

/// Whether a SubjectAccessReview's status allows; an error when it both allows and denies.
pub fn allowed(status: &SubjectAccessReviewStatus) -> Result<bool, String> {
    match (status.allowed, status.denied.unwrap_or(false)) {
        (true, true) => {
            Err("webhook subject access review returned both allow and deny response".to_owned())
        }
        (allowed, _) => Ok(allowed),
    }
}

/// The outcome of a request's review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// No bearer token, or one the TokenReview refused.
    Unauthenticated,
    /// The TokenReview could not be made.
    AuthenticationFailed,
    /// The SubjectAccessReview did not allow `user`.
    Denied {
        /// The user name.
        user: String,
    },
    /// The SubjectAccessReview could not be made or was contradictory.
    AuthorizationFailed {
        /// The user name.
        user: String,
    },
}

impl Verdict {
    /// The status and message controller-runtime answers with; none for [`Verdict::Allow`].
    pub fn refusal(&self) -> Option<(StatusCode, String)> {
        match self {
            Self::Allow => None,
            Self::Unauthenticated => Some((StatusCode::UNAUTHORIZED, "Unauthorized".to_owned())),
            Self::AuthenticationFailed => Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                "Authentication failed".to_owned(),
            )),
            Self::Denied { user } => Some((
                StatusCode::FORBIDDEN,
                format!("Authorization denied for user {user}"),
            )),
            Self::AuthorizationFailed { user } => Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Authorization for user {user} failed"),
            )),
        }
    }
}

async fn authorize(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let token = bearer_token(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let verb = request.method().as_str().to_lowercase();
    let verdict = guard.review(token, &verb, request.uri().path()).await;
    match verdict.refusal() {
        None => next.run(request).await,
        Some((status, message)) => go_error(status, &message),
    }
}

/// Why a review could not be made.
#[derive(Debug, thiserror::Error)]
enum ReviewError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Contradiction(String),
}

/// How long authentication answers are kept (controller-runtime: `CacheTTL`).
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long an allowing authorization answer is kept (`AllowCacheTTL`).
const ALLOW_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a denying authorization answer is kept (`DenyCacheTTL`).
const DENY_TTL: Duration = Duration::from_secs(30);
/// The time limit of one review, retries included (`TokenAccessReviewTimeout`; capd-rs bounds
/// SubjectAccessReviews the same way).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// The most entries a cache holds.
const CACHE_ENTRIES: usize = 4096;

/// Authenticates and authorizes requests through the Kubernetes API, with caches.
struct Guard {
    kube: kube::Client,
    tokens: Mutex<TtlCache<[u8; 32], Authentication>>,
    reviews: Mutex<TtlCache<String, SubjectAccessReviewStatus>>,
}

impl Guard {
    fn new(kube: kube::Client) -> Self {
        Self {
            kube,
            tokens: Mutex::new(TtlCache::new(CACHE_ENTRIES)),
            reviews: Mutex::new(TtlCache::new(CACHE_ENTRIES)),
        }
    }

    async fn review(&self, token: Option<&str>, verb: &str, path: &str) -> Verdict {
        let Some(token) = token else {
            debug!(path, "Authentication failed: no bearer token");
            return Verdict::Unauthenticated;
        };
        let user = match self.authenticate(token).await {
            Ok(Authentication::User(user)) => user,
            Ok(Authentication::Refused { error }) => {
                debug!(
                    path,
                    error = error.as_deref().unwrap_or(""),
                    "Authentication failed"
                );
                return Verdict::Unauthenticated;
            }
            Err(e) => {
                error!(path, error = %e, "Authentication failed");
                return Verdict::AuthenticationFailed;
            }
        };
        let name = user.username.clone().unwrap_or_default();
        match self.authorize(&user, verb, path).await {
            Ok(true) => Verdict::Allow,
            Ok(false) => {
                debug!(path, user = %name, "Authorization denied");
                Verdict::Denied { user: name }
            }
            Err(e) => {
                error!(path, user = %name, error = %e, "Authorization failed");
                Verdict::AuthorizationFailed { user: name }
            }
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Authentication, ReviewError> {
        let key = sha256(token);
        if let Some(hit) = lock(&self.tokens).get(&key, Instant::now()) {
            return Ok(hit);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.kube.clone());
        let post = PostParams::default();
        let answer = with_retries(|| api.create(&post, &review)).await?;
        let authentication = Authentication::from_status(answer.status.as_ref());
        // As k8s.io/apiserver's token cache with cacheErrs=false: a refusal carrying an error
        // is not kept.
        if !matches!(authentication, Authentication::Refused { error: Some(_) }) {
            lock(&self.tokens).insert(key, authentication.clone(), Instant::now(), TOKEN_TTL);
        }
        Ok(authentication)
    }

    async fn authorize(
        &self,
        user: &UserInfo,
        verb: &str,
        path: &str,
    ) -> Result<bool, ReviewError> {
        let spec = access_review(user, verb, path);
        // The review itself is the key, as in k8s.io/apiserver's webhook authorizer.
        let key = serde_json::to_string(&spec).ok();
        let cached = key
            .as_ref()
            .and_then(|key| lock(&self.reviews).get(key, Instant::now()));
        let status = match cached {
            Some(status) => status,
            None => {
                let review = SubjectAccessReview {
                    spec,
                    ..Default::default()
                };
                let api: Api<SubjectAccessReview> = Api::all(self.kube.clone());
                let post = PostParams::default();
                let answer = with_retries(|| api.create(&post, &review)).await?;
                let status = answer.status.unwrap_or_default();
                if let Some(key) = key {
                    let ttl = if status.allowed { ALLOW_TTL } else { DENY_TTL };
                    lock(&self.reviews).insert(key, status.clone(), Instant::now(), ttl);
                }
                status
            }
        };
        allowed(&status).map_err(ReviewError::Contradiction)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sha256(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The waits between attempts (k8s.io/apiserver's webhook backoff: 500 ms, factor 1.5, five
/// attempts; without its jitter).
const RETRY_WAITS: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_millis(750),
    Duration::from_millis(1125),
    Duration::from_millis(1688),
];

/// Calls `call` until it succeeds, fails for good, or [`REVIEW_TIMEOUT`] passes.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, ReviewError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let attempts = async {
        let mut waits = RETRY_WAITS.iter();
        loop {
            match call().await {
                Err(e) if should_retry(&e) => match waits.next() {
                    Some(wait) => tokio::time::sleep(*wait).await,
                    None => return Err(e),
                },
                result => return result,
            }
        }
    };
    tokio::time::timeout(REVIEW_TIMEOUT, attempts)
        .await
        .map_err(|_| ReviewError::Timeout(REVIEW_TIMEOUT))?
        .map_err(ReviewError::Api)
}

/// k8s.io/apiserver's `DefaultShouldRetry`: internal errors, timeouts, throttling, an explicit
/// Retry-After, and broken connections are transient.
fn should_retry(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            matches!(status.code, 429 | 500 | 504)
                || matches!(
                    status.reason.as_str(),
                    "InternalError" | "Timeout" | "ServerTimeout" | "TooManyRequests"
                )
                || status
                    .details
                    .as_ref()
                    .is_some_and(|d| d.retry_after_seconds > 0)
        }
        kube::Error::HyperError(_) => true,
        _ => false,
    }
}

/// A map whose entries expire, holding at most `capacity` of them.
struct TtlCache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(expires, _)| now < *expires)
            .map(|(_, value)| value.clone())
    }

    /// Keeps `value` for `ttl` from `now`; when full, drops the expired entries first, and
    /// everything if none had expired.
    fn insert(&mut self, key: K, value: V, now: Instant, ttl: Duration) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (expires, _)| now < *expires);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (now + ttl, value));
    }
}

/// A serving certificate as client-go's `GenerateSelfSignedCertKeyWithFixtures("localhost",
/// [127.0.0.1])` makes it for controller-runtime: a CA `localhost-ca@<unix time>` and a leaf
/// `localhost@<unix time>` for `localhost` and 127.0.0.1, valid from an hour ago for a year,
/// served as leaf then CA. Keys are ECDSA P-256 (client-go's are RSA 2048, which ring cannot
/// generate).
fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let now = time::OffsetDateTime::now_utc();
    let valid_from = now - time::Duration::hours(1);
    let valid_until = valid_from + time::Duration::days(365);
    let unix = now.unix_timestamp();

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, format!("localhost-ca@{unix}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    ca.not_before = valid_from;
    ca.not_after = valid_until;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("localhost@{unix}"));
    leaf.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = valid_from;
    leaf.not_after = valid_until;
    let leaf_cert = leaf.signed_by(&key, &issuer)?;
    info!("serving diagnostics with a self-signed certificate");
    Ok((
        vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_parse_as_go_listens() {
        let ok = |text: &str| parse_bind_address(text).unwrap();
        assert_eq!(ok(":8443"), "[::]:8443".parse().unwrap());
        assert_eq!(ok("0.0.0.0:8443"), "0.0.0.0:8443".parse().unwrap());
        assert_eq!(ok("127.0.0.1:0"), "127.0.0.1:0".parse().unwrap());
        assert_eq!(ok("[::]:8443"), "[::]:8443".parse().unwrap());
        assert_eq!(ok("[::1]:9440"), "[::1]:9440".parse().unwrap());
        assert_eq!(ok("localhost:9440"), "127.0.0.1:9440".parse().unwrap());
        assert_eq!(ok("127.0.0.1:"), "127.0.0.1:0".parse().unwrap());
        assert_eq!(ok("[fe80::1%2]:80"), "[fe80::1%2]:80".parse().unwrap());
        for (bad, why) in [
            ("8443", "missing port"),
            ("0", "missing port"),
            ("", "missing port"),
            ("::1:8443", "too many colons"),
            ("[::1:8443", "missing ']'"),
            ("[127.0.0.1]:80", "not an IPv6 address"),
            ("example.com:80", "only localhost is resolved"),
            (":http", "service names are not looked up"),
            (":65536", "invalid port"),
            (":-1", "invalid port"),
            ("300.1.1.1:80", "not an IP address"),
        ] {
            let err = parse_bind_address(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn zero_disables_and_empty_is_controller_runtime_default() {
        assert_eq!("0".parse(), Ok(DiagnosticsAddress::Disabled));
        assert_eq!(
            "".parse(),
            Ok(DiagnosticsAddress::Listen("[::]:8080".parse().unwrap()))
        );
        assert_eq!(
            DEFAULT_ADDRESS.parse(),
            Ok(DiagnosticsAddress::Listen("[::]:8443".parse().unwrap()))
        );
        assert!("nope".parse::<DiagnosticsAddress>().is_err());
    }

    #[test]
    fn bearer_tokens_are_read_as_the_apiserver_reads_them() {
        assert_eq!(bearer_token(None), None);
        assert_eq!(bearer_token(Some("")), None);
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("  BEARER abc  ")), Some("abc"));
        assert_eq!(bearer_token(Some("Bearer abc def")), Some("abc"));
        assert_eq!(bearer_token(Some("Bearer  abc")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(Some("Basic YTpi")), None);
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: Some(name.to_owned()),
            uid: Some("uid-1".to_owned()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            extra: None,
        }
    }

    #[test]
    fn token_reviews_become_users_in_system_authenticated() {
        let reviewed = |authenticated, user: Option<UserInfo>, error: Option<&str>| {
            Authentication::from_status(Some(&TokenReviewStatus {
                authenticated,
                user,
                error: error.map(str::to_owned),
                audiences: None,
            }))
        };
        let Authentication::User(u) = reviewed(Some(true), Some(user("sa", &["a"])), None) else {
            panic!("not authenticated");
        };
        assert_eq!(u.groups.unwrap(), ["a", "system:authenticated"]);
        let Authentication::User(u) = reviewed(
            Some(true),
            Some(user("sa", &["system:authenticated"])),
            None,
        ) else {
            panic!("not authenticated");
        };
        assert_eq!(u.groups.unwrap(), ["system:authenticated"]);
        let Authentication::User(u) =
            reviewed(Some(true), Some(user("system:anonymous", &[])), None)
        else {
            panic!("not authenticated");
        };
        assert!(u.groups.unwrap().is_empty());

        assert_eq!(
            reviewed(Some(false), None, Some("invalid bearer token")),
            Authentication::Refused {
                error: Some("invalid bearer token".to_owned())
            }
        );
        assert_eq!(
            reviewed(None, None, Some("")),
            Authentication::Refused { error: None }
        );
        assert_eq!(
            Authentication::from_status(None),
            Authentication::Refused { error: None }
        );
    }

    #[test]
    fn access_reviews_ask_for_the_verb_on_the_path() {
        let spec = access_review(&user("sa", &["g"]), "get", "/metrics");
        assert_eq!(spec.user.as_deref(), Some("sa"));
        assert_eq!(spec.uid.as_deref(), Some("uid-1"));
        assert_eq!(spec.groups.unwrap(), ["g"]);
        let attributes = spec.non_resource_attributes.unwrap();
        assert_eq!(attributes.path.as_deref(), Some("/metrics"));
        assert_eq!(attributes.verb.as_deref(), Some("get"));
        assert!(spec.resource_attributes.is_none());

        let status = |allowed, denied| SubjectAccessReviewStatus {
            allowed,
            denied,
            ..Default::default()
        };
        assert_eq!(allowed(&status(true, None)), Ok(true));
        assert_eq!(allowed(&status(false, Some(true))), Ok(false));
        assert_eq!(allowed(&status(false, None)), Ok(false));
        assert!(allowed(&status(true, Some(true))).is_err());
    }

    #[test]
    fn refusals_are_controller_runtimes() {
        assert_eq!(Verdict::Allow.refusal(), None);
        assert_eq!(
            Verdict::Unauthenticated.refusal(),
            Some((StatusCode::UNAUTHORIZED, "Unauthorized".to_owned()))
        );
        assert_eq!(
            Verdict::AuthenticationFailed.refusal(),
            Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                "Authentication failed".to_owned()
            ))
        );
        let user = "system:serviceaccount:ns:sa".to_owned();
        assert_eq!(
            Verdict::Denied { user: user.clone() }.refusal(),
            Some((
                StatusCode::FORBIDDEN,
                "Authorization denied for user system:serviceaccount:ns:sa".to_owned()
            ))
        );
        assert_eq!(
            Verdict::AuthorizationFailed { user }.refusal(),
            Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                "Authorization for user system:serviceaccount:ns:sa failed".to_owned()
            ))
        );
    }

    #[test]
    fn transient_api_errors_are_retried() {
        let api = |code: u16, reason: &str| {
            kube::Error::Api(
                kube::core::Status::failure("x", reason)
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(should_retry(&api(500, "InternalError")));
        assert!(should_retry(&api(429, "TooManyRequests")));
        assert!(should_retry(&api(504, "Timeout")));
        assert!(!should_retry(&api(403, "Forbidden")));
        assert!(!should_retry(&api(400, "BadRequest")));
    }

    #[test]
    fn cache_entries_expire_and_the_cache_stays_bounded() {
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut cache = TtlCache::new(2);
        cache.insert(1, "a", now, ttl);
        assert_eq!(cache.get(&1, now), Some("a"));
        assert_eq!(cache.get(&1, now + ttl), None);
        cache.insert(2, "b", now + Duration::from_secs(5), ttl);
        // Full: the expired entry makes room, the live one stays.
        cache.insert(3, "c", now + ttl, ttl);
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.get(&2, now), Some("b"));
        // Full of live entries: everything goes but the newest.
        cache.insert(4, "d", now, ttl);
        assert_eq!(cache.entries.len(), 1);
        assert_eq!(cache.get(&4, now), Some("d"));
    }

    #[test]
    fn the_self_signed_certificate_is_for_localhost_and_chains_to_its_ca() {
        let (chain, key) = self_signed().unwrap();
        assert_eq!(chain.len(), 2);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(chain[1].clone()).unwrap();
        TlsOptions::default()
            .server_config(chain.clone(), key)
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for name in ["localhost", "127.0.0.1"] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            rustls::client::danger::ServerCertVerifier::verify_server_cert(
                verifier.as_ref(),
                &chain[0],
                &chain[1..],
                &name,
                &[],
                now,
            )
            .unwrap();
        }
    }

    #[tokio::test]
    async fn insecure_serves_prometheus_text_and_404_elsewhere() {
        use prometheus_client::metrics::counter::Counter;
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        counter.inc();
        registry.register("capd_rs_unit_test", "A test counter", counter);
        let app = router(Arc::new(registry), None);
        let response = tower::ServiceExt::oneshot(
            app.clone(),
            Request::builder()
                .uri("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains("# TYPE capd_rs_unit_test_total counter\n"),
            "{body}"
        );
        assert!(body.contains("capd_rs_unit_test_total 1"), "{body}");
        assert!(
            !body.contains("# EOF"),
            "Prometheus text, not OpenMetrics: {body}"
        );

        let response = tower::ServiceExt::oneshot(
            app,
            Request::builder()
                .uri("/other")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 10)
            .await
            .unwrap();
        assert_eq!(&body[..], b"404 page not found\n");
    }
}
