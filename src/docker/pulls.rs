//! Image pulls in the background, shared by everything waiting for the same image: a reconcile
//! never blocks on a pull; it reads the progress, and the pull wakes its waiters when it
//! reports progress (at most once a second) and when it ends. A failed pull is reported to
//! every waiter until its retry time, so a bad image is not pulled again and again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;

use super::{ContainerRuntime, DockerError};

/// How long a failed pull is reported before the next attempt.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);
/// A pull that reports nothing for this long is given up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Where an image stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullStatus {
    /// The image is in the engine.
    Present,
    /// A pull is under way; the text is its latest progress.
    Pulling(String),
    /// The last pull failed with the engine's message; a new one starts after [`RETRY_AFTER`].
    Failed(String),
}

enum Entry<W> {
    Pulling { progress: String, waiters: Vec<W> },
    Failed { message: String, retry_at: Instant },
}

/// The background pulls of one manager; `W` identifies a waiter to wake.
pub struct ImagePulls<W> {
    runtime: Arc<dyn ContainerRuntime>,
    entries: Arc<Mutex<HashMap<String, Entry<W>>>>,
    wake: futures::channel::mpsc::UnboundedSender<W>,
    retry_after: Duration,
}

impl<W: Clone + Eq + Hash + Send + 'static> ImagePulls<W> {
    /// Pulls through `runtime`; waiters are sent to `wake` when there is news.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        wake: futures::channel::mpsc::UnboundedSender<W>,
    ) -> Self {
        Self {
            runtime,
            entries: Arc::default(),
            wake,
            retry_after: RETRY_AFTER,
        }
    }

    /// Whether `image` is present; if not, starts (or joins) a pull and registers `waiter`.
    pub async fn ensure(&self, image: &str, waiter: W) -> Result<PullStatus, DockerError> {
        if let Some(status) = self.join(image, &waiter) {
            return Ok(status);
        }
        if self.runtime.image_exists(image).await? {
            return Ok(PullStatus::Present);
        }
        if let Some(status) = self.join(image, &waiter) {
            return Ok(status);
        }
        lock(&self.entries).insert(
            image.to_owned(),
            Entry::Pulling {
                progress: "starting".into(),
                waiters: vec![waiter],
            },
        );
        tokio::spawn(pull(
            self.runtime.clone(),
            image.to_owned(),
            self.entries.clone(),
            self.wake.clone(),
            self.retry_after,
        ));
        Ok(PullStatus::Pulling("starting".into()))
    }

    /// The status of a pull under way or recently failed (registering `waiter` on a running
    /// one); `None` when there is none, or a failure's retry time has come.
    fn join(&self, image: &str, waiter: &W) -> Option<PullStatus> {
        let mut entries = lock(&self.entries);
        match entries.get_mut(image)? {
            Entry::Pulling { progress, waiters } => {
                if !waiters.contains(waiter) {
                    waiters.push(waiter.clone());
                }
                Some(PullStatus::Pulling(progress.clone()))
            }
            Entry::Failed { message, retry_at } if Instant::now() < *retry_at => {
                Some(PullStatus::Failed(message.clone()))
            }
            Entry::Failed { .. } => {
                entries.remove(image);
                None
            }
        }
    }
}

fn lock<W>(
    entries: &Mutex<HashMap<String, Entry<W>>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Entry<W>>> {
    entries.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one pull to its end, keeping its entry's progress current and waking its waiters.
async fn pull<W: Clone + Send>(
    runtime: Arc<dyn ContainerRuntime>,
    image: String,
    entries: Arc<Mutex<HashMap<String, Entry<W>>>>,
    wake: futures::channel::mpsc::UnboundedSender<W>,
    retry_after: Duration,
) {
    let notify = |waiters: &[W]| {
        for w in waiters {
            let _ = wake.unbounded_send(w.clone());
        }
    };
    let mut stream = runtime.pull_image(&image);
    let mut last_wake = Instant::now();
    let failure = loop {
        let item = match tokio::time::timeout(STALL_TIMEOUT, stream.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => break None,
            Err(_) => break Some(format!("no progress for {}s", STALL_TIMEOUT.as_secs())),
        };
        match item {
            Ok(report) => {
                if let Some(Entry::Pulling { progress, waiters }) = lock(&entries).get_mut(&image) {
                    *progress = report.status;
                    if last_wake.elapsed() >= Duration::from_secs(1) {
                        last_wake = Instant::now();
                        notify(waiters);
                    }
                }
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    let mut entries = lock(&entries);
    let waiters = match entries.remove(&image) {
        Some(Entry::Pulling { waiters, .. }) => waiters,
        _ => Vec::new(),
    };
    if let Some(message) = failure {
        entries.insert(
            image,
            Entry::Failed {
                message,
                retry_at: Instant::now() + retry_after,
            },
        );
    }
    notify(&waiters);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeRuntime;

    #[tokio::test]
    async fn a_present_image_needs_no_pull() {
        let fake = Arc::new(FakeRuntime::default());
        fake.add_image("busybox:1");
        let (tx, _rx) = futures::channel::mpsc::unbounded();
        let pulls = ImagePulls::new(fake, tx);
        assert_eq!(
            pulls.ensure("busybox:1", 1).await.unwrap(),
            PullStatus::Present
        );
    }

    #[tokio::test]
    async fn a_pull_wakes_its_waiters_and_then_the_image_is_present() {
        let fake = Arc::new(FakeRuntime::default());
        fake.set_pullable("kindest/haproxy:v1");
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let pulls = ImagePulls::new(fake.clone(), tx);
        assert!(matches!(
            pulls.ensure("kindest/haproxy:v1", "a").await.unwrap(),
            PullStatus::Pulling(_)
        ));
        assert!(matches!(
            pulls.ensure("kindest/haproxy:v1", "b").await.unwrap(),
            PullStatus::Pulling(_)
        ));
        let mut woken = vec![rx.next().await.unwrap(), rx.next().await.unwrap()];
        woken.sort();
        assert_eq!(woken, ["a", "b"]);
        assert_eq!(
            pulls.ensure("kindest/haproxy:v1", "a").await.unwrap(),
            PullStatus::Present
        );
        assert_eq!(fake.pulls(), 1, "two waiters share one pull");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_pull_is_reported_to_every_waiter_then_retried() {
        let fake = Arc::new(FakeRuntime::default());
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let pulls = ImagePulls::new(fake.clone(), tx);
        assert!(matches!(
            pulls.ensure("missing:1", 7).await.unwrap(),
            PullStatus::Pulling(_)
        ));
        assert!(matches!(
            pulls.ensure("missing:1", 8).await.unwrap(),
            PullStatus::Pulling(_)
        ));
        let mut woken = vec![rx.next().await.unwrap(), rx.next().await.unwrap()];
        woken.sort();
        assert_eq!(woken, [7, 8]);
        for waiter in [7, 8, 7] {
            match pulls.ensure("missing:1", waiter).await.unwrap() {
                PullStatus::Failed(message) => {
                    assert!(message.contains("pull access denied"), "{message}")
                }
                other => panic!("expected the failure for {waiter}, got {other:?}"),
            }
        }
        assert_eq!(fake.pulls(), 1, "no new pull before the retry time");
        tokio::time::advance(RETRY_AFTER).await;
        assert!(
            matches!(
                pulls.ensure("missing:1", 7).await.unwrap(),
                PullStatus::Pulling(_)
            ),
            "retried"
        );
        assert_eq!(rx.next().await, Some(7));
        assert_eq!(fake.pulls(), 2);
    }
}
