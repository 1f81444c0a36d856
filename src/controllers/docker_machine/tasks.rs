//! A machine's background work, which wakes its reconciler instead of blocking it: at most one
//! follower (of the node's boot, or of the bootstrap's progress) and one image loader at a time,
//! and the failure a loader leaves for the next reconcile to report. [`MachineTasks`] keeps them
//! per machine, so cancelling a machine's work is one call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::docker::{ContainerRuntime, node_bootstrap};
use crate::metrics::Metrics;

/// How long a bootstrap watch outlives the bootstrap timeout.
const WATCH_GRACE: Duration = Duration::from_secs(30);
/// How often a follower wakes the reconciler after the bootstrap timeout until it stops the
/// bootstrap.
const TIMEOUT_REMINDER: Duration = Duration::from_secs(5);
/// How long the follower waits for a node to boot.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// What a follower waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The node's boot.
    Boot,
    /// The bootstrap's progress, its outcome, and the bootstrap timeout.
    Bootstrap,
}

/// The background work of every machine, by machine key.
#[derive(Clone, Default)]
pub struct MachineTasks {
    machines: Arc<Mutex<HashMap<String, Tasks>>>,
}

/// One machine's background work.
#[derive(Default)]
struct Tasks {
    follower: Option<Follower>,
    loader: Option<JoinHandle<()>>,
    load_failure: Option<String>,
}

/// A follower task.
struct Follower {
    /// What it follows.
    phase: Phase,
    /// Set before its last wake: a reconcile that needs a follower then starts a new one
    /// (the task itself may still be finishing).
    ended: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl MachineTasks {
    fn machines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tasks>> {
        self.machines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `work` as `machine`'s follower of `phase`, then `wake` once it has ended, unless a
    /// follower of that phase is still going; a follower of another phase is cancelled first.
    pub fn follow(
        &self,
        machine: &str,
        phase: Phase,
        work: impl Future<Output = ()> + Send + 'static,
        wake: impl FnOnce() + Send + 'static,
    ) {
        let mut machines = self.machines();
        let tasks = machines.entry(machine.to_owned()).or_default();
        if let Some(follower) = &tasks.follower
            && !follower.ended.load(Ordering::SeqCst)
        {
            if follower.phase == phase {
                return;
            }
            follower.task.abort();
        }
        let ended = Arc::new(AtomicBool::new(false));
        let ended_here = ended.clone();
        let task = tokio::spawn(async move {
            work.await;
            // Ended before the last wake, so the reconcile it causes can start a new follower.
            ended_here.store(true, Ordering::SeqCst);
            wake();
        });
        tasks.follower = Some(Follower { phase, ended, task });
    }

    /// Starts `work` as `machine`'s image loader, then `wake` once it has ended, unless a loader
    /// is still running; an `Err` it ends with is kept for [`MachineTasks::take_load_failure`].
    pub fn load(
        &self,
        machine: &str,
        work: impl Future<Output = Result<(), String>> + Send + 'static,
        wake: impl FnOnce() + Send + 'static,
    ) {
        let mut machines = self.machines();
        let tasks = machines.entry(machine.to_owned()).or_default();
        if tasks.loader.as_ref().is_some_and(|l| !l.is_finished()) {
            return;
        }
        let this = self.clone();
        let key = machine.to_owned();
        tasks.loader = Some(tokio::spawn(async move {
            if let Err(message) = work.await
                && let Some(tasks) = this.machines().get_mut(&key)
            {
                tasks.load_failure = Some(message);
            }
            wake();
        }));
    }

    /// The failure `machine`'s last loader ended with, once.
    pub fn take_load_failure(&self, machine: &str) -> Option<String> {
        self.machines()
            .get_mut(machine)
            .and_then(|t| t.load_failure.take())
    }

    /// Cancels `machine`'s follower and loader and forgets it.
    pub fn cancel(&self, machine: &str) {
        if let Some(tasks) = self.machines().remove(machine) {
            tasks.abort();
        }
    }

    /// Cancels every machine's work.
    pub fn cancel_all(&self) {
        for (_, tasks) in self.machines().drain() {
            tasks.abort();
        }
    }
}

impl Tasks {
    fn abort(&self) {
        if let Some(follower) = &self.follower {
            follower.task.abort();
        }
        if let Some(loader) = &self.loader {
            loader.abort();
        }
    }
}

/// Waits (up to [`BOOT_TIMEOUT`]) until the node in `container` has booted.
pub async fn follow_boot(runtime: Arc<dyn ContainerRuntime>, container: String) {
    let booting = node_bootstrap::wait_until_booted(runtime.as_ref(), &container);
    let _ = tokio::time::timeout(BOOT_TIMEOUT, booting).await;
}

/// Calls `wake_up` on each change of the bootstrap in `container`, and every few seconds once
/// it has run longer than `timeout` (until the reconciler has stopped it); returns when the
/// progress reports end. Records in `metrics` how long each step it saw start and end took.
pub async fn follow_bootstrap(
    runtime: &dyn ContainerRuntime,
    metrics: &Metrics,
    container: &str,
    timeout: Duration,
    wake_up: impl Fn(),
) {
    // The watch ends a little after the timeout at the latest; the reconciler starts a new one.
    let mut reports = node_bootstrap::watch(runtime, container, timeout + WATCH_GRACE);
    let mut deadline = None;
    let mut steps = StepClock::default();
    loop {
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            report = reports.next() => match report {
                Some(Ok(progress)) => {
                    if let Some(took) = steps.saw(progress.done, std::time::Instant::now()) {
                        metrics.bootstrap_step(took);
                    }
                    if deadline.is_none() && progress.installed {
                        let ran = Duration::from_secs(progress.elapsed_seconds);
                        // One second late, so the runner's whole-second clock has passed it.
                        let left = timeout.saturating_sub(ran) + Duration::from_secs(1);
                        deadline = Some(tokio::time::Instant::now() + left);
                    }
                    wake_up();
                }
                _ => return,
            },
            () = timer => {
                // Reminded until the reconciler has stopped the bootstrap (then the watch ends).
                deadline = Some(tokio::time::Instant::now() + TIMEOUT_REMINDER);
                wake_up();
            }
        }
    }
}

/// Loads `images` into the node in `container` one by one, calling `wake_up` after each; ends
/// at the first failure, naming the image.
pub async fn load_images(
    runtime: Arc<dyn ContainerRuntime>,
    container: String,
    images: Vec<String>,
    wake_up: impl Fn(),
) -> Result<(), String> {
    for image in images {
        node_bootstrap::load_image(runtime.as_ref(), &container, &image)
            .await
            .map_err(|e| format!("Cannot pre-load image {image}: {e}"))?;
        wake_up();
    }
    Ok(())
}

/// Times bootstrap steps from the finished-step counts a follower sees: a step is timed only
/// when the follower saw both its start and its end (the first count it sees may be mid-step).
#[derive(Debug, Default)]
struct StepClock {
    /// The finished steps at the last change, and since when (`None` before the first report).
    current: Option<(usize, std::time::Instant, bool)>,
}

impl StepClock {
    /// Notes `done` finished steps at `now`; returns how long the step that just finished took.
    fn saw(&mut self, done: usize, now: std::time::Instant) -> Option<Duration> {
        match self.current {
            Some((last, _, _)) if last == done => None,
            Some((last, since, seen_start)) => {
                self.current = Some((done, now, true));
                (seen_start && done == last + 1).then(|| now.duration_since(since))
            }
            None => {
                self.current = Some((done, now, false));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use tokio::sync::oneshot;

    use super::*;

    #[test]
    fn only_steps_seen_from_start_to_end_are_timed() {
        let mut clock = StepClock::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // The first report may land mid-step: that step is not timed.
        assert_eq!(clock.saw(1, at(0)), None);
        assert_eq!(clock.saw(1, at(100)), None);
        assert_eq!(clock.saw(2, at(500)), None);
        assert_eq!(clock.saw(3, at(1500)), Some(Duration::from_millis(1000)));
        // Two steps ended between reports: neither can be told apart.
        assert_eq!(clock.saw(5, at(2000)), None);
        assert_eq!(clock.saw(6, at(2600)), Some(Duration::from_millis(600)));
    }

    /// A task that runs until `release` is sent, counting its starts in `started`.
    fn held(started: &Arc<AtomicUsize>) -> (impl Future<Output = ()> + use<>, oneshot::Sender<()>) {
        let (release, held) = oneshot::channel::<()>();
        let started = started.clone();
        let work = async move {
            started.fetch_add(1, Ordering::SeqCst);
            let _ = held.await;
        };
        (work, release)
    }

    #[tokio::test]
    async fn one_follower_per_phase_and_a_new_phase_replaces_it() {
        let tasks = MachineTasks::default();
        let started = Arc::new(AtomicUsize::new(0));
        let (boot, _keep_boot) = held(&started);
        tasks.follow("ns/m", Phase::Boot, boot, || {});
        let (again, _keep_again) = held(&started);
        tasks.follow("ns/m", Phase::Boot, again, || {});
        tokio::task::yield_now().await;
        assert_eq!(started.load(Ordering::SeqCst), 1, "one boot follower");

        let (woke, woken) = oneshot::channel();
        let (bootstrap, release) = held(&started);
        tasks.follow("ns/m", Phase::Bootstrap, bootstrap, move || {
            let _ = woke.send(());
        });
        release.send(()).unwrap();
        woken
            .await
            .expect("the follower wakes the reconciler when it ends");
        assert_eq!(started.load(Ordering::SeqCst), 2);
        // Ended: the next reconcile that needs a follower of the same phase gets a new one.
        let (next, _keep_next) = held(&started);
        tasks.follow("ns/m", Phase::Bootstrap, next, || {});
        tokio::task::yield_now().await;
        assert_eq!(started.load(Ordering::SeqCst), 3);
        tasks.cancel_all();
    }

    #[tokio::test]
    async fn a_loader_runs_once_at_a_time_and_its_failure_is_taken_once() {
        let tasks = MachineTasks::default();
        let (release, held) = oneshot::channel::<()>();
        let (woke, woken) = oneshot::channel();
        tasks.load(
            "ns/m",
            async move {
                let _ = held.await;
                Err("Cannot pre-load image i: gone".to_owned())
            },
            move || {
                let _ = woke.send(());
            },
        );
        let second = Arc::new(AtomicBool::new(false));
        let ran = second.clone();
        tasks.load(
            "ns/m",
            async move {
                ran.store(true, Ordering::SeqCst);
                Ok(())
            },
            || {},
        );
        assert_eq!(tasks.take_load_failure("ns/m"), None);
        release.send(()).unwrap();
        woken.await.unwrap();
        assert!(!second.load(Ordering::SeqCst), "a second loader started");
        assert_eq!(
            tasks.take_load_failure("ns/m").as_deref(),
            Some("Cannot pre-load image i: gone")
        );
        assert_eq!(tasks.take_load_failure("ns/m"), None);
    }

    #[tokio::test]
    async fn cancelling_a_machine_stops_its_work_and_no_one_elses() {
        let tasks = MachineTasks::default();
        let started = Arc::new(AtomicUsize::new(0));
        let (mine, release_mine) = held(&started);
        let (theirs, release_theirs) = held(&started);
        let (mine_woke, mine_woken) = oneshot::channel::<()>();
        let (theirs_woke, theirs_woken) = oneshot::channel::<()>();
        tasks.follow("ns/a", Phase::Boot, mine, move || {
            let _ = mine_woke.send(());
        });
        tasks.follow("ns/b", Phase::Boot, theirs, move || {
            let _ = theirs_woke.send(());
        });
        tokio::task::yield_now().await;
        tasks.cancel("ns/a");
        let _ = release_mine.send(());
        let _ = release_theirs.send(());
        assert!(
            theirs_woken.await.is_ok(),
            "the other machine's follower ran on"
        );
        assert!(
            mine_woken.await.is_err(),
            "the cancelled follower woke the reconciler"
        );
    }
}
