//! Runs the repository's setup scripts once per test binary, so `cargo test` works on its own:
//! the Docker engine and network, the test images, the control-plane binaries, and the real
//! Cluster API and cert-manager programs (`hack/tools.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, bail};

/// The repository root (where `hack/` lives).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `manager` binary: the one cargo built for this test binary, or, from an example (which
/// cargo gives no such path), the debug build in the target directory (`cargo build` first).
pub fn manager_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_manager") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target"));
            target.join("debug/manager")
        }
    }
}

/// Runs `hack/<script>` and returns its standard output; its progress lines pass through.
fn run_script(script: &str) -> Result<String> {
    run_script_with(script, &[])
}

/// Runs `hack/<script> <args>` and returns its standard output; its progress lines pass through.
fn run_script_with(script: &str, args: &[&str]) -> Result<String> {
    let path = repo_root().join("hack").join(script);
    let output = Command::new("bash")
        .arg(&path)
        .args(args)
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

/// A tool `hack/tools.sh` provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tool {
    /// `clusterctl`.
    Clusterctl,
    /// Cluster API's core, kubeadm bootstrap and kubeadm control-plane managers, with their CRDs
    /// and webhook manifests.
    ClusterApi,
    /// cert-manager's controller and cainjector, with its CRDs.
    CertManager,
}

impl Tool {
    fn arg(self) -> &'static str {
        match self {
            Tool::Clusterctl => "clusterctl",
            Tool::ClusterApi => "capi",
            Tool::CertManager => "cert-manager",
        }
    }
}

/// The directory of `tool` (layout: `hack/tools.sh --help`): built once and cached, or taken from
/// `CAPD_RS_TOOLS`. Asked once per test binary; a failure is kept and reported to every caller.
pub fn tools(tool: Tool) -> Result<PathBuf> {
    static DIRS: Mutex<BTreeMap<&'static str, Result<PathBuf, String>>> =
        Mutex::new(BTreeMap::new());
    // Held while building, so parallel tests wait for one build instead of racing for the lock.
    let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = dirs.entry(tool.arg()).or_insert_with(|| {
        run_script_with("tools.sh", &[tool.arg()])
            .map(PathBuf::from)
            .map_err(|e| format!("{e:#}"))
    });
    dir.clone()
        .map_err(|e| anyhow::anyhow!("{} is not available: {e}", tool.arg()))
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

/// Restarts the Docker engine the way a user's `systemctl restart docker` would (SIGTERM, then
/// a new `dockerd`), if it is the one `hack/docker-engine.sh` started; otherwise returns why it
/// will not touch it (an engine the tests did not start may run other people's containers).
pub fn restart_engine() -> Result<(), String> {
    let cache = std::env::var_os("CAPD_RS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("capd-rs")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/capd-rs")))
        .ok_or("no cache directory (CAPD_RS_CACHE, XDG_CACHE_HOME, HOME)")?;
    let pid_file = cache.join("dockerd.pid");
    let pid = std::fs::read_to_string(&pid_file).map_err(|_| {
        format!(
            "{} is missing: hack/docker-engine.sh did not start this engine",
            pid_file.display()
        )
    })?;
    let pid = pid.trim();
    let proc = PathBuf::from("/proc").join(pid);
    let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
    if comm.trim() != "dockerd" {
        return Err(format!(
            "process {pid} from {} is not dockerd: the engine was started some other way",
            pid_file.display()
        ));
    }
    let killed = Command::new("kill").args(["-TERM", pid]).status();
    if !killed.is_ok_and(|s| s.success()) {
        return Err(format!("cannot signal dockerd (pid {pid})"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while proc.exists() {
        if std::time::Instant::now() > deadline {
            panic!("dockerd (pid {pid}) did not stop within 90s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    run_script("docker-engine.sh").expect("starting the Docker engine again");
    Ok(())
}
