//! Bootstrap-data translation: turns a machine's bootstrap data (the `value` key of the
//! bootstrap Secret, in the format its `format` key names) into the ordered list of commands
//! that `docker exec` runs inside a kind-style node container. This is the "cloud-init in
//! docker exec" of the upstream Docker provider (CAPD), reimplemented as a pure function:
//! no IO, no Docker, no async, and no panic whatever the input.
//!
//! Two formats are understood:
//!
//! * **cloud-config** (the default): the `write_files` and `runcmd` modules are translated in
//!   document order; every other module (`users`, `ntp`, `bootcmd`, `mounts`, ...) is skipped
//!   with a warning in [`Plan::warnings`] (CAPD fails on them).
//! * **Ignition** spec v2.x and v3.x: `storage.files` and `systemd.units` are translated, then
//!   a final command writes [`SUCCESS_SENTINEL`].
//!
//! Both apply CAPD's adjustments for running kubeadm inside a container: the kubelet extra
//! args and CRI socket of the kubeadm `InitConfiguration`/`JoinConfiguration`, a
//! `KubeProxyConfiguration` that leaves the conntrack sysctl alone, and
//! `--ignore-preflight-errors` on `kubeadm init`/`kubeadm join`, which are also prefixed with a
//! command writing [`STARTED_SENTINEL`] (CAPD's marker that kubeadm was started; capd-rs's
//! guard against running it twice is the runner's progress, see [`runner`]).
//!
//! Fixed CAPD bugs: unknown cloud-config modules are skipped instead of failing, `gz+b64`
//! content is base64-decoded *and* gunzipped, Ignition v3 (not only v2.3) is accepted, Ignition
//! files without a `mode` no longer crash, and paths are shell-quoted.

mod cloud_config;
mod decode;
mod ignition;
mod kubeadm;
pub mod runner;
mod shell;
mod yaml;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

/// The file CABPK's cloud-config `runcmd` writes once kubeadm has succeeded; the Ignition plan
/// writes it itself as its last command.
pub const SUCCESS_SENTINEL: &str = "/run/cluster-api/bootstrap-success.complete";

/// The file written right before `kubeadm init`/`kubeadm join` runs. Its presence tells the
/// controller that bootstrap already started, so kubeadm is never run twice (after a
/// `clusterctl move` or a controller restart).
pub const STARTED_SENTINEL: &str = "/run/cluster-api/capd.bootstrap.started";

/// How many times file-writing commands are retried (CAPD's value).
const FILE_RETRIES: u32 = 5;

/// The format of the bootstrap data, from the bootstrap Secret's `format` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// `cloud-config`: a cloud-init `#cloud-config` YAML document. The default when the Secret
    /// has no `format` key.
    #[default]
    CloudConfig,
    /// `ignition`: an Ignition JSON config (spec v2.x or v3.x).
    Ignition,
}

impl Format {
    /// The value of the Secret's `format` key for this format.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::CloudConfig => "cloud-config",
            Format::Ignition => "ignition",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = BootstrapError;

    /// Parses the Secret's `format` value: `cloud-config` or `ignition` (exactly, as CABPK
    /// writes them).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "cloud-config" => Ok(Format::CloudConfig),
            "ignition" => Ok(Format::Ignition),
            other => Err(BootstrapError::UnknownFormat {
                value: other.to_owned(),
            }),
        }
    }
}

/// Settings that depend on the node image rather than on the bootstrap data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// The node image was built by kind 0.20 or later (containers run with a private cgroup
    /// namespace): also set the kubelet args `cgroup-root=/kubelet` and
    /// `runtime-cgroups=/system.slice/containerd.service`.
    pub kubelet_cgroup_args: bool,
}

/// One command to run in the node container with `docker exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The program and its arguments, for example `["/bin/sh", "-c", "..."]` or
    /// `["mkdir", "-p", "/etc/x"]`. Never empty.
    pub argv: Vec<String>,
    /// Bytes to write to the command's stdin (file contents), if any.
    pub stdin: Option<Vec<u8>>,
    /// Short human text for conditions and logs, for example
    /// `write /etc/kubernetes/pki/ca.crt`.
    pub description: String,
    /// How many times to retry the command after a failure: 5 for commands that write files,
    /// 0 for commands that run the user's commands (`runcmd`, starting units).
    pub retries: u32,
    /// The command makes a file or directory on a node's tmpfs (`/run`, `/tmp`), which a node
    /// restart empties: it is run again before a bootstrap resumes on a restarted node.
    pub on_tmpfs: bool,
}

/// Whether `path` is on a kind node's tmpfs mounts.
fn on_tmpfs(path: &str) -> bool {
    ["/run", "/tmp"]
        .iter()
        .any(|mount| path == *mount || path.starts_with(&format!("{mount}/")))
}

impl Command {
    /// `mkdir -p <dir>`.
    fn mkdir(dir: &str) -> Command {
        Command {
            argv: vec!["mkdir".into(), "-p".into(), dir.into()],
            stdin: None,
            description: format!("create directory {dir}"),
            retries: FILE_RETRIES,
            on_tmpfs: on_tmpfs(dir),
        }
    }

    /// `/bin/sh -c "cat > '<path>'"` (or `>>`), with `content` on stdin.
    fn write(path: &str, content: Vec<u8>, append: bool) -> Command {
        let (redirect, verb) = if append {
            (">>", "append to")
        } else {
            (">", "write")
        };
        Command {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("cat {redirect} {}", shell::quote_always(path)),
            ],
            stdin: Some(content),
            description: format!("{verb} {path}"),
            retries: FILE_RETRIES,
            on_tmpfs: on_tmpfs(path),
        }
    }

    /// `chmod <mode> <path>`.
    fn chmod(mode: &str, path: &str) -> Command {
        Command {
            argv: vec!["chmod".into(), mode.into(), path.into()],
            stdin: None,
            description: format!("chmod {mode} {path}"),
            retries: FILE_RETRIES,
            on_tmpfs: on_tmpfs(path),
        }
    }

    /// `chown <owner> <path>`.
    fn chown(owner: &str, path: &str) -> Command {
        Command {
            argv: vec!["chown".into(), owner.into(), path.into()],
            stdin: None,
            description: format!("chown {owner} {path}"),
            retries: FILE_RETRIES,
            on_tmpfs: on_tmpfs(path),
        }
    }

    /// `/bin/sh -c <script>`.
    fn shell(script: String, description: String, retries: u32) -> Command {
        Command {
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            stdin: None,
            description,
            retries,
            on_tmpfs: false,
        }
    }

    /// Any program with arguments.
    fn exec(argv: &[&str], description: String, retries: u32) -> Command {
        Command {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            stdin: None,
            description,
            retries,
            on_tmpfs: false,
        }
    }
}

/// The translation of one machine's bootstrap data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The commands to run, in order; stop at the first one that fails (after its retries).
    pub commands: Vec<Command>,
    /// What was skipped or could only partly be honoured, one human sentence each
    /// (for example an unsupported cloud-config module).
    pub warnings: Vec<String>,
}

/// Why bootstrap data cannot be translated. Every message names the problem and where it is
/// (module, list index, file path).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The Secret's `format` value is neither `cloud-config` nor `ignition`.
    #[error("unknown bootstrap data format {value:?}: expected \"cloud-config\" or \"ignition\"")]
    UnknownFormat {
        /// The value found.
        value: String,
    },
    /// The bootstrap data is not UTF-8 text.
    #[error("{format} bootstrap data is not valid UTF-8: {source}")]
    NotUtf8 {
        /// The format the data was read as.
        format: Format,
        /// Where decoding failed.
        source: std::str::Utf8Error,
    },
    /// The cloud-config document does not parse as YAML.
    #[error("cloud-config is not valid YAML: {message}")]
    InvalidYaml {
        /// The parser's message.
        message: String,
    },
    /// The Ignition config does not parse as JSON.
    #[error("Ignition config is not valid JSON: {message}")]
    InvalidJson {
        /// The parser's message.
        message: String,
    },
    /// The document's top level is not a mapping (cloud-config) or object (Ignition).
    #[error("{format} bootstrap data must be a mapping at the top level, found {found}")]
    NotAMapping {
        /// The format the data was read as.
        format: Format,
        /// What was found instead (`a list`, `a string`, `an empty document`, ...).
        found: &'static str,
    },
    /// The Ignition config's `ignition.version` is missing or not a supported spec version.
    #[error(
        "unsupported Ignition spec version {version:?} (ignition.version): expected 2.x or 3.x"
    )]
    UnsupportedIgnitionVersion {
        /// The version found (empty when missing).
        version: String,
    },
    /// A module, list item or field has the wrong shape or an invalid value.
    #[error("{location}: {problem}")]
    Invalid {
        /// Where: `write_files[2] (/etc/foo)`, `runcmd[1]`, `storage.files[0]`, ...
        location: String,
        /// What is wrong.
        problem: String,
    },
    /// A file's content cannot be decoded (base64, gzip or `data:` URL).
    #[error("{location}: cannot decode the content of {path}: {problem}")]
    Decode {
        /// Where the file is declared: `write_files[2]`, `storage.files[0]`, ...
        location: String,
        /// The file's path.
        path: String,
        /// What failed.
        problem: String,
    },
    /// A kubeadm configuration file does not have the expected shape.
    #[error("kubeadm configuration {path}: {problem}")]
    Kubeadm {
        /// The file's path.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// Translates bootstrap data in `format` into the commands to run in the node container.
///
/// Pure: the same input always gives the same plan, and no input makes it panic.
pub fn plan(format: Format, data: &[u8], options: &Options) -> Result<Plan, BootstrapError> {
    let text =
        std::str::from_utf8(data).map_err(|source| BootstrapError::NotUtf8 { format, source })?;
    match format {
        Format::CloudConfig => cloud_config::plan(text, options),
        Format::Ignition => ignition::plan(text, options),
    }
}

/// A file to create, with the attributes both formats share.
struct FileSpec<'a> {
    /// Absolute path.
    path: &'a str,
    /// The decoded contents to write, in order; `true` appends instead of truncating.
    writes: Vec<(Vec<u8>, bool)>,
    /// `chmod` mode (4 octal digits), when one should be set.
    mode: Option<String>,
    /// `chown` owner, when one should be set.
    owner: Option<String>,
}

/// The commands that create one file: `mkdir -p` of its directory, `cat` with each content
/// on stdin, then `chmod` and `chown` when asked for.
fn file_commands(file: FileSpec<'_>) -> Vec<Command> {
    let mut commands = vec![Command::mkdir(parent_dir(file.path))];
    for (content, append) in file.writes {
        commands.push(Command::write(file.path, content, append));
    }
    if let Some(mode) = file.mode {
        commands.push(Command::chmod(&mode, file.path));
    }
    if let Some(owner) = file.owner {
        commands.push(Command::chown(&owner, file.path));
    }
    commands
}

/// The directory holding `path` (an absolute path): `/etc/x/y` -> `/etc/x`, `/x` -> `/`.
fn parent_dir(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => match trimmed[..i].trim_end_matches('/') {
            "" => "/",
            dir => dir,
        },
        None => "/",
    }
}

/// Checks that a file path is usable: absolute, not a directory, no NUL byte.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("path is required".to_owned());
    }
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must be absolute"));
    }
    if path.ends_with('/') {
        return Err(format!("path {path:?} names a directory, not a file"));
    }
    if path.contains('\0') {
        return Err(format!("path {path:?} contains a NUL byte"));
    }
    Ok(())
}

/// Formats a mode as 4 octal digits (`420` -> `0644`).
fn octal_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

/// Shortens `text` to at most `max` characters (on a character boundary), for descriptions.
fn shorten(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    if one_line.chars().count() <= max {
        return one_line.to_owned();
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}
