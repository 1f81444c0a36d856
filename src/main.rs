//! The capd-rs manager: one process serving the provider's controllers and webhooks.
//!
//! So far it connects to the Kubernetes API and the Docker engine, reports what it found, and
//! runs until SIGTERM or Ctrl+C; the controllers and webhooks join it as they are built.

use anyhow::Context;
use clap::Parser;
use tracing::info;

/// Cluster API infrastructure provider for Docker (capd-rs) manager.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The Docker network clusters are put on (CAPD's default, shared with kind).
    #[arg(long, env = "CAPD_DOCKER_NETWORK", default_value = "kind")]
    docker_network: String,

    /// Log format: text or json. The log level comes from RUST_LOG (default info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log_format);

    let kube = kube::Client::try_default().await.context(
        "connecting to the Kubernetes API (in-cluster config, KUBECONFIG or ~/.kube/config)",
    )?;
    let version = kube
        .apiserver_version()
        .await
        .context("reading the apiserver version")?;
    info!(version = %version.git_version, "connected to the Kubernetes API");

    let docker = bollard::Docker::connect_with_defaults()
        .context("configuring the Docker client (DOCKER_HOST)")?
        .negotiate_version()
        .await
        .context("reaching the Docker engine")?;
    docker
        .inspect_network(
            &args.docker_network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .with_context(|| format!("inspecting the Docker network {:?}", args.docker_network))?;
    info!(api_version = %docker.client_version(), network = %args.docker_network, "connected to the Docker engine");

    shutdown_signal().await;
    info!("shutting down");
    Ok(())
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
