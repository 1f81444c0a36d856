//! Authentication and authorization of diagnostics requests, as controller-runtime's
//! `filters.WithAuthenticationAndAuthorization` does them: the bearer token reviewed by a
//! TokenReview, the path and verb by a SubjectAccessReview, answers cached and transient API
//! errors retried.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use k8s_openapi::api::authentication::v1::{
    TokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo,
};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::{Api, PostParams};
use tracing::{debug, error};

use super::go_error;

/// The bearer token of an `Authorization` header, as k8s.io/apiserver's bearertoken
/// authenticator reads it: trimmed, scheme case-insensitive, split on single spaces, and none
/// when empty (so `Bearer  x`, with two spaces, has none).
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let auth = authorization?.trim();
    let mut parts = auth.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a TokenReview said of a token.
#[derive(Clone, Debug, PartialEq)]
pub enum Authentication {
    /// The token is valid: the user, with `system:authenticated` added as the apiserver's
    /// group adder does.
    User(UserInfo),
    /// The token is not valid; `error` is the review's explanation, if any.
    Refused {
        /// `status.error` of the review.
        error: Option<String>,
    },
}

impl Authentication {
    /// Reads a TokenReview's status.
    pub fn from_status(status: Option<&TokenReviewStatus>) -> Self {
        match status {
            Some(TokenReviewStatus {
                authenticated: Some(true),
                user,
                ..
            }) => Self::User(with_authenticated_group(user.clone().unwrap_or_default())),
            _ => Self::Refused {
                error: status
                    .and_then(|s| s.error.clone())
                    .filter(|e| !e.is_empty()),
            },
        }
    }
}

/// k8s.io/apiserver's `AuthenticatedGroupAdder`: every authenticated user but the anonymous one
/// is in `system:authenticated`, unless already in it or in `system:unauthenticated`.
fn with_authenticated_group(mut user: UserInfo) -> UserInfo {
    const AUTHENTICATED: &str = "system:authenticated";
    if user.username.as_deref() == Some("system:anonymous") {
        return user;
    }
    let groups = user.groups.get_or_insert_with(Vec::new);
    if !groups
        .iter()
        .any(|g| g == AUTHENTICATED || g == "system:unauthenticated")
    {
        groups.push(AUTHENTICATED.to_owned());
    }
    user
}

/// The SubjectAccessReview of `user` doing `verb` on the non-resource URL `path`.
pub fn access_review(user: &UserInfo, verb: &str, path: &str) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: user.username.clone(),
        uid: user.uid.clone(),
        groups: user.groups.clone(),
        extra: user.extra.clone(),
        non_resource_attributes: Some(NonResourceAttributes {
            path: Some(path.to_owned()),
            verb: Some(verb.to_owned()),
        }),
        resource_attributes: None,
    }
}

/// Whether a SubjectAccessReview's status allows; an error when it both allows and denies.
pub fn allowed(status: &SubjectAccessReviewStatus) -> Result<bool, String> {
    match (status.allowed, status.denied.unwrap_or(false)) {
        (true, true) => {
            Err("webhook subject access review returned both allow and deny response".to_owned())
        }
        (allowed, _) => Ok(allowed),
    }
}

/// The outcome of a request's review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// No bearer token, or one the TokenReview refused.
    Unauthenticated,
    /// The TokenReview could not be made.
    AuthenticationFailed,
    /// The SubjectAccessReview did not allow `user`.
    Denied {
        /// The user name.
        user: String,
    },
    /// The SubjectAccessReview could not be made or was contradictory.
    AuthorizationFailed {
        /// The user name.
        user: String,
    },
}

impl Verdict {
    /// The status and message controller-runtime answers with; none for [`Verdict::Allow`].
    pub fn refusal(&self) -> Option<(StatusCode, String)> {
        match self {
            Self::Allow => None,
            Self::Unauthenticated => Some((StatusCode::UNAUTHORIZED, "Unauthorized".to_owned())),
            Self::AuthenticationFailed => Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                "Authentication failed".to_owned(),
            )),
            Self::Denied { user } => Some((
                StatusCode::FORBIDDEN,
                format!("Authorization denied for user {user}"),
            )),
            Self::AuthorizationFailed { user } => Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Authorization for user {user} failed"),
            )),
        }
    }
}

pub(super) async fn authorize(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let token = bearer_token(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let verb = request.method().as_str().to_lowercase();
    let verdict = guard.review(token, &verb, request.uri().path()).await;
    match verdict.refusal() {
        None => next.run(request).await,
        Some((status, message)) => go_error(status, &message),
    }
}

/// Why a review could not be made.
#[derive(Debug, thiserror::Error)]
enum ReviewError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Contradiction(String),
}

/// How long authentication answers are kept (controller-runtime: `CacheTTL`).
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long an allowing authorization answer is kept (`AllowCacheTTL`).
const ALLOW_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a denying authorization answer is kept (`DenyCacheTTL`).
const DENY_TTL: Duration = Duration::from_secs(30);
/// The time limit of one review, retries included (`TokenAccessReviewTimeout`; capd-rs bounds
/// SubjectAccessReviews the same way).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// The most entries a cache holds.
const CACHE_ENTRIES: usize = 4096;

/// Authenticates and authorizes requests through the Kubernetes API, with caches.
pub(super) struct Guard {
    kube: kube::Client,
    tokens: Mutex<TtlCache<[u8; 32], Authentication>>,
    reviews: Mutex<TtlCache<String, SubjectAccessReviewStatus>>,
}

impl Guard {
    pub(super) fn new(kube: kube::Client) -> Self {
        Self {
            kube,
            tokens: Mutex::new(TtlCache::new(CACHE_ENTRIES)),
            reviews: Mutex::new(TtlCache::new(CACHE_ENTRIES)),
        }
    }

    async fn review(&self, token: Option<&str>, verb: &str, path: &str) -> Verdict {
        let Some(token) = token else {
            debug!(path, "Authentication failed: no bearer token");
            return Verdict::Unauthenticated;
        };
        let user = match self.authenticate(token).await {
            Ok(Authentication::User(user)) => user,
            Ok(Authentication::Refused { error }) => {
                debug!(
                    path,
                    error = error.as_deref().unwrap_or(""),
                    "Authentication failed"
                );
                return Verdict::Unauthenticated;
            }
            Err(e) => {
                error!(path, error = %e, "Authentication failed");
                return Verdict::AuthenticationFailed;
            }
        };
        let name = user.username.clone().unwrap_or_default();
        match self.authorize(&user, verb, path).await {
            Ok(true) => Verdict::Allow,
            Ok(false) => {
                debug!(path, user = %name, "Authorization denied");
                Verdict::Denied { user: name }
            }
            Err(e) => {
                error!(path, user = %name, error = %e, "Authorization failed");
                Verdict::AuthorizationFailed { user: name }
            }
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Authentication, ReviewError> {
        let key = sha256(token);
        if let Some(hit) = lock(&self.tokens).get(&key, Instant::now()) {
            return Ok(hit);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.kube.clone());
        let post = PostParams::default();
        let answer = with_retries(|| api.create(&post, &review)).await?;
        let authentication = Authentication::from_status(answer.status.as_ref());
        // As k8s.io/apiserver's token cache with cacheErrs=false: a refusal carrying an error
        // is not kept.
        if !matches!(authentication, Authentication::Refused { error: Some(_) }) {
            lock(&self.tokens).insert(key, authentication.clone(), Instant::now(), TOKEN_TTL);
        }
        Ok(authentication)
    }

    async fn authorize(
        &self,
        user: &UserInfo,
        verb: &str,
        path: &str,
    ) -> Result<bool, ReviewError> {
        let spec = access_review(user, verb, path);
        // The review itself is the key, as in k8s.io/apiserver's webhook authorizer.
        let key = serde_json::to_string(&spec).ok();
        let cached = key
            .as_ref()
            .and_then(|key| lock(&self.reviews).get(key, Instant::now()));
        let status = match cached {
            Some(status) => status,
            None => {
                let review = SubjectAccessReview {
                    spec,
                    ..Default::default()
                };
                let api: Api<SubjectAccessReview> = Api::all(self.kube.clone());
                let post = PostParams::default();
                let answer = with_retries(|| api.create(&post, &review)).await?;
                let status = answer.status.unwrap_or_default();
                if let Some(key) = key {
                    let ttl = if status.allowed { ALLOW_TTL } else { DENY_TTL };
                    lock(&self.reviews).insert(key, status.clone(), Instant::now(), ttl);
                }
                status
            }
        };
        allowed(&status).map_err(ReviewError::Contradiction)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sha256(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The waits between attempts (k8s.io/apiserver's webhook backoff: 500 ms, factor 1.5, five
/// attempts; without its jitter).
const RETRY_WAITS: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_millis(750),
    Duration::from_millis(1125),
    Duration::from_millis(1688),
];

/// Calls `call` until it succeeds, fails for good, or [`REVIEW_TIMEOUT`] passes.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, ReviewError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let attempts = async {
        let mut waits = RETRY_WAITS.iter();
        loop {
            match call().await {
                Err(e) if should_retry(&e) => match waits.next() {
                    Some(wait) => tokio::time::sleep(*wait).await,
                    None => return Err(e),
                },
                result => return result,
            }
        }
    };
    tokio::time::timeout(REVIEW_TIMEOUT, attempts)
        .await
        .map_err(|_| ReviewError::Timeout(REVIEW_TIMEOUT))?
        .map_err(ReviewError::Api)
}

/// k8s.io/apiserver's `DefaultShouldRetry`: internal errors, timeouts, throttling, an explicit
/// Retry-After, and broken connections are transient.
fn should_retry(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            matches!(status.code, 429 | 500 | 504)
                || matches!(
                    status.reason.as_str(),
                    "InternalError" | "Timeout" | "ServerTimeout" | "TooManyRequests"
                )
                || status
                    .details
                    .as_ref()
                    .is_some_and(|d| d.retry_after_seconds > 0)
        }
        kube::Error::HyperError(_) => true,
        _ => false,
    }
}

/// A map whose entries expire, holding at most `capacity` of them.
struct TtlCache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(expires, _)| now < *expires)
            .map(|(_, value)| value.clone())
    }

    /// Keeps `value` for `ttl` from `now`; when full, drops the expired entries first, and
    /// everything if none had expired.
    fn insert(&mut self, key: K, value: V, now: Instant, ttl: Duration) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (expires, _)| now < *expires);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (now + ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_as_the_apiserver_reads_them() {
        assert_eq!(bearer_token(None), None);
        assert_eq!(bearer_token(Some("")), None);
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("  BEARER abc  ")), Some("abc"));
        assert_eq!(bearer_token(Some("Bearer abc def")), Some("abc"));
        assert_eq!(bearer_token(Some("Bearer  abc")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(Some("Basic YTpi")), None);
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: Some(name.to_owned()),
            uid: Some("uid-1".to_owned()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            extra: None,
        }
    }

    #[test]
    fn token_reviews_become_users_in_system_authenticated() {
        let reviewed = |authenticated, user: Option<UserInfo>, error: Option<&str>| {
            Authentication::from_status(Some(&TokenReviewStatus {
                authenticated,
                user,
                error: error.map(str::to_owned),
                audiences: None,
            }))
        };
        let Authentication::User(u) = reviewed(Some(true), Some(user("sa", &["a"])), None) else {
            panic!("not authenticated");
        };
        assert_eq!(u.groups.unwrap(), ["a", "system:authenticated"]);
        let Authentication::User(u) = reviewed(
            Some(true),
            Some(user("sa", &["system:authenticated"])),
            None,
        ) else {
            panic!("not authenticated");
        };
        assert_eq!(u.groups.unwrap(), ["system:authenticated"]);
        let Authentication::User(u) =
            reviewed(Some(true), Some(user("system:anonymous", &[])), None)
        else {
            panic!("not authenticated");
        };
        assert!(u.groups.unwrap().is_empty());

        assert_eq!(
            reviewed(Some(false), None, Some("invalid bearer token")),
            Authentication::Refused {
                error: Some("invalid bearer token".to_owned())
            }
        );
        assert_eq!(
            reviewed(None, None, Some("")),
            Authentication::Refused { error: None }
        );
        assert_eq!(
            Authentication::from_status(None),
            Authentication::Refused { error: None }
        );
    }

    #[test]
    fn access_reviews_ask_for_the_verb_on_the_path() {
        let spec = access_review(&user("sa", &["g"]), "get", "/metrics");
        assert_eq!(spec.user.as_deref(), Some("sa"));
        assert_eq!(spec.uid.as_deref(), Some("uid-1"));
        assert_eq!(spec.groups.unwrap(), ["g"]);
        let attributes = spec.non_resource_attributes.unwrap();
        assert_eq!(attributes.path.as_deref(), Some("/metrics"));
        assert_eq!(attributes.verb.as_deref(), Some("get"));
        assert!(spec.resource_attributes.is_none());

        let status = |allowed, denied| SubjectAccessReviewStatus {
            allowed,
            denied,
            ..Default::default()
        };
        assert_eq!(allowed(&status(true, None)), Ok(true));
        assert_eq!(allowed(&status(false, Some(true))), Ok(false));
        assert_eq!(allowed(&status(false, None)), Ok(false));
        assert!(allowed(&status(true, Some(true))).is_err());
    }

    #[test]
    fn refusals_are_controller_runtimes() {
        assert_eq!(Verdict::Allow.refusal(), None);
        assert_eq!(
            Verdict::Unauthenticated.refusal(),
            Some((StatusCode::UNAUTHORIZED, "Unauthorized".to_owned()))
        );
        assert_eq!(
            Verdict::AuthenticationFailed.refusal(),
            Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                "Authentication failed".to_owned()
            ))
        );
        let user = "system:serviceaccount:ns:sa".to_owned();
        assert_eq!(
            Verdict::Denied { user: user.clone() }.refusal(),
            Some((
                StatusCode::FORBIDDEN,
                "Authorization denied for user system:serviceaccount:ns:sa".to_owned()
            ))
        );
        assert_eq!(
            Verdict::AuthorizationFailed { user }.refusal(),
            Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                "Authorization for user system:serviceaccount:ns:sa failed".to_owned()
            ))
        );
    }

    #[test]
    fn transient_api_errors_are_retried() {
        let api = |code: u16, reason: &str| {
            kube::Error::Api(
                kube::core::Status::failure("x", reason)
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(should_retry(&api(500, "InternalError")));
        assert!(should_retry(&api(429, "TooManyRequests")));
        assert!(should_retry(&api(504, "Timeout")));
        assert!(!should_retry(&api(403, "Forbidden")));
        assert!(!should_retry(&api(400, "BadRequest")));
    }

    #[test]
    fn cache_entries_expire_and_the_cache_stays_bounded() {
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut cache = TtlCache::new(2);
        cache.insert(1, "a", now, ttl);
        assert_eq!(cache.get(&1, now), Some("a"));
        assert_eq!(cache.get(&1, now + ttl), None);
        cache.insert(2, "b", now + Duration::from_secs(5), ttl);
        // Full: the expired entry makes room, the live one stays.
        cache.insert(3, "c", now + ttl, ttl);
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.get(&2, now), Some("b"));
        // Full of live entries: everything goes but the newest.
        cache.insert(4, "d", now, ttl);
        assert_eq!(cache.entries.len(), 1);
        assert_eq!(cache.get(&4, now), Some("d"));
    }
}
