//! Ignition translation (spec v2.x and v3.x): `storage.files`, then `systemd.units`, then the
//! success sentinel (Ignition data has no CABPK `runcmd` that writes it).

use serde_json::{Map, Value};

use super::kubeadm;
use super::{
    BootstrapError, Command, FILE_RETRIES, FileSpec, Format, Options, Plan, SUCCESS_SENTINEL,
    check_path, decode, file_commands, octal_mode, shell,
};

/// Where systemd units are written.
const UNIT_DIR: &str = "/etc/systemd/system";

/// Sections this translation does not implement; they are skipped with a warning.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("ignition", "config"),
    ("storage", "directories"),
    ("storage", "links"),
    ("storage", "disks"),
    ("storage", "raid"),
    ("storage", "filesystems"),
    ("storage", "luks"),
    ("passwd", "users"),
    ("passwd", "groups"),
    ("networkd", "units"),
];

/// Translates an Ignition config.
pub(super) fn plan(text: &str, options: &Options) -> Result<Plan, BootstrapError> {
    let root: Value = serde_json::from_str(text).map_err(|e| BootstrapError::InvalidJson {
        message: e.to_string(),
    })?;
    let Value::Object(root) = root else {
        return Err(BootstrapError::NotAMapping {
            format: Format::Ignition,
            found: json_kind(&root),
        });
    };
    let version = root
        .get("ignition")
        .and_then(|i| i.get("version"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let v3 = match version.split('.').next().map(str::parse::<u32>) {
        Some(Ok(2)) => false,
        Some(Ok(3)) => true,
        _ => {
            return Err(BootstrapError::UnsupportedIgnitionVersion {
                version: version.to_owned(),
            });
        }
    };

    let mut plan = Plan::default();
    for (section, key) in UNSUPPORTED {
        let value = root.get(*section).and_then(|s| s.get(*key));
        if value.is_some_and(non_empty) {
            plan.warnings.push(format!(
                "Ignition {section}.{key} is not supported by the Docker provider; skipped"
            ));
        }
    }

    let storage = object(&root, "storage", "")?;
    if let Some(storage) = storage {
        for (index, file) in array(storage, "files", "storage")?.iter().enumerate() {
            let location = format!("storage.files[{index}]");
            let commands = file_commands_for(file, &location, v3, options, &mut plan)?;
            plan.commands.extend(commands);
        }
    }

    let systemd = object(&root, "systemd", "")?;
    if let Some(systemd) = systemd {
        units(array(systemd, "units", "systemd")?, v3, &mut plan)?;
    }

    plan.commands.push(Command::shell(
        format!("mkdir -p /run/cluster-api && echo success > {SUCCESS_SENTINEL}"),
        format!("write {SUCCESS_SENTINEL} (Ignition has no CABPK success marker)"),
        FILE_RETRIES,
    ));
    Ok(plan)
}

/// The commands for one `storage.files` item.
fn file_commands_for(
    file: &Value,
    location: &str,
    v3: bool,
    options: &Options,
    plan: &mut Plan,
) -> Result<Vec<Command>, BootstrapError> {
    let file = as_object(file, location)?;
    let path = string(file, "path", location)?.unwrap_or("");
    if path.is_empty() {
        return Err(BootstrapError::Invalid {
            location: location.to_owned(),
            problem: "`path` is required".to_owned(),
        });
    }
    let location = format!("{location} ({path})");
    check_path(path).map_err(|problem| BootstrapError::Invalid {
        location: location.clone(),
        problem,
    })?;

    let contents = match object(file, "contents", &location)? {
        Some(resource) => decode_resource(resource, &location, path)?,
        None => None,
    };
    let mut writes = Vec::new();
    if v3 {
        let mut appends = Vec::new();
        for (index, resource) in array(file, "append", &location)?.iter().enumerate() {
            let resource_location = format!("{location}.append[{index}]");
            let resource = as_object(resource, &resource_location)?;
            let content = decode_resource(resource, &resource_location, path)?;
            appends.push(content.unwrap_or_default());
        }
        if contents.is_some() || appends.is_empty() {
            writes.push((contents.unwrap_or_default(), false));
        }
        writes.extend(appends.into_iter().map(|content| (content, true)));
    } else {
        let append = boolean(file, "append", &location)?.unwrap_or(false);
        writes.push((contents.unwrap_or_default(), append));
    }

    if let Some((content, _)) = writes.first_mut() {
        match path {
            kubeadm::IGNITION_SCRIPT_PATH => match std::str::from_utf8(content) {
                Ok(script) => *content = shell::rewrite_kubeadm(script, "all").0.into_bytes(),
                Err(_) => plan.warnings.push(format!(
                    "{location}: not UTF-8 text, kubeadm commands not adjusted"
                )),
            },
            kubeadm::IGNITION_CONFIG_PATH => {
                let (adjusted, problem) = kubeadm::adjust_ignition_config(content, options);
                *content = adjusted;
                if let Some(problem) = problem {
                    plan.warnings.push(format!(
                        "{location}: {problem}; only the KubeProxyConfiguration was appended"
                    ));
                }
            }
            _ => {}
        }
    }

    let mode = match file.get("mode") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|mode| *mode <= 0o7777)
                .and_then(|mode| u32::try_from(mode).ok())
                .map(octal_mode)
                .ok_or_else(|| BootstrapError::Invalid {
                    location: location.clone(),
                    problem: format!(
                        "invalid mode {value}: expected an integer from 0 to 4095 (decimal, e.g. 420 for 0644)"
                    ),
                })?,
        ),
    };
    let user = principal(file, "user", &location)?;
    let group = principal(file, "group", &location)?;
    let owner = match (user, group) {
        (None, None) => None,
        (Some(user), None) => Some(user),
        (None, Some(group)) => Some(format!(":{group}")),
        (Some(user), Some(group)) => Some(format!("{user}:{group}")),
    }
    .filter(|owner| owner != "root:root");

    Ok(file_commands(FileSpec {
        path,
        writes,
        mode,
        owner,
    }))
}

/// Decodes one resource (`{source, compression}`); `None` when it has no source.
fn decode_resource(
    resource: &Map<String, Value>,
    location: &str,
    path: &str,
) -> Result<Option<Vec<u8>>, BootstrapError> {
    let decode_error = |problem: String| BootstrapError::Decode {
        location: location.to_owned(),
        path: path.to_owned(),
        problem,
    };
    let Some(source) = string(resource, "source", location)? else {
        return Ok(None);
    };
    let data = if source.trim().is_empty() {
        Vec::new()
    } else {
        decode::data_url(source).map_err(decode_error)?
    };
    match string(resource, "compression", location)?.unwrap_or("") {
        "" => Ok(Some(data)),
        "gzip" => decode::gunzip(&data).map(Some).map_err(decode_error),
        other => Err(decode_error(format!(
            "unsupported compression {other:?} (expected \"gzip\")"
        ))),
    }
}

/// A file's `user` or `group`: its `name`, else its numeric `id`.
fn principal(
    file: &Map<String, Value>,
    key: &str,
    location: &str,
) -> Result<Option<String>, BootstrapError> {
    let location = format!("{location}.{key}");
    let Some(principal) = object(file, key, &location)? else {
        return Ok(None);
    };
    if let Some(name) = string(principal, "name", &location)?.filter(|n| !n.is_empty()) {
        if name.starts_with('-') || name.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err(BootstrapError::Invalid {
                location,
                problem: format!("invalid name {name:?}"),
            });
        }
        return Ok(Some(name.to_owned()));
    }
    match principal.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(id) => {
            id.as_u64()
                .map(|id| Some(id.to_string()))
                .ok_or_else(|| BootstrapError::Invalid {
                    location,
                    problem: format!("invalid id {id}: expected a non-negative integer"),
                })
        }
    }
}

/// `systemd.units`: unit files and drop-ins, one `daemon-reload`, then the enabled units.
fn units(units: &[Value], v3: bool, plan: &mut Plan) -> Result<(), BootstrapError> {
    let mut enable = Vec::new();
    for (index, unit) in units.iter().enumerate() {
        let location = format!("systemd.units[{index}]");
        let unit = as_object(unit, &location)?;
        let name = string(unit, "name", &location)?.unwrap_or("");
        check_unit_name(name).map_err(|problem| BootstrapError::Invalid {
            location: location.clone(),
            problem,
        })?;
        let location = format!("{location} ({name})");

        if let Some(contents) = string(unit, "contents", &location)? {
            plan.commands.extend(file_commands(FileSpec {
                path: &format!("{UNIT_DIR}/{name}"),
                writes: vec![(contents.as_bytes().to_vec(), false)],
                mode: None,
                owner: None,
            }));
        }
        for (dropin_index, dropin) in array(unit, "dropins", &location)?.iter().enumerate() {
            let dropin_location = format!("{location}.dropins[{dropin_index}]");
            let dropin = as_object(dropin, &dropin_location)?;
            let dropin_name = string(dropin, "name", &dropin_location)?.unwrap_or("");
            check_unit_name(dropin_name).map_err(|problem| BootstrapError::Invalid {
                location: dropin_location.clone(),
                problem,
            })?;
            if let Some(contents) = string(dropin, "contents", &dropin_location)? {
                plan.commands.extend(file_commands(FileSpec {
                    path: &format!("{UNIT_DIR}/{name}.d/{dropin_name}"),
                    writes: vec![(contents.as_bytes().to_vec(), false)],
                    mode: None,
                    owner: None,
                }));
            }
        }

        if boolean(unit, "mask", &location)?.unwrap_or(false) {
            plan.warnings.push(format!(
                "{location}: `mask` is not supported by the Docker provider; skipped"
            ));
        }
        let enabled = boolean(unit, "enabled", &location)?.unwrap_or(false)
            || (!v3 && boolean(unit, "enable", &location)?.unwrap_or(false));
        if enabled {
            enable.push(name);
        }
    }
    if !units.is_empty() {
        plan.commands.push(Command::exec(
            &["systemctl", "daemon-reload"],
            "systemctl daemon-reload".to_owned(),
            FILE_RETRIES,
        ));
    }
    for name in enable {
        // Starting a unit may run kubeadm: never retried, like runcmd.
        plan.commands.push(Command::exec(
            &["systemctl", "enable", "--now", name],
            format!("enable and start {name}"),
            0,
        ));
    }
    Ok(())
}

/// A unit or drop-in name: one non-empty path component.
fn check_unit_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("`name` is required".to_owned());
    }
    if name == "." || name == ".." || name.starts_with('-') || name.contains(['/', '\0']) {
        return Err(format!(
            "invalid name {name:?}: expected a file name such as \"kubeadm.service\""
        ));
    }
    Ok(())
}

/// Whether a section holds anything.
fn non_empty(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => map.values().any(non_empty),
        _ => true,
    }
}

/// What kind of JSON value this is, for error messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `location.key` (or `key` at the top level).
fn field_location(location: &str, key: &str) -> String {
    if location.is_empty() {
        key.to_owned()
    } else {
        format!("{location}.{key}")
    }
}

/// The error for a field of the wrong type.
fn wrong_type(location: &str, key: &str, expected: &str, found: &Value) -> BootstrapError {
    BootstrapError::Invalid {
        location: field_location(location, key),
        problem: format!("expected {expected}, found {}", json_kind(found)),
    }
}

/// The value as an object.
fn as_object<'a>(
    value: &'a Value,
    location: &str,
) -> Result<&'a Map<String, Value>, BootstrapError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(BootstrapError::Invalid {
            location: location.to_owned(),
            problem: format!("expected an object, found {}", json_kind(other)),
        }),
    }
}

/// An optional object field (null counts as absent).
fn object<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    location: &str,
) -> Result<Option<&'a Map<String, Value>>, BootstrapError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(other) => Err(wrong_type(location, key, "an object", other)),
    }
}

/// An optional list field (null or absent is empty).
fn array<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    location: &str,
) -> Result<&'a [Value], BootstrapError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(wrong_type(location, key, "a list", other)),
    }
}

/// An optional string field.
fn string<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    location: &str,
) -> Result<Option<&'a str>, BootstrapError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(location, key, "a string", other)),
    }
}

/// An optional boolean field.
fn boolean(
    map: &Map<String, Value>,
    key: &str,
    location: &str,
) -> Result<Option<bool>, BootstrapError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(location, key, "a boolean", other)),
    }
}
