//! Runs the repository's setup scripts once per test binary, so `cargo test` works on its own:
//! the Docker engine and network, the test images, and the control-plane binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// The repository root (where `hack/` lives).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `hack/<script>` and returns its standard output; its progress lines pass through.
fn run_script(script: &str) -> Result<String> {
    let path = repo_root().join("hack").join(script);
    let output = Command::new("bash")
        .arg(&path)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): see its messages above",
            path.display(),
            output.status
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// The directory holding `kube-apiserver` and `etcd` (built or taken from `KUBEBUILDER_ASSETS`).
pub fn control_plane_binaries() -> Result<PathBuf> {
    Ok(PathBuf::from(run_script("control-plane.sh")?))
}

/// Makes sure the Docker engine answers, the `kind` network exists and the test images are built.
pub fn docker_ready() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        ["docker-engine.sh", "images.sh"]
            .into_iter()
            .try_for_each(|script| run_script(script).map(drop))
            .map_err(|e| format!("{e:#}"))
    });
    if let Err(e) = ready {
        panic!("the Docker test environment is not available: {e}");
    }
}
