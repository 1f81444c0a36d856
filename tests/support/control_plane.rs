//! A real etcd + kube-apiserver for the test binary, started once on free loopback ports with a
//! temporary data directory, as controller-runtime's envtest does.
//!
//! The processes are spawned from a dedicated thread that lives as long as the test binary, with
//! `PR_SET_PDEATHSIG`, so they die with the binary even when it is killed. A normal exit (all
//! tests done, failed or not) stops them and removes the data directory through `atexit`.
//!
//! The apiserver resolves webhook and aggregated-API Services through their EndpointSlices
//! (`--enable-aggregator-routing=true`), so a webhook registered with `service:` works when the
//! Service has an EndpointSlice pointing at a reachable, non-loopback address (see `netns`). It
//! writes an audit log of every request made by a ServiceAccount, at level Metadata.
//!
//! [`start_extra`] starts a second, independent control plane owned by one test (for
//! `clusterctl move`, or to run real Cluster API without touching the shared one's CRDs).

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use super::process::Process;

/// Where the running control plane is and how to reach it.
#[derive(Debug)]
pub struct ControlPlane {
    /// `https://127.0.0.1:<port>` of the kube-apiserver.
    pub server: String,
    /// A kubeconfig file with admin credentials, usable by `kubectl` and `kube::Config`.
    pub kubeconfig: PathBuf,
    /// The temporary directory holding etcd's data, certificates and logs.
    pub dir: PathBuf,
    /// The audit log (JSON lines): the metadata of every request made by a ServiceAccount
    /// (user group `system:serviceaccounts`); nothing else is logged.
    pub audit_log: PathBuf,
}

impl ControlPlane {
    /// A kube client with admin rights.
    pub async fn client(&self) -> Result<kube::Client> {
        Ok(kube::Client::try_from(
            kube_config(&self.kubeconfig).await?,
        )?)
    }

    /// Runs `kubectl` against this control plane with `input` on its standard input; returns
    /// (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str], input: &str) -> (bool, String, String) {
        kubectl_at(&self.kubeconfig, args, input)
    }

    /// [`ControlPlane::kubectl`] off the async runtime, so servers in the test's runtime keep
    /// answering.
    pub async fn kubectl_async(&self, args: &[&str], input: &str) -> (bool, String, String) {
        kubectl_at_async(&self.kubeconfig, args, input).await
    }

    /// The audit log's events so far, parsed.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// [`kubectl_at`] off the async runtime, so servers in the caller's runtime keep answering.
pub async fn kubectl_at_async(
    kubeconfig: &Path,
    args: &[&str],
    input: &str,
) -> (bool, String, String) {
    let kubeconfig = kubeconfig.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let input = input.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl_at(&kubeconfig, &args, &input)
    })
    .await
    .expect("kubectl task")
}

/// Runs `kubectl --kubeconfig <kubeconfig>` with `input` on its standard input; returns
/// (success, stdout, stderr).
pub fn kubectl_at(kubeconfig: &Path, args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    let mut stdin = child.stdin.take().expect("kubectl stdin");
    stdin
        .write_all(input.as_bytes())
        .expect("writing to kubectl");
    drop(stdin);
    let out = child.wait_with_output().expect("waiting for kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The processes and directory of the shared control plane, to clean up at exit.
struct Running {
    processes: Vec<Process>,
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
    let (cp, commands) = prepare()?;
    let mut processes = Vec::new();
    for (name, command) in commands {
        processes.push(Process::spawn(name, command, &cp.dir)?);
    }
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
        processes,
        dir: cp.dir.clone(),
    });
    // SAFETY: registers a plain `extern "C" fn()` with no captured state.
    unsafe { libc::atexit(stop_at_exit) };
    wait_started(&cp, &mut || {
        let mut guard = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_mut()
            .map_or(Ok(()), |running| check_processes(&mut running.processes))
    })?;
    Ok(cp)
}

/// A control plane of one test's own, independent of the shared one: its own etcd, apiserver,
/// ports, credentials and directory. Dropping it stops both processes and removes the
/// directory (kept, and named on stderr, when the test panicked).
pub struct OwnedControlPlane {
    cp: ControlPlane,
    processes: Vec<Process>,
}

impl std::ops::Deref for OwnedControlPlane {
    type Target = ControlPlane;

    fn deref(&self) -> &ControlPlane {
        &self.cp
    }
}

impl Drop for OwnedControlPlane {
    fn drop(&mut self) {
        // The apiserver first, then etcd.
        for process in self.processes.iter_mut().rev() {
            process.stop(Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!(
                "--- kept the extra control plane's directory {} ---",
                self.cp.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.cp.dir);
        }
    }
}

/// Starts a second, independent control plane (see [`OwnedControlPlane`]) and waits until it is
/// ready. Blocking: from an async test, use [`start_extra_async`].
pub fn start_extra() -> Result<OwnedControlPlane> {
    let (cp, commands) = prepare()?;
    let mut owned = OwnedControlPlane {
        cp,
        processes: Vec::new(),
    };
    for (name, command) in commands {
        let process = Process::spawn(name, command, &owned.cp.dir)?;
        owned.processes.push(process);
    }
    let OwnedControlPlane { cp, processes } = &mut owned;
    wait_started(cp, &mut || check_processes(processes))?;
    Ok(owned)
}

/// [`start_extra`] on a blocking thread.
pub async fn start_extra_async() -> Result<OwnedControlPlane> {
    tokio::task::spawn_blocking(start_extra).await?
}

/// Writes a control plane's directory (credentials, audit policy) and the commands that run it.
fn prepare() -> Result<(ControlPlane, Vec<(&'static str, Command)>)> {
    let bin_dir = super::setup::control_plane_binaries()?;
    let dir = tempfile::Builder::new()
        .prefix("capd-rs-test-cp-")
        .tempdir()
        .context("creating the control plane's temporary directory")?
        .keep();
    let [etcd_port, etcd_peer_port, api_port] = free_ports()?;
    write_credentials(&dir)?;
    let audit_policy = dir.join("audit-policy.yaml");
    fs::write(&audit_policy, AUDIT_POLICY)?;
    let audit_log = dir.join("audit.log");

    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let mut etcd = Command::new(bin_dir.join("etcd"));
    etcd.args([
        &format!("--data-dir={}", dir.join("etcd").display()),
        &format!("--listen-client-urls={etcd_url}"),
        &format!("--advertise-client-urls={etcd_url}"),
        &format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
        "--unsafe-no-fsync=true",
    ]);
    let server = format!("https://127.0.0.1:{api_port}");
    let mut apiserver = Command::new(bin_dir.join("kube-apiserver"));
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
        // Webhook (and aggregated API) Services resolve through their EndpointSlices: nothing
        // here routes ClusterIPs.
        "--enable-aggregator-routing=true",
        &format!("--audit-policy-file={}", audit_policy.display()),
        &format!("--audit-log-path={}", audit_log.display()),
    ]);
    let kubeconfig = dir.join("kubeconfig");
    let cp = ControlPlane {
        server,
        kubeconfig,
        dir,
        audit_log,
    };
    Ok((cp, vec![("etcd", etcd), ("kube-apiserver", apiserver)]))
}

/// Metadata of the requests of ServiceAccounts (the identities a deployed provider uses), and
/// nothing else: the tests' own admin requests would drown them.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [\"system:serviceaccounts\"]
- level: None
";

/// Waits for the apiserver's certificate, writes the kubeconfig and waits until it is ready;
/// `alive` fails when a process has exited.
fn wait_started(cp: &ControlPlane, alive: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let ca = wait_for_file(
        &cp.dir.join("certs/apiserver.crt"),
        Duration::from_secs(60),
        &cp.dir,
        alive,
    )?;
    fs::write(&cp.kubeconfig, kubeconfig_yaml(&cp.server, &ca))?;
    wait_until_ready(&cp.kubeconfig, &cp.dir, alive)
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

/// Stops etcd and the apiserver and removes their directory when the test binary exits.
extern "C" fn stop_at_exit() {
    let Some(mut running) = RUNNING.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    for process in running.processes.iter_mut().rev() {
        process.stop(Duration::from_secs(5));
    }
    let _ = fs::remove_dir_all(&running.dir);
}

/// Waits for a file the apiserver writes, failing early if a process died.
fn wait_for_file(
    path: &Path,
    timeout: Duration,
    dir: &Path,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(bytes) = fs::read(path)
            && !bytes.is_empty()
        {
            return Ok(bytes);
        }
        alive()?;
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
fn wait_until_ready(
    kubeconfig: &Path,
    dir: &Path,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
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
                    alive()?;
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
fn check_processes(processes: &mut [Process]) -> Result<()> {
    for process in processes {
        process.check_running()?;
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
