//! The HTTP client of the node's local API: finds the node the way the node
//! itself finds its data dir (`--data-dir`, `$ODA_DATA_DIR`, the platform
//! default), reads `api.addr` and `api.token` there, and maps failures to the
//! command line's exit codes ([`CliError`]).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oda_node::config::files;
use serde_json::Value as Json;

/// Exit code: the job failed (analysis error, exhausted attempts, cancelled),
/// or the node could not do what was asked.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad arguments, unknown ids, wrong token.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no node to talk to.
pub const EXIT_UNREACHABLE: u8 = 3;

/// How to start a node, shown when none is reachable.
pub const START_HINT: &str =
    "start a node first: `oda-node init && oda-node run` (pass the same --data-dir to oda-node and oda if you use one)";

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code.
    pub code: u8,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl CliError {
    /// Exit 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_FAILED,
            message: message.into(),
            hint: None,
        }
    }

    /// Exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
            hint: None,
        }
    }

    /// Exit 3, with the hint how to start a node.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_UNREACHABLE,
            message: message.into(),
            hint: Some(START_HINT.into()),
        }
    }

    /// Add a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Result of a command.
pub type CliResult<T> = Result<T, CliError>;

/// Where the API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://127.0.0.1:5801`.
    pub base: String,
    /// Bearer token.
    pub token: String,
    /// The data dir it came from (for messages).
    pub data_dir: PathBuf,
}

/// Find the node: `api_override` (an address or URL) or `<data_dir>/api.addr`,
/// and the token from `$ODA_API_TOKEN` or `<data_dir>/api.token`.
pub fn discover(data_dir: Option<PathBuf>, api_override: Option<String>) -> CliResult<Endpoint> {
    let data_dir = match data_dir {
        Some(d) => d,
        None => oda_node::config::default_data_dir().map_err(|e| CliError::usage(e.to_string()))?,
    };
    let base = match api_override {
        Some(a) => a,
        None => {
            let path = data_dir.join(files::API_ADDR);
            match std::fs::read_to_string(&path) {
                Ok(text) => text.trim().to_string(),
                Err(_) => {
                    return Err(CliError::unreachable(format!(
                        "no node is running with data dir {} (it has no {})",
                        data_dir.display(),
                        files::API_ADDR
                    )))
                }
            }
        }
    };
    let base = if base.starts_with("http://") || base.starts_with("https://") {
        base.trim_end_matches('/').to_string()
    } else {
        format!("http://{base}")
    };
    let token = match std::env::var("ODA_API_TOKEN") {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => read_token(&data_dir)?,
    };
    Ok(Endpoint {
        base,
        token,
        data_dir,
    })
}

fn read_token(data_dir: &Path) -> CliResult<String> {
    let path = data_dir.join(files::API_TOKEN);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => Err(
            CliError::usage(format!("the API token file {} is empty", path.display()))
                .with_hint("restart the node: `oda-node run` writes a new token"),
        ),
        Err(e) => Err(CliError::unreachable(format!(
            "cannot read the API token {}: {e}",
            path.display()
        ))),
    }
}

/// An HTTP response: status and body.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The response.
    pub response: ureq::http::Response<ureq::Body>,
}

/// The API client.
#[derive(Clone)]
pub struct Api {
    endpoint: Endpoint,
    agent: ureq::Agent,
}

/// Largest JSON answer read, bytes.
const MAX_JSON: u64 = 256 * 1024 * 1024;

/// A reply's whole body, at most [`MAX_JSON`] bytes.
fn read_body(reply: Reply) -> CliResult<Vec<u8>> {
    reply
        .response
        .into_body()
        .with_config()
        .limit(MAX_JSON)
        .read_to_vec()
        .map_err(|e| CliError::failed(format!("cannot read the node's answer: {e}")))
}

impl Api {
    /// A client for `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Self { endpoint, agent }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.base)
    }

    fn transport(&self, e: ureq::Error) -> CliError {
        match e {
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(_) => CliError::unreachable(format!(
                "cannot reach the node's API at {} ({e}); is the node with data dir {} running?",
                self.endpoint.base,
                self.endpoint.data_dir.display()
            )),
            other => CliError::failed(format!("request to {} failed: {other}", self.endpoint.base)),
        }
    }

    /// Send a request; `body` is JSON for POST. Any status is returned.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Json>,
        headers: &[(&str, String)],
    ) -> CliResult<Reply> {
        let auth = format!("Bearer {}", self.endpoint.token);
        let url = self.url(path);
        let result = match method {
            "POST" => {
                let mut req = self.agent.post(&url).header("Authorization", &auth);
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                match body {
                    Some(b) => req.content_type("application/json").send(b.to_string()),
                    None => req.send_empty(),
                }
            }
            "DELETE" => {
                let mut req = self.agent.delete(&url).header("Authorization", &auth);
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                req.call()
            }
            _ => {
                let mut req = self.agent.get(&url).header("Authorization", &auth);
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                req.call()
            }
        };
        let response = result.map_err(|e| self.transport(e))?;
        Ok(Reply {
            status: response.status().as_u16(),
            response,
        })
    }

    /// Send a request and read a JSON answer; non-2xx statuses become errors
    /// (400/404/401 exit 2, others exit 1) carrying the node's message.
    pub fn json(&self, method: &str, path: &str, body: Option<&Json>) -> CliResult<Json> {
        let reply = self.send(method, path, body, &[])?;
        let status = reply.status;
        let bytes = read_body(reply)?;
        let value: Option<Json> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            return value.ok_or_else(|| CliError::failed("the node's answer is not JSON"));
        }
        Err(status_error(status, value.as_ref(), &bytes, &self.endpoint))
    }

    /// GET a text answer (Turtle, JSON-LD); non-2xx statuses become errors
    /// as in [`Api::json`].
    pub fn get_text(&self, path: &str) -> CliResult<String> {
        let reply = self.send("GET", path, None, &[])?;
        let status = reply.status;
        if !(200..300).contains(&status) {
            return Err(self.failure(status, reply));
        }
        String::from_utf8(read_body(reply)?)
            .map_err(|_| CliError::failed("the node's answer is not UTF-8 text"))
    }

    /// The error for a non-2xx reply, with the node's message from its body.
    fn failure(&self, status: u16, reply: Reply) -> CliError {
        let bytes = read_body(reply).unwrap_or_default();
        let value: Option<Json> = serde_json::from_slice(&bytes).ok();
        status_error(status, value.as_ref(), &bytes, &self.endpoint)
    }

    /// GET JSON.
    pub fn get(&self, path: &str) -> CliResult<Json> {
        self.json("GET", path, None)
    }

    /// POST JSON.
    pub fn post(&self, path: &str, body: Option<&Json>) -> CliResult<Json> {
        self.json("POST", path, body)
    }

    /// DELETE, answered with JSON.
    pub fn delete(&self, path: &str) -> CliResult<Json> {
        self.json("DELETE", path, None)
    }

    /// Follow a server-sent event stream, calling `on_event(name, data)` for
    /// each event until it returns false or the stream ends.
    pub fn events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> CliResult<()> {
        let reply = self.send("GET", path, None, &[])?;
        if !(200..300).contains(&reply.status) {
            return Err(self.failure(reply.status, reply));
        }
        let reader = BufReader::new(reply.response.into_body().into_reader());
        let mut name = String::new();
        let mut data = String::new();
        for line in reader.lines() {
            let line =
                line.map_err(|e| CliError::failed(format!("the event stream broke: {e}")))?;
            if line.is_empty() {
                if !data.is_empty() || !name.is_empty() {
                    let event = if name.is_empty() {
                        "message"
                    } else {
                        name.as_str()
                    };
                    if !on_event(event, &data) {
                        return Ok(());
                    }
                }
                name.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
            // Comments (`:`) and other fields are ignored.
        }
        Ok(())
    }

    /// GET a blob (or a part of it), returning its status, length and a reader.
    pub fn blob(&self, id: &str) -> CliResult<(Option<u64>, Box<dyn Read + Send>)> {
        let (_, len, reader) = self.blob_from(id, 0)?;
        Ok((len, reader))
    }

    /// A blob's bytes from byte `offset` on (an HTTP range): whether the
    /// node answered with that range (else the whole blob follows), the
    /// length of what follows, and a reader. An offset at or past the end
    /// gives the whole blob.
    pub fn blob_from(
        &self,
        id: &str,
        offset: u64,
    ) -> CliResult<(bool, Option<u64>, Box<dyn Read + Send>)> {
        let path = format!("/v1/blobs/{id}");
        let range = [("Range", format!("bytes={offset}-"))];
        let headers: &[(&str, String)] = if offset > 0 { &range } else { &[] };
        let mut reply = self.send("GET", &path, None, headers)?;
        if reply.status == 416 {
            reply = self.send("GET", &path, None, &[])?;
        }
        let status = reply.status;
        if !(200..300).contains(&status) {
            return Err(self.failure(status, reply));
        }
        let len = reply
            .response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Ok((
            status == 206,
            len,
            Box::new(reply.response.into_body().into_reader()),
        ))
    }
}

/// The error for a non-2xx answer.
fn status_error(status: u16, body: Option<&Json>, raw: &[u8], endpoint: &Endpoint) -> CliError {
    let message = body
        .and_then(|v| v.get("error"))
        .and_then(Json::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(raw).trim().to_string());
    match status {
        401 => CliError::usage(format!("the node refused the API token: {message}")).with_hint(
            format!(
                "the token is read from {}; use the --data-dir of the running node",
                endpoint.data_dir.join(files::API_TOKEN).display()
            ),
        ),
        400 | 404 | 405 | 416 => CliError::usage(message),
        _ => CliError::failed(format!("the node answered {status}: {message}")),
    }
}
