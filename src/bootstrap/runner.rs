//! The in-node bootstrap runner: a [`Plan`] becomes files in the node container plus one
//! shell script (`runner.sh`, included at build time) that runs the steps in order, each once,
//! recording its progress in the node.
//!
//! Started detached (`docker exec -d`), the runner keeps going whatever happens to the manager,
//! and its progress files let a restarted manager pick up where it stands: a step is never run
//! twice (but see node restarts below), and a bootstrap is never taken as done before all its
//! steps ran and one of them wrote the success sentinel.
//!
//! The steps and progress live on the node's `/var` volume, so they survive a restart of the
//! node container (an engine restart restarts it): the runner first runs again the finished steps
//! that wrote to the node's tmpfs (`/run`, `/tmp`, emptied by the restart), then resumes with the
//! step that was interrupted (which thus runs a second time; a `kubeadm init` or `join` cut short
//! refuses to run again, and the step fails with kubeadm's words). Only the running runner's lock
//! and process ids live on `/run`. Each step runs in its own session, so stopping a bootstrap
//! stops the step's processes too.

use super::shell::quote_always;
use super::{Plan, SUCCESS_SENTINEL};

/// Where the runner keeps its script, steps and progress inside the node (on the `/var` volume).
pub const DIR: &str = "/var/lib/capd-rs/bootstrap";
/// Where the running runner records its and its step's process ids (on the `/run` tmpfs).
pub const RUN_DIR: &str = "/run/capd-rs";

/// A file to write into the node before starting the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerFile {
    /// Its absolute path.
    pub path: String,
    /// Its content.
    pub content: Vec<u8>,
}

/// The runner's files for `plan`: one script and input per step, and `run.sh`.
pub fn files(plan: &Plan) -> Vec<RunnerFile> {
    let mut files = Vec::new();
    for (i, command) in plan.commands.iter().enumerate() {
        let n = i + 1;
        let line: Vec<String> = command.argv.iter().map(|a| quote_always(a)).collect();
        files.push(RunnerFile {
            path: format!("{DIR}/step-{n}.sh"),
            content: format!(
                "# {}\nexec {}\n",
                command.description.replace('\n', " "),
                line.join(" ")
            )
            .into_bytes(),
        });
        files.push(RunnerFile {
            path: format!("{DIR}/step-{n}.retries"),
            content: command.retries.to_string().into_bytes(),
        });
        if command.on_tmpfs {
            files.push(RunnerFile {
                path: format!("{DIR}/step-{n}.replay"),
                content: Vec::new(),
            });
        }
        if let Some(stdin) = &command.stdin {
            files.push(RunnerFile {
                path: format!("{DIR}/step-{n}.in"),
                content: stdin.clone(),
            });
        }
    }
    files.push(RunnerFile {
        path: format!("{DIR}/run.sh"),
        content: script(plan.commands.len()).into_bytes(),
    });
    files
}

/// The runner script (`runner.sh`, with its placeholders filled in) for `total` steps.
fn script(total: usize) -> String {
    include_str!("runner.sh")
        .replace("@TOTAL@", &total.to_string())
        .replace("@RUN_DIR@", RUN_DIR)
        .replace("@DIR@", DIR)
        .replace("@SUCCESS_SENTINEL@", SUCCESS_SENTINEL)
}

/// The command that starts the runner (run it detached).
pub fn start_command() -> Vec<String> {
    vec!["/bin/sh".into(), format!("{DIR}/run.sh")]
}

/// The command that stops a runner that has taken too long, with the processes of the step it
/// is on (its process group), recording that step as failed with exit code 124 (as `timeout`
/// reports it) and `reason` as its output.
pub fn abort_command(reason: &str) -> Vec<String> {
    let script = format!(
        "cd {DIR} || exit 1; \
         if [ -f {RUN_DIR}/lock/pid ]; then kill \"$(cat {RUN_DIR}/lock/pid)\" 2>/dev/null; fi; \
         if [ -f {RUN_DIR}/step-pid ]; then step_pid=$(cat {RUN_DIR}/step-pid); \
         kill -TERM \"-$step_pid\" 2>/dev/null || kill -TERM \"$step_pid\" 2>/dev/null; \
         rm -f {RUN_DIR}/step-pid; fi; \
         rm -rf {RUN_DIR}/lock; \
         step=$(( $(cat done 2>/dev/null || echo 0) + 1 )); \
         {{ echo \"$step 124\"; echo {}; }} > failed.tmp && mv failed.tmp failed",
        quote_always(reason)
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// The shell script that reports the runner's progress, read by [`parse_progress`].
fn report_script() -> String {
    format!(
        "[ -f {DIR}/run.sh ] && cd {DIR} || {{ echo absent; exit 0; }}; \
         echo \"done $(cat done 2>/dev/null || echo 0)\"; \
         echo \"total $(ls step-*.sh 2>/dev/null | wc -l)\"; \
         if [ -f started ]; then echo \"elapsed $(( $(date +%s) - $(cat started) ))\"; fi; \
         if [ -f {RUN_DIR}/lock/pid ] && kill -0 \"$(cat {RUN_DIR}/lock/pid)\" 2>/dev/null; then echo running; fi; \
         if [ -f succeeded ]; then echo succeeded; fi; \
         if [ -f failed ]; then echo failed; cat failed; fi"
    )
}

/// The command that reports the runner's progress once; its output is read by
/// [`parse_progress`].
pub fn progress_command() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), report_script()]
}

/// The line that ends each report of [`watch_command`].
pub const REPORT_END: &str = "--capd-rs-report-end--";

/// The command that follows the runner from inside the node for at most `lifetime`: every half
/// second it checks, with shell builtins only, the finished steps, whether the runner runs and
/// whether there is an outcome; when any of these changed it prints a full report (as
/// [`progress_command`] does) and a [`REPORT_END`] line. It exits after reporting an outcome or
/// a missing runner, and at the end of its lifetime (so a watch whose reader went away does not
/// outlive it for long). One long-lived command instead of one engine round trip per check.
pub fn watch_command(lifetime: std::time::Duration) -> Vec<String> {
    let checks = lifetime.as_secs().max(1) * 2;
    let script = format!(
        "last=; n=0; while [ \"$n\" -lt {checks} ]; do n=$((n + 1)); \
         if [ -f {DIR}/run.sh ]; then read d < {DIR}/done 2>/dev/null || d=0; \
         r=; if [ -f {RUN_DIR}/lock/pid ] && read p < {RUN_DIR}/lock/pid && kill -0 \"$p\" 2>/dev/null; then r=running; fi; \
         o=; [ -f {DIR}/succeeded ] && o=succeeded; [ -f {DIR}/failed ] && o=failed; \
         key=\"$d $r $o\"; else key=absent; o=absent; fi; \
         if [ \"$key\" != \"$last\" ]; then ( {} ); echo {REPORT_END}; last=$key; fi; \
         [ -n \"$o\" ] && exit 0; sleep 0.5; done",
        report_script()
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// Where a bootstrap stands, as the node reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The runner's files are in the node.
    pub installed: bool,
    /// How many steps have finished.
    pub done: usize,
    /// How many steps there are.
    pub total: usize,
    /// Seconds since the runner first started.
    pub elapsed_seconds: u64,
    /// The runner is running.
    pub running: bool,
    /// The success sentinel exists, or existed when the runner finished (a node restart
    /// empties `/run`, where it lives).
    pub succeeded: bool,
    /// The failed step (1-based; 0 when every step ran but none wrote the success sentinel),
    /// its exit code and the tail of its output.
    pub failed: Option<(usize, i64, String)>,
}

/// Reads the output of [`progress_command`].
pub fn parse_progress(output: &str) -> Progress {
    let mut progress = Progress {
        installed: true,
        ..Default::default()
    };
    let mut lines = output.lines();
    while let Some(line) = lines.next() {
        match line.trim() {
            "absent" => progress.installed = false,
            "running" => progress.running = true,
            "succeeded" => progress.succeeded = true,
            "failed" => {
                let head = lines.next().unwrap_or_default();
                let mut fields = head.split_whitespace();
                let step = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
                let code = fields.next().and_then(|f| f.parse().ok()).unwrap_or(-1);
                let tail: Vec<&str> = lines.by_ref().collect();
                progress.failed = Some((step, code, tail.join("\n")));
            }
            other => {
                if let Some(done) = other.strip_prefix("done ") {
                    progress.done = done.trim().parse().unwrap_or(0);
                } else if let Some(total) = other.strip_prefix("total ") {
                    progress.total = total.trim().parse().unwrap_or(0);
                } else if let Some(elapsed) = other.strip_prefix("elapsed ") {
                    progress.elapsed_seconds = elapsed.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    progress
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::Command;

    #[test]
    fn files_hold_each_step_its_input_and_the_runner() {
        let plan = Plan {
            commands: vec![
                Command {
                    argv: vec!["/bin/sh".into(), "-c".into(), "cat > '/etc/a b'".into()],
                    stdin: Some(b"x".to_vec()),
                    description: "write /etc/a b".into(),
                    retries: 5,
                    on_tmpfs: true,
                },
                Command {
                    argv: vec!["/bin/sh".into(), "-c".into(), "echo it's".into()],
                    stdin: None,
                    description: "run".into(),
                    retries: 0,
                    on_tmpfs: false,
                },
            ],
            warnings: vec![],
        };
        let files = files(&plan);
        let names: Vec<&str> = files
            .iter()
            .map(|f| f.path.trim_start_matches(DIR))
            .collect();
        assert_eq!(
            names,
            [
                "/step-1.sh",
                "/step-1.retries",
                "/step-1.replay",
                "/step-1.in",
                "/step-2.sh",
                "/step-2.retries",
                "/run.sh"
            ]
        );
        let step2 = String::from_utf8(files[4].content.clone()).unwrap();
        assert_eq!(step2, "# run\nexec '/bin/sh' '-c' 'echo it'\\''s'\n");
        let runner = String::from_utf8(files[6].content.clone()).unwrap();
        assert!(runner.contains("while [ \"$i\" -le 2 ]"), "{runner}");
        assert!(runner.contains(&format!("cd {DIR} || exit 1")), "{runner}");
        assert!(
            runner.contains(&format!("[ -f {SUCCESS_SENTINEL} ] && touch sentinel-seen")),
            "{runner}"
        );
        assert!(
            !runner.contains('@'),
            "a placeholder left unfilled:\n{runner}"
        );
    }

    #[test]
    fn progress_is_parsed() {
        assert_eq!(parse_progress("absent\n"), Progress::default());
        let p = parse_progress("done 3\ntotal 5\nelapsed 42\nrunning\n");
        assert_eq!((p.total, p.elapsed_seconds), (5, 42));
        assert_eq!(
            (
                p.installed,
                p.done,
                p.running,
                p.succeeded,
                p.failed.is_none()
            ),
            (true, 3, true, false, true)
        );
        let p = parse_progress("done 1\nfailed\n2 7\nline one\nline two\n");
        assert_eq!(p.failed, Some((2, 7, "line one\nline two".into())));
        assert!(parse_progress("done 4\nsucceeded\n").succeeded);
    }
}
