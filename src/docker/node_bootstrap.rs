//! Runs a bootstrap [`Plan`] in a node container through the in-node runner
//! ([`crate::bootstrap::runner`]): install its files, start it detached, read its progress;
//! and pre-loads images into the node's containerd.

use futures::StreamExt;
use futures::stream::BoxStream;

use super::{ContainerFile, ContainerRuntime, DockerError};
use crate::bootstrap::Plan;
use crate::bootstrap::runner::{self, Progress};

/// Writes the runner's files for `plan` into container `name`, in one upload.
pub async fn install(
    runtime: &dyn ContainerRuntime,
    name: &str,
    plan: &Plan,
) -> Result<(), DockerError> {
    let files: Vec<ContainerFile> = runner::files(plan)
        .into_iter()
        .map(|f| ContainerFile {
            path: f.path,
            content: f.content,
            mode: 0o644,
        })
        .collect();
    runtime.write_files(name, &files).await
}

/// Starts the runner detached; starting it again while it runs does nothing.
pub async fn start(runtime: &dyn ContainerRuntime, name: &str) -> Result<(), DockerError> {
    runtime.exec_detached(name, &runner::start_command()).await
}

/// Stops the runner in container `name` and records the step it was on as failed with `reason`.
pub async fn abort(
    runtime: &dyn ContainerRuntime,
    name: &str,
    reason: &str,
) -> Result<(), DockerError> {
    check(
        runtime
            .exec(name, &runner::abort_command(reason), None)
            .await?,
        "stopping the bootstrap",
    )
    .map(drop)
}

/// Where the bootstrap in container `name` stands.
pub async fn progress(runtime: &dyn ContainerRuntime, name: &str) -> Result<Progress, DockerError> {
    let output = runtime
        .exec(name, &runner::progress_command(), None)
        .await?;
    check(output.clone(), "reading the bootstrap progress")?;
    Ok(runner::parse_progress(&output.stdout))
}

/// How long to wait between `crictl ps` attempts once the node logged its boot.
const CRICTL_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a node's log shows that systemd reached the multi-user target.
fn reached_multi_user(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("Reached target") && l.contains("Multi-User System"))
}

/// Whether node `name` logged that systemd reached the multi-user target (the first half of
/// a boot, read without running anything in the node).
pub async fn boot_logged(runtime: &dyn ContainerRuntime, name: &str) -> Result<bool, DockerError> {
    Ok(reached_multi_user(&runtime.logs(name).await?))
}

/// Whether `crictl ps` works in node `name` (the second half of a boot: containerd is up).
pub async fn crictl_works(runtime: &dyn ContainerRuntime, name: &str) -> bool {
    let crictl = ["crictl".to_owned(), "ps".to_owned()];
    runtime
        .exec(name, &crictl, None)
        .await
        .is_ok_and(|o| o.exit_code == 0)
}

/// Returns once the node has booted, following its log rather than polling it, then trying
/// `crictl ps` each second; returns early if the node stops or the engine goes away.
pub async fn wait_until_booted(runtime: &dyn ContainerRuntime, name: &str) {
    let mut log = String::new();
    let mut chunks = runtime.follow_logs(name);
    while !reached_multi_user(&log) {
        match chunks.next().await {
            Some(Ok(chunk)) => log.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return,
        }
    }
    drop(chunks);
    while !crictl_works(runtime, name).await {
        if !matches!(runtime.inspect_container(name).await, Ok(Some(c)) if c.running) {
            return;
        }
        tokio::time::sleep(CRICTL_RETRY).await;
    }
}

/// The bootstrap's progress in container `name` each time it changes (the runner's elapsed
/// time aside), read by one long-lived command in the node; the stream ends after an outcome,
/// when the runner is missing, when the node stops, or after `lifetime`.
pub fn watch(
    runtime: &dyn ContainerRuntime,
    name: &str,
    lifetime: std::time::Duration,
) -> BoxStream<'static, Result<Progress, DockerError>> {
    let end = format!("\n{}\n", runner::REPORT_END);
    runtime
        .exec_output(name, &runner::watch_command(lifetime))
        .scan(String::new(), move |buffer, chunk| {
            let reports = match chunk {
                Ok(bytes) => {
                    buffer.push_str(&String::from_utf8_lossy(&bytes));
                    let mut reports = Vec::new();
                    while let Some(at) = buffer.find(&end) {
                        let block: String = buffer.drain(..at + end.len()).collect();
                        reports.push(Ok(runner::parse_progress(&block[..at])));
                    }
                    reports
                }
                Err(e) => vec![Err(e)],
            };
            futures::future::ready(Some(futures::stream::iter(reports)))
        })
        .flatten()
        .boxed()
}

fn check(output: super::ExecOutput, what: &str) -> Result<super::ExecOutput, DockerError> {
    if output.exit_code == 0 {
        return Ok(output);
    }
    Err(DockerError::Engine(format!(
        "{what} failed with exit code {}: {}",
        output.exit_code,
        output.stderr.trim()
    )))
}

/// The file in the node that lists the images already loaded, one per line.
/// It lives on the node's `/var` volume, as containerd's images do.
pub const PRELOADED: &str = "/var/lib/capd-rs/preloaded-images";

/// The images of `images` not yet loaded into container `name`.
pub async fn images_to_load(
    runtime: &dyn ContainerRuntime,
    name: &str,
    images: &[String],
) -> Result<Vec<String>, DockerError> {
    let list = [
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("cat {PRELOADED} 2>/dev/null || true"),
    ];
    let loaded = check(
        runtime.exec(name, &list, None).await?,
        "reading the pre-loaded images",
    )?
    .stdout;
    let loaded: Vec<&str> = loaded.lines().collect();
    Ok(images
        .iter()
        .filter(|i| !loaded.contains(&i.as_str()))
        .cloned()
        .collect())
}

/// Loads `image` from the engine into container `name` (`docker save` streamed into
/// `ctr --namespace=k8s.io images import -`), then records it as loaded.
pub async fn load_image(
    runtime: &dyn ContainerRuntime,
    name: &str,
    image: &str,
) -> Result<(), DockerError> {
    let import = ["ctr", "--namespace=k8s.io", "images", "import", "-"].map(String::from);
    check(
        runtime
            .exec_piped(name, &import, runtime.save_image(image))
            .await?,
        &format!("importing {image}"),
    )?;
    let record = [
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("mkdir -p /var/lib/capd-rs && echo \"$1\" >> {PRELOADED}"),
        "sh".to_owned(),
        image.to_owned(),
    ];
    check(
        runtime.exec(name, &record, None).await?,
        "recording the pre-loaded image",
    )
    .map(drop)
}
