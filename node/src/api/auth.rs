//! Bearer-token authentication for the local API, and the token file.
//!
//! The token is 32 random bytes in hex, kept in `api.token` in the data dir
//! (mode 0600, like the node key): whoever can read the data dir can use the
//! API. Requests carry it as `Authorization: Bearer <token>`; the comparison
//! takes the same time wherever the first differing byte is.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiState};
use crate::config::files;

/// A fresh random token (64 hex digits).
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Read the token from `<data_dir>/api.token`. A token file other users may
/// write is refused (kind `PermissionDenied`, the message giving the `chmod`
/// that fixes it): whoever can replace the token can lock the owner out or
/// slip a known token in.
pub fn read_token(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(files::API_TOKEN);
    crate::identity::check_permissions(&path, 0o022)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?;
    let text = std::fs::read_to_string(&path)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the token file is empty",
        ));
    }
    Ok(token.to_string())
}

/// Write a new token to `<data_dir>/api.token` (mode 0600) and return it.
pub fn write_new_token(data_dir: &Path) -> std::io::Result<String> {
    let token = new_token();
    crate::identity::write_private_file(
        &data_dir.join(files::API_TOKEN),
        format!("{token}\n").as_bytes(),
    )?;
    Ok(token)
}

/// The token in the data dir, creating it if there is none (or it is empty).
pub fn ensure_token(data_dir: &Path) -> std::io::Result<String> {
    match read_token(data_dir) {
        Ok(t) => Ok(t),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
            ) =>
        {
            write_new_token(data_dir)
        }
        Err(e) => Err(e),
    }
}

/// Whether `given` equals `expected`, in time independent of their contents.
pub fn token_matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Middleware: 401 unless the request carries the right bearer token.
pub async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let problem = match given {
        None => "missing `Authorization: Bearer <token>` header; the token is in api.token in the node's data dir",
        Some(t) if token_matches(t, &state.token) => return next.run(request).await,
        Some(_) => "wrong API token; use the one in api.token in the node's data dir",
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, problem).into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert!(token_matches(&t, &t));
        assert!(!token_matches(&t[..63], &t));
        assert!(!token_matches("", &t));
        let mut other = t.clone();
        other.replace_range(0..1, if t.starts_with('0') { "1" } else { "0" });
        assert!(!token_matches(&other, &t));
    }

    #[cfg(unix)]
    #[test]
    fn a_token_others_can_write_is_refused_not_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = ensure_token(dir.path()).unwrap();
        let path = dir.path().join(files::API_TOKEN);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = ensure_token(dir.path()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(
            err.to_string()
                .contains("other users can write it; run `chmod 644"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    }

    #[test]
    fn ensure_token_creates_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure_token(dir.path()).unwrap();
        let b = ensure_token(dir.path()).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(files::API_TOKEN))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
