//! A real etcd + kube-apiserver for the test binary, started once on free loopback ports with a
//! temporary data directory, as controller-runtime's envtest does.
//!
//! The processes are spawned from a dedicated thread that lives as long as the test binary, with
//! `PR_SET_PDEATHSIG`, so they die with the binary even when it is killed. A normal exit (all
//! tests done, failed or not) stops them and removes the data directory through `atexit`.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;

/// Where the running control plane is and how to reach it.
#[derive(Debug)]
pub struct ControlPlane {
    /// `https://127.0.0.1:<port>` of the kube-apiserver.
    pub server: String,
    /// A kubeconfig file with admin credentials, usable by `kubectl` and `kube::Config`.
    pub kubeconfig: PathBuf,
    /// The temporary directory holding etcd's data, certificates and logs.
    pub dir: PathBuf,
}

/// The processes and directory to clean up at exit.
struct Running {
    children: Vec<Child>,
    dir: PathBuf,
}

static RUNNING: Mutex<Option<Running>> = Mutex::new(None);
static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// Returns the test binary's control plane, starting it on first use. A failed start is kept,
/// so every test reports it at once instead of starting another etcd and apiserver.
pub fn control_plane() -> &'static ControlPlane {
    match CONTROL_PLANE.get_or_init(|| start().map_err(|e| format!("{e:#}"))) {
        Ok(cp) => cp,
        Err(e) => panic!("cannot start the test control plane: {e}"),
    }
}

fn start() -> Result<ControlPlane> {
    let bin_dir = super::setup::control_plane_binaries()?;
    let dir = tempfile::Builder::new()
        .prefix("capd-rs-test-cp-")
        .tempdir()
        .context("creating the control plane's temporary directory")?
        .keep();
    let [etcd_port, etcd_peer_port, api_port] = free_ports()?;
    write_credentials(&dir)?;

    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let mut etcd = command(&bin_dir.join("etcd"), &dir.join("etcd.log"))?;
    etcd.args([
        &format!("--data-dir={}", dir.join("etcd").display()),
        &format!("--listen-client-urls={etcd_url}"),
        &format!("--advertise-client-urls={etcd_url}"),
        &format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
        "--unsafe-no-fsync=true",
    ]);
    let server = format!("https://127.0.0.1:{api_port}");
    let mut apiserver = command(
        &bin_dir.join("kube-apiserver"),
        &dir.join("kube-apiserver.log"),
    )?;
    apiserver.args([
        &format!("--etcd-servers={etcd_url}"),
        &format!("--cert-dir={}", dir.join("certs").display()),
        &format!("--secure-port={api_port}"),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        "--authorization-mode=RBAC",
        &format!("--token-auth-file={}", dir.join("tokens.csv").display()),
        &format!("--service-account-issuer={server}"),
        &format!(
            "--service-account-key-file={}",
            dir.join("sa.pub").display()
        ),
        &format!(
            "--service-account-signing-key-file={}",
            dir.join("sa.key").display()
        ),
        "--disable-admission-plugins=ServiceAccount",
    ]);

    spawn_on_keeper_thread(vec![etcd, apiserver], dir.clone())?;
    let ca = wait_for_file(
        &dir.join("certs/apiserver.crt"),
        Duration::from_secs(60),
        &dir,
    )?;
    let kubeconfig = dir.join("kubeconfig");
    fs::write(&kubeconfig, kubeconfig_yaml(&server, &ca))?;
    wait_until_ready(&kubeconfig, &dir)?;
    Ok(ControlPlane {
        server,
        kubeconfig,
        dir,
    })
}

/// Asks the kernel for three distinct free loopback ports (all held until all are chosen).
fn free_ports() -> Result<[u16; 3]> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    let mut ports = [0; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Writes the admin token and the service-account key pair the apiserver requires.
fn write_credentials(dir: &Path) -> Result<()> {
    fs::write(
        dir.join("tokens.csv"),
        format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
    )?;
    let key = rcgen::KeyPair::generate()?;
    fs::write(dir.join("sa.key"), key.serialize_pem())?;
    fs::write(dir.join("sa.pub"), key.public_key_pem())?;
    Ok(())
}

/// The bearer token of the test admin (member of `system:masters`).
const ADMIN_TOKEN: &str = "capd-rs-test-admin";

fn kubeconfig_yaml(server: &str, ca_pem: &[u8]) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n"
    )
}

/// A command whose output goes to `log`, killed when the thread that spawned it ends.
fn command(bin: &Path, log: &Path) -> Result<Command> {
    let log = fs::File::create(log)?;
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Ok(cmd)
}

/// Spawns the commands from a thread that never ends, so `PR_SET_PDEATHSIG` (which follows the
/// spawning thread, not the process) fires only when the test binary itself goes away.
fn spawn_on_keeper_thread(commands: Vec<Command>, dir: PathBuf) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("control-plane-keeper".into())
        .spawn(move || {
            let mut children = Vec::new();
            for mut cmd in commands {
                match cmd.spawn() {
                    Ok(child) => children.push(child),
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("spawning {cmd:?}: {e}")));
                        return;
                    }
                }
            }
            *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running { children, dir });
            // SAFETY: registers a plain `extern "C" fn()` with no captured state.
            unsafe { libc::atexit(stop_at_exit) };
            let _ = tx.send(Ok(()));
            loop {
                std::thread::park();
            }
        })?;
    rx.recv().context("the control-plane keeper thread died")?
}

/// Stops etcd and the apiserver and removes their directory when the test binary exits.
extern "C" fn stop_at_exit() {
    let Some(mut running) = RUNNING.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    for child in running.children.iter_mut().rev() {
        // SAFETY: sends SIGTERM to a child process this binary spawned.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = fs::remove_dir_all(&running.dir);
}

/// Waits for a file the apiserver writes, failing early if a process died.
fn wait_for_file(path: &Path, timeout: Duration, dir: &Path) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(bytes) = fs::read(path)
            && !bytes.is_empty()
        {
            return Ok(bytes);
        }
        check_processes(dir)?;
        if Instant::now() > deadline {
            bail!(
                "{} did not appear within {timeout:?}{}",
                path.display(),
                logs_tail(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `/readyz` with the admin credentials until the apiserver is ready.
fn wait_until_ready(kubeconfig: &Path, dir: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let config = kube_config(kubeconfig).await?;
        let client = kube::Client::try_from(config)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let req = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                result => {
                    check_processes(dir)?;
                    if Instant::now() > deadline {
                        bail!(
                            "kube-apiserver not ready after 90s: {result:?}{}",
                            logs_tail(dir)
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// A kube client configuration for the kubeconfig file.
pub async fn kube_config(kubeconfig: &Path) -> Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
}

/// Fails when etcd or the apiserver has exited.
fn check_processes(dir: &Path) -> Result<()> {
    let mut guard = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(running) = guard.as_mut() {
        for child in &mut running.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "a control-plane process exited ({status}){}",
                    logs_tail(dir)
                );
            }
        }
    }
    Ok(())
}

fn logs_tail(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["etcd.log", "kube-apiserver.log"] {
        let text = fs::read_to_string(dir.join(name)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let _ = writeln!(
            out,
            "\n--- last lines of {name} ---\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    out
}
