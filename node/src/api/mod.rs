//! The local API: HTTP + JSON on a loopback address, for the `oda` command line
//! and scripts on the node's machine.
//!
//! Every route except `/openapi.json` needs `Authorization: Bearer <token>`,
//! the token `oda-node init` (or the first `oda-node run`) writes to `api.token`
//! in the data dir ([`auth`]). Errors are JSON, `{"error": "..."}`: 400 for
//! malformed requests and arguments (naming the problem; request bodies are
//! JSON objects, never arrays), 401 for a missing or wrong token, 404 for
//! unknown ids and routes, 413 for a body over 2 MiB; bad input never gives
//! a 500, and a bad name or id is quoted cut to 80 characters.
//!
//! Routes (documented in `docs/openapi.json`, served at `/openapi.json`):
//!
//! - jobs ([`jobs`]): submit, list, status, wait (long poll), logs, cancel,
//!   server-sent events; facts of an expression; blob download with `Range`;
//! - workflows ([`workflows`]): add from a folder, list, show, endorse;
//! - provenance ([`prov`]): the DAG behind a result, as JSON or W3C PROV-O;
//! - misses ([`why`]): the cached expressions nearest to one that missed;
//! - cache ([`cache`]): blobs, pin, unpin, gc, stats; peers; the node key;
//! - trust ([`trust`]): the trust policy, importing and signing group rosters;
//! - `/metrics` in the Prometheus text format ([`metrics`]).
//!
//! Arguments of a submitted expression are typed by the workflow's manifest in
//! [`args`], the one place where text like `"21"` becomes an `int`.

pub mod args;
pub mod auth;
pub mod cache;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod prov;
pub mod server;
pub mod trust;
pub mod why;
pub mod workflows;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::runtime::Node;
use crate::store::StoreError;

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    /// The running node.
    pub node: Arc<Node>,
    /// The bearer token, compared in constant time.
    pub token: Arc<str>,
    /// Cancelled when the node shuts down: long polls and event streams end.
    pub shutdown: CancellationToken,
    /// When the API started (for `/metrics`).
    pub started: Instant,
}

/// Serve the API on `listener` until `shutdown` is cancelled. Open event
/// streams and long polls end at shutdown, so this returns promptly.
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    token: String,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = ApiState {
        node,
        token: token.into(),
        shutdown: shutdown.clone(),
        started: Instant::now(),
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "local API listening");
    }
    server::run(listener, router(state), shutdown, server::Limits::default()).await
}

/// The documented routes, `(method, path)` in OpenAPI path syntax. A test
/// checks that this list, the router and `docs/openapi.json` agree.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/wait"),
    ("GET", "/v1/jobs/{id}/logs"),
    ("GET", "/v1/jobs/{id}/events"),
    ("POST", "/v1/jobs/{id}/cancel"),
    ("GET", "/v1/exprs/{id}/facts"),
    ("GET", "/v1/exprs/{id}/prov"),
    ("POST", "/v1/why"),
    ("GET", "/v1/blobs/{id}"),
    ("POST", "/v1/workflows"),
    ("GET", "/v1/workflows"),
    ("GET", "/v1/workflows/{id}"),
    ("POST", "/v1/workflows/{id}/endorse"),
    ("GET", "/v1/peers"),
    ("GET", "/v1/cache/blobs"),
    ("POST", "/v1/cache/blobs/{id}/pin"),
    ("POST", "/v1/cache/blobs/{id}/unpin"),
    ("POST", "/v1/cache/gc"),
    ("GET", "/v1/cache/stats"),
    ("GET", "/v1/key"),
    ("GET", "/v1/node"),
    ("GET", "/v1/trust"),
    ("POST", "/v1/trust/keys"),
    ("GET", "/v1/trust/keys/{key}"),
    ("DELETE", "/v1/trust/keys/{key}"),
    ("POST", "/v1/trust/rosters"),
    ("POST", "/v1/groups"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The whole router: authenticated routes, plus the public OpenAPI document.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::status))
        .route("/v1/jobs/{id}/wait", get(jobs::wait))
        .route("/v1/jobs/{id}/logs", get(jobs::logs))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/exprs/{id}/facts", get(jobs::facts))
        .route("/v1/exprs/{id}/prov", get(prov::prov))
        .route("/v1/why", post(why::why))
        .route("/v1/blobs/{id}", get(cache::download))
        .route("/v1/workflows", post(workflows::add).get(workflows::list))
        .route("/v1/workflows/{id}", get(workflows::show))
        .route("/v1/workflows/{id}/endorse", post(workflows::endorse))
        .route("/v1/peers", get(cache::peers))
        .route("/v1/cache/blobs", get(cache::blobs))
        .route("/v1/cache/blobs/{id}/pin", post(cache::pin))
        .route("/v1/cache/blobs/{id}/unpin", post(cache::unpin))
        .route("/v1/cache/gc", post(cache::gc))
        .route("/v1/cache/stats", get(cache::stats))
        .route("/v1/key", get(cache::key))
        .route("/v1/node", get(cache::node))
        .route("/v1/trust", get(trust::show))
        .route("/v1/trust/keys", post(trust::add_key))
        .route(
            "/v1/trust/keys/{key}",
            get(trust::show_key).delete(trust::remove_key),
        )
        .route("/v1/trust/rosters", post(trust::import))
        .route("/v1/groups", post(trust::sign))
        .route("/metrics", get(metrics::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .merge(protected)
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {method} {}; see /openapi.json",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}; see /openapi.json", uri.path()),
    )
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for humans.
    pub message: String,
}

impl ApiError {
    /// An error with this status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or its arguments do not fit.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such job, expression, blob or workflow.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: the node itself failed (store, network); never for bad input.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "API request failed");
        }
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BlobNotFound(_) => ApiError::not_found(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<crate::scheduler::RequesterError> for ApiError {
    fn from(e: crate::scheduler::RequesterError) -> Self {
        use crate::scheduler::RequesterError;
        match e {
            RequesterError::Store(e) => e.into(),
            RequesterError::Stopped => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            RequesterError::Quorum(_) => ApiError::bad_request(e.to_string()),
            RequesterError::Task(_) => ApiError::internal(e.to_string()),
        }
    }
}

/// Parse an id from a path segment, or answer 400 naming what was expected.
pub fn parse_id<T>(what: &str, text: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse::<T>().map_err(|e| {
        ApiError::bad_request(format!("{} is not a valid {what} id: {e}", quoted(text)))
    })
}

/// Run blocking store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a blocking task failed: {e}")))?
}

/// `axum::Json` for request bodies, which are JSON objects: rejections
/// (bad syntax, wrong field types, missing content type, an array or other
/// non-object) become 400 `{"error": ...}`, a body over the limit 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<serde_json::Value>::from_request(req, state).await {
            Ok(Json(v)) => object_body(v).map(Self),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(too_large())
            }
            Err(rejection) => Err(ApiError::bad_request(format!(
                "invalid JSON body: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A request body: a JSON object of the request's type (serde would take
/// an array as the fields in order, which no client means).
fn object_body<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "invalid JSON body: expected an object, got {}",
            json_kind(&v)
        )));
    }
    serde_path_to_error::deserialize(v)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the request body is over the 2 MiB limit",
    )
}

/// `text` quoted for an error message, cut to 80 characters: a bad name or
/// id is named, not echoed whole.
pub fn quoted(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        return format!("{text:?}");
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut:?}… ({} bytes)", text.len())
}

/// `axum::extract::Query` with 400 `{"error": ...}` rejections.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "invalid query string: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// `axum::extract::Path` with 400 `{"error": ...}` rejections.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "invalid path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A JSON body that may be absent (an empty body counts as absent).
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::bad_request(format!("cannot read the body: {}", r.body_text()))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        object_body(v).map(|v| Self(Some(v)))
    }
}

#[cfg(test)]
mod tests;
