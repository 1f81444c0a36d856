//! The bollard implementation of [`ContainerRuntime`]: the engine at `DOCKER_HOST` (or the
//! default socket), with the API version negotiated (Debian's engine speaks 1.41, Docker 29
//! refuses anything below 1.44).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigCgroupnsModeEnum,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    EventsOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::jiff::Timestamp;
use tokio::io::AsyncWriteExt;

use super::{
    Container, ContainerEvent, ContainerFile, ContainerRuntime, ContainerSpec, DockerError,
    ExecOutput, PullProgress,
};

/// The Docker engine, through bollard.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// Connects to the engine at `DOCKER_HOST` (or the default socket) and negotiates the API
    /// version. Fails when the engine does not answer.
    pub async fn connect() -> Result<Self, DockerError> {
        let docker = match docker_host(std::env::var("DOCKER_HOST").ok()) {
            Some(_) => Docker::connect_with_defaults(),
            // bollard would refuse an empty DOCKER_HOST as an unknown scheme.
            None => Docker::connect_with_unix_defaults(),
        }
        .map_err(convert)?;
        Ok(Self {
            docker: docker.negotiate_version().await.map_err(convert)?,
        })
    }

    /// An engine client for `docker`, as it is (no negotiation).
    pub fn from_client(docker: Docker) -> Self {
        Self { docker }
    }

    /// The negotiated API version.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }
}

/// Converts bollard's error, keeping the engine's message.
fn convert(error: BollardError) -> DockerError {
    match error {
        BollardError::DockerResponseServerError { message, .. } => DockerError::Engine(message),
        BollardError::DockerStreamError { error } => DockerError::Engine(error),
        other => DockerError::Unreachable(other.to_string()),
    }
}

fn is_status(error: &BollardError, status: u16) -> bool {
    matches!(error, BollardError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

impl Engine {
    /// Runs `argv` in container `name`, writing `input` (if any) to its standard input as it
    /// arrives and closing it at the end; collects its output and exit code.
    async fn exec_with_input(
        &self,
        name: &str,
        argv: &[String],
        input: Option<BoxStream<'_, Result<bytes::Bytes, DockerError>>>,
    ) -> Result<ExecOutput, DockerError> {
        let options = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            attach_stdin: Some(input.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(name, options)
            .await
            .map_err(convert)?;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let mut feed_failure = None;
        if let StartExecResults::Attached {
            mut output,
            input: mut writer,
        } = self
            .docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .map_err(convert)?
        {
            // The input's own failure is the caller's to know; a failed write usually means
            // the command exited early, and its exit code and output then say why.
            let feed = async move {
                let (mut source_error, mut write_error) = (None, None);
                if let Some(mut input) = input {
                    while let Some(chunk) = input.next().await {
                        let data = match chunk {
                            Ok(data) => data,
                            Err(e) => {
                                source_error = Some(e);
                                break;
                            }
                        };
                        if let Err(e) = writer.write_all(&data).await {
                            write_error = Some(DockerError::Engine(format!(
                                "writing to the command's input: {e}"
                            )));
                            break;
                        }
                    }
                }
                let _ = writer.shutdown().await;
                (source_error, write_error)
            };
            let collect = async {
                while let Some(chunk) = output.next().await {
                    match chunk.map_err(convert)? {
                        LogOutput::StdErr { message } => {
                            stderr.push_str(&String::from_utf8_lossy(&message))
                        }
                        other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
                    }
                }
                Ok::<(), DockerError>(())
            };
            let ((source_error, write_error), collected) = futures::join!(feed, collect);
            collected?;
            if let Some(e) = source_error {
                return Err(e);
            }
            feed_failure = write_error;
        }
        let inspect = self.docker.inspect_exec(&exec.id).await.map_err(convert)?;
        let exit_code = inspect.exit_code.unwrap_or(-1);
        match feed_failure {
            Some(e) if exit_code == 0 => Err(e),
            _ => Ok(ExecOutput {
                exit_code,
                stdout,
                stderr,
            }),
        }
    }
}

/// When the previous run of container `name` ended, if it was ever restarted: its log up to
/// then belongs to an earlier boot.
async fn previous_run_ended(docker: &Docker, name: &str) -> Result<Option<Timestamp>, DockerError> {
    let info = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .map_err(convert)?;
    let finished = info.state.and_then(|s| s.finished_at).unwrap_or_default();
    // Never stopped: Docker reports the zero time.
    Ok(finished
        .parse::<Timestamp>()
        .ok()
        .filter(|t| t.as_second() > 0))
}

/// The lines of a log chunk written after `previous_run_ended` (each line then starts with
/// the timestamp Docker adds), without their timestamps; the chunk as it is when the container
/// never ran before.
fn current_run(chunk: &[u8], previous_run_ended: Option<Timestamp>) -> String {
    let text = String::from_utf8_lossy(chunk);
    let Some(ended) = previous_run_ended else {
        return text.into_owned();
    };
    text.split_inclusive('\n')
        .filter_map(|line| {
            let (stamp, rest) = line.split_once(' ')?;
            (stamp.parse::<Timestamp>().ok()? > ended).then_some(rest)
        })
        .collect()
}

/// A tar archive holding `files`, for the engine's archive upload.
fn files_archive(files: &[ContainerFile]) -> Result<Vec<u8>, DockerError> {
    let mut archive = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.content.len() as u64);
        header.set_mode(file.mode);
        header.set_mtime(0);
        let path = file.path.trim_start_matches('/');
        archive
            .append_data(&mut header, path, file.content.as_slice())
            .map_err(|e| DockerError::Engine(format!("packing {}: {e}", file.path)))?;
    }
    archive
        .into_inner()
        .map_err(|e| DockerError::Engine(format!("packing the container's files: {e}")))
}

#[async_trait]
impl ContainerRuntime for Engine {
    async fn ping(&self) -> Result<(), DockerError> {
        self.docker.ping().await.map(drop).map_err(convert)
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<Container>, DockerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(convert)?;
        let mut containers = Vec::new();
        for id in summaries.into_iter().filter_map(|s| s.id) {
            // Gone between the list and the inspect: not listed.
            if let Some(container) = self.inspect_container(&id).await? {
                containers.push(container);
            }
        }
        Ok(containers)
    }

    async fn read_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, DockerError> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut archive = Vec::new();
        let mut chunks = self.docker.download_from_container(name, Some(options));
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => archive.extend_from_slice(&bytes),
                Err(e) if is_status(&e, 404) => return Ok(None),
                Err(e) => return Err(convert(e)),
            }
        }
        let unpacking = |e: std::io::Error| DockerError::Engine(format!("reading {path}: {e}"));
        let mut entries = tar::Archive::new(archive.as_slice());
        let mut entry = match entries.entries().map_err(unpacking)?.next() {
            Some(entry) => entry.map_err(unpacking)?,
            None => return Ok(None),
        };
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).map_err(unpacking)?;
        Ok(Some(content))
    }

    async fn signal(&self, name: &str, signal: &str) -> Result<(), DockerError> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.docker
            .kill_container(name, Some(options))
            .await
            .map_err(convert)
    }

    async fn inspect_container(&self, name: &str) -> Result<Option<Container>, DockerError> {
        let info = match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(convert(e)),
        };
        let settings = info.network_settings.unwrap_or_default();
        let networks = settings
            .networks
            .unwrap_or_default()
            .into_iter()
            .map(|(net, e)| {
                (
                    net,
                    (
                        e.ip_address.unwrap_or_default(),
                        e.global_ipv6_address.unwrap_or_default(),
                    ),
                )
            })
            .collect();
        let host_ports = settings
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(port, bindings)| {
                let host = bindings?
                    .into_iter()
                    .find_map(|b| b.host_port?.parse::<u16>().ok())?;
                Some((port, host))
            })
            .collect();
        let config = info.config.unwrap_or_default();
        Ok(Some(Container {
            name: info
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            running: info.state.and_then(|s| s.running).unwrap_or(false),
            networks,
            host_ports,
        }))
    }

    async fn run_container(&self, spec: &ContainerSpec) -> Result<(), DockerError> {
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
            .published_ports
            .iter()
            .map(|(port, host_ip)| {
                let binding = PortBinding {
                    host_ip: Some(host_ip.clone()),
                    host_port: Some("0".into()),
                };
                (port.clone(), Some(vec![binding]))
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            hostname: Some(spec.name.clone()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            entrypoint: (!spec.entrypoint.is_empty()).then(|| spec.entrypoint.clone()),
            tty: Some(true),
            exposed_ports: Some(
                spec.published_ports
                    .iter()
                    .map(|(p, _)| p.clone())
                    .collect(),
            ),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            volumes: (!spec.anonymous_volumes.is_empty()).then(|| spec.anonymous_volumes.clone()),
            host_config: Some(HostConfig {
                network_mode: Some(spec.network.clone()),
                port_bindings: Some(port_bindings),
                privileged: Some(spec.privileged),
                security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
                tmpfs: (!spec.tmpfs.is_empty()).then(|| {
                    spec.tmpfs
                        .iter()
                        .map(|p| (p.clone(), String::new()))
                        .collect()
                }),
                binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
                sysctls: (!spec.sysctls.is_empty())
                    .then(|| spec.sysctls.clone().into_iter().collect()),
                cgroupns_mode: spec
                    .cgroupns_private
                    .then_some(HostConfigCgroupnsModeEnum::PRIVATE),
                restart_policy: spec.restart_on_failure.map(|max| RestartPolicy {
                    name: Some(RestartPolicyNameEnum::ON_FAILURE),
                    maximum_retry_count: Some(i64::from(max)),
                }),
                init: Some(false),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    spec.network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        // Everything after create addresses the container by the ID create returned, so a
        // same-named container made by someone else meanwhile is never touched.
        let id = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created.id,
            Err(e) if is_status(&e, 409) => return Err(DockerError::NameTaken(spec.name.clone())),
            Err(e) => return Err(convert(e)),
        };
        let started = async {
            self.write_files(&id, &spec.files).await?;
            self.docker
                .start_container(&id, None)
                .await
                .map_err(convert)
        };
        if let Err(e) = started.await {
            // Leave nothing half made: a created but unstarted container would block the name.
            let _ = self.remove_container(&id).await;
            return Err(e);
        }
        Ok(())
    }

    async fn write_files(&self, name: &str, files: &[ContainerFile]) -> Result<(), DockerError> {
        if files.is_empty() {
            return Ok(());
        }
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        let archive = files_archive(files)?;
        self.docker
            .upload_to_container(name, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(convert)
    }

    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, DockerError> {
        let input = stdin.map(|data| {
            futures::stream::once(futures::future::ready(Ok(bytes::Bytes::copy_from_slice(
                data,
            ))))
            .boxed()
        });
        self.exec_with_input(name, argv, input).await
    }

    async fn exec_piped(
        &self,
        name: &str,
        argv: &[String],
        input: BoxStream<'static, Result<bytes::Bytes, DockerError>>,
    ) -> Result<ExecOutput, DockerError> {
        self.exec_with_input(name, argv, Some(input)).await
    }

    async fn exec_detached(&self, name: &str, argv: &[String]) -> Result<(), DockerError> {
        let options = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(name, options)
            .await
            .map_err(convert)?;
        let detached = StartExecOptions {
            detach: true,
            ..Default::default()
        };
        self.docker
            .start_exec(&exec.id, Some(detached))
            .await
            .map_err(convert)?;
        Ok(())
    }

    async fn logs(&self, name: &str) -> Result<String, DockerError> {
        let previous_run_ended = previous_run_ended(&self.docker, name).await?;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(previous_run_ended.is_some())
            .build();
        let mut stream = self.docker.logs(name, Some(options));
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(convert)?.into_bytes();
            text.push_str(&current_run(&chunk, previous_run_ended));
        }
        Ok(text)
    }

    fn follow_logs(&self, name: &str) -> BoxStream<'static, Result<bytes::Bytes, DockerError>> {
        let docker = self.docker.clone();
        let name = name.to_owned();
        let since = async move {
            let previous_run_ended = previous_run_ended(&docker, &name).await?;
            let options = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .follow(true)
                .timestamps(previous_run_ended.is_some())
                .build();
            Ok(docker.logs(&name, Some(options)).map(move |chunk| {
                chunk
                    .map(|c| bytes::Bytes::from(current_run(&c.into_bytes(), previous_run_ended)))
                    .map_err(convert)
            }))
        };
        futures::stream::once(since)
            .flat_map(|logs: Result<_, DockerError>| match logs {
                Ok(logs) => logs.boxed(),
                Err(e) => futures::stream::once(futures::future::ready(Err(e))).boxed(),
            })
            .boxed()
    }

    fn exec_output(
        &self,
        name: &str,
        argv: &[String],
    ) -> BoxStream<'static, Result<bytes::Bytes, DockerError>> {
        let docker = self.docker.clone();
        let (name, argv) = (name.to_owned(), argv.to_vec());
        let started = async move {
            let options = CreateExecOptions {
                cmd: Some(argv),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let exec = docker.create_exec(&name, options).await?;
            docker.start_exec(&exec.id, None::<StartExecOptions>).await
        };
        futures::stream::once(started)
            .flat_map(|started| match started {
                Ok(StartExecResults::Attached { output, .. }) => output
                    .map(|chunk| chunk.map(LogOutput::into_bytes).map_err(convert))
                    .boxed(),
                Ok(StartExecResults::Detached) => futures::stream::empty().boxed(),
                Err(e) => futures::stream::once(futures::future::ready(Err(convert(e)))).boxed(),
            })
            .boxed()
    }

    async fn remove_container(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(convert(e)),
        }
    }

    async fn ensure_network(&self, name: &str) -> Result<(), DockerError> {
        match self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(convert(e)),
        }
        let request = bollard::models::NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([
                (
                    "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
                    "true".to_owned(),
                ),
                (
                    "com.docker.network.driver.mtu".to_owned(),
                    "1500".to_owned(),
                ),
            ])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Created by someone else meanwhile.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(DockerError::Engine(format!(
                "cannot create the Docker network {name}: {}",
                convert(e)
            ))),
        }
    }

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(convert(e)),
        }
    }

    fn save_image(&self, image: &str) -> BoxStream<'static, Result<bytes::Bytes, DockerError>> {
        self.docker
            .export_image(image)
            .map(|chunk| chunk.map_err(convert))
            .boxed()
    }

    fn pull_image(&self, image: &str) -> BoxStream<'static, Result<PullProgress, DockerError>> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        self.docker
            .create_image(Some(options), None, None)
            .map(|item| {
                let info = item.map_err(convert)?;
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(DockerError::Engine(detail));
                }
                let status = [
                    info.status.unwrap_or_default(),
                    info.progress_detail.map(progress_text).unwrap_or_default(),
                ]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
                Ok(PullProgress { status })
            })
            .boxed()
    }

    fn container_events(
        &self,
        label: &str,
    ) -> BoxStream<'static, Result<ContainerEvent, DockerError>> {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![label.to_owned()]),
        ]);
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        self.docker
            .events(Some(options))
            .map(|item| {
                let event = item.map_err(convert)?;
                let labels: BTreeMap<String, String> = event
                    .actor
                    .and_then(|a| a.attributes)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                Ok(ContainerEvent {
                    action: event.action.unwrap_or_default(),
                    labels,
                })
            })
            .boxed()
    }
}

fn progress_text(detail: bollard::models::ProgressDetail) -> String {
    match (detail.current, detail.total) {
        (Some(current), Some(total)) if total > 0 => {
            format!("{:.1}MB/{:.1}MB", current as f64 / 1e6, total as f64 / 1e6)
        }
        _ => String::new(),
    }
}

/// The engine address `DOCKER_HOST` names, or `None` for the default socket. Empty counts as
/// unset, as in Go's Docker client: CAPD's Deployment (and capd-rs's, by default) sets
/// `DOCKER_HOST: ""`.
fn docker_host(value: Option<String>) -> Option<String> {
    value.filter(|host| !host.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_docker_host_means_the_default_socket() {
        assert_eq!(docker_host(None), None);
        assert_eq!(docker_host(Some(String::new())), None);
        assert_eq!(docker_host(Some(" ".into())), None);
        assert_eq!(
            docker_host(Some("tcp://docker:2375".into())).as_deref(),
            Some("tcp://docker:2375")
        );
    }

    #[test]
    fn only_the_current_run_of_a_restarted_container_is_read() {
        let chunk = b"2026-11-22T07:00:16.975Z Reached target Multi-User System.\n\
                      2026-11-22T07:05:01.020Z Reached target Multi-User System.\n";
        assert_eq!(
            current_run(chunk, None),
            String::from_utf8_lossy(chunk),
            "a container never restarted is read whole"
        );
        let ended: Timestamp = "2026-11-22T07:05:00.500Z".parse().unwrap();
        assert_eq!(
            current_run(chunk, Some(ended)),
            "Reached target Multi-User System.\n"
        );
    }
}
