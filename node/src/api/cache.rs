//! Cache routes (the blob store: list, pin, unpin, gc, stats), blob download
//! (streamed from the blob's file, with HTTP `Range`), peers and the node key.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use oda_protocol::BlobId;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{blocking, parse_id, ApiError, ApiPath, ApiQuery, ApiState};
use crate::store::StoreStats;

/// One blob in the cache.
#[derive(Debug, Serialize)]
pub struct BlobView {
    /// `bl:<hex>`.
    pub blob: String,
    /// Bytes.
    pub size: u64,
    /// Pinned blobs are never evicted.
    pub pinned: bool,
    /// Last read or write, Unix ms.
    pub last_access_ms: u64,
}

/// `GET /v1/cache/blobs`: every blob, by id.
pub async fn blobs(State(s): State<ApiState>) -> Result<Json<Vec<BlobView>>, ApiError> {
    let node = s.node.clone();
    blocking(move || {
        Ok(Json(
            node.store
                .list_blobs()?
                .into_iter()
                .map(|m| BlobView {
                    blob: format!("{:#}", m.id),
                    size: m.size,
                    pinned: m.pinned,
                    last_access_ms: m.last_access_ms,
                })
                .collect(),
        ))
    })
    .await
}

/// Answer of pin and unpin.
#[derive(Debug, Serialize)]
pub struct PinView {
    /// `bl:<hex>`.
    pub blob: String,
    /// Whether it is pinned now.
    pub pinned: bool,
}

async fn set_pin(s: ApiState, id: String, pinned: bool) -> Result<Json<PinView>, ApiError> {
    let blob: BlobId = parse_id("blob", &id)?;
    let node = s.node.clone();
    blocking(move || {
        if pinned {
            node.store.pin(&blob)?;
        } else {
            node.store.unpin(&blob)?;
        }
        Ok(Json(PinView {
            blob: format!("{blob:#}"),
            pinned,
        }))
    })
    .await
}

/// `POST /v1/cache/blobs/{id}/pin`: never evict this blob. 404 if not held.
pub async fn pin(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PinView>, ApiError> {
    set_pin(s, id, true).await
}

/// `POST /v1/cache/blobs/{id}/unpin`: allow evicting it again. 404 if not held.
pub async fn unpin(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PinView>, ApiError> {
    set_pin(s, id, false).await
}

/// What a gc run did.
#[derive(Debug, Serialize)]
pub struct GcView {
    /// Evicted blobs, least recently used first.
    pub evicted: Vec<String>,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Blob bytes after the run.
    pub total_bytes_after: u64,
    /// The cap, bytes.
    pub cap_bytes: u64,
    /// Still above the cap (everything left is pinned or read by a running job).
    pub over_cap: bool,
    /// Held facts demoted because an output was evicted.
    pub facts_demoted: Vec<String>,
}

/// `POST /v1/cache/gc`: evict least recently used unpinned blobs down to the cap.
pub async fn gc(State(s): State<ApiState>) -> Result<Json<GcView>, ApiError> {
    let node = s.node.clone();
    blocking(move || {
        let r = node.store.gc()?;
        Ok(Json(GcView {
            evicted: r.evicted.iter().map(|b| format!("{b:#}")).collect(),
            freed_bytes: r.freed_bytes,
            total_bytes_after: r.total_bytes_after,
            cap_bytes: r.cap_bytes,
            over_cap: r.over_cap(),
            facts_demoted: r.facts_demoted.iter().map(|f| format!("{f:#}")).collect(),
        }))
    })
    .await
}

/// `GET /v1/cache/stats`.
pub async fn stats(State(s): State<ApiState>) -> Result<Json<StoreStats>, ApiError> {
    let node = s.node.clone();
    blocking(move || Ok(Json(node.store.stats()?))).await
}

/// One connected peer.
#[derive(Debug, Serialize)]
pub struct PeerView {
    /// Peer id.
    pub peer_id: String,
    /// Its public key (hex), when the peer id embeds an ed25519 key.
    pub public_key: Option<String>,
    /// Known addresses.
    pub addrs: Vec<String>,
    /// Agent version, once identified.
    pub agent: Option<String>,
    /// Reputation with this node (0 = clean, -100 = blocked).
    pub reputation: f64,
    /// Gossipsub score, if scored.
    pub gossip_score: Option<f64>,
}

/// `GET /v1/peers`: connected peers.
pub async fn peers(State(s): State<ApiState>) -> Result<Json<Vec<PeerView>>, ApiError> {
    let peers = s
        .node
        .client
        .peers()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(
        peers
            .into_iter()
            .map(|p| PeerView {
                peer_id: p.peer.to_string(),
                public_key: crate::identity::public_key_of(&p.peer).map(|k| k.to_string()),
                addrs: p.addrs.iter().map(ToString::to_string).collect(),
                agent: p.agent,
                reputation: p.reputation,
                gossip_score: p.gossip_score,
            })
            .collect(),
    ))
}

/// The node's identity.
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// Public key (hex): the key that signs this node's facts and endorsements.
    pub public_key: String,
    /// libp2p peer id (the same key).
    pub peer_id: String,
}

/// `GET /v1/key`.
pub async fn key(State(s): State<ApiState>) -> Json<KeyView> {
    Json(KeyView {
        public_key: s.node.key.public().to_string(),
        peer_id: s.node.peer_id().to_string(),
    })
}

/// The node at a glance: what `oda node` prints.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// `oda-node`'s version.
    pub version: &'static str,
    /// The protocol's major version (in every protocol and topic name).
    pub protocol: u32,
    /// Public key (hex).
    pub public_key: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// Addresses the node listens on.
    pub listen: Vec<String>,
    /// Peers connected now.
    pub peers: usize,
    /// Seconds since the API started.
    pub uptime_s: u64,
    /// Whether the node's worker computes jobs.
    pub worker: bool,
    /// Blobs held.
    pub blobs: u64,
    /// Bytes of the blobs held.
    pub blob_bytes: u64,
    /// Facts stored.
    pub facts: u64,
}

/// `GET /v1/node`: version, identity, addresses, peers, uptime, store.
pub async fn node(State(s): State<ApiState>) -> Result<Json<NodeView>, ApiError> {
    let net = |e: crate::network::NetworkError| ApiError::internal(e.to_string());
    let listen = s.node.client.listen_addrs().await.map_err(net)?;
    let peers = s.node.client.peers().await.map_err(net)?.len();
    let node = s.node.clone();
    let stats = blocking(move || Ok(node.store.stats()?)).await?;
    Ok(Json(NodeView {
        version: env!("CARGO_PKG_VERSION"),
        protocol: oda_protocol::names::MAJOR,
        public_key: s.node.key.public().to_string(),
        peer_id: s.node.peer_id().to_string(),
        listen: listen.iter().map(ToString::to_string).collect(),
        peers,
        uptime_s: s.started.elapsed().as_secs(),
        worker: s.node.worker.is_some(),
        blobs: stats.blobs,
        blob_bytes: stats.blob_bytes,
        facts: stats.facts,
    }))
}

/// Query of `GET /v1/blobs/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    /// Fetch the blob from the mesh first if this node does not hold it
    /// (verified against its id); default true.
    pub fetch: Option<bool>,
}

/// A parsed single `Range: bytes=…` header: the inclusive byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// No usable range: the whole blob.
    Full,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// The range lies outside the blob.
    Unsatisfiable,
}

/// Parse a `Range` header for a blob of `size` bytes. Multiple ranges and
/// malformed headers are ignored (the whole blob is sent), as RFC 9110 allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last `b` bytes.
        return match b.parse::<u64>() {
            Ok(0) => RangeSpec::Unsatisfiable,
            Ok(_) if size == 0 => RangeSpec::Unsatisfiable,
            Ok(n) => RangeSpec::Part(size.saturating_sub(n), size - 1),
            Err(_) => RangeSpec::Full,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::Full;
    };
    let end = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.min(size.saturating_sub(1)),
            _ => return RangeSpec::Full,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Part(start, end)
}

/// `GET /v1/blobs/{id}` (and `HEAD`): the blob's bytes, streamed from its
/// file; `Range: bytes=a-b` gives 206 with `Content-Range`. A blob the node
/// does not hold is fetched from the mesh first (unless `?fetch=false`).
pub async fn download(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let blob: BlobId = parse_id("blob", &id)?;
    let store = s.node.store.clone();
    if !store.has_blob(&blob) {
        if !q.fetch.unwrap_or(true) {
            return Err(ApiError::not_found(format!(
                "blob {blob:#} is not held by this node"
            )));
        }
        s.node
            .client
            .fetch_blob(blob, None, &store)
            .await
            .map_err(|e| {
                ApiError::not_found(format!(
                    "blob {blob:#} is not held by this node and could not be fetched from the mesh: {e}"
                ))
            })?;
    }
    let (path, size) = match (store.blob_path(&blob), store.blob_size(&blob)) {
        (Some(p), Some(n)) => (p, n),
        _ => {
            return Err(ApiError::not_found(format!(
                "blob {blob:#} is not held by this node"
            )))
        }
    };
    // An open file stays readable even if the blob is evicted meanwhile.
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!(
                "blob {blob:#} was just evicted"
            )))
        }
        Err(e) => {
            return Err(ApiError::internal(format!(
                "cannot open {}: {e}",
                path.display()
            )))
        }
    };
    // Count the download as an access for eviction.
    let touch = store.clone();
    tokio::task::spawn_blocking(move || {
        let _ = touch.read_range(&blob, 0, 0);
    });
    let range = parse_range(headers.get(RANGE).and_then(|v| v.to_str().ok()), size);
    let etag = HeaderValue::from_str(&format!("\"{blob}\"")).ok();
    let mut response = match range {
        RangeSpec::Unsatisfiable => {
            let mut r = super::ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the range lies outside the blob's {size} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        RangeSpec::Full => {
            let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(size));
            r
        }
        RangeSpec::Part(start, end) => {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| {
                    ApiError::internal(format!("cannot seek in {}: {e}", path.display()))
                })?;
            let len = end - start + 1;
            let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len)));
            let mut r = (StatusCode::PARTIAL_CONTENT, body).into_response();
            r.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            r
        }
    };
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(etag) = etag {
        h.insert(ETAG, etag);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Part(0, 3));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Part(4, 9));
        assert_eq!(parse_range(Some("bytes=4-100"), 10), Part(4, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Part(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
    }
}
