//! The `json` log format: events and span fields written as the lines component-base's JSON
//! logger writes (see [`layer`](super::layer) for the keys and their order).

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::verbosity_for_level;

/// Collects fields as JSON values, in the order they are recorded.
#[derive(Default)]
struct Collect {
    fields: Vec<(&'static str, Value)>,
}

impl Collect {
    fn push(&mut self, field: &Field, value: Value) {
        let name = field.name();
        self.fields
            .push((name.strip_prefix("r#").unwrap_or(name), value));
    }
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `write!` rather than `format!`: a Debug impl returning an error must not panic.
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.push(field, Value::String(text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::String(value.to_owned()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let value =
            i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.push(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let value =
            u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.push(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, float(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = String::new();
        let _ = write!(text, "{value}");
        self.push(field, Value::String(text));
    }
}

/// A float as zap's JSON encoder writes it: a number, or `"NaN"`, `"+Inf"`, `"-Inf"`.
fn float(value: f64) -> Value {
    match serde_json::Number::from_f64(value) {
        Some(number) => Value::Number(number),
        None if value.is_nan() => Value::String("NaN".into()),
        None if value > 0.0 => Value::String("+Inf".into()),
        None => Value::String("-Inf".into()),
    }
}

/// Comma-separated `"key":value` pairs, without braces.
#[derive(Default)]
struct Pairs(String);

impl Pairs {
    fn push(&mut self, key: &str, value: &Value) -> fmt::Result {
        self.separate();
        let key = serde_json::to_string(key).map_err(|_| fmt::Error)?;
        let value = serde_json::to_string(value).map_err(|_| fmt::Error)?;
        self.0.push_str(&key);
        self.0.push(':');
        self.0.push_str(&value);
        Ok(())
    }

    /// Appends pairs already encoded (a span's stored fields).
    fn push_encoded(&mut self, pairs: &str) {
        if !pairs.is_empty() {
            self.separate();
            self.0.push_str(pairs);
        }
    }

    fn separate(&mut self) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
    }
}

/// The object a span carrying `controllerKind`, `name` and `namespace` refers to, as
/// `klog.KRef` writes it: `(kind, {"name": .., "namespace": ..})`, namespace omitted when empty.
fn object_ref(fields: &[(&'static str, Value)]) -> Option<(String, Value)> {
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_str())
    };
    let kind = get("controllerKind").filter(|k| !k.is_empty())?;
    let mut object = Map::new();
    object.insert("name".into(), Value::String(get("name")?.to_owned()));
    if let Some(namespace) = get("namespace").filter(|ns| !ns.is_empty()) {
        object.insert("namespace".into(), Value::String(namespace.to_owned()));
    }
    Some((kind.to_owned(), Value::Object(object)))
}

/// Stores a span's fields as encoded JSON pairs (see [`layer`](super::layer)).
pub(super) struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut collect = Collect::default();
        fields.record(&mut collect);
        let reference = object_ref(&collect.fields);
        let mut pairs = Pairs::default();
        for (key, value) in &collect.fields {
            pairs.push(key, value)?;
            if *key == "controllerKind"
                && let Some((kind, object)) = &reference
            {
                pairs.push(kind, object)?;
            }
        }
        writer.write_str(&pairs.0)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        if !current.fields.is_empty() {
            current.fields.push(',');
        }
        self.format_fields(current.as_writer(), fields)
    }
}

/// Writes an event as one component-base JSON line (see [`layer`](super::layer)).
pub(super) struct JsonFormat;

impl<S> FormatEvent<S, JsonFields> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let level = *metadata.level();
        let mut collect = Collect::default();
        event.record(&mut collect);

        let mut message = Value::String(String::new());
        let mut error = None;
        // Records of the `log` crate carry their origin as fields (tracing-log).
        let mut log_file = None;
        let mut log_line = None;
        let mut fields = Vec::with_capacity(collect.fields.len());
        for (key, value) in collect.fields {
            match key {
                "message" => message = value,
                "error" if level == Level::ERROR && error.is_none() => error = Some(value),
                "log.file" => log_file = value.as_str().map(str::to_owned),
                "log.line" => log_line = value.as_u64(),
                "log.target" | "log.module_path" => {}
                _ => fields.push((key, value)),
            }
        }

        let mut line = Pairs::default();
        line.push("ts", &float(epoch_millis()))?;
        let file = log_file.as_deref().or(metadata.file());
        let line_number = log_line.or(metadata.line().map(u64::from));
        if let Some(caller) = file.map(|f| caller(f, line_number)) {
            line.push("caller", &Value::String(caller))?;
        }
        line.push("msg", &message)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(stored) = span.extensions().get::<FormattedFields<JsonFields>>() {
                    line.push_encoded(&stored.fields);
                }
            }
        }
        if let Some(v) = verbosity_for_level(level) {
            line.push("v", &Value::from(v))?;
        }
        for (key, value) in &fields {
            line.push(key, value)?;
        }
        if let Some(error) = &error {
            line.push("err", error)?;
        }
        writer.write_char('{')?;
        writer.write_str(&line.0)?;
        writer.write_str("}\n")
    }
}

/// Milliseconds since the Unix epoch, with a fraction (0 if the clock is before 1970).
fn epoch_millis() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as f64 / 1e6)
        .unwrap_or_default()
}

/// `file:line` with the file cut to its last two path elements, as zap's `TrimmedPath`.
fn caller(file: &str, line: Option<u64>) -> String {
    let short = file
        .rfind('/')
        .and_then(|last| file[..last].rfind('/'))
        .map_or(file, |before| &file[before + 1..]);
    match line {
        Some(line) => format!("{short}:{line}"),
        None => short.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::tests::capture;
    use crate::telemetry::{LogFormat, reconcile_span};

    /// The one JSON line `log` writes, parsed, and its raw text.
    fn json_line(log: impl FnOnce()) -> (Map<String, Value>, String) {
        let out = capture(LogFormat::Json, false, log);
        assert_eq!(out.matches('\n').count(), 1, "one line expected: {out}");
        let line = out.trim_end().to_owned();
        match serde_json::from_str(&line) {
            Ok(Value::Object(object)) => (object, line),
            other => panic!("not a JSON object ({other:?}): {line}"),
        }
    }

    fn assert_caller_here(line: &Map<String, Value>) {
        let caller = line["caller"].as_str().unwrap_or_default();
        let (file, number) = caller.rsplit_once(':').unwrap_or_default();
        assert_eq!(file, "telemetry/json.rs", "{caller}");
        assert!(number.parse::<u32>().is_ok(), "{caller}");
    }

    #[test]
    fn json_info_line_has_component_base_keys() {
        let (line, raw) =
            json_line(|| tracing::info!(port = 9443, "serving the admission webhooks"));
        assert!(line["ts"].is_f64(), "{raw}");
        let ts = line["ts"].as_f64().unwrap_or_default();
        let now = epoch_millis();
        assert!(
            ts > now - 60_000.0 && ts <= now,
            "ts {ts} is not epoch milliseconds"
        );
        assert_caller_here(&line);
        assert_eq!(line["msg"], "serving the admission webhooks");
        assert_eq!(line["v"], 0);
        assert_eq!(line["port"], 9443);
        assert_eq!(line.len(), 5, "{raw}");
        // zap's order: ts, caller, msg, then v before the fields.
        assert!(raw.starts_with(r#"{"ts":"#), "{raw}");
        let at = |key: &str| raw.find(&format!("\"{key}\":")).unwrap_or(usize::MAX);
        assert!(
            at("caller") < at("msg") && at("msg") < at("v") && at("v") < at("port"),
            "{raw}"
        );
    }

    #[test]
    fn json_debug_and_trace_lines_carry_their_verbosity() {
        let (line, _) = json_line(|| tracing::debug!("listing"));
        assert_eq!(line["v"], 4);
        assert_eq!(line["msg"], "listing");
        let (line, _) = json_line(|| tracing::trace!("Reconciling"));
        assert_eq!(line["v"], 5);
        let (line, raw) = json_line(|| tracing::warn!(error = "boom", "retrying"));
        assert_eq!(line["v"], 0);
        assert_eq!(
            line["error"], "boom",
            "a warning keeps its error field: {raw}"
        );
        assert!(!line.contains_key("err"), "{raw}");
    }

    #[test]
    fn json_error_line_has_err_and_no_v() {
        let error = std::io::Error::other("invalid namespace:default");
        let (line, raw) = json_line(|| {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                ns = "default",
                podnum = 2,
                "wrong namespace"
            )
        });
        assert_eq!(line["msg"], "wrong namespace");
        assert_eq!(line["err"], "invalid namespace:default");
        assert_eq!(line["ns"], "default");
        assert_eq!(line["podnum"], 2);
        assert!(
            !line.contains_key("v") && !line.contains_key("error"),
            "{raw}"
        );
        assert_caller_here(&line);
        // Like component-base's json_test.go:193: err comes last.
        assert!(
            raw.ends_with(r#""err":"invalid namespace:default"}"#),
            "{raw}"
        );
        // A Display value under `error` counts too.
        let (line, _) = json_line(|| tracing::error!(error = %"some error", "failed"));
        assert_eq!(line["err"], "some error");
    }

    #[test]
    fn json_line_inside_a_reconcile_span_has_controller_runtime_keys() {
        let (line, raw) = json_line(|| {
            let span = reconcile_span("DockerMachine", "ns", "m1");
            let _entered = span.enter();
            tracing::info!(container = "c1", "creating the node container");
        });
        assert_eq!(line["controller"], "dockermachine");
        assert_eq!(line["controllerGroup"], "infrastructure.cluster.x-k8s.io");
        assert_eq!(line["controllerKind"], "DockerMachine");
        assert_eq!(
            line["DockerMachine"],
            serde_json::json!({"name": "m1", "namespace": "ns"})
        );
        assert_eq!(line["namespace"], "ns");
        assert_eq!(line["name"], "m1");
        let id = line["reconcileID"].as_str().unwrap_or_default();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(line["container"], "c1");
        assert_eq!(line["v"], 0);
        // controller-runtime's order, and span fields before the line's own.
        let object = r#""DockerMachine":{"name":"m1","namespace":"ns"}"#;
        assert!(raw.contains(object), "{raw}");
        let top = raw.replace(object, r#""DockerMachine":{}"#);
        let at = |key: &str| top.find(&format!("\"{key}\":")).unwrap_or(usize::MAX);
        let order = [
            "msg",
            "controller",
            "controllerGroup",
            "controllerKind",
            "DockerMachine",
            "namespace",
            "name",
            "reconcileID",
            "v",
            "container",
        ];
        for pair in order.windows(2) {
            assert!(
                at(pair[0]) < at(pair[1]),
                "{} before {}: {raw}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn json_nested_spans_flatten_outermost_first_and_cluster_scoped_refs_omit_namespace() {
        let (line, raw) = json_line(|| {
            let outer = reconcile_span("DockerCluster", "", "c1");
            let _outer = outer.enter();
            let inner = tracing::info_span!(
                "phase",
                phase = "loadBalancer",
                late = tracing::field::Empty
            );
            let _inner = inner.enter();
            inner.record("late", 7);
            tracing::info!("ensured");
        });
        assert_eq!(line["DockerCluster"], serde_json::json!({"name": "c1"}));
        assert_eq!(line["phase"], "loadBalancer");
        assert_eq!(line["late"], 7);
        assert!(raw.find("\"reconcileID\"") < raw.find("\"phase\""), "{raw}");
    }

    #[test]
    fn json_never_breaks_on_odd_values() {
        struct Failing;
        impl fmt::Debug for Failing {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                Err(fmt::Error)
            }
        }
        let (line, raw) = json_line(|| {
            tracing::info!(
                quote = "a \"quoted\" \\ value\n\twith \u{1b}[31m escapes \u{0}",
                nan = f64::NAN,
                inf = f64::INFINITY,
                big = u128::MAX,
                small = i128::MIN,
                fits = 5_i128,
                failing = ?Failing,
                r#type = "raw",
                "message with \"quotes\"\nand a newline"
            )
        });
        assert_eq!(
            line["quote"],
            "a \"quoted\" \\ value\n\twith \u{1b}[31m escapes \u{0}"
        );
        assert_eq!(line["nan"], "NaN");
        assert_eq!(line["inf"], "+Inf");
        assert_eq!(line["big"], u128::MAX.to_string());
        assert_eq!(line["small"], i128::MIN.to_string());
        assert_eq!(line["fits"], 5);
        assert!(line["failing"].is_string());
        assert_eq!(line["type"], "raw");
        assert_eq!(line["msg"], "message with \"quotes\"\nand a newline");
        assert!(
            !raw.contains('\n') && !raw.contains('\u{1b}'),
            "escaped: {raw}"
        );
    }

    #[test]
    fn caller_keeps_the_last_two_path_elements_as_zap() {
        assert_eq!(
            caller("src/controllers/docker_machine.rs", Some(245)),
            "controllers/docker_machine.rs:245"
        );
        assert_eq!(
            caller(
                "/root/.cargo/registry/src/x/kube-runtime-5.0.0/src/controller/mod.rs",
                Some(1)
            ),
            "controller/mod.rs:1"
        );
        assert_eq!(caller("src/main.rs", Some(9)), "src/main.rs:9");
        assert_eq!(caller("main.rs", None), "main.rs");
    }
}
