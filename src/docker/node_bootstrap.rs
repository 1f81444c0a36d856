//! Runs a bootstrap [`Plan`] in a node container through the in-node runner
//! ([`crate::bootstrap::runner`]): install its files, start it detached, read its progress;
//! and pre-loads images into the node's containerd.

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
