//! The manager's command line: every flag of CAPD v1.14.0's manager with CAPD's name, meaning
//! and default, parsed as Go's pflag parses them, plus capd-rs's own flags.
//!
//! pflag's rules kept here: `--flag=value` or `--flag value`, and given twice the last wins;
//! a boolean is `--flag` (true) or `--flag=false`, never `--flag false`; underscores in a
//! flag's name read as dashes (`--leader_elect`, component-base's `WordSepNormalizeFunc`); `-v`
//! is also `--v`; durations use Go's syntax (`15s`, `1m30s`). Flags for parts capd-rs does not
//! have (Dev* kinds, machine pools, the CRD migrator, the Go profiler) are accepted, say "No
//! effect" in `--help`, and [`Parsed::no_effect`] names those given so the manager logs them
//! once.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use crate::diagnostics::{self, DiagnosticsAddress};
use crate::features::Features;
use crate::formats;
use crate::telemetry::LogFormat;
use crate::tls::{CipherSuites, TlsOptions, TlsVersion};

const LEADER_ELECTION: &str = "Leader election";
const CONTROLLERS: &str = "Controllers";
const SERVING: &str = "Webhooks, health and diagnostics";
const LOGGING: &str = "Logging";
const NO_EFFECT: &str = "Accepted for compatibility with CAPD (no effect)";

/// The manager's flags.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "manager",
    version,
    // pflag: a flag given twice takes its last value (lists collect every value).
    args_override_self = true,
    about = "Cluster API infrastructure provider for Docker (capd-rs) manager: the DockerCluster \
             and DockerMachine controllers and the admission webhooks, in one process. \
             Accepts every flag of CAPD v1.14.0's manager."
)]
pub struct Flags {
    /// Enable leader election for controller manager. Enabling this will ensure there is only
    /// one active controller manager. The Lease is controller-leader-election-capd (CAPD's), in
    /// the namespace of $POD_NAMESPACE, else the in-cluster or kubeconfig namespace.
    #[arg(long, help_heading = LEADER_ELECTION, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub leader_elect: bool,

    /// Interval at which non-leader candidates will wait to force acquire leadership (duration
    /// string).
    #[arg(long, help_heading = LEADER_ELECTION, default_value = "15s", value_parser = positive_duration)]
    pub leader_elect_lease_duration: Duration,

    /// Duration that the leading controller manager will retry refreshing leadership before
    /// giving up (duration string); then it stops reconciling and exits with status 1.
    #[arg(long, help_heading = LEADER_ELECTION, default_value = "10s", value_parser = positive_duration)]
    pub leader_elect_renew_deadline: Duration,

    /// Duration the LeaderElector clients should wait between tries of actions (duration
    /// string).
    #[arg(long, help_heading = LEADER_ELECTION, default_value = "2s", value_parser = positive_duration)]
    pub leader_elect_retry_period: Duration,

    /// Namespace that the controller watches to reconcile cluster-api objects. If unspecified,
    /// the controller watches for cluster-api objects across all namespaces.
    #[arg(long, help_heading = CONTROLLERS, default_value = "")]
    pub namespace: String,

    /// Label value that the controller watches to reconcile cluster-api objects. Label key is
    /// always cluster.x-k8s.io/watch-filter. If unspecified, the controller watches for all
    /// cluster-api objects.
    #[arg(long, help_heading = CONTROLLERS, default_value = "")]
    pub watch_filter: String,

    /// The minimum interval at which watched resources are reconciled (e.g. 15m).
    #[arg(long, help_heading = CONTROLLERS, default_value = "10m", value_parser = positive_duration)]
    pub sync_period: Duration,

    /// Number of DockerMachines to process simultaneously.
    #[arg(long, help_heading = CONTROLLERS, default_value_t = 100, value_parser = concurrency)]
    pub dockermachine_concurrency: u16,

    /// Number of DockerClusters to process simultaneously.
    #[arg(long, help_heading = CONTROLLERS, default_value_t = 50, value_parser = concurrency)]
    pub dockercluster_concurrency: u16,

    /// Maximum queries per second from the controller client to the Kubernetes API server
    /// (0: client-go's default of 5; negative: no limit).
    #[arg(long, help_heading = CONTROLLERS, default_value_t = 100.0, allow_negative_numbers = true)]
    pub kube_api_qps: f32,

    /// Maximum number of queries that should be allowed in one burst from the controller client
    /// to the Kubernetes API server.
    #[arg(long, help_heading = CONTROLLERS, default_value_t = 200)]
    pub kube_api_burst: u32,

    /// Maximum queries per second from the cluster cache clients to the Kubernetes API server
    /// of workload clusters (used to give workload Nodes their providerID).
    #[arg(long, help_heading = CONTROLLERS, default_value_t = 20.0, allow_negative_numbers = true)]
    pub clustercache_client_qps: f32,

    /// Maximum number of queries that should be allowed in one burst from the cluster cache
    /// clients to the Kubernetes API server of workload clusters.
    #[arg(long, help_heading = CONTROLLERS, default_value_t = 30)]
    pub clustercache_client_burst: u32,

    /// Paths to a kubeconfig. Only required if out-of-cluster (otherwise $KUBECONFIG,
    /// ~/.kube/config or the in-cluster configuration).
    #[arg(long, help_heading = CONTROLLERS)]
    pub kubeconfig: Option<PathBuf>,

    /// A set of key=value pairs that describe feature gates for alpha/experimental features.
    /// capd-rs acts on ClusterTopology (default false: DockerClusterTemplates cannot be
    /// created); CAPD's other gates (MachinePool, PriorityQueue, ReconcilerRateLimiting, ...)
    /// are accepted and have no effect.
    #[arg(long, help_heading = CONTROLLERS, value_parser = crate::features::check)]
    pub feature_gates: Vec<String>,

    /// The Docker network clusters are put on (CAPD's default, shared with kind). capd-rs only.
    #[arg(long, help_heading = CONTROLLERS, env = "CAPD_DOCKER_NETWORK", default_value = "kind")]
    pub docker_network: String,

    /// Run node containers privileged, as kind does. Set to false on engines that refuse
    /// privileged containers; real Kubernetes nodes cannot run then, test images can.
    /// capd-rs only.
    #[arg(long, help_heading = CONTROLLERS, num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", value_parser = go_bool)]
    pub privileged_nodes: bool,

    /// How long running reconciles may take to finish after SIGTERM before they are stopped
    /// and the lease is released; keep it below the pod's terminationGracePeriodSeconds (10s in
    /// CAPD's Deployment). capd-rs only.
    #[arg(long, help_heading = CONTROLLERS, default_value = "8s", value_parser = non_negative_duration)]
    pub graceful_shutdown_timeout: Duration,

    /// Webhook Server port.
    #[arg(long, help_heading = SERVING, default_value_t = 9443)]
    pub webhook_port: u16,

    /// Webhook cert dir.
    #[arg(long, help_heading = SERVING, default_value = "/tmp/k8s-webhook-server/serving-certs/")]
    pub webhook_cert_dir: PathBuf,

    /// Webhook cert name.
    #[arg(long, help_heading = SERVING, default_value = "tls.crt")]
    pub webhook_cert_name: String,

    /// Webhook key name.
    #[arg(long, help_heading = SERVING, default_value = "tls.key")]
    pub webhook_key_name: String,

    /// How often the webhook certificate files are checked; a new pair is served on the next
    /// handshake without a restart. capd-rs only.
    #[arg(long, help_heading = SERVING, default_value = "10s", value_parser = positive_duration)]
    pub webhook_cert_reload_interval: Duration,

    /// The address the health endpoint binds to (/healthz and /readyz, plain HTTP). "0" or ""
    /// disables it.
    #[arg(long, help_heading = SERVING, default_value = ":9440", value_parser = health_address)]
    pub health_addr: DiagnosticsAddress,

    /// The address the diagnostics endpoint binds to: /metrics, over HTTPS with authentication
    /// and authorization (the caller needs get on the non-resource URL /metrics) unless
    /// --insecure-diagnostics is set. "0" disables it. No pprof or log-level endpoints: use
    /// -v and RUST_LOG.
    #[arg(long, help_heading = SERVING, default_value = diagnostics::DEFAULT_ADDRESS,
          value_parser = diagnostics_address)]
    pub diagnostics_address: DiagnosticsAddress,

    /// Enable insecure diagnostics serving: plain HTTP without authentication or authorization.
    #[arg(long, help_heading = SERVING, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub insecure_diagnostics: bool,

    /// The minimum TLS version in use by the webhook server and the diagnostics server (the
    /// latter only if --insecure-diagnostics is not set). Possible values are VersionTLS10,
    /// VersionTLS11, VersionTLS12, VersionTLS13 (rustls serves TLS 1.2 at the lowest).
    #[arg(long, help_heading = SERVING, default_value = "VersionTLS12", value_parser = tls_version)]
    pub tls_min_version: TlsVersion,

    /// Comma-separated list of TLS 1.2 cipher suites for the webhook server and the
    /// diagnostics server (TLS 1.3 suites are always on, as in Go). If omitted, rustls's
    /// default suites are used. Supported: TLS_ECDHE_{ECDSA,RSA}_WITH_AES_{128,256}_GCM_SHA{256,384},
    /// TLS_ECDHE_{ECDSA,RSA}_WITH_CHACHA20_POLY1305(_SHA256) and the TLS 1.3 names.
    #[arg(long, help_heading = SERVING, num_args = 1, value_parser = cipher_suites)]
    pub tls_cipher_suites: Vec<CipherSuites>,

    /// Number for the log level verbosity: 0-3 logs info and above, 4 debug, 5 and more trace.
    /// RUST_LOG, when set, overrides it.
    #[arg(short = 'v', long = "v", help_heading = LOGGING, default_value_t = 2)]
    pub verbosity: u32,

    /// Sets the log format. Permitted formats: "json", "text".
    #[arg(long, help_heading = LOGGING, alias = "log-format", default_value = "text",
          value_parser = log_format)]
    pub logging_format: LogFormat,

    /// Comma-separated list of pattern=N settings for file-filtered logging (Go source files).
    /// No effect: use RUST_LOG's per-module directives instead.
    #[arg(long, help_heading = NO_EFFECT, default_value = "")]
    pub vmodule: String,

    /// Maximum number of seconds between log flushes. No effect: every line is written at once.
    #[arg(long, help_heading = NO_EFFECT, default_value = "5s", value_parser = non_negative_duration)]
    pub log_flush_frequency: Duration,

    /// [Alpha] In text format, write error messages to stderr and info messages to stdout.
    /// No effect: everything goes to stderr.
    #[arg(long, help_heading = NO_EFFECT, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub log_text_split_stream: bool,

    /// [Alpha] In text format with split output streams, the info messages can be buffered for
    /// a while to increase performance. No effect.
    #[arg(long, help_heading = NO_EFFECT, default_value = "0")]
    pub log_text_info_buffer_size: String,

    /// [Alpha] In JSON format, write error messages to stderr and info messages to stdout.
    /// No effect: everything goes to stderr.
    #[arg(long, help_heading = NO_EFFECT, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub log_json_split_stream: bool,

    /// [Alpha] In JSON format with split output streams, the info messages can be buffered for
    /// a while to increase performance. No effect.
    #[arg(long, help_heading = NO_EFFECT, default_value = "0")]
    pub log_json_info_buffer_size: String,

    /// Bind address to expose the pprof profiler (e.g. localhost:6060). No effect: capd-rs has
    /// no Go profiler and serves nothing there.
    #[arg(long, help_heading = NO_EFFECT, default_value = "")]
    pub profiler_address: String,

    /// Enable block profiling. No effect (no Go profiler).
    #[arg(long, help_heading = NO_EFFECT, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub contention_profiling: bool,

    /// Number of DockerMachineTemplates to process simultaneously. No effect: capd-rs has no
    /// DockerMachineTemplate controller.
    #[arg(long, help_heading = NO_EFFECT, default_value_t = 50)]
    pub dockermachinetemplate_concurrency: i64,

    /// Number of DockerMachinePools to process simultaneously. No effect: capd-rs has no
    /// DockerMachinePool kind.
    #[arg(long, help_heading = NO_EFFECT, default_value_t = 50)]
    pub dockermachinepool_concurrency: i64,

    /// Number of DevMachines to process simultaneously. No effect: capd-rs has no Dev* kinds.
    #[arg(long, help_heading = NO_EFFECT, default_value_t = 50)]
    pub devmachine_concurrency: i64,

    /// Number of DevClusters to process simultaneously. No effect: capd-rs has no Dev* kinds.
    #[arg(long, help_heading = NO_EFFECT, default_value_t = 50)]
    pub devcluster_concurrency: i64,

    /// Number of DevMachineTemplates to process simultaneously. No effect: capd-rs has no Dev*
    /// kinds.
    #[arg(long, help_heading = NO_EFFECT, default_value_t = 50)]
    pub devmachinetemplate_concurrency: i64,

    /// Number of DevMachinePools to process simultaneously. No effect: capd-rs has no Dev*
    /// kinds.
    #[arg(long, help_heading = NO_EFFECT, default_value_t = 100)]
    pub devmachinepool_concurrency: i64,

    /// Number of clusters to process simultaneously. No effect: workload clusters are reached
    /// on demand, without a cluster cache controller.
    #[arg(long, help_heading = NO_EFFECT, default_value_t = 100)]
    pub clustercache_concurrency: i64,

    /// List of CRD migration phases to skip. Valid values are: StorageVersionMigration,
    /// CleanupManagedFields. No effect: capd-rs has no CRD migrator (only v1beta2 is served).
    #[arg(long, help_heading = NO_EFFECT, value_delimiter = ',', num_args = 1)]
    pub skip_crd_migration_phases: Vec<String>,
}

/// The flags and what the manager should say about them.
#[derive(Debug)]
pub struct Parsed {
    /// The flags.
    pub flags: Flags,
    /// The flags given that have no effect in capd-rs, as `--name=value`.
    pub no_effect: Vec<String>,
}

/// The flags that are accepted but do nothing, by their field name.
const NO_EFFECT_FLAGS: &[&str] = &[
    "vmodule",
    "log_flush_frequency",
    "log_text_split_stream",
    "log_text_info_buffer_size",
    "log_json_split_stream",
    "log_json_info_buffer_size",
    "profiler_address",
    "contention_profiling",
    "dockermachinetemplate_concurrency",
    "dockermachinepool_concurrency",
    "devmachine_concurrency",
    "devcluster_concurrency",
    "devmachinetemplate_concurrency",
    "devmachinepool_concurrency",
    "clustercache_concurrency",
    "skip_crd_migration_phases",
];

impl Flags {
    /// Parses `args` (the program name first) as pflag would.
    pub fn parse_args<I, T>(args: I) -> Result<Parsed, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let matches = Self::command().try_get_matches_from(normalize(args))?;
        let flags = Self::from_arg_matches(&matches)?;
        let no_effect = given(&matches, NO_EFFECT_FLAGS);
        Ok(Parsed { flags, no_effect })
    }

    /// The namespace to watch, or `None` for all of them.
    pub fn watch_namespace(&self) -> Option<String> {
        Some(self.namespace.clone()).filter(|n| !n.is_empty())
    }

    /// The TLS options of the webhook and diagnostics servers.
    pub fn tls_options(&self) -> TlsOptions {
        TlsOptions::new(self.tls_min_version, self.tls_cipher_suites.clone())
    }

    /// The feature gates of every `--feature-gates` given (a later one wins).
    pub fn features(&self) -> Features {
        // Each value was checked when parsed.
        Features::from_values(&self.feature_gates).unwrap_or_default()
    }

    /// The `--watch-filter` value, or `None` when unset.
    pub fn watch_filter_value(&self) -> Option<String> {
        Some(self.watch_filter.clone()).filter(|n| !n.is_empty())
    }
}

/// The flags among `ids` given on the command line or in the environment, as `--name=value`.
fn given(matches: &ArgMatches, ids: &[&str]) -> Vec<String> {
    ids.iter()
        .filter(|id| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .map(|id| {
            let values: Vec<String> = matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            format!("--{}={}", id.replace('_', "-"), values.join(","))
        })
        .collect()
}

/// Reads underscores in long flag names as dashes (`--leader_elect` is `--leader-elect`), as
/// component-base's `WordSepNormalizeFunc` does; values and everything after `--` are kept.
pub fn normalize<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut after_terminator = false;
    args.into_iter()
        .map(Into::into)
        .map(|arg| {
            let Some(text) = arg.to_str() else {
                return arg;
            };
            if after_terminator || !text.starts_with("--") || text == "--" {
                after_terminator |= text == "--";
                return arg;
            }
            let (name, value) = match text.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (text, None),
            };
            let name = format!("--{}", name[2..].replace('_', "-"));
            OsString::from(match value {
                Some(value) => format!("{name}={value}"),
                None => name,
            })
        })
        .collect()
}

/// Parses a boolean as Go's `strconv.ParseBool` does.
pub fn go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!(
            "invalid boolean {other:?} (use true or false, or 1, t, T, TRUE, True, 0, f, F, FALSE, False)"
        )),
    }
}

fn health_address(text: &str) -> Result<DiagnosticsAddress, String> {
    // controller-runtime serves no probes at "" or "0".
    match text {
        "" | "0" => Ok(DiagnosticsAddress::Disabled),
        text => diagnostics::parse_bind_address(text).map(DiagnosticsAddress::Listen),
    }
}

fn diagnostics_address(text: &str) -> Result<DiagnosticsAddress, String> {
    text.parse()
}

fn tls_version(text: &str) -> Result<TlsVersion, String> {
    text.parse()
}

fn cipher_suites(text: &str) -> Result<CipherSuites, String> {
    text.parse()
}

fn log_format(text: &str) -> Result<LogFormat, String> {
    text.parse()
        .map_err(|e: crate::telemetry::TelemetryError| e.to_string())
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    formats::positive_duration(text).map_err(|e| format!("{text:?}: {e}"))
}

fn non_negative_duration(text: &str) -> Result<Duration, String> {
    formats::parse_go_duration(text)?
        .as_std()
        .ok_or_else(|| format!("{text:?}: must not be negative"))
}

fn concurrency(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?}: must be a whole number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, clap::Error> {
        Flags::parse_args(std::iter::once("manager").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_capds() {
        let flags = parse(&[]).unwrap().flags;
        assert!(!flags.leader_elect);
        assert_eq!(flags.leader_elect_lease_duration, Duration::from_secs(15));
        assert_eq!(flags.leader_elect_renew_deadline, Duration::from_secs(10));
        assert_eq!(flags.leader_elect_retry_period, Duration::from_secs(2));
        assert_eq!(
            flags.health_addr,
            DiagnosticsAddress::Listen("[::]:9440".parse().unwrap())
        );
        assert_eq!(
            flags.diagnostics_address,
            DiagnosticsAddress::Listen("[::]:8443".parse().unwrap())
        );
        assert!(!flags.insecure_diagnostics);
        assert_eq!(flags.sync_period, Duration::from_secs(600));
        assert_eq!((flags.kube_api_qps, flags.kube_api_burst), (100.0, 200));
        assert_eq!(
            (
                flags.clustercache_client_qps,
                flags.clustercache_client_burst
            ),
            (20.0, 30)
        );
        assert_eq!(flags.dockermachine_concurrency, 100);
        assert_eq!(flags.dockercluster_concurrency, 50);
        assert_eq!(flags.webhook_port, 9443);
        assert_eq!(
            flags.webhook_cert_dir,
            PathBuf::from("/tmp/k8s-webhook-server/serving-certs/")
        );
        assert_eq!(flags.tls_min_version, TlsVersion::Tls12);
        assert_eq!(flags.verbosity, 2);
        assert_eq!(flags.logging_format, LogFormat::Text);
        assert_eq!(flags.watch_namespace(), None);
        assert_eq!(flags.watch_filter_value(), None);
    }

    #[test]
    fn booleans_parse_as_pflag_does() {
        assert!(parse(&["--leader-elect"]).unwrap().flags.leader_elect);
        assert!(parse(&["--leader-elect=true"]).unwrap().flags.leader_elect);
        assert!(parse(&["--leader-elect=T"]).unwrap().flags.leader_elect);
        assert!(!parse(&["--leader-elect=false"]).unwrap().flags.leader_elect);
        assert!(
            !parse(&["--insecure-diagnostics=0"])
                .unwrap()
                .flags
                .insecure_diagnostics
        );
        assert!(
            !parse(&["--privileged-nodes=false"])
                .unwrap()
                .flags
                .privileged_nodes
        );
        // pflag never takes a boolean's value from the next argument.
        assert!(parse(&["--leader-elect", "false"]).is_err());
        let error = parse(&["--leader-elect=maybe"]).unwrap_err().to_string();
        assert!(error.contains("invalid boolean \"maybe\""), "{error}");
    }

    #[test]
    fn values_take_both_forms_and_underscores_read_as_dashes() {
        let flags = parse(&[
            "--namespace",
            "ns1",
            "--watch_filter=team-a",
            "--leader_elect_lease_duration=1m30s",
            "-v",
            "4",
            "--logging-format=json",
        ])
        .unwrap()
        .flags;
        assert_eq!(flags.watch_namespace().as_deref(), Some("ns1"));
        assert_eq!(flags.watch_filter_value().as_deref(), Some("team-a"));
        assert_eq!(flags.leader_elect_lease_duration, Duration::from_secs(90));
        assert_eq!(flags.verbosity, 4);
        assert_eq!(flags.logging_format, LogFormat::Json);
        assert_eq!(parse(&["--v=5"]).unwrap().flags.verbosity, 5);
        assert_eq!(parse(&["-v=3"]).unwrap().flags.verbosity, 3);
        assert_eq!(
            parse(&["--kube-api-qps=-1"]).unwrap().flags.kube_api_qps,
            -1.0
        );
        // Given twice, the last value wins, as in pflag.
        let flags = parse(&["--namespace=a", "--namespace=b", "-v=1", "-v=4"])
            .unwrap()
            .flags;
        assert_eq!((flags.namespace.as_str(), flags.verbosity), ("b", 4));
        // An underscore in a value is kept.
        let flags = parse(&["--namespace=a_b"]).unwrap().flags;
        assert_eq!(flags.namespace, "a_b");
    }

    #[test]
    fn lists_split_on_commas_and_repeat() {
        let flags = parse(&[
            "--tls-cipher-suites=TLS_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "--tls-cipher-suites",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ])
        .unwrap()
        .flags;
        assert_eq!(flags.tls_options().cipher_suites.len(), 3);
        let error = parse(&["--tls-cipher-suites=TLS_RSA_WITH_RC4_128_SHA"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("TLS_RSA_WITH_RC4_128_SHA"), "{error}");
        let flags = parse(&[
            "--feature-gates=MachinePool=true,ClusterTopology=true",
            "--feature-gates=PriorityQueue=false",
        ])
        .unwrap()
        .flags;
        assert!(flags.features().cluster_topology);
        let error = parse(&["--feature-gates=Bogus=true"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unrecognized feature gate: Bogus"),
            "{error}"
        );
    }

    #[test]
    fn bad_values_name_the_flag_and_the_rule() {
        let error = parse(&["--sync-period=soon"]).unwrap_err().to_string();
        assert!(error.contains("--sync-period"), "{error}");
        let error = parse(&["--dockermachine-concurrency=0"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--dockermachine-concurrency") && error.contains("from 1"),
            "{error}"
        );
        assert_eq!(
            parse(&["--diagnostics-address=0"])
                .unwrap()
                .flags
                .diagnostics_address,
            DiagnosticsAddress::Disabled
        );
        assert_eq!(
            parse(&["--health-addr=0"]).unwrap().flags.health_addr,
            DiagnosticsAddress::Disabled
        );
        let error = parse(&["--health-addr=9440"]).unwrap_err().to_string();
        assert!(
            error.contains("--health-addr") && error.contains("missing port"),
            "{error}"
        );
        let error = parse(&["--tls-min-version=VersionTLS99"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown tls version"), "{error}");
        let error = parse(&["--logging-format=xml"]).unwrap_err().to_string();
        assert!(error.contains("json") && error.contains("text"), "{error}");
        assert!(parse(&["--no-such-flag"]).is_err());
    }

    #[test]
    fn flags_without_effect_are_named_when_given() {
        let parsed = parse(&[
            "--devmachine-concurrency=10",
            "--profiler-address=localhost:6060",
            "--dockermachine-concurrency=10",
        ])
        .unwrap();
        assert_eq!(
            parsed.no_effect,
            vec![
                "--profiler-address=localhost:6060".to_string(),
                "--devmachine-concurrency=10".to_string()
            ]
        );
        assert!(parse(&[]).unwrap().no_effect.is_empty());
    }

    /// Each flag of CAPD v1.14.0's `manager --help` (a fixture) with its default as shown there.
    fn capd_flags() -> Vec<(String, Option<String>)> {
        let help = include_str!("../tests/fixtures/capd/manager-help.txt");
        let mut flags: Vec<(String, String)> = Vec::new();
        for line in help.lines().skip(1) {
            let trimmed = line.trim_start();
            let entry = trimmed.strip_prefix("-v, ").unwrap_or(trimmed);
            match entry.strip_prefix("--") {
                Some(rest) if line.starts_with("  ") && trimmed.starts_with('-') => {
                    let name = rest.split_whitespace().next().unwrap_or_default();
                    flags.push((name.to_owned(), line.to_owned()));
                }
                _ => {
                    if let Some((_, text)) = flags.last_mut() {
                        text.push_str(line);
                    }
                }
            }
        }
        flags
            .into_iter()
            .map(|(name, text)| {
                let default = text.rfind("(default ").map(|at| {
                    let value = &text[at + "(default ".len()..];
                    value[..value.rfind(')').unwrap_or(value.len())]
                        .trim_matches('"')
                        .to_owned()
                });
                (name, default)
            })
            .collect()
    }

    /// Whether two defaults mean the same: equal text, or equal as Go durations or numbers.
    fn same_default(capd: &str, ours: &str) -> bool {
        if capd == ours {
            return true;
        }
        if let (Ok(a), Ok(b)) = (
            formats::parse_go_duration(capd),
            formats::parse_go_duration(ours),
        ) {
            return a == b;
        }
        matches!((capd.parse::<f64>(), ours.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
    }

    #[test]
    fn every_flag_of_capds_manager_is_accepted_with_its_default() {
        let command = Flags::command();
        let flags = capd_flags();
        assert!(flags.len() > 40, "the fixture lists {} flags", flags.len());
        for (name, default) in flags {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("CAPD's --{name} is not accepted"));
            let Some(default) = default else { continue };
            let ours: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert!(
                same_default(&default, &ours.join(",")),
                "--{name}: CAPD's default is {default:?}, ours {ours:?}"
            );
        }
    }

    #[test]
    fn capds_deployment_arguments_are_accepted() {
        #[derive(serde::Deserialize)]
        struct Deployment {
            args: Vec<String>,
        }
        let fixture = include_str!("../tests/fixtures/capd/manager-deployment-args.yaml");
        let deployment: Deployment = serde_saphyr::from_str(fixture).unwrap();
        let parsed = parse(
            &deployment
                .args
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let flags = parsed.flags;
        assert!(flags.leader_elect);
        assert!(
            matches!(flags.diagnostics_address, DiagnosticsAddress::Listen(a) if a.port() == 8443)
        );
        assert!(!flags.insecure_diagnostics);
        assert!(!flags.features().cluster_topology);
        assert!(parsed.no_effect.is_empty());
    }

    #[test]
    fn every_no_effect_flag_exists_and_says_so_in_help() {
        let command = Flags::command();
        for id in NO_EFFECT_FLAGS {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == *id)
                .unwrap_or_else(|| panic!("no flag {id}"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(help.contains("No effect"), "--{id}: {help}");
            assert_eq!(arg.get_help_heading(), Some(NO_EFFECT));
        }
    }
}
