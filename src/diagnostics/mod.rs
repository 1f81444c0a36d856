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
//!
//! This module binds and serves; the review of each request (bearer token, TokenReview,
//! SubjectAccessReview, caches, retries) is in `auth`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum_server::tls_rustls::RustlsConfig;
use prometheus_client::registry::Registry;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::info;

use crate::tls::TlsOptions;
use crate::webhooks::tls::{CertFiles, ReloadingCert, TlsError};

mod auth;

pub use auth::{Authentication, Verdict, access_review, allowed, bearer_token};
use auth::{Guard, authorize};

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
    use axum::extract::Request;

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
