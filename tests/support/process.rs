//! Helper processes of a test (Cluster API's managers, cert-manager, a second control plane):
//! spawned so they die with the test binary even when it is killed, their output kept in a log
//! file, killed when dropped, and their logs' last lines printed when the test panicked.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` with `PR_SET_PDEATHSIG` = SIGKILL from a thread that lives as long as the
/// test binary. The kernel sends that signal when the *thread* that forked the child ends, so
/// children spawned from a test's (short-lived) runtime threads could die under it; spawned here,
/// they die only when the test binary itself goes away, even by SIGKILL.
pub fn spawn_tied(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("process-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The sender lives in a static, so this loop (and thread) never ends.
            })
            .expect("starting the process-spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, reply))
        .map_err(|_| io::Error::other("the process-spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the process-spawner thread is gone"))?
}

/// One helper process with its log file.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` (stdin closed, stdout and stderr to `<log_dir>/<name>.log`) with
    /// [`spawn_tied`]. `name` names it in errors and in the logs printed on panic.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = spawn_tied(command).with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines it wrote.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails, quoting the end of its log, when it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.exited() {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// Sends SIGTERM and waits up to `grace` for it to exit, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_none() {
            // SAFETY: signals a child process this test spawned and has not reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + grace;
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} (pid {}, full log: {}) ---\n{}",
                self.name,
                self.child.id(),
                self.log.display(),
                self.log_tail(60)
            );
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let mut lines: VecDeque<&str> = VecDeque::with_capacity(n + 1);
    for line in text.lines() {
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(line);
    }
    Vec::from(lines).join("\n")
}

/// A temporary directory for a group of processes' logs and files: removed on drop, but kept (and
/// named on stderr) when the test panicked, so the full logs can be read afterwards.
pub struct WorkDir(Option<tempfile::TempDir>);

impl WorkDir {
    /// A new directory named `<prefix>XXXXXX` in the system's temporary directory.
    pub fn new(prefix: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("creating a temporary directory")?;
        Ok(Self(Some(dir)))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.as_ref().map(|d| d.path()).unwrap_or(Path::new(""))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("--- kept {} for its logs ---", dir.keep().display());
        }
    }
}

/// What `program <args>` prints on its standard output, failing with its error output (and
/// `install_hint` when it cannot be run at all).
pub fn output_of(program: &str, args: &[&str], install_hint: &str) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} ({install_hint})"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Waits until `check` returns `Ok(Some(_))`, failing with its last error or `what` after
/// `timeout`; `Err` from `check` ends the wait at once (a process that died, say).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
