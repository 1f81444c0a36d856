//! The Docker side of the provider: the [`ContainerRuntime`] trait the controllers use, its
//! bollard implementation ([`engine`]), container names and labels ([`labels`]), and the
//! load-balancer container and HAProxy configuration ([`load_balancer`], [`haproxy`]).

pub mod engine;
pub mod haproxy;
pub mod kind_images;
pub mod labels;
pub mod load_balancer;
pub mod metered;
pub mod node;
pub mod node_bootstrap;
pub mod pulls;

#[cfg(test)]
pub mod fake;

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// An error from the container engine, with the engine's own words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DockerError {
    /// The engine could not be reached (down, socket missing, timeout).
    #[error("the Docker engine is unreachable: {0}")]
    Unreachable(String),
    /// The engine answered with an error.
    #[error("{0}")]
    Engine(String),
    /// A container with this name already exists (a create raced another).
    #[error("a container named {0} already exists")]
    NameTaken(String),
}

/// A container as the engine reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    /// The name, without the leading `/`.
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it is running.
    pub running: bool,
    /// IP addresses per network: (IPv4, IPv6), either may be empty.
    pub networks: BTreeMap<String, (String, String)>,
    /// Published ports: container port (`6443/tcp`) to host port.
    pub host_ports: BTreeMap<String, u16>,
}

/// A file written into a container before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFile {
    /// The absolute path in the container.
    pub path: String,
    /// The content.
    pub content: Vec<u8>,
    /// The permission bits, for example 0o644.
    pub mode: u32,
}

/// What to run: the subset of Docker's container options the provider uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container's name (and hostname).
    pub name: String,
    /// The image reference.
    pub image: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The entrypoint; empty keeps the image's.
    pub entrypoint: Vec<String>,
    /// The Docker network to attach to.
    pub network: String,
    /// Container ports (`6443/tcp`) published on a random host port, with the host address to
    /// bind (`0.0.0.0`, `127.0.0.1`).
    pub published_ports: Vec<(String, String)>,
    /// Files written into the container between create and start.
    pub files: Vec<ContainerFile>,
    /// Environment variables, `NAME=value`.
    pub env: Vec<String>,
    /// Run privileged (kind nodes need it; some engines refuse it).
    pub privileged: bool,
    /// Security options such as `seccomp=unconfined`.
    pub security_opt: Vec<String>,
    /// Paths mounted as tmpfs.
    pub tmpfs: Vec<String>,
    /// Paths that get an anonymous volume (removed with the container).
    pub anonymous_volumes: Vec<String>,
    /// Bind mounts, `host:container[:ro]`.
    pub binds: Vec<String>,
    /// A private cgroup namespace (kind v0.20+ nodes).
    pub cgroupns_private: bool,
    /// Restart on failure, at most this many times.
    pub restart_on_failure: Option<u32>,
    /// Namespaced kernel parameters, such as `net.ipv6.conf.all.disable_ipv6`.
    pub sysctls: BTreeMap<String, String>,
}

/// A container lifecycle event from the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    /// What happened: `die`, `destroy`, `stop`, `start`...
    pub action: String,
    /// The container's labels at the time.
    pub labels: BTreeMap<String, String>,
}

/// What a command run in a container did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its exit code.
    pub exit_code: i64,
    /// What it wrote to standard output.
    pub stdout: String,
    /// What it wrote to standard error.
    pub stderr: String,
}

/// Progress of an image pull, as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullProgress {
    /// A one-line summary such as `Downloading 12.3MB/31.2MB`.
    pub status: String,
}

/// The container engine operations the controllers need. The bollard implementation talks to
/// a real engine; unit tests use an in-memory fake.
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Whether the engine answers.
    async fn ping(&self) -> Result<(), DockerError>;
    /// The containers (running or not) carrying all of `labels` (key, value).
    async fn list_containers(&self, labels: &[(&str, &str)])
    -> Result<Vec<Container>, DockerError>;
    /// The content of file `path` in container `name`, or `None` when there is no such file.
    async fn read_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, DockerError>;
    /// Sends `signal` (such as `SIGHUP`) to container `name`'s main process.
    async fn signal(&self, name: &str, signal: &str) -> Result<(), DockerError>;
    /// The container named `name`, or `None` when there is none.
    async fn inspect_container(&self, name: &str) -> Result<Option<Container>, DockerError>;
    /// Creates the container, writes its files, and starts it. If the start fails the
    /// container is removed, so nothing is left half made.
    async fn run_container(&self, spec: &ContainerSpec) -> Result<(), DockerError>;
    /// Removes a container and its anonymous volumes; removing a missing container is fine.
    async fn remove_container(&self, name: &str) -> Result<(), DockerError>;
    /// Writes `files` into container `name` in one archive upload, creating missing parent
    /// directories. Paths under a tmpfs mount (such as `/run` of a node) are not visible to
    /// the container: the engine writes beneath the mount.
    async fn write_files(&self, name: &str, files: &[ContainerFile]) -> Result<(), DockerError>;
    /// Runs `argv` in the running container `name`, feeding `stdin`, and waits for it to end.
    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, DockerError>;
    /// As [`exec`](Self::exec), feeding `input` to the command as it arrives, so a large input
    /// (an image archive) is never held in memory whole. An `input` error ends the command's
    /// input and is returned.
    async fn exec_piped(
        &self,
        name: &str,
        argv: &[String],
        input: BoxStream<'static, Result<bytes::Bytes, DockerError>>,
    ) -> Result<ExecOutput, DockerError>;
    /// Starts `argv` in the running container `name` and returns at once; it keeps running
    /// inside the container whatever happens to the caller.
    async fn exec_detached(&self, name: &str, argv: &[String]) -> Result<(), DockerError>;
    /// The container's log (standard output and error) of its current run (not what it
    /// wrote before a restart).
    async fn logs(&self, name: &str) -> Result<String, DockerError>;
    /// The container's log of its current run, then as it is written, until it stops.
    fn follow_logs(&self, name: &str) -> BoxStream<'static, Result<bytes::Bytes, DockerError>>;
    /// Runs `argv` in the running container `name` and streams its output (standard output and
    /// error) as it is written; the stream ends when the command does.
    fn exec_output(
        &self,
        name: &str,
        argv: &[String],
    ) -> BoxStream<'static, Result<bytes::Bytes, DockerError>>;
    /// Whether the image is present in the engine.
    async fn image_exists(&self, image: &str) -> Result<bool, DockerError>;
    /// The image as a tar archive (`docker save`), for loading it into a node.
    fn save_image(&self, image: &str) -> BoxStream<'static, Result<bytes::Bytes, DockerError>>;
    /// Pulls an image; the stream ends after the last progress report, or with the error.
    fn pull_image(&self, image: &str) -> BoxStream<'static, Result<PullProgress, DockerError>>;
    /// Creates the Docker network `name` (a bridge, as kind makes it) unless it exists.
    async fn ensure_network(&self, name: &str) -> Result<(), DockerError>;
    /// Lifecycle events of containers that carry `label` (a `key` or `key=value` filter).
    fn container_events(
        &self,
        label: &str,
    ) -> BoxStream<'static, Result<ContainerEvent, DockerError>>;
}

/// What is behind a container name, from the point of view of one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// No container has the name.
    Absent,
    /// The owner's container.
    Ours(Container),
    /// Someone else's (the owner it names, if any): never adopted or removed.
    NotOurs(Option<labels::Owner>),
}

/// Looks up container `name` and tells whether it is `owner`'s.
pub async fn find_owned(
    runtime: &dyn ContainerRuntime,
    name: &str,
    owner: &labels::Owner,
) -> Result<Found, DockerError> {
    let Some(container) = runtime.inspect_container(name).await? else {
        return Ok(Found::Absent);
    };
    Ok(match labels::Owner::from_labels(&container.labels) {
        Some(found) if &found == owner => Found::Ours(container),
        found => Found::NotOurs(found),
    })
}

/// What [`remove_owned`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The container was removed (with its volumes).
    Removed,
    /// There was no container.
    Absent,
    /// The container belongs to someone else and was left alone.
    NotOurs(Option<labels::Owner>),
}

/// Removes `owner`'s container `name` with its volumes, leaving anyone else's alone.
pub async fn remove_owned(
    runtime: &dyn ContainerRuntime,
    name: &str,
    owner: &labels::Owner,
) -> Result<Removal, DockerError> {
    match find_owned(runtime, name, owner).await? {
        Found::Absent => Ok(Removal::Absent),
        Found::Ours(_) => runtime
            .remove_container(name)
            .await
            .map(|()| Removal::Removed),
        Found::NotOurs(other) => Ok(Removal::NotOurs(other)),
    }
}
