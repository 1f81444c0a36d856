//! The capd-rs manager: one process serving the provider's controllers and webhooks.
//!
//! It connects to the Kubernetes API and the Docker engine, serves the admission webhooks over
//! TLS, runs the controllers, and stops gracefully on SIGTERM or Ctrl+C.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use std::sync::Arc;

use capd::controllers::{self, Settings};
use capd::diagnostics::{self, DiagnosticsAddress, Security, ServingCert};
use capd::docker::engine::Engine;
use capd::docker::node::NodeOptions;
use capd::features::Features;
use capd::tls::{CipherSuites, TlsOptions, TlsVersion};
use capd::webhooks::{self, tls::CertFiles};
use clap::Parser;
use tracing::info;

/// Cluster API infrastructure provider for Docker (capd-rs) manager.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The Docker network clusters are put on (CAPD's default, shared with kind).
    #[arg(long, env = "CAPD_DOCKER_NETWORK", default_value = "kind")]
    docker_network: String,

    /// The port the webhook server listens on (HTTPS, all interfaces).
    #[arg(long, default_value_t = 9443)]
    webhook_port: u16,

    /// The directory holding the webhook server's certificate and key.
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs")]
    webhook_cert_dir: PathBuf,

    /// The certificate file's name in --webhook-cert-dir (PEM, leaf first).
    #[arg(long, default_value = "tls.crt")]
    webhook_cert_name: String,

    /// The private key file's name in --webhook-cert-dir (PEM).
    #[arg(long, default_value = "tls.key")]
    webhook_key_name: String,

    /// How often the certificate files are checked for a new certificate (for example "10s").
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    webhook_cert_reload_interval: Duration,

    /// Feature gates, as Name=true|false pairs separated by commas. Known: ClusterTopology
    /// (default false). CAPD's other gates are accepted and have no effect.
    #[arg(long, default_value = "")]
    feature_gates: Features,

    /// Watch and reconcile objects in this namespace only (all namespaces when unset).
    #[arg(long)]
    namespace: Option<String>,

    /// Reconcile only objects labelled cluster.x-k8s.io/watch-filter=<value> (several provider
    /// instances can then share a management cluster).
    #[arg(long)]
    watch_filter: Option<String>,

    /// How many DockerMachines are reconciled at once.
    #[arg(long, default_value_t = 100)]
    dockermachine_concurrency: u16,

    /// Run node containers privileged, as kind does. Set to false on engines that refuse
    /// privileged containers; real Kubernetes nodes cannot run then, test images can.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    privileged_nodes: bool,

    /// How many DockerClusters are reconciled at once.
    #[arg(long, default_value_t = 50)]
    dockercluster_concurrency: u16,

    /// The minimum TLS version of the webhook server and the diagnostics server (the latter
    /// unless --insecure-diagnostics). Possible values are VersionTLS10, VersionTLS11,
    /// VersionTLS12, VersionTLS13; capd-rs serves TLS 1.2 and 1.3 only, so VersionTLS10 and
    /// VersionTLS11 mean TLS 1.2.
    #[arg(long, default_value = "VersionTLS12")]
    tls_min_version: TlsVersion,

    /// Comma-separated list of cipher suites (Go names) for the webhook server and the
    /// diagnostics server. If omitted, rustls's default suites are used. TLS 1.3 suites are not
    /// configurable. Supported values: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
    /// TLS_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    /// TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    /// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    /// TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256.
    #[arg(long)]
    tls_cipher_suites: Vec<CipherSuites>,

    /// The address the diagnostics endpoint (metrics at /metrics) binds to, Go host:port form;
    /// "0" disables it. Served over HTTPS with authentication (TokenReview) and authorization
    /// (SubjectAccessReview, "get" on the non-resource URL /metrics) unless
    /// --insecure-diagnostics.
    #[arg(long, default_value = diagnostics::DEFAULT_ADDRESS)]
    diagnostics_address: DiagnosticsAddress,

    /// Serve diagnostics over plain HTTP without authentication or authorization.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    insecure_diagnostics: bool,

    /// Log format: text or json. The log level comes from RUST_LOG (default info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    init_tracing(&args.log_format);
    let tls = TlsOptions::new(args.tls_min_version, args.tls_cipher_suites.clone());
    for note in tls.notes() {
        tracing::warn!("{note}");
    }

    let kube = kube::Client::try_default().await.context(
        "connecting to the Kubernetes API (in-cluster config, KUBECONFIG or ~/.kube/config)",
    )?;
    let version = kube
        .apiserver_version()
        .await
        .context("reading the apiserver version")?;
    info!(version = %version.git_version, "connected to the Kubernetes API");

    let engine = Engine::connect()
        .await
        .context("reaching the Docker engine (DOCKER_HOST)")?;
    info!(api_version = %engine.api_version(), network = %args.docker_network, "connected to the Docker engine");

    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.webhook_port)))
        .with_context(|| format!("listening on webhook port {}", args.webhook_port))?;
    let cert = CertFiles::in_dir(
        &args.webhook_cert_dir,
        &args.webhook_cert_name,
        &args.webhook_key_name,
    );
    info!(port = args.webhook_port, cert = %cert.cert.display(), "serving the admission webhooks");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut webhooks = tokio::spawn(webhooks::serve(
        listener,
        cert,
        tls.clone(),
        args.webhook_cert_reload_interval,
        args.feature_gates,
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));

    let mut diagnostics = match args.diagnostics_address {
        DiagnosticsAddress::Disabled => {
            info!("diagnostics server disabled");
            None
        }
        DiagnosticsAddress::Listen(address) => {
            let listener = diagnostics::listen(address)
                .with_context(|| format!("listening on diagnostics address {address}"))?;
            let security = if args.insecure_diagnostics {
                Security::Insecure
            } else {
                Security::Secure {
                    kube: kube.clone(),
                    tls: tls.clone(),
                    cert: ServingCert::controller_runtime_default(),
                }
            };
            info!(address = %listener.local_addr()?, secure = !args.insecure_diagnostics, "serving diagnostics");
            let stopping = stop.subscribe();
            // Metrics are registered here as the manager grows.
            let registry = Arc::new(prometheus_client::registry::Registry::default());
            Some(tokio::spawn(diagnostics::serve(
                listener,
                registry,
                security,
                async move {
                    let mut stopping = stopping;
                    let _ = stopping.wait_for(|s| *s).await;
                },
            )))
        }
    };

    let settings = Settings {
        network: args.docker_network.clone(),
        namespace: args.namespace.clone(),
        docker_cluster_concurrency: args.dockercluster_concurrency,
        watch_filter: args.watch_filter.clone(),
        docker_machine_concurrency: args.dockermachine_concurrency,
        node_options: NodeOptions {
            privileged: args.privileged_nodes,
            lib_modules: std::path::Path::new("/lib/modules").exists(),
            proxy_env: proxy_env(),
        },
    };
    let ctx = Arc::new(controllers::Context::new(kube, Arc::new(engine), settings));
    let stopping = stop.subscribe();
    let mut controllers = tokio::spawn(controllers::run(ctx, async move {
        let mut stopping = stopping;
        let _ = stopping.wait_for(|s| *s).await;
    }));

    tokio::select! {
        result = &mut webhooks => return result.context("webhook server task")?.context("webhook server stopped"),
        result = &mut controllers => return result.context("controllers task").and(Err(anyhow::anyhow!("the controllers stopped"))),
        result = async {
            match &mut diagnostics {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        } => return result.context("diagnostics server task")?.context("diagnostics server stopped"),
        () = shutdown_signal() => {}
    }
    info!("shutting down");
    let _ = stop.send(true);
    controllers.await.context("controllers task")?;
    webhooks.await.context("webhook server task")??;
    if let Some(task) = diagnostics {
        task.await.context("diagnostics server task")??;
    }
    Ok(())
}

/// The proxy variables of the manager's environment, passed on to node containers.
fn proxy_env() -> Vec<String> {
    [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ]
    .into_iter()
    .filter_map(|name| {
        std::env::var(name)
            .ok()
            .map(|value| format!("{name}={value}"))
    })
    .collect()
}

/// Parses an interval such as "10s" or "1m" (Go duration syntax, greater than zero).
fn parse_interval(text: &str) -> Result<Duration, String> {
    capd::formats::positive_duration(text)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl+C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
