//! The manager's logging, set up the way a controller-runtime / component-base manager sets up
//! its own, so that the log tooling Cluster API operators already use works on capd-rs.
//!
//! - **Verbosity.** `-v N` maps to a tracing level by [`level_for_verbosity`] (component-base's
//!   `--v`; CAPI logs important lines at V(0), details at V(2), debug at V(4) and trace at V(5)).
//!   The level applies to this crate and to kube; every other crate stays at WARN. When
//!   `RUST_LOG` is set (and not empty) it replaces all of this: see [`filter`].
//! - **Output.** Standard error, as klog writes; ANSI colours only when standard error is a
//!   terminal (never in a log file or `kubectl logs`).
//! - **Formats** ([`LogFormat`], component-base's `--logging-format`): `text`, tracing's readable
//!   single-line format, and `json`, the lines component-base's JSON logger writes.
//! - **Reconcile spans.** [`reconcile_span`] opens the span a reconcile runs in, carrying the
//!   fields controller-runtime's per-reconcile logger carries.
//!
//! The Go sources quoted below are k8s.io/component-base v0.36.3, github.com/go-logr/zapr
//! v1.3.0, go.uber.org/zap v1.28.0, k8s.io/klog/v2 v2.140.0 and sigs.k8s.io/controller-runtime
//! v0.24.1: the versions sigs.k8s.io/cluster-api v1.14.0's go.mod requires.
//!
//! The JSON line format is in `json`, the text field format in `text`.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Read};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

mod json;
mod text;

use json::{JsonFields, JsonFormat};
use text::TextFields;

/// The crates (tracing targets) whose level `-v` sets: this library, the `manager` binary and
/// kube. Every other crate (hyper, h2, rustls, tower, bollard, ...) stays at WARN.
pub const VERBOSITY_TARGETS: [&str; 5] = ["capd", "manager", "kube", "kube_runtime", "kube_client"];

/// The log line format, component-base's `--logging-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `text` (the default, as component-base's `DefaultLogFormat`, logs/api/v1/types.go:30):
    /// tracing's readable single-line format, coloured only on a terminal.
    #[default]
    Text,
    /// `json` (component-base's `JSONLogFormat`, logs/api/v1/types.go:33): one JSON object per
    /// line with the field names of component-base's JSON logger, listed at [`layer`].
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(TelemetryError::UnknownFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `--logging-format` names no known format.
    #[error("unknown log format {0:?}: expected \"text\" or \"json\"")]
    UnknownFormat(String),
    /// `RUST_LOG` is not valid UTF-8.
    #[error("RUST_LOG is not valid UTF-8")]
    RustLogNotUnicode,
    /// The filter directives (`RUST_LOG`'s value) do not parse.
    #[error("invalid log filter {directives:?} (RUST_LOG syntax: target=level,...)")]
    InvalidFilter {
        /// The directives as given.
        directives: String,
        /// The parser's complaint.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the logger")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// The most detailed tracing level shown at component-base verbosity `-v verbosity`:
/// 0 to 3 show INFO (CAPI's V(0) important lines and V(2) details alike), 4 shows DEBUG
/// (CAPI's V(4)), 5 and above TRACE (V(5), e.g. controller-runtime's "Reconciling"). WARN and
/// ERROR lines are always shown, as klog always shows warnings and errors.
pub fn level_for_verbosity(verbosity: u32) -> Level {
    match verbosity {
        0..=3 => Level::INFO,
        4 => Level::DEBUG,
        _ => Level::TRACE,
    }
}

/// The verbosity written as `v` on a JSON line of `level`: the lowest `-v` that shows it
/// (INFO and WARN 0, DEBUG 4, TRACE 5). `None` for ERROR: component-base writes no `v` on
/// error lines (zapr `Error` passes `noLevel`, go-logr/zapr zapr.go:205-207; component-base's
/// test expects `{"ts":..,"caller":..,"msg":"failed","err":"some error"}`,
/// logs/json/json_test.go:214).
pub fn verbosity_for_level(level: Level) -> Option<u32> {
    match level {
        Level::ERROR => None,
        Level::WARN | Level::INFO => Some(0),
        Level::DEBUG => Some(4),
        Level::TRACE => Some(5),
    }
}

/// The filter directives `-v` stands for, e.g. for 4:
/// `warn,capd=debug,manager=debug,kube=debug,kube_runtime=debug,kube_client=debug`.
pub fn directives_for_verbosity(verbosity: u32) -> String {
    let level = level_for_verbosity(verbosity).as_str().to_ascii_lowercase();
    let mut directives = String::from("warn");
    for target in VERBOSITY_TARGETS {
        let _ = write!(directives, ",{target}={level}");
    }
    directives
}

/// The event filter: `rust_log` (the `RUST_LOG` environment variable) when it is set and not
/// blank, in tracing's `target=level,...` syntax; it then overrides `-v` and the WARN default of
/// other crates entirely. Otherwise [`directives_for_verbosity`]. An invalid `RUST_LOG` is an
/// error rather than silently ignored.
pub fn filter(verbosity: u32, rust_log: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let directives = match rust_log.map(str::trim).filter(|d| !d.is_empty()) {
        Some(directives) => directives.to_owned(),
        None => directives_for_verbosity(verbosity),
    };
    EnvFilter::builder()
        .parse(&directives)
        .map_err(|source| TelemetryError::InvalidFilter { directives, source })
}

/// The formatting layer writing `format` lines to `writer`; `ansi` enables colours (text only).
///
/// A [`LogFormat::Json`] line carries, in this order, the keys of component-base's JSON logger
/// (`NewJSONLogger`'s encoder config, k8s.io/component-base logs/json/json.go:66-74, and its
/// zapr options, json.go:94):
/// - `ts`: the time as a float of milliseconds since the Unix epoch (`TimeKey: "ts"`, json.go:70;
///   `epochMillisTimeEncoder`, json.go:103-107);
/// - `caller`: `dir/file:line`, the file's last two path elements (`CallerKey: "caller"`,
///   json.go:68, with `zapcore.ShortCallerEncoder`, json.go:73, i.e. zap's
///   `EntryCaller.TrimmedPath`, zapcore/entry.go:100-130);
/// - `msg`: the message (`MessageKey: "msg"`, json.go:67);
/// - the fields of the enclosing spans, outermost first (logr `WithValues` context, which zap
///   writes before the entry's own fields, zapcore/json_encoder.go:416-420); a span carrying
///   `controllerKind`, `namespace` and `name`, as [`reconcile_span`]'s does, also gets the object
///   under its kind right after `controllerKind`, e.g. `"DockerMachine":{"name":"m1",
///   "namespace":"ns"}` (controller-runtime pkg/builder/controller.go:449, `klog.KRef`, whose
///   JSON keys are `name` and `namespace` with `omitempty`, klog k8s_references.go:29-31, as
///   component-base's test shows, logs/json/klog_test.go:153);
/// - `v`: the verbosity of a non-error line, see [`verbosity_for_level`] (`zapr.LogInfoLevel("v")`,
///   json.go:94; injected before the line's own fields, zapr.go:124-126);
/// - the event's fields as key/value pairs, duplicates kept as zap keeps them
///   (json_test.go:72);
/// - `err`: on an ERROR event, its `error` field (`zapr.ErrorKey("err")`, json.go:94, appended
///   after the other fields, zapr.go:168 and 205-207; json_test.go:193). Other levels keep an
///   `error` field under its own name, as a logr `Info` would.
///
/// There is no level key (the encoder config sets no `LevelKey`) and no `logger` key (tracing
/// has no logr names). Strings are JSON-escaped by serde_json; non-finite floats are written as
/// zap writes them (`"NaN"`, `"+Inf"`, `"-Inf"`).
///
/// A [`LogFormat::Text`] line is tracing's full format; the reconcile span reads
/// `reconcile{controller=dockermachine namespace=ns name=m1 reconcileID=...}` (its
/// `controllerGroup` and `controllerKind` fields are left out of text lines as redundant).
pub fn layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => fmt.with_ansi(ansi).fmt_fields(TextFields).boxed(),
        LogFormat::Json => fmt
            .with_ansi(false)
            .fmt_fields(JsonFields)
            .event_format(JsonFormat)
            .boxed(),
    }
}

/// Installs the process's logger: [`filter`] from `verbosity` and the `RUST_LOG` environment
/// variable, [`layer`] writing `format` to standard error, with ANSI colours only when standard
/// error is a terminal and `NO_COLOR` is unset or empty. Records of the `log` crate (rustls) go
/// through the same filter and format.
pub fn init(format: LogFormat, verbosity: u32) -> Result<(), TelemetryError> {
    let rust_log = match std::env::var("RUST_LOG") {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => return Err(TelemetryError::RustLogNotUnicode),
    };
    let filter = filter(verbosity, rust_log.as_deref())?;
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::registry()
        .with(filter)
        .with(layer(format, ansi, std::io::stderr))
        .try_init()?;
    Ok(())
}

/// The span a reconcile of the `kind` object `namespace/name` runs in, with the keys
/// controller-runtime's per-reconcile logger carries (sigs.k8s.io/controller-runtime v0.24.1):
/// `controller` (the builder's default name, the lower-cased kind, pkg/builder/controller.go:387,
/// set at :434-436), `controllerGroup` and `controllerKind` (:438-441), `namespace` and `name`
/// (:451-453), and `reconcileID`, a fresh UUID per reconcile
/// (pkg/internal/controller/controller.go:469-471). The JSON format adds the object under its
/// kind as controller-runtime does (pkg/builder/controller.go:449); see [`layer`].
pub fn reconcile_span(kind: &str, namespace: &str, name: &str) -> tracing::Span {
    tracing::info_span!(
        "reconcile",
        controller = %kind.to_ascii_lowercase(),
        controllerGroup = %crate::api::GROUP,
        controllerKind = %kind,
        namespace = %namespace,
        name = %name,
        reconcileID = %reconcile_id(),
    )
}

/// A fresh random (version 4) UUID, e.g. `0b2f4c1e-8a9d-4f3b-b2c7-5e6d7a8b9c0d`, as
/// controller-runtime's `reconcileID`. The bytes come from `/dev/urandom`; if it cannot be read,
/// from std's randomly seeded hasher, so this never fails.
pub fn reconcile_id() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        bytes = fallback_random();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut id = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// 16 bytes from std's per-process random hash keys, the time and a counter.
fn fallback_random() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut out = [0u8; 16];
    for (half, chunk) in out.chunks_mut(8).enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(count);
        hasher.write_u128(nanos);
        hasher.write_usize(half);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` collecting everything written into one buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
        }
    }

    /// What `log` writes in `format` (every level enabled).
    pub(super) fn capture(format: LogFormat, ansi: bool, log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber =
            tracing_subscriber::registry().with(layer(format, ansi, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, log);
        buffer.text()
    }

    #[test]
    fn verbosity_maps_to_levels_as_component_base_v() {
        for v in 0..=3 {
            assert_eq!(level_for_verbosity(v), Level::INFO, "-v {v}");
        }
        assert_eq!(level_for_verbosity(4), Level::DEBUG);
        assert_eq!(level_for_verbosity(5), Level::TRACE);
        assert_eq!(level_for_verbosity(u32::MAX), Level::TRACE);
        // And back, for JSON's `v`: the lowest -v that shows the level.
        assert_eq!(verbosity_for_level(Level::WARN), Some(0));
        for level in [Level::INFO, Level::DEBUG, Level::TRACE] {
            assert_eq!(
                verbosity_for_level(level).map(level_for_verbosity),
                Some(level)
            );
        }
        assert_eq!(verbosity_for_level(Level::ERROR), None);
    }

    #[test]
    fn verbosity_filters_this_crate_and_kube_and_keeps_others_at_warn() {
        assert_eq!(
            directives_for_verbosity(4),
            "warn,capd=debug,manager=debug,kube=debug,kube_runtime=debug,kube_client=debug"
        );
        for v in [0, 2, 4, 5, 9] {
            assert!(filter(v, None).is_ok(), "-v {v}");
        }
        let enabled = |filter: EnvFilter| {
            let subscriber = tracing_subscriber::registry().with(filter);
            tracing::subscriber::with_default(subscriber, || {
                [
                    tracing::enabled!(target: "capd::controllers", Level::DEBUG),
                    tracing::enabled!(target: "kube_runtime::controller", Level::DEBUG),
                    tracing::enabled!(target: "hyper::client", Level::INFO),
                    tracing::enabled!(target: "hyper::client", Level::WARN),
                ]
            })
        };
        assert_eq!(
            enabled(filter(2, None).unwrap()),
            [false, false, false, true]
        );
        assert_eq!(enabled(filter(4, None).unwrap()), [true, true, false, true]);
        // RUST_LOG overrides -v entirely; a blank one does not count.
        assert_eq!(
            enabled(filter(4, Some("hyper=info")).unwrap()),
            [false, false, true, true]
        );
        assert_eq!(
            enabled(filter(4, Some("  ")).unwrap()),
            [true, true, false, true]
        );
        let error = filter(0, Some("capd=loud")).unwrap_err();
        assert!(error.to_string().contains("capd=loud"), "{error}");
    }

    #[test]
    fn formats_parse_as_component_base_names_them() {
        assert_eq!("text".parse::<LogFormat>().ok(), Some(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>().ok(), Some(LogFormat::Json));
        assert!("JSON".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::default().to_string(), "text");
    }

    #[test]
    fn reconcile_ids_are_fresh_v4_uuids() {
        let ids = [reconcile_id(), reconcile_id()];
        assert_ne!(ids[0], ids[1]);
        for id in &ids {
            let groups: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
            assert!(id.chars().all(|c| c == '-' || lower_hex(c)), "{id}");
            assert!(groups[2].starts_with('4'), "version 4: {id}");
            assert!(
                matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
                "variant: {id}"
            );
        }
        assert_ne!(fallback_random(), fallback_random());
    }
}
