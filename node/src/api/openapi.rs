//! The OpenAPI 3 description of the local API, served at `/openapi.json`
//! (without a token: it holds no data). It is hand-written and checked in at
//! `docs/openapi.json`; tests check that the served document is that file and
//! that its paths are exactly the router's routes ([`super::ROUTES`]).

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The document, as checked in.
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

/// `GET /openapi.json`.
pub async fn document() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT)
}
