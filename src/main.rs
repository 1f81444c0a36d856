//! The capd-rs manager: one process serving the provider's admission webhooks, its controllers
//! (on the leader only, with `--leader-elect`), health probes and metrics, with CAPD's flags.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt;
use futures::future::Shared;
use kube::runtime::events::{Event, EventType};
use tokio::sync::watch;
use tracing::{error, info, warn};

use capd::client::{self, RateLimit};
use capd::controllers::{self, Settings};
use capd::diagnostics::{self, DiagnosticsAddress, Security, ServingCert};
use capd::docker::engine::Engine;
use capd::docker::metered::Metered;
use capd::docker::node::NodeOptions;
use capd::flags::{Flags, Parsed};
use capd::health::{self, Check, Checks};
use capd::leader::{self, Elector, LeaseLost};
use capd::metrics::Metrics;
use capd::webhooks::{self, tls::CertFiles};

#[tokio::main]
async fn main() -> ExitCode {
    let Parsed { flags, no_effect } = match Flags::parse_args(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => e.exit(),
    };
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("a rustls crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    if let Err(e) = capd::telemetry::init(flags.logging_format, flags.verbosity) {
        eprintln!("cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    if !no_effect.is_empty() {
        info!(flags = %no_effect.join(" "), "these CAPD flags are accepted and have no effect in capd-rs");
    }
    if !flags.profiler_address.is_empty() {
        warn!(address = %flags.profiler_address, "--profiler-address: capd-rs has no Go profiler; nothing is served there");
    }
    match run(flags).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The listeners, bound before anything starts, so a taken port fails the start at once.
struct Listeners {
    webhook: TcpListener,
    health: Option<TcpListener>,
    diagnostics: Option<TcpListener>,
}

impl Listeners {
    fn bind(flags: &Flags) -> anyhow::Result<Self> {
        let bind =
            |what: &str, address: DiagnosticsAddress| -> anyhow::Result<Option<TcpListener>> {
                match address {
                    DiagnosticsAddress::Disabled => Ok(None),
                    DiagnosticsAddress::Listen(address) => diagnostics::listen(address)
                        .map(Some)
                        .with_context(|| format!("--{what}: listening on {address}")),
                }
            };
        let webhook = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, flags.webhook_port));
        Ok(Self {
            webhook: bind("webhook-port", DiagnosticsAddress::Listen(webhook))?
                .context("the webhook server always listens")?,
            health: bind("health-addr", flags.health_addr)?,
            diagnostics: bind("diagnostics-address", flags.diagnostics_address)?,
        })
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let terminated = terminated().shared();
    let listeners = Listeners::bind(&flags)?;
    let limit = RateLimit {
        qps: flags.kube_api_qps,
        burst: flags.kube_api_burst,
    };
    let kube = client::connect(flags.kubeconfig.as_deref(), limit)
        .await
        .context("connecting to the Kubernetes API (--kubeconfig, in-cluster, KUBECONFIG or ~/.kube/config)")?;
    let version = kube
        .apiserver_version()
        .await
        .context("reading the apiserver version")?;
    info!(version = %version.git_version, "connected to the Kubernetes API");
    let (metrics, registry) = Metrics::new();
    let elector = match flags.leader_elect {
        true => {
            let config = leader_config(&flags, &kube);
            config.validate().map_err(anyhow::Error::msg)?;
            metrics.leading(leader::LEASE_NAME, false);
            Some(Elector::new(kube.clone(), config))
        }
        false => None,
    };
    let engine = Engine::connect()
        .await
        .context("reaching the Docker engine (DOCKER_HOST)")?;
    info!(api_version = %engine.api_version(), network = %flags.docker_network, "connected to the Docker engine");

    let webhook = Check::failing("webhook", "the webhook server is not serving yet");
    let caches = Check::failing("controllers", "the controllers' caches are not synced yet");
    let checks = Checks {
        healthz: vec![webhook.clone()],
        readyz: vec![webhook.clone(), caches.clone()],
    };
    let tls = flags.tls_options();
    for note in tls.notes() {
        warn!("{note}");
    }

    // The servers run until the controllers have stopped and the lease is released.
    let (stop_servers, servers_stopped) = watch::channel(false);
    let servers_stop = move || {
        let mut stopped = servers_stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    if let Some(listener) = listeners.health {
        info!(address = %listener.local_addr()?, "serving /healthz and /readyz");
        tokio::spawn(health::serve(listener, checks, servers_stop()));
    }
    if let Some(listener) = listeners.diagnostics {
        serve_metrics(listener, &flags, &kube, registry, servers_stop())?;
    }
    let cert = CertFiles::in_dir(
        &flags.webhook_cert_dir,
        &flags.webhook_cert_name,
        &flags.webhook_key_name,
    );
    info!(port = flags.webhook_port, cert = %cert.cert.display(), "serving the admission webhooks");
    let options = webhooks::ServeOptions {
        cert,
        reload_every: flags.webhook_cert_reload_interval,
        tls,
        features: flags.features(),
        metrics: metrics.clone(),
    };
    let mut webhooks = tokio::spawn(webhooks::serve(
        listeners.webhook,
        options,
        move || webhook.pass(),
        servers_stop(),
    ));

    let runtime = Arc::new(Metered::new(Arc::new(engine), metrics.clone()));
    let ctx = Arc::new(controllers::Context::new(
        kube.clone(),
        runtime,
        controller_settings(&flags),
        metrics,
    ));

    let lead = lead(
        ctx,
        elector,
        caches,
        terminated.clone(),
        flags.graceful_shutdown_timeout,
    );
    tokio::select! {
        result = &mut webhooks => {
            return result.context("webhook server task")?.context("webhook server stopped");
        }
        outcome = lead => {
            if let Err(lost) = outcome {
                // As controller-runtime: reconcile no more, at once, and leave it to a restart.
                error!("{lost}");
                std::process::exit(1);
            }
        }
    }
    if terminated.peek().is_none() {
        anyhow::bail!("the controllers stopped");
    }
    let _ = stop_servers.send(true);
    webhooks.await.context("webhook server task")??;
    info!("stopped");
    Ok(())
}

/// Serves `/metrics` from `registry` on `listener` until `stop`, securely unless
/// `--insecure-diagnostics`.
fn serve_metrics(
    listener: TcpListener,
    flags: &Flags,
    kube: &kube::Client,
    registry: prometheus_client::registry::Registry,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let security = if flags.insecure_diagnostics {
        Security::Insecure
    } else {
        Security::Secure {
            kube: kube.clone(),
            tls: flags.tls_options(),
            cert: ServingCert::controller_runtime_default(),
        }
    };
    info!(address = %listener.local_addr()?, secure = !flags.insecure_diagnostics, "serving metrics at /metrics");
    let registry = Arc::new(registry);
    tokio::spawn(async move {
        if let Err(e) = diagnostics::serve(listener, registry, security, stop).await {
            error!("{e}");
        }
    });
    Ok(())
}

/// The controllers' settings from the flags.
fn controller_settings(flags: &Flags) -> Settings {
    Settings {
        network: flags.docker_network.clone(),
        namespace: flags.watch_namespace(),
        docker_cluster_concurrency: flags.dockercluster_concurrency,
        watch_filter: flags.watch_filter_value(),
        docker_machine_concurrency: flags.dockermachine_concurrency,
        node_options: NodeOptions {
            privileged: flags.privileged_nodes,
            lib_modules: std::path::Path::new("/lib/modules").exists(),
            proxy_env: proxy_env(),
        },
        sync_period: flags.sync_period,
        workload_rate_limit: RateLimit {
            qps: flags.clustercache_client_qps,
            burst: flags.clustercache_client_burst,
        },
    }
}

/// The Lease this replica competes for: CAPD's name, in `$POD_NAMESPACE` (CAPD's Deployment
/// sets it), else the client's namespace (in-cluster, or the kubeconfig context's).
fn leader_config(flags: &Flags, kube: &kube::Client) -> leader::Config {
    let namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| kube.default_namespace().to_owned());
    leader::Config {
        namespace,
        name: leader::LEASE_NAME.into(),
        identity: leader::identity(),
        lease_duration: flags.leader_elect_lease_duration,
        renew_deadline: flags.leader_elect_renew_deadline,
        retry_period: flags.leader_elect_retry_period,
    }
}

/// Runs the controllers, when this replica leads (or without `elector`, at once), until
/// `terminated`: then lets running reconciles finish for at most `grace` and releases the
/// lease. Returns early with [`LeaseLost`] when the lease cannot be renewed.
async fn lead(
    ctx: Arc<controllers::Context>,
    mut elector: Option<Elector>,
    caches: Check,
    terminated: Shared<impl Future<Output = ()> + Send + 'static>,
    grace: Duration,
) -> Result<(), LeaseLost> {
    if let Some(elector) = elector.as_mut() {
        // A replica waiting for the lease is ready: it serves webhooks, and a rolling update
        // needs it ready before the leader goes.
        caches.pass();
        tokio::select! {
            () = elector.acquire() => {}
            () = terminated.clone() => return Ok(()),
        }
        caches.fail("leading: the controllers' caches are not synced yet");
        ctx.metrics.leading(leader::LEASE_NAME, true);
        let event = Event {
            type_: EventType::Normal,
            reason: "LeaderElection".into(),
            note: Some(format!("{} became leader", elector.identity())),
            action: "Lead".into(),
            secondary: None,
        };
        if let Err(e) = ctx
            .recorder
            .publish(&event, &elector.lease_reference())
            .await
        {
            warn!(error = %e, "cannot publish the leader election event");
        }
    }
    let synced = caches.clone();
    let controllers = controllers::run(ctx, terminated.clone(), move || synced.pass());
    let bounded = async {
        tokio::pin!(controllers);
        let give_up = async {
            terminated.await;
            // Before the caches are filled no reconcile can have started: nothing to wait for
            // (and kube's controllers never finish a graceful shutdown begun then).
            if caches.status().is_ok() {
                tokio::time::sleep(grace).await;
                warn!(grace = ?grace, "reconciles still running after the graceful shutdown timeout; stopping them");
            }
        };
        tokio::select! {
            () = &mut controllers => {}
            () = give_up => {}
        }
    };
    let Some(mut elector) = elector else {
        bounded.await;
        info!("shutting down");
        return Ok(());
    };
    tokio::select! {
        () = bounded => {}
        lost = elector.renew_until_lost() => return Err(lost),
    }
    info!("shutting down");
    if let Err(e) = elector.release().await {
        warn!(error = %e, "cannot release the leader lease; the next leader waits for it to expire");
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

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl+C; SIGTERM is caught from the
/// call on, before the future is first polled. A second signal exits at once with status 1, as
/// controller-runtime's handler does.
fn terminated() -> impl Future<Output = ()> + Send + 'static {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let mut term = match term {
            Ok(term) => term,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl+C stops the manager");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            warn!("second termination signal: exiting at once");
            std::process::exit(1);
        });
    }
}
