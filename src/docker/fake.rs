//! An in-memory [`ContainerRuntime`] for unit tests of pure logic. Integration tests use the
//! real engine. Network names with a space cannot be created, to test that failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::{
    Container, ContainerEvent, ContainerFile, ContainerRuntime, ContainerSpec, DockerError,
    ExecOutput, PullProgress,
};

/// Containers and images held in memory; images marked pullable appear when pulled.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, (ContainerSpec, Container)>,
    images: BTreeSet<String>,
    pullable: BTreeSet<String>,
    pulls: usize,
    down: bool,
    networks: BTreeSet<String>,
}

impl FakeRuntime {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `image` present.
    pub fn add_image(&self, image: &str) {
        self.state().images.insert(image.to_owned());
    }

    /// Lets `image` be pulled.
    pub fn set_pullable(&self, image: &str) {
        self.state().pullable.insert(image.to_owned());
    }

    /// How many pulls were started.
    pub fn pulls(&self) -> usize {
        self.state().pulls
    }

    /// Makes every call fail as if the engine were down (or back up).
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Adds a container as if someone else had created it.
    pub fn add_container(&self, container: Container) {
        let spec = ContainerSpec {
            name: container.name.clone(),
            ..Default::default()
        };
        self.state()
            .containers
            .insert(container.name.clone(), (spec, container));
    }

    /// The spec a container was run with.
    pub fn spec(&self, name: &str) -> Option<ContainerSpec> {
        self.state()
            .containers
            .get(name)
            .map(|(spec, _)| spec.clone())
    }

    /// The networks created.
    pub fn networks(&self) -> Vec<String> {
        self.state().networks.iter().cloned().collect()
    }

    /// The names of all containers.
    pub fn names(&self) -> Vec<String> {
        self.state().containers.keys().cloned().collect()
    }

    fn check_up(&self) -> Result<(), DockerError> {
        if self.state().down {
            return Err(DockerError::Unreachable("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn ping(&self) -> Result<(), DockerError> {
        self.check_up()
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<Container>, DockerError> {
        self.check_up()?;
        Ok(self
            .state()
            .containers
            .values()
            .map(|(_, c)| c)
            .filter(|c| {
                labels
                    .iter()
                    .all(|(k, v)| c.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .cloned()
            .collect())
    }

    async fn read_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, DockerError> {
        self.check_up()?;
        Ok(self.state().containers.get(name).and_then(|(spec, _)| {
            spec.files
                .iter()
                .find(|f| f.path == path)
                .map(|f| f.content.clone())
        }))
    }

    async fn signal(&self, name: &str, _signal: &str) -> Result<(), DockerError> {
        self.check_up()?;
        match self.state().containers.get(name) {
            Some((_, c)) if c.running => Ok(()),
            _ => Err(DockerError::Engine(format!(
                "container {name} is not running"
            ))),
        }
    }

    async fn inspect_container(&self, name: &str) -> Result<Option<Container>, DockerError> {
        self.check_up()?;
        Ok(self.state().containers.get(name).map(|(_, c)| c.clone()))
    }

    async fn run_container(&self, spec: &ContainerSpec) -> Result<(), DockerError> {
        self.check_up()?;
        let mut state = self.state();
        if !state.images.contains(&spec.image) {
            return Err(DockerError::Engine(format!(
                "No such image: {}",
                spec.image
            )));
        }
        if state.containers.contains_key(&spec.name) {
            return Err(DockerError::NameTaken(spec.name.clone()));
        }
        let n = state.containers.len() + 2;
        let container = Container {
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            running: true,
            networks: BTreeMap::from([(
                spec.network.clone(),
                (format!("172.18.0.{n}"), String::new()),
            )]),
            host_ports: spec
                .published_ports
                .iter()
                .enumerate()
                .map(|(i, (p, _))| (p.clone(), 40000 + i as u16))
                .collect(),
        };
        state
            .containers
            .insert(spec.name.clone(), (spec.clone(), container));
        Ok(())
    }

    async fn remove_container(&self, name: &str) -> Result<(), DockerError> {
        self.check_up()?;
        self.state().containers.remove(name);
        Ok(())
    }

    async fn ensure_network(&self, name: &str) -> Result<(), DockerError> {
        self.check_up()?;
        if name.contains(' ') {
            return Err(DockerError::Engine(format!(
                "cannot create the Docker network {name}: invalid name"
            )));
        }
        self.state().networks.insert(name.to_owned());
        Ok(())
    }

    async fn write_files(&self, name: &str, _files: &[ContainerFile]) -> Result<(), DockerError> {
        self.check_up()?;
        match self.state().containers.get(name) {
            Some(_) => Ok(()),
            None => Err(DockerError::Engine(format!("No such container: {name}"))),
        }
    }

    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        _stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, DockerError> {
        self.check_up()?;
        match self.state().containers.get(name) {
            Some((_, c)) if c.running => Ok(ExecOutput {
                exit_code: 0,
                stdout: argv.join(" "),
                stderr: String::new(),
            }),
            _ => Err(DockerError::Engine(format!(
                "container {name} is not running"
            ))),
        }
    }

    async fn exec_piped(
        &self,
        name: &str,
        argv: &[String],
        input: BoxStream<'static, Result<bytes::Bytes, DockerError>>,
    ) -> Result<ExecOutput, DockerError> {
        let data: Vec<bytes::Bytes> = input.try_collect().await?;
        self.exec(name, argv, Some(&data.concat())).await
    }

    async fn exec_detached(&self, name: &str, argv: &[String]) -> Result<(), DockerError> {
        self.exec(name, argv, None).await.map(drop)
    }

    async fn logs(&self, _name: &str) -> Result<String, DockerError> {
        self.check_up()?;
        Ok(String::new())
    }

    fn follow_logs(&self, _name: &str) -> BoxStream<'static, Result<bytes::Bytes, DockerError>> {
        futures::stream::empty().boxed()
    }

    fn exec_output(
        &self,
        _name: &str,
        _argv: &[String],
    ) -> BoxStream<'static, Result<bytes::Bytes, DockerError>> {
        futures::stream::empty().boxed()
    }

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        self.check_up()?;
        Ok(self.state().images.contains(image))
    }

    fn save_image(&self, image: &str) -> BoxStream<'static, Result<bytes::Bytes, DockerError>> {
        let result = if self.state().images.contains(image) {
            Ok(bytes::Bytes::from(format!("archive of {image}")))
        } else {
            Err(DockerError::Engine(format!(
                "reference does not exist: {image}"
            )))
        };
        futures::stream::iter([result]).boxed()
    }

    fn pull_image(&self, image: &str) -> BoxStream<'static, Result<PullProgress, DockerError>> {
        let mut state = self.state();
        state.pulls += 1;
        let result = if state.pullable.contains(image) {
            state.images.insert(image.to_owned());
            Ok(PullProgress {
                status: "Pull complete".into(),
            })
        } else {
            Err(DockerError::Engine(format!(
                "pull access denied for {image}, repository does not exist"
            )))
        };
        futures::stream::iter([result]).boxed()
    }

    fn container_events(
        &self,
        _label: &str,
    ) -> BoxStream<'static, Result<ContainerEvent, DockerError>> {
        futures::stream::pending().boxed()
    }
}
