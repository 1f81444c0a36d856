//! Runs a bootstrap [`Plan`] in a node container through the in-node runner
//! ([`crate::bootstrap::runner`]): install its files, start it detached, read its progress.

use super::{ContainerRuntime, DockerError};
use crate::bootstrap::Plan;
use crate::bootstrap::runner::{self, Progress};

/// Writes the runner's files for `plan` into container `name`.
pub async fn install(
    runtime: &dyn ContainerRuntime,
    name: &str,
    plan: &Plan,
) -> Result<(), DockerError> {
    let mkdir = ["mkdir".to_owned(), "-p".to_owned(), runner::DIR.to_owned()];
    check(
        runtime.exec(name, &mkdir, None).await?,
        "creating the runner's directory",
    )?;
    for file in runner::files(plan) {
        let write = [
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!("cat > '{}'", file.path),
        ];
        check(
            runtime.exec(name, &write, Some(&file.content)).await?,
            &format!("writing {}", file.path),
        )?;
    }
    Ok(())
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
