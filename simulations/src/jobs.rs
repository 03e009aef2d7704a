//! Trivial jobs through the whole stack: `runtime::Node`s in this process (a
//! bootstrap, one requester, `n` workers) on loopback, a workflow whose run is
//! `touch out`, and the requester's `submit`/`wait`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use libp2p::Multiaddr;
use oda_node::config::{Validated, WorkerSettings};
use oda_node::identity::NodeKey;
use oda_node::runtime::Node;
use oda_node::scheduler::worker::Serves;
use oda_node::scheduler::{JobEvent, JobState, SchedulerConfig};
use oda_protocol::{ExprId, Expression, NetworkId, PublicKey, Value, WorkflowId};

use crate::mesh::eventually;
use crate::stats::Latency;

/// Job slots per worker (the node's default).
pub const SLOTS: u32 = 2;

fn settings(
    net: &NetworkId,
    peers: Vec<Multiaddr>,
    worker: bool,
    trusted: Vec<PublicKey>,
) -> anyhow::Result<Validated> {
    Ok(Validated {
        network: net.clone(),
        listen: vec![crate::mesh::loopback()],
        peers,
        bootstrap: false,
        dht_server: true,
        max_connections: 256,
        target_peers: 32,
        blob_cap_bytes: 1 << 32,
        store_cache_bytes: oda_node::store::StoreConfig::DEFAULT_CACHE_BYTES,
        worker: worker.then(|| WorkerSettings {
            sandbox: Default::default(),
            sandbox_paths: Vec::new(),
            slots: SLOTS,
            serves: Serves::public(),
            workflows: vec![],
        }),
        trusted_keys: trusted,
        trusted_experts: vec![],
        trusted_groups: vec![],
        controllers: vec![],
        controller: None,
        // The node's defaults: the benchmark measures what users get.
        scheduler: SchedulerConfig::default(),
    })
}

/// How one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// Computed; submit → fact accepted.
    Done(Duration),
    /// Ended without a result.
    Failed(String),
    /// Still running at the deadline.
    Unfinished(String),
}

/// A running job mesh.
pub struct JobMesh {
    /// Submits the jobs.
    pub requester: Node,
    /// Run them.
    pub workers: Vec<Node>,
    /// The `touch out` workflow, added on every node.
    pub workflow: WorkflowId,
    /// The network id.
    pub net: NetworkId,
    boot: Node,
    _dirs: Vec<tempfile::TempDir>,
}

/// Job `n` of the `touch out` workflow (`workflow` with `manifest`).
pub fn touch_expression(
    workflow: WorkflowId,
    manifest: &oda_protocol::Manifest,
    n: i64,
) -> anyhow::Result<Expression> {
    let args: BTreeMap<String, Value> = [("n".to_string(), Value::Int(n))].into();
    Ok(Expression::new(workflow, manifest, args)?)
}

/// Gossip and DHT messages, summed over every node of a mesh.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Gossip messages published.
    pub gossip_published: f64,
    /// Gossip messages received (each once per node).
    pub gossip_received: f64,
    /// DHT queries started.
    pub dht_queries: f64,
    /// DHT requests answered.
    pub dht_requests_served: f64,
}

impl Traffic {
    /// What happened between `before` and `self`, per job of `jobs`.
    pub fn per_job_since(&self, before: &Traffic, jobs: usize) -> Traffic {
        let n = jobs.max(1) as f64;
        Traffic {
            gossip_published: (self.gossip_published - before.gossip_published) / n,
            gossip_received: (self.gossip_received - before.gossip_received) / n,
            dht_queries: (self.dht_queries - before.dht_queries) / n,
            dht_requests_served: (self.dht_requests_served - before.dht_requests_served) / n,
        }
    }
}

async fn start(
    net: &NetworkId,
    peers: Vec<Multiaddr>,
    worker: bool,
    trusted: Vec<PublicKey>,
    key: NodeKey,
) -> anyhow::Result<(Node, tempfile::TempDir)> {
    let dir = tempfile::tempdir().context("cannot create a node's data dir")?;
    let node = Node::start(dir.path(), key, &settings(net, peers, worker, trusted)?)
        .await
        .context("a node did not start")?;
    Ok((node, dir))
}

/// Write the benchmark workflow: one int input `n` (so every job is a new
/// expression), one output, and `touch out` as the whole run (no shell).
pub fn write_workflow(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("touch");
    std::fs::create_dir_all(&dir).context("mkdir workflow")?;
    std::fs::write(
        dir.join("oda-workflow.toml"),
        r#"name = "bench-touch"
version = "1"
description = "oda-bench: the smallest job there is"
timeout_secs = 60

[inputs.n]
type = "int"

[outputs.out]
path = "out"

[executor]
kind = "command"
argv = ["touch", "out"]
"#,
    )
    .context("write the manifest")?;
    Ok(dir)
}

impl JobMesh {
    /// The traffic of every node so far.
    pub async fn traffic(&self) -> anyhow::Result<Traffic> {
        let mut t = Traffic::default();
        for node in self.workers.iter().chain([&self.requester, &self.boot]) {
            let s = node.client.stats().await?;
            t.gossip_published += s.gossip_published as f64;
            t.gossip_received += s.gossip_received as f64;
            t.dht_queries += s.dht_queries as f64;
            t.dht_requests_served += s.dht_requests_served as f64;
        }
        Ok(t)
    }

    /// Bootstrap, `workers` workers and one requester that trusts them, all
    /// holding the `touch` workflow.
    pub async fn start(name: &str, workers: usize) -> anyhow::Result<Self> {
        let net = crate::network_id(name);
        let mut dirs = Vec::new();
        let (boot, d) = start(&net, vec![], false, vec![], NodeKey::generate()).await?;
        dirs.push(d);
        let boot_addr = boot
            .wait_listening(Duration::from_secs(10))
            .await
            .into_iter()
            .next()
            .context("the bootstrap does not listen")?;
        let root = tempfile::tempdir().context("temp dir")?;
        let wf_dir = write_workflow(root.path())?;
        let keys: Vec<NodeKey> = (0..workers).map(|_| NodeKey::generate()).collect();
        let trusted: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let mut nodes = Vec::new();
        for key in keys {
            let (w, d) = start(&net, vec![boot_addr.clone()], true, vec![], key).await?;
            w.add_workflow(&wf_dir)
                .await
                .context("add the workflow on a worker")?;
            nodes.push(w);
            dirs.push(d);
        }
        let (requester, d) =
            start(&net, vec![boot_addr], false, trusted, NodeKey::generate()).await?;
        dirs.push(d);
        dirs.push(root);
        let workflow = requester
            .add_workflow(&wf_dir)
            .await
            .context("add the workflow on the requester")?;
        let client = boot.client.clone();
        eventually("every node joined", Duration::from_secs(60), || {
            let c = client.clone();
            async move { (c.peers().await.ok()?.len() > workers).then_some(()) }
        })
        .await?;
        Ok(Self {
            requester,
            workers: nodes,
            workflow,
            net,
            boot,
            _dirs: dirs,
        })
    }

    /// The expression of job `n`.
    pub fn expression(&self, n: i64) -> anyhow::Result<Expression> {
        touch_expression(self.workflow, &self.manifest()?, n)
    }

    /// The workflow's manifest.
    pub fn manifest(&self) -> anyhow::Result<oda_protocol::Manifest> {
        let (wf, _) = self
            .requester
            .store
            .workflow(&self.workflow)?
            .context("the requester lost the workflow")?;
        Ok(wf.manifest)
    }

    /// The bootstrap's listen addresses.
    pub async fn boot_addrs(&self) -> anyhow::Result<Vec<Multiaddr>> {
        Ok(self.boot.client.listen_addrs().await?)
    }

    /// Submit job `n` and wait up to `deadline` for it to end.
    pub async fn submit_and_wait(&self, n: i64, deadline: Duration) -> anyhow::Result<JobEnd> {
        let e = self.expression(n)?;
        let t = Instant::now();
        let job = self.requester.requester.submit(&e, false).await?;
        let record = self
            .requester
            .requester
            .wait(&job.id, deadline)
            .await?
            .context("the job vanished")?;
        let elapsed = t.elapsed();
        Ok(match record.state {
            JobState::Done if record.from_cache => JobEnd::Failed(format!(
                "job {n} came from a cache; the benchmark needs fresh expressions"
            )),
            JobState::Done => JobEnd::Done(elapsed),
            ref s if s.is_terminal() => JobEnd::Failed(format!(
                "job {n} ended {}: {}",
                s.name(),
                record.error.as_deref().unwrap_or("no error recorded")
            )),
            ref s => JobEnd::Unfinished(format!("job {n} still {} after {deadline:?}", s.name())),
        })
    }

    /// Submit job `n`, wait for it, and fail unless it computed.
    pub async fn run_one(&self, n: i64, deadline: Duration) -> anyhow::Result<Duration> {
        match self.submit_and_wait(n, deadline).await? {
            JobEnd::Done(d) => Ok(d),
            JobEnd::Failed(why) | JobEnd::Unfinished(why) => bail!(why),
        }
    }

    /// Run jobs until one succeeds: connections, DHT routing and the gossip
    /// mesh of the jobs topic form on first use.
    pub async fn warm_up(&self, first_n: i64) -> anyhow::Result<i64> {
        let mut n = first_n;
        let end = Instant::now() + Duration::from_secs(90);
        loop {
            let r = self.run_one(n, Duration::from_secs(30)).await;
            n += 1;
            match r {
                Ok(_) if n - first_n >= 3 => return Ok(n),
                Ok(_) => {}
                Err(e) if Instant::now() > end => return Err(e.context("warm-up")),
                Err(_) => {}
            }
        }
    }
}

/// Figures of the sequential benchmark, with the breakdown measured alongside.
#[derive(Debug, Clone)]
pub struct RoundTrip {
    /// Submit → signed fact accepted, one job at a time, once the requester
    /// has listened to the jobs topic for a lease TTL (a node's steady state).
    pub latency: Latency,
    /// The same, for the jobs in the requester's first lease TTL on the
    /// topic (after the warm-up): each of them waits for a worker that may
    /// already be running it (`contested` in the requester's resolution).
    pub just_joined: Latency,
    /// The requester's cache check of a new expression (`lookup_facts`, a miss).
    pub lookup_miss: Latency,
    /// Messages per job, every node together.
    pub traffic: Traffic,
    /// The offer window.
    pub offer_window_ms: u64,
    /// CPU the whole process (every node) used during the sequential jobs,
    /// % of one core.
    pub cpu_percent: f64,
}

/// `jobs` sequential jobs, one at a time, each a new expression.
pub async fn round_trip(workers: usize, jobs: usize) -> anyhow::Result<RoundTrip> {
    let mesh = JobMesh::start("seq", workers).await?;
    // The requester starts listening to the jobs topic at its first submit.
    let listening = Instant::now();
    let mut n = mesh.warm_up(1_000_000).await?;
    let settled = listening + Duration::from_millis(SchedulerConfig::default().lease_ttl_ms);
    let mut early = Vec::new();
    while Instant::now() < settled {
        early.push(mesh.run_one(n, Duration::from_secs(60)).await?);
        n += 1;
    }
    let mut samples = Vec::with_capacity(jobs);
    let cpu = crate::process::CpuMeter::start();
    let before = mesh.traffic().await?;
    for _ in 0..jobs {
        samples.push(mesh.run_one(n, Duration::from_secs(60)).await?);
        n += 1;
    }
    let cpu_percent = cpu.percent();
    let traffic = mesh.traffic().await?.per_job_since(&before, jobs);
    // What each job pays besides the run itself, measured on the same mesh.
    let mut misses = Vec::new();
    for i in 0..20u32 {
        let e = ExprId(*blake3::hash(&i.to_le_bytes()).as_bytes());
        let t = Instant::now();
        mesh.requester.client.lookup_facts(e).await?;
        misses.push(t.elapsed());
    }
    let none = || anyhow::anyhow!("no samples");
    Ok(RoundTrip {
        latency: Latency::of(&samples).ok_or_else(none)?,
        just_joined: Latency::of(&early).ok_or_else(none)?,
        lookup_miss: Latency::of(&misses).ok_or_else(none)?,
        traffic,
        offer_window_ms: SchedulerConfig::default().offer_window_ms,
        cpu_percent,
    })
}

/// Figures of a throughput run.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Jobs submitted.
    pub submitted: usize,
    /// Jobs that ended `done`.
    pub done: usize,
    /// Jobs that ended `failed` (or cancelled).
    pub failed: usize,
    /// Jobs still running when the deadline passed.
    pub unfinished: usize,
    /// From the first submit to the last job's end (or the deadline).
    pub elapsed: Duration,
    /// Most jobs in flight at once (the window; `submitted` for a burst).
    pub in_flight: usize,
    /// The first failure message, if any.
    pub first_error: Option<String>,
    /// CPU the whole process (every node) used meanwhile, % of one core.
    pub cpu_percent: f64,
    /// Messages per job done, every node together.
    pub traffic: Traffic,
}

impl Throughput {
    /// Completed jobs per second.
    pub fn jobs_per_sec(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Submit `jobs` jobs with at most `in_flight` unfinished at once (all at once
/// when `in_flight >= jobs`) and wait up to `deadline` for all of them.
pub async fn throughput(
    workers: usize,
    jobs: usize,
    in_flight: usize,
    deadline: Duration,
) -> anyhow::Result<Throughput> {
    if in_flight >= jobs {
        burst(workers, jobs, deadline).await
    } else {
        window(workers, jobs, in_flight, deadline).await
    }
}

/// All at once: submit every job, then count the jobs that end from the
/// requester's event stream (polling the job table, or one `wait` per job,
/// would cost the process more than the node does), reading the table only
/// when the stream lagged and at the end.
async fn burst(workers: usize, jobs: usize, deadline: Duration) -> anyhow::Result<Throughput> {
    let mesh = JobMesh::start("burst", workers).await?;
    let first = mesh.warm_up(2_000_000).await?;
    let expressions = (0..jobs)
        .map(|i| mesh.expression(first + i as i64))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let r = &mesh.requester.requester;
    let mut events = r.events();
    let cpu = crate::process::CpuMeter::start();
    let before = mesh.traffic().await?;
    let t = Instant::now();
    let start_ms = oda_node::scheduler::jobs::now_ms();
    let mut ids = std::collections::HashSet::new();
    for e in &expressions {
        ids.insert(r.submit(e, false).await?.id);
    }
    let end = t + deadline;
    let mut ended = std::collections::HashSet::new();
    loop {
        let scan = match tokio::time::timeout_at(end.into(), events.recv()).await {
            Ok(Ok(JobEvent::State(rec))) => {
                if rec.state.is_terminal() && ids.contains(&rec.id) {
                    ended.insert(rec.id);
                }
                ended.len() == jobs
            }
            Ok(Ok(JobEvent::Log { .. })) => false,
            // Missed events: count from the table instead.
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                ended = r
                    .list()?
                    .into_iter()
                    .filter(|j| j.state.is_terminal() && ids.contains(&j.id))
                    .map(|j| j.id)
                    .collect();
                ended.len() == jobs
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => true,
        };
        if !scan {
            continue;
        }
        let records: Vec<_> = r
            .list()?
            .into_iter()
            .filter(|j| ids.contains(&j.id))
            .collect();
        let finished = records.iter().filter(|j| j.state.is_terminal()).count();
        if finished == jobs || Instant::now() >= end {
            let done: Vec<_> = records
                .iter()
                .filter(|j| j.state == JobState::Done)
                .collect();
            let failed: Vec<_> = records
                .iter()
                .filter(|j| j.state.is_terminal() && j.state != JobState::Done)
                .collect();
            let elapsed = if finished == jobs {
                let last = records
                    .iter()
                    .map(|j| j.updated_at)
                    .max()
                    .unwrap_or(start_ms);
                Duration::from_millis(last.saturating_sub(start_ms))
            } else {
                t.elapsed()
            };
            return Ok(Throughput {
                submitted: jobs,
                done: done.len(),
                failed: failed.len(),
                unfinished: jobs - finished,
                elapsed,
                in_flight: jobs,
                first_error: failed.first().map(|j| {
                    j.error
                        .clone()
                        .unwrap_or_else(|| j.state.name().to_string())
                }),
                cpu_percent: cpu.percent(),
                traffic: mesh.traffic().await?.per_job_since(&before, done.len()),
            });
        }
    }
}

/// At most `in_flight` jobs unfinished at a time.
async fn window(
    workers: usize,
    jobs: usize,
    in_flight: usize,
    deadline: Duration,
) -> anyhow::Result<Throughput> {
    let mesh = Arc::new(JobMesh::start("window", workers).await?);
    let first = mesh.warm_up(3_000_000).await?;
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let cpu = crate::process::CpuMeter::start();
    let before = mesh.traffic().await?;
    let t = Instant::now();
    let end = t + deadline;
    let mut tasks = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .context("the in-flight gate closed")?;
        let m = mesh.clone();
        let left = end.saturating_duration_since(Instant::now());
        tasks.push(tokio::spawn(async move {
            let r = m.submit_and_wait(first + i as i64, left).await;
            drop(permit);
            (r, Instant::now())
        }));
    }
    let (mut done, mut failed, mut unfinished, mut last) = (0, 0, 0, t);
    let mut first_error = None;
    for task in tasks {
        let (result, at) = task.await.context("a job task panicked")?;
        match result? {
            JobEnd::Done(_) => {
                done += 1;
                last = last.max(at);
            }
            JobEnd::Failed(why) => {
                failed += 1;
                first_error.get_or_insert(why);
            }
            JobEnd::Unfinished(why) => {
                unfinished += 1;
                first_error.get_or_insert(why);
            }
        }
    }
    let elapsed = if failed + unfinished == 0 {
        last - t
    } else {
        t.elapsed()
    };
    Ok(Throughput {
        submitted: jobs,
        done,
        failed,
        unfinished,
        elapsed,
        in_flight,
        first_error,
        cpu_percent: cpu.percent(),
        traffic: mesh.traffic().await?.per_job_since(&before, done),
    })
}
