//! Tests of the local API against a running in-process node (real store and
//! libp2p swarm on loopback), through the router: authentication, error
//! shapes, the OpenAPI document, workflows, submission and typed arguments,
//! jobs, blob download with ranges, the cache and metrics.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value as Json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{router, ApiState, ROUTES};
use crate::config::Config;
use crate::identity::NodeKey;
use crate::runtime::Node;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Harness {
    node: Arc<Node>,
    router: Router,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            network: format!("api-{name}-{}", std::process::id()),
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            ..Config::default()
        };
        let node = Arc::new(
            Node::start(dir.path(), NodeKey::generate(), &cfg.validate().unwrap())
                .await
                .unwrap(),
        );
        let shutdown = CancellationToken::new();
        let router = router(ApiState {
            node: node.clone(),
            token: TOKEN.into(),
            shutdown: shutdown.clone(),
            started: Instant::now(),
        });
        Self {
            node,
            router,
            shutdown,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap();
        (status, headers, bytes.to_vec())
    }

    /// An authenticated call returning the status and the JSON body.
    async fn json(&self, method: &str, uri: &str, body: Option<Json>) -> (StatusCode, Json) {
        let text = body.map(|b| b.to_string());
        let (status, _, bytes) = self
            .call(method, uri, Some(TOKEN), text.as_deref(), &[])
            .await;
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {uri}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.node.shutdown().await.unwrap();
    }
}

fn error_of(v: &Json) -> &str {
    v.get("error")
        .and_then(Json::as_str)
        .unwrap_or_else(|| panic!("no error field in {v}"))
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/workflows")
        .join(name)
        .canonicalize()
        .unwrap()
}

#[tokio::test]
async fn openapi_is_the_checked_in_file_and_matches_the_routes() {
    let h = Harness::start("openapi").await;
    let (status, headers, served) = h.call("GET", "/openapi.json", None, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let checked_in =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json")).unwrap();
    assert!(
        served == checked_in,
        "/openapi.json differs from docs/openapi.json"
    );

    let doc: Json = serde_json::from_slice(&served).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, routes,
        "docs/openapi.json and api::ROUTES disagree"
    );

    // Every route is served by a handler, not the fallback.
    for (method, path) in ROUTES {
        let uri = path.replace("{id}", "x");
        let (status, _, body) = h.call(method, &uri, Some(TOKEN), None, &[]).await;
        let text = String::from_utf8_lossy(&body);
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && !text.contains("no such endpoint"),
            "{method} {uri} is not routed: {status} {text}"
        );
    }
    let (status, v) = h.json("GET", "/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("no such endpoint"));
    let (status, v) = h.json("DELETE", "/v1/jobs", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(error_of(&v).contains("DELETE"));
    h.stop().await;
}

#[tokio::test]
async fn requests_without_the_right_token_are_refused() {
    let h = Harness::start("auth").await;
    for token in [None, Some("wrong"), Some(&TOKEN[1..])] {
        for uri in ["/v1/jobs", "/metrics", "/v1/key", "/v1/nothing"] {
            let (status, headers, body) = h.call("GET", uri, token, None, &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with {token:?}");
            assert_eq!(headers["www-authenticate"], "Bearer");
            let v: Json = serde_json::from_slice(&body).unwrap();
            assert!(error_of(&v).contains("token"), "{v}");
        }
    }
    let (status, v) = h.json("GET", "/v1/key", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["public_key"], h.node.key.public().to_string());
    assert_eq!(v["peer_id"], h.node.peer_id().to_string());
    h.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400_with_a_json_error() {
    let h = Harness::start("malformed").await;
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        ("POST", "/v1/jobs", Some("{not json"), "invalid JSON"),
        (
            "POST",
            "/v1/jobs",
            Some("[]"),
            "expected an object, got an array",
        ),
        (
            "POST",
            "/v1/jobs",
            Some(r#"["events", {"obs_id": 7}]"#),
            "expected an object, got an array",
        ),
        (
            "POST",
            "/v1/workflows/events/endorse",
            Some(r#"["hello"]"#),
            "expected an object, got an array",
        ),
        (
            "POST",
            "/v1/why",
            Some("7"),
            "expected an object, got a number",
        ),
        ("POST", "/v1/jobs", Some(r#"{"workflow": 5}"#), "workflow"),
        (
            "POST",
            "/v1/jobs",
            Some(r#"{"workflow": "events", "argz": {}}"#),
            "argz",
        ),
        (
            "POST",
            "/v1/jobs",
            Some(r#"{"workflow": "wf:zz"}"#),
            "wf:zz",
        ),
        (
            "POST",
            "/v1/workflows",
            Some(r#"{"path": "relative/dir"}"#),
            "not absolute",
        ),
        (
            "POST",
            "/v1/workflows",
            Some(r#"{"path": "/nonexistent/oda/workflow"}"#),
            "/nonexistent/oda/workflow",
        ),
        ("GET", "/v1/jobs/not-a-job", None, "not-a-job"),
        (
            "GET",
            "/v1/jobs/00112233445566778899aabbccddeeff/wait?timeout_ms=abc",
            None,
            "timeout_ms",
        ),
        ("GET", "/v1/exprs/ex:123/facts", None, "expression"),
        ("GET", "/v1/blobs/xyz", None, "blob"),
        ("POST", "/v1/cache/blobs/nope/pin", None, "blob"),
        (
            "POST",
            "/v1/workflows/events/endorse",
            Some("{\"note\": 3}"),
            "invalid JSON",
        ),
    ];
    for (method, uri, body, needle) in cases {
        let (status, headers, bytes) = h.call(method, uri, Some(TOKEN), *body, &[]).await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {uri} {body:?}: {text}"
        );
        assert_eq!(
            headers["content-type"], "application/json",
            "{method} {uri}"
        );
        let v: Json = serde_json::from_slice(&bytes).unwrap();
        assert!(
            error_of(&v).contains(needle),
            "{method} {uri}: {v} should mention {needle:?}"
        );
    }
    // A body over the limit: 413.
    let big = format!(r#"{{"workflow": "{}"}}"#, "x".repeat(3 << 20));
    let (status, _, bytes) = h
        .call("POST", "/v1/jobs", Some(TOKEN), Some(&big), &[])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let v: Json = serde_json::from_slice(&bytes).unwrap();
    assert!(error_of(&v).contains("2 MiB"), "{v}");
    // A long bad name is named, not echoed whole.
    let long = "n".repeat(100_000);
    let (status, v) = h
        .json("POST", "/v1/jobs", Some(json!({"workflow": long})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&v).len() < 400, "{} bytes", error_of(&v).len());
    assert!(error_of(&v).contains("(100000 bytes)"), "{v}");
    // No content type: still 400, not 415.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/jobs")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(r#"{"workflow": "events"}"#))
        .unwrap();
    let resp = h.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Unknown ids: 404.
    for (method, uri) in [
        ("GET", "/v1/jobs/00112233445566778899aabbccddeeff"),
        ("POST", "/v1/jobs/00112233445566778899aabbccddeeff/cancel"),
        ("GET", "/v1/jobs/00112233445566778899aabbccddeeff/events"),
        ("GET", "/v1/workflows/nosuchworkflow"),
        ("GET", &format!("/v1/exprs/ex:{}/facts", "ab".repeat(32))),
        (
            "GET",
            &format!("/v1/blobs/bl:{}?fetch=false", "ab".repeat(32)),
        ),
        (
            "POST",
            &format!("/v1/cache/blobs/bl:{}/pin", "ab".repeat(32)),
        ),
    ] {
        let (status, v) = h.json(method, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {v}");
        error_of(&v);
    }
    let (status, v) = h
        .json(
            "POST",
            "/v1/jobs",
            Some(json!({"workflow": "nosuchworkflow"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("oda workflow add"), "{v}");
    h.stop().await;
}

#[tokio::test]
async fn workflows_submission_and_jobs() {
    let h = Harness::start("jobs").await;
    let dir = example("events");
    let (status, w) = h
        .json(
            "POST",
            "/v1/workflows",
            Some(json!({"path": dir.display().to_string()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    assert_eq!(w["name"], "events");
    assert_eq!(w["local"], true);
    assert_eq!(w["inputs"]["obs_id"]["required"], true);
    assert_eq!(w["inputs"]["obs_id"]["type"]["type"], "int");
    assert_eq!(w["inputs"]["period"]["default"], 7.3);
    let id = w["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("wf:"));

    let (_, list) = h.json("GET", "/v1/workflows", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, shown) = h.json("GET", &format!("/v1/workflows/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["name"], "events");

    let (status, e) = h
        .json(
            "POST",
            "/v1/workflows/events/endorse",
            Some(json!({"note": "reviewed"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    assert_eq!(e["endorser"], h.node.key.public().to_string());
    assert_eq!(e["subject"], id);
    assert_eq!(e["new"], true);
    let (status, _, _) = h
        .call(
            "POST",
            "/v1/workflows/events/endorse",
            Some(TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "an empty body is an endorsement without a note"
    );
    let (_, shown) = h.json("GET", "/v1/workflows/events", None).await;
    assert_eq!(shown["endorsements"].as_array().unwrap().len(), 2);

    // Arguments typed by the manifest: text and native JSON give one expression.
    let (status, a) = h
        .json(
            "POST",
            "/v1/jobs",
            Some(json!({"workflow": "events", "args": {"obs_id": "21", "rate": "2"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let (status, b) = h
        .json(
            "POST",
            "/v1/jobs",
            Some(json!({"workflow": id, "args": {"obs_id": 21, "rate": 2.0}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_eq!(a["expr"], b["expr"]);
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["workflow_name"], "events");
    assert_eq!(a["terminal"], false);

    for (args, needles) in [
        (
            json!({"obs_id": "abc"}),
            vec!["`obs_id`", "expected int", "abc"],
        ),
        (json!({"obs_id": 2.5}), vec!["`obs_id`", "expected int"]),
        (json!({"obs_id": 5000}), vec!["`obs_id`", "maximum"]),
        (json!({}), vec!["missing", "`obs_id`"]),
        (
            json!({"obs_id": 1, "colour": "red"}),
            vec!["`colour`", "obs_id"],
        ),
        (
            json!({"obs_id": 1, "rate": "fast"}),
            vec!["`rate`", "expected float"],
        ),
    ] {
        let (status, v) = h
            .json(
                "POST",
                "/v1/jobs",
                Some(json!({"workflow": "events", "args": args})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{args}: {v}");
        for n in needles {
            assert!(error_of(&v).contains(n), "{args}: {v} should mention {n}");
        }
    }

    let job = a["id"].as_str().unwrap();
    let (status, st) = h.json("GET", &format!("/v1/jobs/{job}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(st["expr"], a["expr"]);
    let (_, all) = h.json("GET", "/v1/jobs", None).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (status, logs) = h.json("GET", &format!("/v1/jobs/{job}/logs"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(logs["lines"].is_array());
    let (status, facts) = h
        .json(
            "GET",
            &format!("/v1/exprs/{}/facts", a["expr"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{facts}");
    assert_eq!(facts["expression"]["args"]["obs_id"], 21);
    assert_eq!(facts["expression"]["args"]["rate"], 2.0);
    assert_eq!(facts["facts"].as_array().unwrap().len(), 0);
    assert_eq!(facts["failures"], json!([]), "no failure records");

    // Nobody computes here: wait times out with the job still running.
    let (status, w) = h
        .json("GET", &format!("/v1/jobs/{job}/wait?timeout_ms=50"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w["terminal"], false);

    let (status, c) = h
        .json("POST", &format!("/v1/jobs/{job}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c["state"], "cancelled");
    assert_eq!(c["terminal"], true);
    let (_, w) = h
        .json(
            "GET",
            &format!("/v1/jobs/{job}/wait?timeout_ms=10000"),
            None,
        )
        .await;
    assert_eq!(w["state"], "cancelled");

    // The event stream of a finished job: its state, then the end.
    let (status, headers, body) = h
        .call(
            "GET",
            &format!("/v1/jobs/{job}/events"),
            Some(TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("event: state"), "{text}");
    assert!(text.contains("\"cancelled\""), "{text}");

    let (_, metrics, body) = h.call("GET", "/metrics", Some(TOKEN), None, &[]).await;
    assert!(metrics["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body).unwrap();
    for line in [
        "oda_jobs{state=\"cancelled\"} 1",
        "# TYPE oda_jobs gauge",
        "oda_workflows 1",
        "oda_expressions 1",
        "oda_executions_total 0",
        "oda_peers 0",
        "# TYPE oda_dht_queries_total counter",
        // Alone: nobody asked it anything, and it gossiped to nobody.
        "oda_dht_requests_served_total 0",
        "oda_blob_ranges_served_total 0",
        "oda_gossip_published_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack {line:?}:\n{text}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn blobs_download_with_ranges_and_the_cache() {
    let h = Harness::start("blobs").await;
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let blob = h.node.store.put_blob(&bytes).unwrap();
    let uri = format!("/v1/blobs/{blob:#}");

    let (status, headers, body) = h.call("GET", &uri, Some(TOKEN), None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], "100000");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(body, bytes);
    let (status, headers, body) = h
        .call("GET", &uri, Some(TOKEN), None, &[("range", "bytes=10-19")])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers["content-range"], "bytes 10-19/100000");
    assert_eq!(body, &bytes[10..20]);
    let (status, _, body) = h
        .call("GET", &uri, Some(TOKEN), None, &[("range", "bytes=-5")])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &bytes[99_995..]);
    let (status, headers, _) = h
        .call(
            "GET",
            &uri,
            Some(TOKEN),
            None,
            &[("range", "bytes=100000-")],
        )
        .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], "bytes */100000");
    let (status, headers, body) = h.call("HEAD", &uri, Some(TOKEN), None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], "100000");
    assert!(body.is_empty());

    let (status, list) = h.json("GET", "/v1/cache/blobs", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["blob"], format!("{blob:#}"));
    assert_eq!(list[0]["size"], 100_000);
    let (status, p) = h
        .json("POST", &format!("/v1/cache/blobs/{blob}/pin"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["pinned"], true);
    let (_, stats) = h.json("GET", "/v1/cache/stats", None).await;
    assert_eq!(stats["pinned_blobs"], 1);
    assert_eq!(stats["blob_bytes"], 100_000);
    let (status, p) = h
        .json("POST", &format!("/v1/cache/blobs/{blob:#}/unpin"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["pinned"], false);
    let (status, gc) = h.json("POST", "/v1/cache/gc", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gc["over_cap"], false);
    let (status, peers) = h.json("GET", "/v1/peers", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(peers.as_array().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn serve_answers_on_a_socket_and_stops_at_shutdown() {
    let h = Harness::start("serve").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(super::serve(
        h.node.clone(),
        listener,
        TOKEN.into(),
        stop.clone(),
    ));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET /v1/key HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&h.node.peer_id().to_string()));
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("serve stops")
        .unwrap()
        .unwrap();
    h.stop().await;
}

/// A client that never finishes its request's headers is disconnected
/// after the header-read timeout; beyond the connection cap new
/// connections wait until one closes (they do not take descriptors).
#[tokio::test]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start("limits").await;
    let app = router(ApiState {
        node: h.node.clone(),
        token: TOKEN.into(),
        shutdown: CancellationToken::new(),
        started: Instant::now(),
    });
    let serve = |limits| {
        let app = app.clone();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = CancellationToken::new();
            let task = tokio::spawn(super::server::run(listener, app, stop.clone(), limits));
            (addr, stop, task)
        }
    };
    let request = format!("GET /v1/key HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n");

    // Half a request: cut off after the timeout (read returns end of file).
    let (addr, stop, task) = serve(super::server::Limits {
        max_connections: 8,
        header_read_timeout: std::time::Duration::from_millis(300),
    })
    .await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /v1/key HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow.read_to_end(&mut rest),
    )
    .await
    .expect("the server closes a connection whose headers never end");
    assert!(
        read.is_err() || String::from_utf8_lossy(&rest).contains("408") || rest.is_empty(),
        "{rest:?}"
    );
    stop.cancel();
    task.await.unwrap().unwrap();

    // Two connections at most: a third is answered once one closes.
    let (addr, stop, task) = serve(super::server::Limits {
        max_connections: 2,
        header_read_timeout: std::time::Duration::from_secs(30),
    })
    .await;
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let early = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        third.read_to_string(&mut answer),
    )
    .await;
    assert!(early.is_err(), "served beyond the cap: {answer}");
    drop(first);
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        third.read_to_string(&mut answer),
    )
    .await
    .expect("answered once a connection closed")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(second);
    stop.cancel();
    task.await.unwrap().unwrap();
    h.stop().await;
}

/// A FIFO listed in a workflow's `files` is refused at once with a clear
/// error, and the node keeps answering: opening it would block forever (and,
/// on the async threads, freeze the API and the p2p port).
#[tokio::test]
async fn a_fifo_in_a_workflow_is_refused_without_blocking_the_node() {
    let h = Harness::start("fifo").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("oda-workflow.toml"),
        "name = \"piped\"\nversion = \"1.0.0\"\nfiles = [\"pipe\"]\n\n\
         [outputs.out]\npath = \"out\"\n\n\
         [executor]\nkind = \"command\"\nargv = [\"true\"]\n",
    )
    .unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("pipe"))
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo failed");
    let body = json!({ "path": dir.path().to_str().unwrap() });
    let adds = futures::future::join(
        h.json("POST", "/v1/workflows", Some(body.clone())),
        h.json("POST", "/v1/workflows", Some(body)),
    );
    let ((s1, v1), (s2, v2)) = tokio::time::timeout(std::time::Duration::from_secs(20), adds)
        .await
        .expect("adding a workflow with a FIFO must not block");
    for (status, v) in [(s1, v1), (s2, v2)] {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            error_of(&v).contains("\"pipe\" is not a regular file"),
            "{v}"
        );
    }
    let (status, _) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        h.json("GET", "/v1/workflows", None),
    )
    .await
    .expect("the API still answers");
    assert_eq!(status, StatusCode::OK);
    h.stop().await;
}

#[tokio::test]
async fn every_fact_says_whether_it_is_trusted_here_and_why() {
    use crate::test_facts::fact;
    let h = Harness::start("trust-labels").await;
    let stranger = oda_protocol::SecretKey::from_seed([3; 32]);
    let theirs = fact(&stranger, 1, &[]);
    let mine = fact(&h.node.key.secret, 1, &[]);
    let on_theirs = fact(&h.node.key.secret, 2, &[&theirs]);
    for f in [&theirs, &mine, &on_theirs] {
        h.node.store.put_fact(f).unwrap();
    }
    let facts_of = |expr: u8| format!("/v1/exprs/ex:{}/facts", hex::encode([expr; 32]));
    let (status, v) = h.json("GET", &facts_of(1), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let by_id = |v: &Json, id: oda_protocol::FactId| -> Json {
        v["facts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["fact"] == format!("{id:#}"))
            .cloned()
            .unwrap_or_else(|| panic!("{id} listed: {v}"))
    };
    let own = by_id(&v, mine.id());
    assert_eq!(own["trusted"], true);
    assert_eq!(own["trust"], "signed by this node's own key");
    let strange = by_id(&v, theirs.id());
    assert_eq!(strange["local"], true);
    assert_eq!(strange["trusted"], false);
    assert_eq!(
        strange["trust"],
        format!(
            "signed by {}, whom this node does not trust",
            stranger.public()
        )
    );
    // Signed by this node, but computed on the stranger's output.
    let (_, v) = h.json("GET", &facts_of(2), None).await;
    let derived = by_id(&v, on_theirs.id());
    assert_eq!(derived["trusted"], false, "{derived}");
    assert!(
        derived["trust"]
            .as_str()
            .unwrap()
            .contains("whom this node does not trust"),
        "{derived}"
    );
    h.stop().await;
}

#[tokio::test]
async fn group_rosters_are_signed_imported_once_and_shown_in_the_trust_policy() {
    let h = Harness::start("rosters").await;
    let member = oda_protocol::SecretKey::from_seed([5; 32])
        .public()
        .to_string();
    let (status, signed) = h
        .json(
            "POST",
            "/v1/groups",
            Some(json!({"name": "team", "version": 2, "members": [member]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{signed}");
    let own = h.node.key.public().to_string();
    assert_eq!(signed["group"], format!("{own}/team"));
    assert_eq!(signed["members"], json!([member]));
    let roster = signed["roster"].as_str().unwrap().to_string();

    let import = |roster: String| {
        let h = &h;
        async move {
            h.json(
                "POST",
                "/v1/trust/rosters",
                Some(json!({ "roster": roster })),
            )
            .await
        }
    };
    let (status, first) = import(roster.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["imported"], true);
    assert_eq!(
        first["trusted_group"], false,
        "[trust] groups does not name it"
    );
    let (_, again) = import(roster.clone()).await;
    assert_eq!(again["imported"], false, "the same version again");

    let (status, policy) = h.json("GET", "/v1/trust", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(policy["own_key"], own);
    assert_eq!(policy["groups"], json!([]));
    assert_eq!(policy["other_rosters"][0]["version"], 2);

    // Not hex, not a roster, a roster whose bytes were changed.
    for (bad, needle) in [
        ("zz".to_string(), "not hex"),
        ("00".to_string(), "not a signed group roster"),
        (
            roster.replacen(&hex::encode("team"), &hex::encode("tean"), 1),
            "does not verify",
        ),
    ] {
        let (status, v) = import(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(error_of(&v).contains(needle), "{v}");
    }
    let (status, v) = h
        .json(
            "POST",
            "/v1/groups",
            Some(json!({"name": "team", "version": 3, "members": ["nope"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("members[0]"), "{v}");
    h.stop().await;
}

#[tokio::test]
async fn keys_are_added_shown_and_removed_at_run_time() {
    use crate::test_facts::fact;
    let h = Harness::start("trust-keys").await;
    let friend = oda_protocol::SecretKey::from_seed([8; 32]);
    let hex_key = friend.public().to_string();
    h.node.store.put_fact(&fact(&friend, 1, &[])).unwrap();
    let key_uri = format!("/v1/trust/keys/{hex_key}");
    let show = || h.json("GET", &key_uri, None);

    let (status, before) = show().await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(before["trusted"], false);
    assert_eq!(before["facts"], 1);
    assert_eq!(before["facts_held"], 0);

    let (status, added) = h
        .json("POST", "/v1/trust/keys", Some(json!({ "key": hex_key })))
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(added["changed"], true);
    let (_, after) = show().await;
    assert_eq!(after["trusted"], true);
    assert!(
        after["trust"].as_str().unwrap().contains("oda trust add"),
        "{after}"
    );
    let (_, policy) = h.json("GET", "/v1/trust", None).await;
    assert_eq!(policy["added_keys"], json!([hex_key]));
    let file = std::fs::read_to_string(h._dir.path().join(crate::trust_files::KEYS_FILE)).unwrap();
    assert_eq!(file.trim(), hex_key, "kept for the next start");

    let (status, removed) = h
        .json("DELETE", &format!("/v1/trust/keys/{hex_key}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["changed"], true);
    let (_, gone) = show().await;
    assert_eq!(gone["trusted"], false);

    let own = h.node.key.public().to_string();
    let (status, v) = h
        .json("DELETE", &format!("/v1/trust/keys/{own}"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("own key"), "{v}");
    let (status, v) = h.json("GET", "/v1/trust/keys/xyz", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("not a public key"), "{v}");
    h.stop().await;
}

#[tokio::test]
async fn provenance_is_the_dag_of_facts_as_json_turtle_and_json_ld() {
    use crate::test_facts::fact;
    let h = Harness::start("prov").await;
    let stranger = oda_protocol::SecretKey::from_seed([4; 32]);
    let events = fact(&h.node.key.secret, 1, &[]);
    let unheld = fact(&stranger, 9, &[]);
    let top = fact(&h.node.key.secret, 2, &[&events, &unheld]);
    for f in [&events, &top] {
        h.node.store.put_fact(f).unwrap();
    }
    let prov_of =
        |expr: u8, query: &str| format!("/v1/exprs/ex:{}/prov{query}", hex::encode([expr; 32]));
    let (status, v) = h.json("GET", &prov_of(2, ""), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["roots"], json!([format!("{:#}", top.id())]));
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{v}");
    assert_eq!(steps[0]["fact"], format!("{:#}", top.id()));
    assert_eq!(steps[1]["fact"], format!("{:#}", events.id()));
    assert_eq!(steps[0]["inputs"].as_array().unwrap().len(), 2);
    assert_eq!(steps[0]["worker_key"], h.node.key.public().to_string());
    // Built on a stranger's fact this node does not hold: not trusted,
    // and the missing input is named.
    assert_eq!(steps[0]["trusted"], false, "{v}");
    assert_eq!(steps[1]["trusted"], true, "{v}");
    assert_eq!(v["missing"][0]["fact"], format!("{:#}", unheld.id()));
    assert_eq!(v["missing"][0]["signer"], stranger.public().to_string());

    let (status, headers, body) = h
        .call("GET", &prov_of(2, "?format=turtle"), Some(TOKEN), None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/turtle; charset=utf-8");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("prov:wasAssociatedWith"), "{text}");
    assert!(text.contains(&format!("fact:{}", top.id())), "{text}");
    let (status, headers, body) = h
        .call("GET", &prov_of(2, "?format=jsonld"), Some(TOKEN), None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/ld+json");
    let doc: Json = serde_json::from_slice(&body).unwrap();
    // Expanded JSON-LD: an array of node objects with full IRIs.
    let nodes = doc.as_array().expect("an array of node objects");
    let run = format!("urn:oda-mesh:fact:{}", top.id());
    assert!(nodes.iter().any(|n| n["@id"] == run.as_str()), "{doc}");

    // One root picked by id; bad input named.
    let (status, v) = h
        .json(
            "GET",
            &prov_of(1, &format!("?fact={:#}", events.id())),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["steps"].as_array().unwrap().len(), 1);
    let (status, v) = h
        .json("GET", &prov_of(1, &format!("?fact={:#}", top.id())), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = h.json("GET", &prov_of(2, "?format=xml"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("unknown format `xml`"), "{v}");
    let (status, v) = h.json("GET", &prov_of(2, "?fact=fa:zz"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("fact id"), "{v}");
    let (status, v) = h.json("GET", &prov_of(7, ""), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("?mesh=true"), "{v}");
    h.stop().await;
}

#[tokio::test]
async fn why_names_the_nearest_cached_expressions_and_their_differing_arguments() {
    use crate::test_facts::fact_about;
    use oda_protocol::{Expression, Value};
    let h = Harness::start("why").await;
    // A second version of `events` (same name), added first so that the
    // name resolves to the example's version.
    let v2 = tempfile::tempdir().unwrap();
    for file in ["events.py", "oda-workflow.toml"] {
        let text = std::fs::read_to_string(example("events").join(file)).unwrap();
        let text = text.replace("version = \"1.0.0\"", "version = \"2.0.0\"");
        std::fs::write(v2.path().join(file), text).unwrap();
    }
    for dir in [v2.path().to_path_buf(), example("events")] {
        let (status, w) = h
            .json(
                "POST",
                "/v1/workflows",
                Some(json!({"path": dir.display().to_string()})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{w}");
    }
    let (id, wf) = crate::registry::find(&h.node.store, "events")
        .unwrap()
        .unwrap();
    assert_eq!(wf.manifest.version, "1.0.0");
    let expr = |obs: i64, period: f64| {
        let args = [
            ("obs_id".to_string(), Value::Int(obs)),
            ("period".to_string(), Value::Float(period)),
        ];
        Expression::new(id, &wf.manifest, args.into()).unwrap()
    };
    // Cached: obs 1 at 7.3 and obs 2 at 7.3; stored but not cached: obs 1 at 9.
    let (near, farther, uncached) = (expr(1, 7.3), expr(2, 7.3), expr(1, 9.0));
    for e in [&near, &farther, &uncached] {
        h.node.store.put_expr(e).unwrap();
    }
    for e in [&near, &farther] {
        let f = fact_about(&h.node.key.secret, e.id(), id);
        h.node.store.put_fact(&f).unwrap();
    }

    let asked = json!({"workflow": "events", "args": {"obs_id": "1", "period": "7.30001"}});
    let (status, v) = h.json("POST", "/v1/why", Some(asked)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["cached"], false);
    assert_eq!(v["workflow_version"], "1.0.0");
    let nearest = v["nearest"].as_array().unwrap();
    assert_eq!(nearest.len(), 2, "only cached expressions: {v}");
    assert_eq!(nearest[0]["expr"], format!("{:#}", near.id()));
    assert_eq!(
        nearest[0]["differences"],
        json!([{"argument": "period", "cached": 7.3, "asked": 7.30001}])
    );
    assert_eq!(nearest[1]["expr"], format!("{:#}", farther.id()));
    assert_eq!(nearest[1]["differences"].as_array().unwrap().len(), 2);
    // The same arguments under version 2.0.0: another expression, not cached.
    let other = &v["other_versions"][0];
    assert_eq!(other["version"], "2.0.0", "{v}");
    assert_eq!(other["cached"], false);
    assert!(other["expr"].as_str().unwrap().starts_with("ex:"));

    // By id: a cached expression is not its own neighbour.
    let (status, v) = h
        .json(
            "POST",
            "/v1/why",
            Some(json!({"expr": format!("{:#}", near.id())})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["cached"], true);
    assert_eq!(v["nearest"][0]["expr"], format!("{:#}", farther.id()));

    for (body, status, needle) in [
        (json!({}), StatusCode::BAD_REQUEST, "either `workflow`"),
        (
            json!({"workflow": "events", "expr": format!("{:#}", near.id())}),
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            json!({"expr": format!("ex:{}", "ab".repeat(32))}),
            StatusCode::NOT_FOUND,
            "unknown to this node",
        ),
        (
            json!({"workflow": "events", "args": {"obs_id": "x"}}),
            StatusCode::BAD_REQUEST,
            "obs_id",
        ),
        (
            json!({"workflow": "nope"}),
            StatusCode::NOT_FOUND,
            "no workflow",
        ),
    ] {
        let (got, v) = h.json("POST", "/v1/why", Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {v}");
        assert!(error_of(&v).contains(needle), "{body}: {v}");
    }
    h.stop().await;
}
