//! Kubernetes clients as the manager makes them: client-go's token-bucket rate limit
//! (`--kube-api-qps` / `--kube-api-burst`, `--clustercache-client-qps` / `-burst` for workload
//! clusters) and the manager's user agent.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::HeaderValue;
use http::header::USER_AGENT;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// The user agent of the manager's requests.
pub const AGENT: &str = concat!("capd-rs-controller-manager/", env!("CARGO_PKG_VERSION"));

/// client-go's defaults when the QPS or burst is 0.
const DEFAULT_QPS: f64 = 5.0;
const DEFAULT_BURST: u32 = 10;

/// How many requests a client may send: `qps` per second on average, `burst` at once. As in
/// client-go, a QPS of 0 means 5 and a burst of 0 means 10; a negative QPS means no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests per second.
    pub qps: f32,
    /// Requests allowed at once above the rate.
    pub burst: u32,
}

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What was wrong.
        source: kube::config::KubeconfigError,
    },
    /// No configuration was found (in-cluster, `KUBECONFIG` or `~/.kube/config`).
    #[error("{0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("{0}")]
    Build(#[from] kube::Error),
}

/// The manager's client: from `kubeconfig` when given, otherwise the in-cluster configuration,
/// `KUBECONFIG` or `~/.kube/config`.
pub async fn connect(
    kubeconfig: Option<&Path>,
    limit: RateLimit,
) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let error = |source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kubeconfig = Kubeconfig::read_from(path).map_err(error)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(error)?
        }
        None => kube::Config::infer().await?,
    };
    Ok(build(config, limit)?)
}

/// A client for `config`, limited to `limit`, with the manager's user agent.
pub fn build(mut config: kube::Config, limit: RateLimit) -> Result<kube::Client, kube::Error> {
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(AGENT)));
    let builder = ClientBuilder::try_from(config)?;
    Ok(match TokenBucket::for_limit(limit) {
        Some(bucket) => builder.with_layer(&RateLimitLayer(bucket)).build(),
        None => builder.build(),
    })
}

/// A token bucket shared by every clone of a client.
#[derive(Clone, Debug)]
struct TokenBucket(Arc<Mutex<Bucket>>);

#[derive(Debug)]
struct Bucket {
    /// Tokens left (negative: reserved by requests still waiting).
    tokens: f64,
    refilled: Instant,
    qps: f64,
    burst: f64,
}

impl Bucket {
    /// Takes a token, and says how long the request must wait for it.
    fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.refilled = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

impl TokenBucket {
    fn for_limit(limit: RateLimit) -> Option<Self> {
        let qps = match f64::from(limit.qps) {
            q if q < 0.0 => return None,
            0.0 => DEFAULT_QPS,
            q => q,
        };
        let burst = f64::from(if limit.burst == 0 {
            DEFAULT_BURST
        } else {
            limit.burst
        });
        Some(Self(Arc::new(Mutex::new(Bucket {
            tokens: burst,
            refilled: Instant::now(),
            qps,
            burst,
        }))))
    }

    fn reserve(&self) -> Duration {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve(Instant::now())
    }
}

/// The layer that makes each request wait for a token.
struct RateLimitLayer(TokenBucket);

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            bucket: self.0.clone(),
            waiting: None,
            reserved: false,
        }
    }
}

/// A service that is ready only once its next request's token is due.
struct RateLimited<S> {
    inner: S,
    bucket: TokenBucket,
    waiting: Option<Pin<Box<Sleep>>>,
    reserved: bool,
}

impl<S, R> Service<R> for RateLimited<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.reserved {
            self.reserved = true;
            let delay = self.bucket.reserve();
            if !delay.is_zero() {
                self.waiting = Some(Box::pin(tokio::time::sleep(delay)));
            }
        }
        if let Some(waiting) = self.waiting.as_mut() {
            ready!(waiting.as_mut().poll(cx));
            self.waiting = None;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.reserved = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_requests_wait_for_the_rate() {
        let bucket = TokenBucket::for_limit(RateLimit {
            qps: 10.0,
            burst: 3,
        })
        .unwrap();
        for _ in 0..3 {
            assert_eq!(bucket.reserve(), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(), Duration::from_millis(100));
        assert_eq!(bucket.reserve(), Duration::from_millis(200));
        tokio::time::advance(Duration::from_secs(1)).await;
        // Ten tokens came back, two of them owed: the burst is full again after the debt.
        assert_eq!(bucket.reserve(), Duration::ZERO);
    }

    #[test]
    fn zero_and_negative_limits_mean_what_they_mean_in_client_go() {
        let defaults = TokenBucket::for_limit(RateLimit { qps: 0.0, burst: 0 }).unwrap();
        let bucket = defaults.0.lock().unwrap();
        assert_eq!((bucket.qps, bucket.burst), (5.0, 10.0));
        assert!(
            TokenBucket::for_limit(RateLimit {
                qps: -1.0,
                burst: 5
            })
            .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_service_is_ready_only_when_its_token_is_due() {
        use tower::ServiceExt;
        let bucket = TokenBucket::for_limit(RateLimit { qps: 1.0, burst: 1 }).unwrap();
        let mut service = RateLimitLayer(bucket).layer(tower::service_fn(|n: u32| async move {
            Ok::<_, std::convert::Infallible>(n)
        }));
        let start = Instant::now();
        assert_eq!(service.ready().await.unwrap().call(1).await.unwrap(), 1);
        assert_eq!(service.ready().await.unwrap().call(2).await.unwrap(), 2);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
