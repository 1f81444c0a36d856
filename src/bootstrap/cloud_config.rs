//! cloud-config (cloud-init) translation: `write_files` and `runcmd`, in document order.
//!
//! The document is read twice: once as ordered generic YAML (module order, shapes, error
//! messages), and once per supported module with its scalars as strings, so that values
//! such as `permissions: 0640` or a `runcmd` argument `yes` keep the text that was written
//! (generic YAML would turn them into a number or a boolean). When that second reading
//! fails (a module with an unexpected shape), the generic values are used.

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::kubeadm::{self, Expect};
use super::yaml::{self, Yaml};
use super::{
    BootstrapError, Command, FileSpec, Format, Options, Plan, check_path, decode, file_commands,
    octal_mode, shell, shorten,
};

/// The preflight checks that fail in a container, ignored by `kubeadm init`/`join`.
const IGNORE_PREFLIGHT_ERRORS: &str =
    "SystemVerification,Swap,FileContent--proc-sys-net-bridge-bridge-nf-call-iptables";

/// The mode cat gives a new file (with the usual umask); no `chmod` is needed for it.
const DEFAULT_MODE: u32 = 0o644;

/// The owner of files written by `docker exec` as root; no `chown` is needed for it.
const DEFAULT_OWNER: &str = "root:root";

/// Translates a cloud-config document.
pub(super) fn plan(text: &str, options: &Options) -> Result<Plan, BootstrapError> {
    let doc =
        yaml::parse_document(text).map_err(|message| BootstrapError::InvalidYaml { message })?;
    let modules = match doc {
        Yaml::Map(modules) => modules,
        Yaml::Null => {
            return Err(BootstrapError::NotAMapping {
                format: Format::CloudConfig,
                found: "an empty document",
            });
        }
        other => {
            return Err(BootstrapError::NotAMapping {
                format: Format::CloudConfig,
                found: other.kind(),
            });
        }
    };

    let mut plan = Plan::default();
    for (module, value) in &modules {
        match module.as_str() {
            "write_files" => {
                let raw = serde_saphyr::from_str::<RawWriteFiles>(text)
                    .ok()
                    .and_then(|r| r.write_files);
                write_files(value, raw.as_deref(), options, &mut plan)?;
            }
            "runcmd" => {
                let raw = serde_saphyr::from_str::<RawRuncmd>(text)
                    .ok()
                    .and_then(|r| r.runcmd);
                runcmd(value, raw.as_deref(), &mut plan)?;
            }
            other => plan.warnings.push(format!(
                "cloud-config module {other:?} is not supported by the Docker provider; skipped"
            )),
        }
    }
    Ok(plan)
}

/// The items of a module that must be a list (null counts as empty).
fn module_items<'a>(module: &str, value: &'a Yaml) -> Result<&'a [Yaml], BootstrapError> {
    match value {
        Yaml::Seq(items) => Ok(items),
        Yaml::Null => Ok(&[]),
        other => Err(BootstrapError::Invalid {
            location: module.to_owned(),
            problem: format!("expected a list, found {}", other.kind()),
        }),
    }
}

/// The `write_files` module.
fn write_files(
    value: &Yaml,
    raw: Option<&[RawFile]>,
    options: &Options,
    plan: &mut Plan,
) -> Result<(), BootstrapError> {
    let items = module_items("write_files", value)?;
    // Only trust the string reading if it saw the same list.
    let raw = raw.filter(|r| r.len() == items.len());
    for (index, item) in items.iter().enumerate() {
        let file = write_file(index, item, raw.and_then(|r| r.get(index)), options, plan)?;
        plan.commands.extend(file_commands(file));
    }
    Ok(())
}

/// One `write_files` item as the commands' input.
fn write_file<'a>(
    index: usize,
    item: &'a Yaml,
    raw: Option<&'a RawFile>,
    options: &Options,
    plan: &mut Plan,
) -> Result<FileSpec<'a>, BootstrapError> {
    let invalid = |location: String, problem: String| BootstrapError::Invalid { location, problem };
    let Yaml::Map(fields) = item else {
        return Err(invalid(
            format!("write_files[{index}]"),
            format!("expected a mapping, found {}", item.kind()),
        ));
    };
    // A text field: as written when the string reading saw it, else the generic scalar.
    let text = |key: &str,
                raw: Option<&'a Option<String>>,
                location: &str|
     -> Result<Option<String>, BootstrapError> {
        if let Some(raw) = raw {
            return Ok(raw.clone());
        }
        match fields.get(key) {
            None | Some(Yaml::Null) => Ok(None),
            Some(value) => value.scalar_text().map(Some).ok_or_else(|| {
                invalid(
                    location.to_owned(),
                    format!("`{key}` must be a string, found {}", value.kind()),
                )
            }),
        }
    };

    let path = match (raw, fields.get("path")) {
        (Some(RawFile { path: Some(p), .. }), _) => p.trim(),
        (_, Some(Yaml::String(p))) => p.trim(),
        (_, None | Some(Yaml::Null)) => "",
        (_, Some(other)) => {
            return Err(invalid(
                format!("write_files[{index}]"),
                format!("`path` must be a string, found {}", other.kind()),
            ));
        }
    };
    if path.is_empty() {
        return Err(invalid(
            format!("write_files[{index}]"),
            "`path` is required".to_owned(),
        ));
    }
    let location = format!("write_files[{index}] ({path})");
    check_path(path).map_err(|problem| invalid(location.clone(), problem))?;

    let content = text("content", raw.map(|r| &r.content), &location)?.unwrap_or_default();
    let encoding = text("encoding", raw.map(|r| &r.encoding), &location)?.unwrap_or_default();
    let mut content = decode_content(content.into_bytes(), &encoding, &location, path, plan)?;

    let kubeadm_file = match path {
        kubeadm::INIT_PATH => Some(Expect::Init),
        kubeadm::JOIN_PATH => Some(Expect::Join),
        _ => None,
    };
    if let Some(expect) = kubeadm_file {
        content = kubeadm::adjust_cloud_config(&content, expect, options).map_err(|problem| {
            BootstrapError::Kubeadm {
                path: path.to_owned(),
                problem,
            }
        })?;
    }

    let mode = match text("permissions", raw.map(|r| &r.permissions), &location)? {
        None => DEFAULT_MODE,
        Some(permissions) => parse_mode(&permissions).ok_or_else(|| {
            invalid(
                location.clone(),
                format!(
                    "invalid permissions {permissions:?}: expected an octal mode such as \"0644\""
                ),
            )
        })?,
    };
    let owner = text("owner", raw.map(|r| &r.owner), &location)?
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| DEFAULT_OWNER.to_owned());
    check_owner(&owner).map_err(|problem| invalid(location.clone(), problem))?;
    let append = match fields.get("append") {
        None | Some(Yaml::Null) => false,
        Some(value) => parse_bool(value).ok_or_else(|| {
            invalid(
                location.clone(),
                format!("`append` must be a boolean, found {}", value.kind()),
            )
        })?,
    };
    if fields
        .get("source")
        .is_some_and(|s| !matches!(s, Yaml::Null))
    {
        plan.warnings.push(format!(
            "{location}: `source` is not supported by the Docker provider; `content` is written"
        ));
    }

    Ok(FileSpec {
        path,
        writes: vec![(content, append)],
        mode: (mode != DEFAULT_MODE).then(|| octal_mode(mode)),
        owner: (owner != DEFAULT_OWNER).then_some(owner),
    })
}

/// Decodes content by cloud-init's `encoding` names (case-insensitive): base64, gzip, or
/// base64 then gzip; anything else is plain text.
fn decode_content(
    content: Vec<u8>,
    encoding: &str,
    location: &str,
    path: &str,
    plan: &mut Plan,
) -> Result<Vec<u8>, BootstrapError> {
    let decode_error = |problem: String| BootstrapError::Decode {
        location: location.to_owned(),
        path: path.to_owned(),
        problem,
    };
    match encoding.trim().to_ascii_lowercase().as_str() {
        "b64" | "base64" => decode::base64(&content).map_err(decode_error),
        "gz" | "gzip" => decode::gunzip(&content).map_err(decode_error),
        "gz+b64" | "gzip+base64" | "gz+base64" | "gzip+b64" => {
            let compressed = decode::base64(&content).map_err(decode_error)?;
            decode::gunzip(&compressed).map_err(decode_error)
        }
        "" | "text/plain" => Ok(content),
        other => {
            plan.warnings.push(format!(
                "{location}: unknown encoding {other:?}, content written as plain text"
            ));
            Ok(content)
        }
    }
}

/// Parses a file mode written in octal (`"0640"`, `"640"`, `"0o640"`). A number the YAML
/// parser read (`0640` unquoted becomes 640) arrives as its decimal text, whose digits are
/// taken as octal, as written.
fn parse_mode(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text
        .strip_prefix("0o")
        .or_else(|| text.strip_prefix("0O"))
        .unwrap_or(text);
    if digits.is_empty() || digits.len() > 7 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
}

/// Checks an owner (`user`, `user:group`, `:group`): one word that cannot be taken for an
/// option.
fn check_owner(owner: &str) -> Result<(), String> {
    if owner.starts_with('-') || owner.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid owner {owner:?}: expected \"user\" or \"user:group\""
        ));
    }
    Ok(())
}

/// A YAML boolean, also written as a string the way cloud-init accepts it.
fn parse_bool(value: &Yaml) -> Option<bool> {
    match value {
        Yaml::Bool(b) => Some(*b),
        Yaml::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" | "" => Some(false),
            _ => None,
        },
        Yaml::Int(1) => Some(true),
        Yaml::Int(0) => Some(false),
        _ => None,
    }
}

/// The `runcmd` module.
fn runcmd(value: &Yaml, raw: Option<&[RawRunItem]>, plan: &mut Plan) -> Result<(), BootstrapError> {
    let items = module_items("runcmd", value)?;
    let raw = raw.filter(|r| r.len() == items.len());
    for (index, item) in items.iter().enumerate() {
        let script = match raw.and_then(|r| r.get(index)) {
            Some(RawRunItem::Script(script)) => script.clone(),
            Some(RawRunItem::Args(args)) => shell::join_args(args),
            None => generic_run_item(index, item)?,
        };
        let description = format!("run runcmd[{index}]: {}", shorten(&script, 80));
        let (script, _) = shell::rewrite_kubeadm(&script, IGNORE_PREFLIGHT_ERRORS);
        plan.commands.push(Command::shell(script, description, 0));
    }
    Ok(())
}

/// A `runcmd` item read as generic YAML: a string, or a list of scalar arguments.
fn generic_run_item(index: usize, item: &Yaml) -> Result<String, BootstrapError> {
    match item {
        Yaml::String(script) => Ok(script.clone()),
        Yaml::Seq(args) => {
            let args = args
                .iter()
                .enumerate()
                .map(|(arg_index, arg)| {
                    arg.scalar_text().ok_or_else(|| BootstrapError::Invalid {
                        location: format!("runcmd[{index}][{arg_index}]"),
                        problem: format!("expected a string argument, found {}", arg.kind()),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(shell::join_args(&args))
        }
        other => Err(BootstrapError::Invalid {
            location: format!("runcmd[{index}]"),
            problem: format!(
                "expected a string or a list of arguments, found {}",
                other.kind()
            ),
        }),
    }
}

/// `write_files` with scalars read as written.
#[derive(Deserialize)]
struct RawWriteFiles {
    /// The items.
    #[serde(default)]
    write_files: Option<Vec<RawFile>>,
}

/// One `write_files` item's text fields, as written.
#[derive(Deserialize)]
struct RawFile {
    /// `path`.
    #[serde(default)]
    path: Option<String>,
    /// `content`.
    #[serde(default)]
    content: Option<String>,
    /// `encoding`.
    #[serde(default)]
    encoding: Option<String>,
    /// `permissions`.
    #[serde(default)]
    permissions: Option<String>,
    /// `owner`.
    #[serde(default)]
    owner: Option<String>,
}

/// `runcmd` with scalars read as written.
#[derive(Deserialize)]
struct RawRuncmd {
    /// The items.
    #[serde(default)]
    runcmd: Option<Vec<RawRunItem>>,
}

/// One `runcmd` item, as written.
enum RawRunItem {
    /// A string, run with `sh -c`.
    Script(String),
    /// A list of arguments.
    Args(Vec<String>),
}

impl<'de> Deserialize<'de> for RawRunItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawRunItemVisitor)
    }
}

/// Accepts a string or a list of strings, nothing else.
struct RawRunItemVisitor;

impl<'de> Visitor<'de> for RawRunItemVisitor {
    type Value = RawRunItem;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRunItem, E> {
        Ok(RawRunItem::Script(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawRunItem, E> {
        Ok(RawRunItem::Script(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRunItem, A::Error> {
        let mut args = Vec::new();
        while let Some(arg) = seq.next_element::<String>()? {
            args.push(arg);
        }
        Ok(RawRunItem::Args(args))
    }
}
