//! Image pulls in the background, shared by everything waiting for the same image: a reconcile
//! never blocks on a pull; it reads the progress, and the pull wakes its waiters when it
//! reports progress (at most once a second) and when it ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{ContainerRuntime, DockerError};

/// Where an image stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullStatus {
    /// The image is in the engine.
    Present,
    /// A pull is under way; the text is its latest progress.
    Pulling(String),
    /// The last pull failed with the engine's message; the next call starts a new pull.
    Failed(String),
}

enum Entry<W> {
    Pulling { progress: String, waiters: Vec<W> },
    Failed(String),
}

/// The background pulls of one manager; `W` identifies a waiter to wake.
pub struct ImagePulls<W> {
    runtime: Arc<dyn ContainerRuntime>,
    entries: Arc<Mutex<HashMap<String, Entry<W>>>>,
    wake: futures::channel::mpsc::UnboundedSender<W>,
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
        }
    }

    /// Whether `image` is present; if not, starts (or joins) a pull and registers `waiter`.
    pub async fn ensure(&self, image: &str, waiter: W) -> Result<PullStatus, DockerError> {
        {
            let mut entries = lock(&self.entries);
            match entries.get_mut(image) {
                Some(Entry::Pulling { progress, waiters }) => {
                    if !waiters.contains(&waiter) {
                        waiters.push(waiter);
                    }
                    return Ok(PullStatus::Pulling(progress.clone()));
                }
                Some(Entry::Failed(message)) => {
                    let message = message.clone();
                    entries.remove(image);
                    return Ok(PullStatus::Failed(message));
                }
                None => {}
            }
        }
        if self.runtime.image_exists(image).await? {
            return Ok(PullStatus::Present);
        }
        let mut entries = lock(&self.entries);
        if let Some(Entry::Pulling { progress, waiters }) = entries.get_mut(image) {
            waiters.push(waiter);
            return Ok(PullStatus::Pulling(progress.clone()));
        }
        let progress = "starting".to_owned();
        entries.insert(
            image.to_owned(),
            Entry::Pulling {
                progress: progress.clone(),
                waiters: vec![waiter],
            },
        );
        tokio::spawn(pull(
            self.runtime.clone(),
            image.to_owned(),
            self.entries.clone(),
            self.wake.clone(),
        ));
        Ok(PullStatus::Pulling(progress))
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
) {
    let notify = |waiters: &[W]| {
        for w in waiters {
            let _ = wake.unbounded_send(w.clone());
        }
    };
    let mut stream = runtime.pull_image(&image);
    let mut last_wake = Instant::now();
    let mut failure = None;
    while let Some(item) = stream.next().await {
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
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let mut entries = lock(&entries);
    let waiters = match entries.remove(&image) {
        Some(Entry::Pulling { waiters, .. }) => waiters,
        _ => Vec::new(),
    };
    if let Some(message) = failure {
        entries.insert(image, Entry::Failed(message));
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

    #[tokio::test]
    async fn a_failed_pull_is_reported_once_then_retried() {
        let fake = Arc::new(FakeRuntime::default());
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let pulls = ImagePulls::new(fake.clone(), tx);
        assert!(matches!(
            pulls.ensure("missing:1", 7).await.unwrap(),
            PullStatus::Pulling(_)
        ));
        assert_eq!(rx.next().await, Some(7));
        match pulls.ensure("missing:1", 7).await.unwrap() {
            PullStatus::Failed(message) => {
                assert!(message.contains("pull access denied"), "{message}")
            }
            other => panic!("expected a failure, got {other:?}"),
        }
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
