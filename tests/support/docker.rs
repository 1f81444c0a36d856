//! Docker resources made by tests, and their removal.
//!
//! Every container and network a test makes (directly or through the provider) has a name that
//! starts with its test's prefix, and every prefix starts with the run's prefix. A test's scope
//! removes its own on drop, also when the test panics; the run removes whatever is left at exit;
//! and a later run removes what a killed run left behind (its pid file names a dead process).

use std::fs;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The test image that behaves like a kind node (`hack/images/node`).
pub const NODE_IMAGE: &str = "capd-rs-test/node:local";
/// The test HAProxy image (`hack/images/haproxy`).
pub const HAPROXY_IMAGE: &str = "capd-rs-test/haproxy:local";

/// This run's name prefix, `t<6 hex digits>-`, registered for cleanup at exit.
pub fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let runs = runs_dir();
        let _ = fs::create_dir_all(&runs);
        remove_dead_runs(&runs);
        let id = format!("{:06x}", rand_u32() & 0xff_ffff);
        let _ = fs::write(runs.join(&id), std::process::id().to_string());
        // SAFETY: registers a plain `extern "C" fn()` with no captured state.
        unsafe { libc::atexit(remove_run_at_exit) };
        format!("t{id}-")
    })
}

/// Removes every container and network whose name starts with `prefix`; returns what it removed.
pub fn remove_with_prefix(prefix: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for (kind, list, remove) in [
        (
            "container",
            &["ps", "-a", "--format", "{{.Names}}"][..],
            &["rm", "-f", "-v"][..],
        ),
        (
            "network",
            &["network", "ls", "--format", "{{.Name}}"][..],
            &["network", "rm"][..],
        ),
    ] {
        let names: Vec<String> = docker_lines(list)
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect();
        if names.is_empty() {
            continue;
        }
        let _ = Command::new("docker")
            .args(remove)
            .args(&names)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        removed.extend(names.into_iter().map(|n| format!("{kind} {n}")));
    }
    removed
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn runs_dir() -> std::path::PathBuf {
    let cache = std::env::var_os("CAPD_RS_CACHE")
        .map(Into::into)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| std::path::Path::new(&c).join("capd-rs"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/capd-rs"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("capd-rs"));
    cache.join("test-runs")
}

/// Removes the leftovers of earlier runs whose process is gone (killed before their exit hook).
fn remove_dead_runs(runs: &std::path::Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let pid: Option<i32> = fs::read_to_string(entry.path())
            .ok()
            .and_then(|s| s.trim().parse().ok());
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !alive {
            let id = entry.file_name().to_string_lossy().into_owned();
            for what in remove_with_prefix(&format!("t{id}-")) {
                eprintln!("removed {what} left by an earlier test run");
            }
            let _ = fs::remove_file(entry.path());
        }
    }
}

extern "C" fn remove_run_at_exit() {
    let prefix = run_prefix();
    for what in remove_with_prefix(prefix) {
        eprintln!("removed {what} left by this test run");
    }
    let id = prefix.trim_start_matches('t').trim_end_matches('-');
    let _ = fs::remove_file(runs_dir().join(id));
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}
