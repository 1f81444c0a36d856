//! The built `manager` binary as a separate process, run the way a user runs it: flags, its own
//! ports and webhook certificate, a log file; killed on drop (its log is printed when the test
//! failed).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::webhook::Pki;
use super::{control_plane, http_get};

/// A free loopback port (free when asked; the manager binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One manager process.
pub struct ManagerProcess {
    child: Child,
    dir: tempfile::TempDir,
    /// The webhook server's port.
    pub webhook_port: u16,
    /// The health endpoint's port (`--health-addr`).
    pub health_port: u16,
    /// The diagnostics endpoint's port (`--diagnostics-address`).
    pub diagnostics_port: u16,
}

impl ManagerProcess {
    /// Starts the manager against the test control plane with free loopback ports, a webhook
    /// certificate from `pki`, `--privileged-nodes=false` (these machines refuse privileged
    /// containers), then `args`; `env` is added to its environment.
    pub fn start(pki: &Pki, args: &[&str], env: &[(&str, &str)]) -> Self {
        let (webhook, health, diagnostics) = (free_port(), free_port(), free_port());
        let mut all = vec![
            format!("--webhook-port={webhook}"),
            format!("--health-addr=127.0.0.1:{health}"),
            format!("--diagnostics-address=127.0.0.1:{diagnostics}"),
            "--privileged-nodes=false".to_owned(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Self::spawn(pki, all, env, (webhook, health, diagnostics))
    }

    /// Starts the manager with exactly `args` (plus `--webhook-cert-dir`, where a Deployment
    /// mounts the certificate), expecting CAPD's default ports (9443, 9440, 8443).
    pub fn start_as_deployed(pki: &Pki, args: &[String], env: &[(&str, &str)]) -> Self {
        Self::spawn(pki, args.to_vec(), env, (9443, 9440, 8443))
    }

    fn spawn(
        pki: &Pki,
        mut args: Vec<String>,
        env: &[(&str, &str)],
        (webhook_port, health_port, diagnostics_port): (u16, u16, u16),
    ) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the manager");
        pki.install(dir.path());
        args.push(format!("--webhook-cert-dir={}", dir.path().display()));
        let log = std::fs::File::create(dir.path().join("manager.log")).expect("the log file");
        let mut command = Command::new(super::setup::manager_binary());
        command
            .args(&args)
            .env("KUBECONFIG", &control_plane::control_plane().kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("starting the manager");
        Self {
            child,
            dir,
            webhook_port,
            health_port,
            diagnostics_port,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its log is written.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("manager.log")
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The directory holding its certificate and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends `signal` (such as `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: signals a child process this test spawned.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The HTTP status and body of GET `path` on the health endpoint, or `None` while nothing
    /// answers.
    pub async fn health(&self, path: &str) -> Option<(u16, String)> {
        let response = http_get(self.health_port, path).await?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    }

    /// Waits until GET `path` on the health endpoint answers 200; the panic after `timeout`
    /// quotes the last answer.
    pub async fn wait_healthy(&self, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.health(path).await;
            if matches!(answer, Some((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not answer 200 within {timeout:?}; last answer: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The metrics, from a manager started with `--insecure-diagnostics`.
    pub async fn metrics(&self) -> String {
        let response = http_get(self.diagnostics_port, "/metrics")
            .await
            .unwrap_or_default();
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- manager log ({}) ---\n{}", self.pid(), self.log());
        }
    }
}

/// The sum of the samples of metric `name` whose labels include every one of `labels`, in
/// Prometheus text `metrics`.
pub fn sample_sum(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest),
                None => (series, ""),
            };
            let matches = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
