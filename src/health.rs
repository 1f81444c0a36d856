//! The health endpoint (`--health-addr`, plain HTTP): `/healthz` for the liveness probe and
//! `/readyz` for the readiness probe, answered as controller-runtime's healthz handler answers
//! them, from named checks that the parts of the manager set.

use std::future::Future;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// A named check: failing (with a reason) until the part it watches says it passes.
#[derive(Clone, Debug)]
pub struct Check {
    name: &'static str,
    state: Arc<RwLock<Result<(), String>>>,
}

impl Check {
    /// A check named `name`, failing with `reason` until [`pass`](Self::pass)ed.
    pub fn failing(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            state: Arc::new(RwLock::new(Err(reason.into()))),
        }
    }

    /// The check's name (`/readyz/<name>`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The check passes from now on.
    pub fn pass(&self) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Ok(());
    }

    /// The check fails with `reason` from now on.
    pub fn fail(&self, reason: impl Into<String>) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Err(reason.into());
    }

    /// Whether the check passes, or why not.
    pub fn status(&self) -> Result<(), String> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The checks behind each endpoint.
#[derive(Clone, Debug, Default)]
pub struct Checks {
    /// Behind `/healthz`.
    pub healthz: Vec<Check>,
    /// Behind `/readyz`.
    pub readyz: Vec<Check>,
}

/// The answer to a probe of all of `checks`, as controller-runtime's handler gives it (for
/// `/readyz` too it says "healthz"): 200 `ok` when they pass, 500 listing each check (by name)
/// when one fails; `verbose` lists them in any case, and the checks named in `exclude` are
/// skipped.
fn answer(checks: &[Check], verbose: bool, exclude: &[&str]) -> (StatusCode, String) {
    let mut checks: Vec<&Check> = checks.iter().collect();
    checks.sort_by_key(|c| c.name);
    let mut body = String::new();
    let mut failed = false;
    for check in &checks {
        if exclude.contains(&check.name) {
            body.push_str(&format!("[+]{} excluded: ok\n", check.name));
        } else if check.status().is_ok() {
            body.push_str(&format!("[+]{} ok\n", check.name));
        } else {
            failed = true;
            body.push_str(&format!("[-]{} failed: reason withheld\n", check.name));
        }
    }
    let unknown: Vec<String> = exclude
        .iter()
        .filter(|name| !checks.iter().any(|c| c.name == **name))
        .map(|name| format!("{name:?}"))
        .collect();
    if !unknown.is_empty() {
        body.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            unknown.join(", ")
        ));
    }
    if failed {
        body.push_str("healthz check failed\n");
        (StatusCode::INTERNAL_SERVER_ERROR, body)
    } else if verbose {
        body.push_str("healthz check passed\n");
        (StatusCode::OK, body)
    } else {
        (StatusCode::OK, "ok".into())
    }
}

/// The answer to a probe of the one check named `name`.
fn answer_one(checks: &[Check], name: &str) -> (StatusCode, String) {
    match checks.iter().find(|c| c.name == name).map(Check::status) {
        None => (StatusCode::NOT_FOUND, "404 page not found\n".into()),
        Some(Ok(())) => (StatusCode::OK, "ok".into()),
        Some(Err(reason)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal server error: {reason}\n"),
        ),
    }
}

fn text((status, body): (StatusCode, String)) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The query of a probe: `verbose` and `exclude=<name>` (repeatable).
fn options(query: Option<&str>) -> (bool, Vec<&str>) {
    let mut verbose = false;
    let mut exclude = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("exclude", name)) => exclude.push(name),
            Some(("verbose", _)) => verbose = true,
            None if pair == "verbose" => verbose = true,
            _ => {}
        }
    }
    (verbose, exclude)
}

/// The `/healthz` and `/readyz` routes (with `/<endpoint>/<check>` for one check).
pub fn router(checks: Checks) -> Router {
    Router::new()
        .nest("/healthz", endpoint(checks.healthz))
        .nest("/readyz", endpoint(checks.readyz))
}

/// One probe endpoint over `checks`: all of them at its root, one by name below it.
fn endpoint(checks: Vec<Check>) -> Router {
    Router::new()
        .route("/", get(probe_all))
        .route("/{check}", get(probe_one))
        .with_state(Arc::new(checks))
}

async fn probe_all(State(checks): State<Arc<Vec<Check>>>, RawQuery(query): RawQuery) -> Response {
    let (verbose, exclude) = options(query.as_deref());
    text(answer(&checks, verbose, &exclude))
}

async fn probe_one(State(checks): State<Arc<Vec<Check>>>, Path(name): Path<String>) -> Response {
    text(answer_one(&checks, &name))
}

/// Serves [`router`] on `listener` (plain HTTP) until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    checks: Checks,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router(checks))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_passing_is_ok_and_verbose_lists_the_checks() {
        let webhook = Check::failing("webhook", "not serving yet");
        webhook.pass();
        let checks = [webhook];
        assert_eq!(answer(&checks, false, &[]), (StatusCode::OK, "ok".into()));
        assert_eq!(
            answer(&checks, true, &[]),
            (
                StatusCode::OK,
                "[+]webhook ok\nhealthz check passed\n".into()
            )
        );
    }

    #[test]
    fn a_failing_check_fails_the_probe_and_is_named() {
        let webhook = Check::failing("webhook", "x");
        webhook.pass();
        let controllers = Check::failing("controllers", "caches not synced");
        let checks = [webhook, controllers.clone()];
        let (status, body) = answer(&checks, false, &[]);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            "[-]controllers failed: reason withheld\n[+]webhook ok\nhealthz check failed\n"
        );
        assert_eq!(
            answer(&checks, true, &["controllers", "nope"]),
            (
                StatusCode::OK,
                "[+]controllers excluded: ok\n[+]webhook ok\nwarn: some health checks cannot be excluded: no matches for \"nope\"\nhealthz check passed\n"
                    .into()
            )
        );
        assert_eq!(
            answer_one(&checks, "controllers"),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error: caches not synced\n".into()
            )
        );
        controllers.pass();
        assert_eq!(answer_one(&checks, "controllers").0, StatusCode::OK);
        assert_eq!(answer_one(&checks, "nothing").0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn both_endpoints_answer_over_http() {
        use tower::ServiceExt;
        let webhook = Check::failing("webhook", "not serving yet");
        let controllers = Check::failing("controllers", "caches not synced");
        webhook.pass();
        let app = router(Checks {
            healthz: vec![webhook.clone()],
            readyz: vec![webhook, controllers],
        });
        let get = |uri: &str| {
            let request = axum::http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        assert_eq!(get("/healthz").await, (StatusCode::OK, "ok".into()));
        assert_eq!(get("/readyz").await.0, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(get("/readyz/webhook").await, (StatusCode::OK, "ok".into()));
        assert_eq!(
            get("/readyz/controllers").await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error: caches not synced\n".into()
            )
        );
        assert_eq!(get("/readyz?exclude=controllers").await.0, StatusCode::OK);
        assert_eq!(get("/other").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn probe_options_are_read_from_the_query() {
        assert_eq!(options(None), (false, vec![]));
        assert_eq!(options(Some("verbose")), (true, vec![]));
        assert_eq!(
            options(Some("verbose=1&exclude=webhook")),
            (true, vec!["webhook"])
        );
    }
}
