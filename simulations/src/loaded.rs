//! A node that has been in use: the real `oda-node` binary on a data dir
//! filled beforehand through the library with `facts` facts (signed by
//! another key, as results other workers computed and this node fetched,
//! each about an expression stored with it) and `jobs` finished job records.
//! Measured: time to ready, how fast `/metrics` answers (each ask on a new
//! loopback connection, as a Prometheus scraper makes it) and resident
//! memory afterwards.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use oda_node::identity::NodeKey;
use oda_node::scheduler::jobs::{now_ms, JobId, JobRecord, JobState, JobStore};
use oda_node::store::{Store, StoreConfig};
use oda_protocol::{
    BlobId, Expression, Fact, Outcome, OutputRef, RunnerClass, Usage, Value, WorkflowId,
};

use crate::process::{init_node, memory_kib, run_node};
use crate::stats::Latency;

/// What the loaded node cost.
#[derive(Debug, Clone)]
pub struct LoadedNode {
    /// Facts in its store.
    pub facts: usize,
    /// Job records in its store.
    pub jobs: usize,
    /// Filling the store through the library (not part of the node's cost).
    pub fill: Duration,
    /// Spawn of `oda-node run` → `node.json` lists an address.
    pub ready: Duration,
    /// `GET /metrics`, connection included.
    pub metrics: Latency,
    /// Bytes of one `/metrics` answer.
    pub metrics_bytes: usize,
    /// VmRSS after the asks, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS) at the same time, KiB.
    pub peak_kib: u64,
}

/// Fill a fresh data dir, start the node, ask `/metrics` `asks` times.
pub fn loaded_node(
    binary: &Path,
    facts: usize,
    jobs: usize,
    asks: usize,
) -> anyhow::Result<LoadedNode> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let data = init_node(binary, dir.path())?;
    let t = Instant::now();
    fill(&data, facts, jobs)?;
    let fill = t.elapsed();
    let (child, ready) = run_node(binary, &data)?;
    let api = api_addr(&data)?;
    let token = std::fs::read_to_string(data.join("api.token")).context("read api.token")?;
    let token = token.trim();
    let first = get(api, "/metrics", token)?;
    let want = format!("\noda_facts {facts}\n");
    if !first.contains(&want) {
        bail!("/metrics does not report the {facts} facts in the store");
    }
    let mut times = Vec::with_capacity(asks);
    for _ in 0..asks {
        let t = Instant::now();
        get(api, "/metrics", token)?;
        times.push(t.elapsed());
    }
    let (rss_kib, peak_kib) = memory_kib(child.pid())?;
    drop(child);
    Ok(LoadedNode {
        facts,
        jobs,
        fill,
        ready,
        metrics: Latency::of(&times).context("no asks")?,
        metrics_bytes: first.len(),
        rss_kib,
        peak_kib,
    })
}

/// `facts` facts by another worker, each about its own stored expression,
/// and `jobs` done job records pointing at the first of them.
fn fill(data: &Path, facts: usize, jobs: usize) -> anyhow::Result<()> {
    if jobs > facts {
        bail!("more job records ({jobs}) than facts ({facts}) asked for: each points at a fact");
    }
    let (store, _) = Store::open(StoreConfig::new(data.join("store"), 1 << 40))
        .context("cannot open the node's store to fill it")?;
    let worker = NodeKey::generate();
    let workflow = WorkflowId(*blake3::hash(b"loaded-node workflow").as_bytes());
    let records = JobStore::open(&store).context("cannot open the job records")?;
    for i in 0..facts {
        let expr = Expression {
            workflow,
            args: BTreeMap::from([("n".to_string(), Value::Int(i as i64))]),
        };
        let expr = store.put_expr(&expr).context("store an expression")?;
        let output = OutputRef {
            blob: BlobId(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes()),
            size: 1024,
        };
        let fact = worker
            .secret
            .sign(Fact {
                expr,
                workflow,
                outcome: Outcome::Success {
                    outputs: BTreeMap::from([("out".to_string(), output)]),
                },
                worker: worker.public(),
                runner_class: RunnerClass::Public,
                inputs: vec![],
                started_at: 1_700_000_000_000 + i as u64,
                finished_at: 1_700_000_000_100 + i as u64,
                usage: Usage::default(),
                environment: [0; 32],
            })
            .context("sign a fact")?;
        store.put_fact(&fact).context("store a fact")?;
        if i < jobs {
            let now = now_ms();
            records
                .put(&JobRecord {
                    id: JobId::random(),
                    expr,
                    state: JobState::Done,
                    attempts: vec![],
                    created_at: now,
                    updated_at: now,
                    fact: Some(fact.id()),
                    from_cache: true,
                    error: None,
                    no_cache: false,
                    quorum: 1,
                })
                .context("store a job record")?;
        }
    }
    store.flush().context("flush the filled store")?;
    Ok(())
}

/// The API address the node wrote (`api.addr`), waiting up to 10 s for it.
fn api_addr(data: &Path) -> anyhow::Result<SocketAddr> {
    let path = data.join("api.addr");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(addr) = text.trim().parse() {
                return Ok(addr);
            }
        }
        if Instant::now() > end {
            bail!("the node wrote no api.addr within 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One HTTP/1.1 GET on a new connection; the body of a 200 answer.
fn get(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).context("connect to the API")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .with_context(|| format!("read the answer to GET {path}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no end of headers"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            head.lines().next().unwrap_or("empty answer")
        );
    }
    Ok(body.to_string())
}
