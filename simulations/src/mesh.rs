//! Network-only peers in this process: `oda_node::network::new` with a sled
//! store in a temp dir, listening on `127.0.0.1` (port 0), and simple topologies.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use oda_node::identity::NodeKey;
use oda_node::network::{self, Client, NetworkConfig, NetworkEvent};
use oda_node::store::{Store, StoreConfig};
use oda_protocol::messages::Gossip;
use oda_protocol::NetworkId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A gossip message a peer received, and when.
#[derive(Debug)]
pub struct Received {
    /// Index of the receiving peer in its mesh.
    pub peer: usize,
    /// The message.
    pub message: Gossip,
    /// When the peer's application saw it.
    pub at: Instant,
}

/// One running peer. Dropping it stops its event loop.
pub struct Peer {
    /// Its key.
    pub key: NodeKey,
    /// Its network handle.
    pub client: Client,
    /// Its store.
    pub store: Store,
    /// Its first listen address, with `/p2p/<id>`.
    pub addr: Multiaddr,
    connections_opened: Arc<AtomicU64>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Peer {
    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.key.peer_id()
    }

    /// How many times a connection to some peer was established (a peer
    /// connected again after a disconnection counts again).
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened.load(Ordering::Relaxed)
    }
}

/// Start a peer that dials `peers`. Its events are drained by two tasks: one
/// counts connections, the other forwards gossip messages to `gossip` (tagged
/// with `index`) when given.
pub async fn spawn(
    net: &NetworkId,
    peers: Vec<Multiaddr>,
    bootstrap: bool,
    index: usize,
    gossip: Option<mpsc::Sender<Received>>,
) -> anyhow::Result<Peer> {
    spawn_in(None, net, peers, bootstrap, index, gossip).await
}

/// Like [`spawn`], with the peer's store in a temp dir under `root` (the
/// system's temp dir if `None`).
pub async fn spawn_in(
    root: Option<&std::path::Path>,
    net: &NetworkId,
    peers: Vec<Multiaddr>,
    bootstrap: bool,
    index: usize,
    gossip: Option<mpsc::Sender<Received>>,
) -> anyhow::Result<Peer> {
    let dir = match root {
        Some(root) => tempfile::tempdir_in(root),
        None => tempfile::tempdir(),
    }
    .context("cannot create a temp dir for a peer")?;
    let key = NodeKey::generate();
    let (store, _) = Store::open(StoreConfig::new(dir.path().join("store"), 1 << 40))
        .context("cannot open a peer's store")?;
    let mut cfg = NetworkConfig::new(net.clone(), vec![loopback()]);
    cfg.peers = peers;
    cfg.bootstrap = bootstrap;
    let (client, inbox, event_loop) =
        network::new(&key, cfg, store.clone()).context("cannot start a peer's network")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(event_loop.run(shutdown.clone()));
    let connections_opened = Arc::new(AtomicU64::new(0));
    tokio::spawn(count_connections(inbox.control, connections_opened.clone()));
    tokio::spawn(drain(inbox.gossip, index, gossip));
    let addrs = eventually("a peer listens", Duration::from_secs(20), || {
        let client = client.clone();
        async move { client.listen_addrs().await.ok().filter(|a| !a.is_empty()) }
    })
    .await?;
    let addr = addrs[0].clone().with(Protocol::P2p(key.peer_id()));
    Ok(Peer {
        key,
        client,
        store,
        addr,
        connections_opened,
        shutdown,
        _dir: dir,
    })
}

async fn drain(
    mut events: mpsc::Receiver<NetworkEvent>,
    index: usize,
    gossip: Option<mpsc::Sender<Received>>,
) {
    while let Some(event) = events.recv().await {
        if let (Some(tx), NetworkEvent::Gossip { message, .. }) = (&gossip, event) {
            let at = Instant::now();
            if tx
                .send(Received {
                    peer: index,
                    message,
                    at,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

async fn count_connections(mut events: mpsc::Receiver<NetworkEvent>, opened: Arc<AtomicU64>) {
    while let Some(event) = events.recv().await {
        if let NetworkEvent::PeerConnected(_) = event {
            opened.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `/ip4/127.0.0.1/tcp/0`.
pub fn loopback() -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
        .with(Protocol::Tcp(0))
}

/// A bootstrap peer (index 0) and `n` peers (indices 1..=n). Each peer dials
/// the bootstrap and up to `extra` earlier peers chosen by a seeded generator,
/// so the graph is a connected random graph rather than a star. Returns when
/// the bootstrap sees all `n`.
pub async fn mesh(
    net: &NetworkId,
    n: usize,
    extra: usize,
    seed: u64,
    gossip: Option<mpsc::Sender<Received>>,
) -> anyhow::Result<Vec<Peer>> {
    let boot = spawn(net, vec![], true, 0, gossip.clone()).await?;
    let mut rng = XorShift(seed | 1);
    let mut peers = vec![boot];
    for i in 1..=n {
        let mut dial = vec![peers[0].addr.clone()];
        for _ in 0..extra.min(i - 1) {
            let j = 1 + (rng.next_u64() as usize) % (i - 1);
            if !dial.contains(&peers[j].addr) {
                dial.push(peers[j].addr.clone());
            }
        }
        peers.push(spawn(net, dial, false, i, gossip.clone()).await?);
    }
    let boot_client = peers[0].client.clone();
    eventually(
        "every peer connected to the bootstrap",
        Duration::from_secs(60),
        || {
            let c = boot_client.clone();
            async move { (c.peers().await.ok()?.len() >= n).then_some(()) }
        },
    )
    .await?;
    Ok(peers)
}

/// Poll `check` every 20 ms until it returns `Some`, or fail after `deadline`.
pub async fn eventually<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= end {
            bail!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tiny seeded generator (xorshift64), for reproducible topologies and bytes.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Fill `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
