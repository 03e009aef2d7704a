//! Gossip propagation: `n` peers in this process (a bootstrap and `n - 1`
//! peers, each dialing the bootstrap and 3 random earlier peers), one
//! publishes fact announcements; the time until every other peer's
//! application has received each one. The mesh is measured once it has
//! settled: joining peers' Kademlia walks dial most of the mesh, and each
//! node then closes the idle connections beyond its target, which for a
//! while makes others dial again; how long that takes is reported too.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use oda_protocol::messages::{FactAnnounce, Gossip};
use oda_protocol::names::Topic;
use oda_protocol::{ExprId, FactId};
use tokio::sync::mpsc;

use crate::mesh::{mesh, Peer, Received};
use crate::network_id;
use crate::stats::Latency;

/// Figures for one mesh size.
#[derive(Debug, Clone, Copy)]
pub struct Propagation {
    /// Peers in the mesh, the bootstrap included.
    pub nodes: usize,
    /// Publish → the last peer has it, per message.
    pub all: Latency,
    /// Publish → a peer has it, over every (message, peer).
    pub each: Latency,
    /// From the last peer joining until the mesh settled (no more than
    /// `n / 10` connections opened in each 2 s window for
    /// [`Sizes::gossip_quiet`](crate::Sizes::gossip_quiet)); `None` if it
    /// had not settled after [`SETTLE_DEADLINE`] (measured anyway).
    pub settled_after: Option<Duration>,
    /// CPU the whole process used while the mesh sat idle for
    /// [`IDLE_WINDOW`] after the measurements, in % of one core.
    pub idle_cpu_percent: f64,
    /// Connections opened in the whole mesh during that idle window.
    pub idle_connections_opened: u64,
    /// Mean connections per peer at the end.
    pub mean_connections: f64,
}

/// Longest wait for a mesh to settle.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(180);
/// How long the idle mesh's CPU is measured.
pub const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// One observation window while settling.
const WINDOW: Duration = Duration::from_secs(2);

fn connections_opened(peers: &[Peer]) -> u64 {
    peers.iter().map(Peer::connections_opened).sum()
}

/// Watch the mesh for `window`: the process's CPU (% of a core) and the
/// connections the mesh opened meanwhile.
async fn observe(peers: &[Peer], window: Duration) -> (f64, u64) {
    let (meter, before) = (crate::process::CpuMeter::start(), connections_opened(peers));
    tokio::time::sleep(window).await;
    (meter.percent(), connections_opened(peers) - before)
}

/// Wait until the mesh has opened at most `peers.len() / 10` connections in
/// every 2 s window for `quiet`; how long that took, or `None` after
/// [`SETTLE_DEADLINE`].
async fn settle(peers: &[Peer], quiet: Duration) -> Option<Duration> {
    let start = Instant::now();
    let trace = std::env::var_os("ODA_BENCH_TRACE").is_some();
    let mut quiet_since = Instant::now();
    while start.elapsed() < SETTLE_DEADLINE {
        let (cpu, opened) = observe(peers, WINDOW).await;
        if trace {
            eprintln!(
                "gossip {} nodes, settling, {:.0} s: {cpu:.0} % CPU, {opened} connections opened",
                peers.len(),
                start.elapsed().as_secs_f64(),
            );
        }
        if opened > peers.len() as u64 / 10 {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= quiet {
            return Some(start.elapsed());
        }
    }
    None
}

fn announce(n: u64, worker: &oda_protocol::SecretKey) -> Gossip {
    let h = *blake3::hash(&n.to_le_bytes()).as_bytes();
    let signed = worker
        .sign(FactAnnounce {
            expr: ExprId(h),
            fact_id: FactId(h),
            worker: worker.public(),
        })
        .expect("the worker signs its own announcement");
    Gossip::FactAnnounce(signed)
}

fn tag(m: &Gossip) -> Option<ExprId> {
    match m {
        Gossip::FactAnnounce(a) => Some(a.body.expr),
        _ => None,
    }
}

/// Publish one message and wait until `expect` peers have it; the arrival
/// offsets, or `None` if not everybody had it within `within`.
async fn one(
    publisher: &oda_node::network::Client,
    message: Gossip,
    rx: &mut mpsc::Receiver<Received>,
    expect: usize,
    within: Duration,
) -> anyhow::Result<Option<Vec<Duration>>> {
    let want = tag(&message);
    let t = Instant::now();
    if publisher.publish(Topic::Facts, message).await.is_err() {
        return Ok(None);
    }
    let mut seen = HashSet::new();
    let mut arrivals = Vec::with_capacity(expect);
    let end = tokio::time::Instant::now() + within;
    while seen.len() < expect {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Err(_) => return Ok(None),
            Ok(None) => bail!("every peer stopped"),
            Ok(Some(r)) if tag(&r.message) == want && seen.insert(r.peer) => {
                arrivals.push(r.at.saturating_duration_since(t));
            }
            Ok(Some(_)) => {}
        }
    }
    Ok(Some(arrivals))
}

/// Build an `n`-node mesh, let it settle for `quiet` and time `messages`
/// announcements.
pub async fn measure(n: usize, messages: usize, quiet: Duration) -> anyhow::Result<Propagation> {
    let net = network_id(&format!("gossip{n}"));
    let (tx, mut rx) = mpsc::channel(64 * 1024);
    let peers = mesh(&net, n.saturating_sub(1), 3, 0x9055 + n as u64, Some(tx)).await?;
    let settled_after = settle(&peers, quiet).await;
    if std::env::var_os("ODA_BENCH_TRACE").is_some() {
        for (i, p) in peers.iter().enumerate().take(4) {
            let connected = p.client.peers().await.map(|v| v.len()).unwrap_or(0);
            eprintln!("gossip {n} nodes: peer {i} has {connected} connections");
        }
    }
    let publisher = &peers[1];
    let key = &publisher.key.secret;
    let others = peers.len() - 1;

    // Until subscriptions have been exchanged and the gossip mesh has been
    // grafted (heartbeat 700 ms), a message may not reach everyone.
    let mut k = 1_000_000u64;
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        k += 1;
        let m = announce(k, key);
        if one(
            &publisher.client,
            m,
            &mut rx,
            others,
            Duration::from_secs(3),
        )
        .await?
        .is_some()
        {
            break;
        }
        if Instant::now() > end {
            bail!("no warm-up message reached all {others} peers of the {n}-node mesh in 90 s");
        }
    }

    let (mut all, mut each) = (Vec::new(), Vec::new());
    for i in 0..messages as u64 {
        // Let stragglers of the previous message drain first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while rx.try_recv().is_ok() {}
        let m = announce(i, key);
        let Some(arrivals) = one(
            &publisher.client,
            m,
            &mut rx,
            others,
            Duration::from_secs(20),
        )
        .await?
        else {
            bail!("message {i} did not reach all {others} peers within 20 s");
        };
        if std::env::var_os("ODA_BENCH_TRACE").is_some() {
            let mut ms: Vec<u128> = arrivals.iter().map(|d| d.as_millis()).collect();
            ms.sort_unstable();
            eprintln!("gossip {n} nodes, message {i}: arrivals (ms) {ms:?}");
        }
        all.push(arrivals.iter().copied().max().unwrap_or_default());
        each.extend(arrivals);
    }
    let (idle_cpu_percent, idle_connections_opened) = observe(&peers, IDLE_WINDOW).await;
    let mut connections = 0usize;
    for p in &peers {
        connections += p.client.peers().await.map(|v| v.len()).unwrap_or(0);
    }
    let none = || anyhow::anyhow!("no samples");
    Ok(Propagation {
        nodes: peers.len(),
        all: Latency::of(&all).ok_or_else(none)?,
        each: Latency::of(&each).ok_or_else(none)?,
        settled_after,
        idle_cpu_percent,
        idle_connections_opened,
        mean_connections: connections as f64 / peers.len() as f64,
    })
}
