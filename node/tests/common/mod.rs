//! Helpers for in-process multi-node tests: real libp2p swarms on loopback TCP
//! (port 0), real sled stores in temp dirs, and polling with deadlines.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use oda_node::identity::NodeKey;
use oda_node::network::{self, Client, NetworkConfig, NetworkEvent};
use oda_node::store::{Store, StoreConfig};
use oda_protocol::NetworkId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One running peer.
pub struct Peer {
    pub key: NodeKey,
    pub client: Client,
    pub store: Store,
    /// Validated gossip.
    pub events: mpsc::Receiver<NetworkEvent>,
    /// Job RPCs and connection events (tests that play a requester answer
    /// them; others leave them unread).
    pub control: mpsc::Receiver<NetworkEvent>,
    pub addr: Multiaddr,
    pub shutdown: CancellationToken,
    pub dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A fresh network id per test, so concurrent tests never mix.
pub fn test_network(name: &str) -> NetworkId {
    format!("t-{name}-{}", std::process::id())
        .parse()
        .expect("valid network id")
}

/// Start a peer on loopback that dials `peers`.
pub async fn spawn(net: &NetworkId, peers: Vec<Multiaddr>, bootstrap: bool) -> Peer {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = NodeKey::generate();
    let (store, _) =
        Store::open(StoreConfig::new(dir.path().join("store"), 1 << 34)).expect("store opens");
    let mut cfg = NetworkConfig::new(
        net.clone(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
    );
    cfg.peers = peers;
    cfg.bootstrap = bootstrap;
    let (client, inbox, event_loop) =
        network::new(&key, cfg, store.clone()).expect("network starts");
    let (events, control) = (inbox.gossip, inbox.control);
    let shutdown = CancellationToken::new();
    tokio::spawn(event_loop.run(shutdown.clone()));
    let addrs = eventually("listening", Duration::from_secs(10), || {
        let client = client.clone();
        async move { client.listen_addrs().await.ok().filter(|a| !a.is_empty()) }
    })
    .await;
    let addr = addrs[0].clone().with(Protocol::P2p(key.peer_id()));
    Peer {
        key,
        client,
        store,
        events,
        control,
        addr,
        shutdown,
        dir,
    }
}

/// A bootstrap peer and `n` peers joined through it, each connected.
pub async fn mesh(net: &NetworkId, n: usize) -> (Peer, Vec<Peer>) {
    let boot = spawn(net, vec![], true).await;
    let mut peers = Vec::new();
    for _ in 0..n {
        peers.push(spawn(net, vec![boot.addr.clone()], false).await);
    }
    let boot_client = boot.client.clone();
    eventually(
        "everyone connected to the bootstrap",
        Duration::from_secs(30),
        || {
            let c = boot_client.clone();
            async move { (c.peers().await.ok()?.len() >= n).then_some(()) }
        },
    )
    .await;
    (boot, peers)
}

/// Poll `check` every 50 ms until it returns `Some`, or panic after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deterministic pseudo-random bytes (xorshift), for large test blobs.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
