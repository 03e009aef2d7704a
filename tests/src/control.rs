//! Control of real `oda-node` processes for the fault and abuse scenarios in
//! `tests/tests/faults.rs`: start, `kill -9`, restart with the same data dir
//! and key (and the same listen port, so peers that know the address find the
//! node again), query through the node's local HTTP API, and Linux network
//! namespaces for partitions and degraded links.
//!
//! Everything waits by polling a condition with a deadline ([`eventually`]);
//! nothing sleeps to synchronise. Each [`Node`] keeps one log file across its
//! restarts (`node.log` in its data dir, each run headed by a banner) and
//! prints it when dropped while the test is panicking, so a failing scenario
//! shows the log of every node involved (with `ODA_FAULTS_LOGS=1`, always).
//!
//! The HTTP client is a minimal HTTP/1.1 client over `std::net::TcpStream`
//! (`Connection: close`), so the harness needs no HTTP crate. A node inside a
//! network namespace listens for its API on the namespace's loopback, which
//! the test process cannot reach; its requests go through `python3` run with
//! `ip netns exec` instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oda_node::config::{files, Config};
use oda_node::runtime::RuntimeInfo;
use serde_json::Value as Json;

use crate::{bin, run_with_deadline, DataDir, START_DEADLINE};

/// Poll `check` every 100 ms until it returns `Some`, or panic naming `what`
/// once `deadline` has passed.
pub fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request to `addr` (`host:port`) with a bearer token.
pub fn http(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Json>,
    timeout: Duration,
) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket timeout: {e}"))?;
    let payload = body.map(Json::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send {method} {path}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read the answer to {method} {path}: {e}"))?;
    parse_response(&raw).map_err(|e| format!("{method} {path}: {e}"))
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}

/// The same request made from inside network namespace `netns` (by python3).
fn http_in_netns(
    netns: &str,
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Json>,
    timeout: Duration,
) -> Result<Response, String> {
    const SCRIPT: &str = r#"
import sys, urllib.request, urllib.error
method, url, token, timeout, body = sys.argv[1:6]
req = urllib.request.Request(url, data=body.encode() if method == 'POST' else None, method=method,
    headers={'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'})
try:
    r = urllib.request.urlopen(req, timeout=float(timeout))
    status, data = r.status, r.read()
except urllib.error.HTTPError as e:
    status, data = e.code, e.read()
sys.stdout.buffer.write(b'%d\n' % status + data)
"#;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "python3", "-c", SCRIPT])
        .arg(method)
        .arg(format!("http://{addr}{path}"))
        .arg(token)
        .arg(timeout.as_secs_f64().to_string())
        .arg(body.map(Json::to_string).unwrap_or_default());
    let out = run_with_deadline(cmd, timeout + Duration::from_secs(20));
    if out.code != 0 {
        return Err(format!(
            "python3 in {netns} failed ({}): {}",
            out.code, out.stderr
        ));
    }
    let (status, body) = out
        .stdout
        .split_once('\n')
        .ok_or_else(|| format!("no status from python3: {:?}", out.stdout))?;
    Ok(Response {
        status: status.trim().parse().map_err(|e| format!("status: {e}"))?,
        body: body.as_bytes().to_vec(),
    })
}

/// Per-request timeout of [`Node`]'s API calls (long polls add their own time).
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// One `oda-node` process with its own data dir, which survives kills and
/// restarts. Stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Node {
    /// A name for messages.
    pub name: String,
    dir: DataDir,
    child: Option<Child>,
    /// Its `node.json`, once started.
    pub info: Option<RuntimeInfo>,
    /// Its API address, once started.
    pub api: Option<String>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Extra arguments for `oda-node run` (e.g. `--peer ADDR`).
    pub run_args: Vec<String>,
    runs: u32,
}

impl Node {
    /// `oda-node init` a fresh data dir and edit its config, already set to
    /// `network`, TCP on 127.0.0.1 port 0 and the API on 127.0.0.1:0.
    pub fn init(name: &str, network: &str, edit: impl FnOnce(&mut Config)) -> Self {
        Self {
            name: name.to_string(),
            dir: DataDir::init(&format!("oda-fault-{name}-"), network, edit),
            child: None,
            info: None,
            api: None,
            netns: None,
            run_args: Vec::new(),
            runs: 0,
        }
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Edit `config.toml` (takes effect at the next start).
    pub fn edit(&self, edit: impl FnOnce(&mut Config)) {
        self.dir.edit(edit)
    }

    /// The log file (all runs).
    pub fn log_path(&self) -> PathBuf {
        self.path().join("node.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The log of the current (or last) run only.
    pub fn last_run_log(&self) -> String {
        let log = self.log();
        let banner = format!("===== oda-fault: run #{} ", self.runs);
        match log.rfind(&banner) {
            Some(i) => log[i..].to_string(),
            None => log,
        }
    }

    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Start `oda-node run` and wait (polling, with a deadline) for its
    /// `node.json` (written by this process) and `api.addr`. After the first
    /// start the listen address is pinned in the config, so a restart listens
    /// on the same port.
    pub fn start(&mut self) -> &RuntimeInfo {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.name
        );
        // Stale files from a killed run must not be mistaken for this run's.
        let _ = std::fs::remove_file(self.path().join(files::API_ADDR));
        let _ = std::fs::remove_file(self.path().join(files::RUNTIME));
        self.runs += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("the log file opens");
        writeln!(
            log,
            "===== oda-fault: run #{} of node {} =====",
            self.runs, self.name
        )
        .expect("the log file is writable");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("oda-node"));
                c
            }
            None => Command::new(bin("oda-node")),
        };
        cmd.arg("run")
            .arg("--data-dir")
            .arg(self.path())
            .args(&self.run_args)
            .env(
                "ODA_LOG",
                "info,oda_node=debug,libp2p=warn,libp2p_gossipsub=error",
            )
            // Plain text logs: tests search them.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file handle clones"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("oda-node starts"));
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "node {} exited at start with {status}\n{}",
                    self.name,
                    self.last_run_log()
                );
            }
            let pid = self.child.as_ref().map(Child::id);
            if let Some((info, api)) = crate::ready_files(self.path(), pid) {
                self.info = Some(info);
                self.api = Some(api);
                break;
            }
            assert!(
                Instant::now() < end,
                "node {} did not write node.json and api.addr within {START_DEADLINE:?}\n{}",
                self.name,
                self.last_run_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let listen = self.addr();
        let pinned = listen
            .split("/p2p/")
            .next()
            .expect("split yields at least one part")
            .to_string();
        self.edit(|c| c.listen = vec![pinned]);
        self.info.as_ref().expect("just set")
    }

    /// `kill -9` the process and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9`, then start again with the same data dir, key and port.
    pub fn restart_after_kill9(&mut self) -> &RuntimeInfo {
        self.kill9();
        self.start()
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL. Returns whether it exited
    /// successfully on SIGTERM.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The node's public key (hex).
    pub fn public_key(&self) -> String {
        self.info.as_ref().expect("started").public_key.clone()
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> String {
        self.info.as_ref().expect("started").peer_id.clone()
    }

    /// Its first listen address, with `/p2p/<id>`.
    pub fn addr(&self) -> String {
        self.info.as_ref().expect("started").listen[0].clone()
    }

    /// The API token.
    pub fn token(&self) -> String {
        self.dir.token()
    }

    /// One API request; `Err` when the node cannot be reached.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Json>,
        timeout: Duration,
    ) -> Result<Response, String> {
        let addr = self
            .api
            .as_deref()
            .ok_or_else(|| format!("node {} has not started", self.name))?;
        let token = self.token();
        match &self.netns {
            Some(ns) => http_in_netns(ns, addr, &token, method, path, body, timeout),
            None => http(addr, &token, method, path, body, timeout),
        }
    }

    /// One API request; panics if the node cannot be reached.
    pub fn request(&self, method: &str, path: &str, body: Option<&Json>) -> Response {
        self.try_request(method, path, body, API_TIMEOUT)
            .unwrap_or_else(|e| panic!("API of node {}: {e}", self.name))
    }

    /// `GET path` answered 200 with JSON; panics otherwise.
    pub fn get_json(&self, path: &str) -> Json {
        let r = self.request("GET", path, None);
        assert_eq!(
            r.status,
            200,
            "GET {path} on node {}: {}",
            self.name,
            r.text()
        );
        r.json()
    }

    /// Add a workflow folder; returns its id (`wf:<hex>`).
    pub fn add_workflow(&self, dir: &Path) -> String {
        let body = serde_json::json!({ "path": dir.to_str().expect("a UTF-8 path") });
        let r = self.request("POST", "/v1/workflows", Some(&body));
        assert!(
            r.status == 200 || r.status == 201,
            "adding workflow {} on node {}: {} {}",
            dir.display(),
            self.name,
            r.status,
            r.text()
        );
        r.json()["id"]
            .as_str()
            .expect("the answer names the workflow id")
            .to_string()
    }

    /// Submit a job; returns its JSON view.
    pub fn submit(&self, workflow: &str, args: Json) -> Json {
        let body = serde_json::json!({ "workflow": workflow, "args": args });
        let r = self.request("POST", "/v1/jobs", Some(&body));
        assert_eq!(
            r.status,
            201,
            "submitting {workflow} {args} on node {}: {}",
            self.name,
            r.text()
        );
        r.json()
    }

    /// A job's current view.
    pub fn job(&self, id: &str) -> Json {
        self.get_json(&format!("/v1/jobs/{id}"))
    }

    /// Every job on this node.
    pub fn jobs(&self) -> Vec<Json> {
        self.get_json("/v1/jobs")
            .as_array()
            .expect("a list of jobs")
            .clone()
    }

    /// Wait (long polls, then a final check) until a job is terminal; panics
    /// with its last view after `deadline`.
    pub fn wait_job(&self, id: &str, deadline: Duration) -> Json {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let poll = left
                .min(Duration::from_secs(20))
                .max(Duration::from_millis(1));
            let path = format!("/v1/jobs/{id}/wait?timeout_ms={}", poll.as_millis());
            if let Ok(r) = self.try_request("GET", &path, None, poll + API_TIMEOUT) {
                if r.status == 200 {
                    let view = r.json();
                    if view["terminal"] == Json::Bool(true) {
                        return view;
                    }
                }
            }
            if Instant::now() >= end {
                let last = self
                    .try_request("GET", &format!("/v1/jobs/{id}"), None, API_TIMEOUT)
                    .map(|r| r.text())
                    .unwrap_or_else(|e| e);
                panic!(
                    "job {id} on node {} not terminal within {deadline:?}: {last}",
                    self.name
                );
            }
        }
    }

    /// The facts this node holds for an expression (and the mesh's with
    /// `mesh`); empty when the node knows neither the expression nor a fact.
    pub fn facts(&self, expr: &str, mesh: bool) -> Vec<Json> {
        let r = self.request("GET", &format!("/v1/exprs/{expr}/facts?mesh={mesh}"), None);
        match r.status {
            200 => r.json()["facts"]
                .as_array()
                .expect("facts is a list")
                .clone(),
            404 => Vec::new(),
            other => panic!(
                "facts of {expr} on node {}: {other} {}",
                self.name,
                r.text()
            ),
        }
    }

    /// The connected peers (`/v1/peers`).
    pub fn peers(&self) -> Vec<Json> {
        self.get_json("/v1/peers")
            .as_array()
            .expect("a list of peers")
            .clone()
    }

    /// One connected peer's entry, by peer id.
    pub fn peer(&self, peer_id: &str) -> Option<Json> {
        self.peers()
            .into_iter()
            .find(|p| p["peer_id"].as_str() == Some(peer_id))
    }

    /// The blob's bytes; `None` when the node does not hold it (and, with
    /// `fetch`, cannot fetch it from the mesh).
    pub fn blob(&self, blob: &str, fetch: bool) -> Option<Vec<u8>> {
        let r = self
            .try_request(
                "GET",
                &format!("/v1/blobs/{blob}?fetch={fetch}"),
                None,
                Duration::from_secs(120),
            )
            .unwrap_or_else(|e| panic!("API of node {}: {e}", self.name));
        match r.status {
            200 => Some(r.body),
            404 => None,
            other => panic!("blob {blob} on node {}: {other} {}", self.name, r.text()),
        }
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        let r = self.request("GET", "/metrics", None);
        assert_eq!(r.status, 200, "metrics of node {}: {}", self.name, r.text());
        r.text()
    }

    /// One unlabelled sample of `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() || std::env::var_os("ODA_FAULTS_LOGS").is_some() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(400);
            eprintln!(
                "----- log of node {} ({}, last {} of {} lines) -----\n{}\n----- end of log of {} -----",
                self.name,
                self.path().display(),
                lines.len() - from,
                lines.len(),
                lines[from..].join("\n"),
                self.name
            );
        }
    }
}

/// A python workflow folder: `{root}/{name}` with `oda-workflow.toml` and
/// `step.py`. Every run first appends one line to `{markers}/{name}`: the
/// workflow name, the base names of its arguments (blob arguments are files
/// named by their hash, so the line is the same on every worker) and the
/// python process id, so tests count executions per expression and can find
/// runs orphaned by a killed worker.
pub fn python_workflow(
    root: &Path,
    markers: &Path,
    name: &str,
    inputs_and_outputs: &str,
    argv: &str,
    script: &str,
    timeout_secs: u64,
) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("the workflow folder can be created");
    let manifest = format!(
        r#"name = "{name}"
version = "1"
files = ["step.py"]
timeout_secs = {timeout_secs}
{inputs_and_outputs}

[executor]
kind = "command"
argv = {argv}
env = {{ MARKER = "{marker}" }}
"#,
        marker = markers.join(name).display()
    );
    std::fs::write(dir.join("oda-workflow.toml"), manifest).expect("write the manifest");
    let prelude = format!(
        "import os, sys, json, time\n\
         with open(os.environ['MARKER'], 'a') as _m:\n    \
         _m.write(' '.join(['{name}'] + [os.path.basename(a) for a in sys.argv[1:]] + [str(os.getpid())]) + '\\n')\n"
    );
    std::fs::write(dir.join("step.py"), format!("{prelude}{script}")).expect("write the script");
    dir
}

/// Marker lines of a workflow: `(key, pid)` per run, the key being the
/// workflow name and argument base names.
pub fn marker_runs(markers: &Path, name: &str) -> Vec<(String, i32)> {
    std::fs::read_to_string(markers.join(name))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (key, pid) = l.rsplit_once(' ')?;
            Some((key.to_string(), pid.parse().ok()?))
        })
        .collect()
}

/// Kill (SIGKILL) a process left running by a killed worker; ignores errors.
pub fn kill_pid(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
}

/// Why network-namespace scenarios cannot run here, if they cannot.
pub fn netns_unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("not root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("`ip` (iproute2) is missing".into()),
    }
}

/// Run a command that must succeed (for `ip` and `tc`).
pub fn sh(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two network namespaces joined by one veth pair: half `a` (address
/// `10.231.0.1`) and half `b` (`10.231.0.2`). Deleted on drop.
pub struct NetnsPair {
    /// Namespace names.
    pub a: String,
    /// Namespace names.
    pub b: String,
    /// Address of `a` on the link.
    pub addr_a: String,
    /// Address of `b` on the link.
    pub addr_b: String,
    dev_a: String,
    dev_b: String,
}

impl NetnsPair {
    /// Create the namespaces (`tag` keeps names unique per test and process).
    pub fn new(tag: &str) -> Result<Self, String> {
        let id = std::process::id();
        let pair = Self {
            a: format!("oda{tag}{id}a"),
            b: format!("oda{tag}{id}b"),
            addr_a: "10.231.0.1".into(),
            addr_b: "10.231.0.2".into(),
            dev_a: format!("v{tag}{}a", id % 100_000),
            dev_b: format!("v{tag}{}b", id % 100_000),
        };
        sh("ip", &["netns", "add", &pair.a])?;
        sh("ip", &["netns", "add", &pair.b])?;
        sh(
            "ip",
            &[
                "link",
                "add",
                &pair.dev_a,
                "netns",
                &pair.a,
                "type",
                "veth",
                "peer",
                "name",
                &pair.dev_b,
                "netns",
                &pair.b,
            ],
        )?;
        for (ns, dev, addr) in [
            (&pair.a, &pair.dev_a, &pair.addr_a),
            (&pair.b, &pair.dev_b, &pair.addr_b),
        ] {
            sh(
                "ip",
                &["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev],
            )?;
            sh("ip", &["-n", ns, "link", "set", dev, "up"])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Cut the link (both ends down): nothing crosses between the halves.
    pub fn partition(&self) -> Result<(), String> {
        sh("ip", &["-n", &self.a, "link", "set", &self.dev_a, "down"])?;
        sh("ip", &["-n", &self.b, "link", "set", &self.dev_b, "down"])
    }

    /// Restore the link.
    pub fn heal(&self) -> Result<(), String> {
        sh("ip", &["-n", &self.a, "link", "set", &self.dev_a, "up"])?;
        sh("ip", &["-n", &self.b, "link", "set", &self.dev_b, "up"])
    }

    /// Delay and loss on both ends of the link with `tc netem` (fails when
    /// the kernel has no `sch_netem`).
    pub fn netem(&self, delay_ms: u32, loss_percent: f64) -> Result<(), String> {
        for (ns, dev) in [(&self.a, &self.dev_a), (&self.b, &self.dev_b)] {
            sh(
                "tc",
                &[
                    "-n",
                    ns,
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "netem",
                    "delay",
                    &format!("{delay_ms}ms"),
                    "loss",
                    &format!("{loss_percent}%"),
                ],
            )?;
        }
        Ok(())
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

/// One network namespace, deleted on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Create namespace `name` with its loopback up.
    pub fn new(name: &str) -> Result<Self, String> {
        sh("ip", &["netns", "add", name])?;
        let ns = Self {
            name: name.to_string(),
        };
        sh("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Join `self` (address `addr`) and `other` (address `other_addr`) with a
    /// veth pair; addresses are /24s, device names at most 15 characters.
    pub fn link(
        &self,
        dev: &str,
        addr: &str,
        other: &Netns,
        other_dev: &str,
        other_addr: &str,
    ) -> Result<(), String> {
        sh(
            "ip",
            &[
                "link",
                "add",
                dev,
                "netns",
                &self.name,
                "type",
                "veth",
                "peer",
                "name",
                other_dev,
                "netns",
                &other.name,
            ],
        )?;
        for (ns, d, a) in [(self, dev, addr), (other, other_dev, other_addr)] {
            sh(
                "ip",
                &["-n", &ns.name, "addr", "add", &format!("{a}/24"), "dev", d],
            )?;
            sh("ip", &["-n", &ns.name, "link", "set", d, "up"])?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.name]);
    }
}

/// Whether this kernel has `tc netem` (tried on a scratch namespace).
pub fn netem_available() -> bool {
    let Ok(ns) = Netns::new(&format!("odanetem{}", std::process::id())) else {
        return false;
    };
    sh(
        "tc",
        &[
            "-n", &ns.name, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ],
    )
    .is_ok()
}

/// A TCP relay (python3, run in a network namespace with `ip netns exec`)
/// that delays every chunk by a fixed time in each direction and, with a
/// given probability per chunk, stalls the stream for longer, as TCP does
/// when a segment is lost and retransmitted. Stands in for `tc netem` on
/// kernels without it. Killed on drop.
pub struct Relay {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Listen on `listen` (`ip:port`) inside `netns`, forward to `target`.
    pub fn spawn(
        netns: &str,
        listen: &str,
        target: &str,
        delay_ms: u32,
        loss_percent: f64,
        stall_ms: u32,
    ) -> Result<Self, String> {
        const SCRIPT: &str = r#"
import asyncio, random, sys, time
lhost, lport, thost, tport, delay, loss, stall = sys.argv[1:8]
delay, loss, stall = float(delay) / 1000, float(loss) / 100, float(stall) / 1000

async def pipe(reader, writer):
    q = asyncio.Queue()
    async def rx():
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                extra = stall if random.random() < loss else 0.0
                await q.put((time.monotonic() + delay + extra, data))
        finally:
            await q.put(None)
    async def tx():
        last = 0.0
        while True:
            item = await q.get()
            if item is None:
                break
            due, data = item
            due = max(due, last)
            last = due
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            writer.write(data)
            await writer.drain()
    try:
        await asyncio.gather(rx(), tx())
    except Exception:
        pass
    writer.close()

async def handle(cr, cw):
    try:
        tr, tw = await asyncio.open_connection(thost, int(tport))
    except Exception:
        cw.close()
        return
    await asyncio.gather(pipe(cr, tw), pipe(tr, cw), return_exceptions=True)

async def main():
    server = await asyncio.start_server(handle, lhost, int(lport))
    print('ready', flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"#;
        let (lhost, lport) = listen.rsplit_once(':').ok_or("listen is ip:port")?;
        let (thost, tport) = target.rsplit_once(':').ok_or("target is ip:port")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = dir.path().join("relay.out");
        let file = std::fs::File::create(&out).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "python3", "-c", SCRIPT])
            .args([lhost, lport, thost, tport])
            .arg(delay_ms.to_string())
            .arg(loss_percent.to_string())
            .arg(stall_ms.to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start the relay: {e}"))?;
        let relay = Self {
            child,
            out,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&relay.out)
            .unwrap_or_default()
            .contains("ready")
        {
            if Instant::now() > end {
                return Err(format!(
                    "relay {listen} -> {target} did not start: {}",
                    std::fs::read_to_string(&relay.out).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(relay)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kill (SIGKILL) every process whose working directory is inside `dir`:
/// workflow runs orphaned when the node owning `dir` was killed (`kill -9`
/// does not reach a job's process group). Returns how many.
pub fn kill_processes_under(dir: &Path) -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let inside = std::fs::read_link(entry.path().join("cwd")).is_ok_and(|c| c.starts_with(dir));
        if inside && pid != std::process::id() as i32 {
            kill_pid(pid);
            killed += 1;
        }
    }
    killed
}
