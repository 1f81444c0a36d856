//! A [`ContainerRuntime`] that counts and times every operation of the one it wraps
//! (`capd_rs_docker_requests_total`, `capd_rs_docker_request_duration_seconds`).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{
    Container, ContainerEvent, ContainerFile, ContainerRuntime, ContainerSpec, DockerError,
    ExecOutput, PullProgress,
};
use crate::metrics::Metrics;

/// `inner`, with its operations recorded in `metrics`.
pub struct Metered {
    inner: Arc<dyn ContainerRuntime>,
    metrics: Metrics,
}

impl Metered {
    /// Records `inner`'s operations in `metrics`.
    pub fn new(inner: Arc<dyn ContainerRuntime>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    /// Runs one request-response `operation`, timed.
    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, DockerError>>,
    ) -> Result<T, DockerError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .docker_request(operation, result.is_ok(), Some(started.elapsed()));
        result
    }

    /// A streaming `operation`, counted when the stream is dropped (ended or abandoned), as an
    /// error if it yielded one.
    fn counted<T: Send + 'static>(
        &self,
        operation: &'static str,
        stream: BoxStream<'static, Result<T, DockerError>>,
    ) -> BoxStream<'static, Result<T, DockerError>> {
        let mut record = StreamRecord {
            metrics: self.metrics.clone(),
            operation,
            failed: false,
        };
        stream
            .map(move |item| {
                record.saw(&item);
                item
            })
            .boxed()
    }
}

/// Records a streaming operation when dropped with its stream.
struct StreamRecord {
    metrics: Metrics,
    operation: &'static str,
    failed: bool,
}

impl StreamRecord {
    fn saw<T>(&mut self, item: &Result<T, DockerError>) {
        self.failed |= item.is_err();
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        self.metrics
            .docker_request(self.operation, !self.failed, None);
    }
}

#[async_trait]
impl ContainerRuntime for Metered {
    async fn ping(&self) -> Result<(), DockerError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<Container>, DockerError> {
        self.timed("list_containers", self.inner.list_containers(labels))
            .await
    }

    async fn read_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, DockerError> {
        self.timed("read_file", self.inner.read_file(name, path))
            .await
    }

    async fn signal(&self, name: &str, signal: &str) -> Result<(), DockerError> {
        self.timed("signal", self.inner.signal(name, signal)).await
    }

    async fn inspect_container(&self, name: &str) -> Result<Option<Container>, DockerError> {
        self.timed("inspect_container", self.inner.inspect_container(name))
            .await
    }

    async fn run_container(&self, spec: &ContainerSpec) -> Result<(), DockerError> {
        self.timed("run_container", self.inner.run_container(spec))
            .await
    }

    async fn remove_container(&self, name: &str) -> Result<(), DockerError> {
        self.timed("remove_container", self.inner.remove_container(name))
            .await
    }

    async fn write_files(&self, name: &str, files: &[ContainerFile]) -> Result<(), DockerError> {
        self.timed("write_files", self.inner.write_files(name, files))
            .await
    }

    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, DockerError> {
        self.timed("exec", self.inner.exec(name, argv, stdin)).await
    }

    async fn exec_piped(
        &self,
        name: &str,
        argv: &[String],
        input: BoxStream<'static, Result<bytes::Bytes, DockerError>>,
    ) -> Result<ExecOutput, DockerError> {
        self.timed("exec_piped", self.inner.exec_piped(name, argv, input))
            .await
    }

    async fn exec_detached(&self, name: &str, argv: &[String]) -> Result<(), DockerError> {
        self.timed("exec_detached", self.inner.exec_detached(name, argv))
            .await
    }

    async fn logs(&self, name: &str) -> Result<String, DockerError> {
        self.timed("logs", self.inner.logs(name)).await
    }

    fn follow_logs(&self, name: &str) -> BoxStream<'static, Result<bytes::Bytes, DockerError>> {
        self.counted("follow_logs", self.inner.follow_logs(name))
    }

    fn exec_output(
        &self,
        name: &str,
        argv: &[String],
    ) -> BoxStream<'static, Result<bytes::Bytes, DockerError>> {
        self.counted("exec_output", self.inner.exec_output(name, argv))
    }

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        self.timed("image_exists", self.inner.image_exists(image))
            .await
    }

    fn save_image(&self, image: &str) -> BoxStream<'static, Result<bytes::Bytes, DockerError>> {
        self.counted("save_image", self.inner.save_image(image))
    }

    fn pull_image(&self, image: &str) -> BoxStream<'static, Result<PullProgress, DockerError>> {
        self.counted("pull_image", self.inner.pull_image(image))
    }

    async fn ensure_network(&self, name: &str) -> Result<(), DockerError> {
        self.timed("ensure_network", self.inner.ensure_network(name))
            .await
    }

    fn container_events(
        &self,
        label: &str,
    ) -> BoxStream<'static, Result<ContainerEvent, DockerError>> {
        self.counted("container_events", self.inner.container_events(label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeRuntime;
    use prometheus_client::encoding::prometheus_text::encode;

    #[tokio::test]
    async fn calls_and_streams_are_recorded_with_their_outcome() {
        let (metrics, registry) = Metrics::new();
        let fake = Arc::new(FakeRuntime::default());
        fake.set_pullable("ok:1");
        let runtime = Metered::new(fake.clone(), metrics);
        assert_eq!(runtime.inspect_container("none").await.unwrap(), None);
        fake.set_down(true);
        assert!(runtime.ping().await.is_err());
        fake.set_down(false);
        let pulled: Vec<_> = runtime.pull_image("ok:1").collect().await;
        assert!(pulled.iter().all(Result::is_ok));
        let failed: Vec<_> = runtime.pull_image("missing:1").collect().await;
        assert!(failed.iter().any(Result::is_err));
        // A stream abandoned before its end is counted too.
        drop(runtime.pull_image("ok:1"));
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for line in [
            "capd_rs_docker_requests_total{operation=\"inspect_container\",result=\"success\"} 1",
            "capd_rs_docker_requests_total{operation=\"ping\",result=\"error\"} 1",
            "capd_rs_docker_requests_total{operation=\"pull_image\",result=\"success\"} 2",
            "capd_rs_docker_requests_total{operation=\"pull_image\",result=\"error\"} 1",
            "capd_rs_docker_request_duration_seconds_count{operation=\"inspect_container\"} 1",
        ] {
            assert!(out.contains(line), "missing {line}:\n{out}");
        }
    }
}
