//! Networking: the libp2p swarm and everything that crosses the wire.
//!
//! Structure (as in rust-libp2p's file-sharing example): [`new`] builds a
//! [`Client`] (cloneable, async methods), a receiver of [`NetworkEvent`]s for the
//! application, and an [`EventLoop`] that alone owns the `Swarm`. The client sends
//! [`client::Command`]s holding a oneshot sender for the reply; the event loop
//! keeps pending replies in maps keyed by query or request id.
//!
//! The network layer validates everything it receives before anything else sees
//! it: DHT records (signature, key matches content), gossip (decodes, topic
//! matches, requester is the signer), fact replies (signature, expression) and
//! blob bytes (BLAKE3). Offenders are penalised ([`scoring`]).

mod behaviour;
mod budget;
mod client;
pub mod codec;
mod event_loop;
mod fetch;
mod holders;
pub mod keys;
mod peers;
pub mod scoring;
mod validate;

use std::time::Duration;

use libp2p::{noise, tcp, yamux, Multiaddr, PeerId};
use oda_protocol::messages::{Gossip, JobRequest, JobResponse};
use oda_protocol::NetworkId;
use tokio::sync::mpsc;

pub use client::{Client, NetStats, PeerInfo, Verdicts};
pub use event_loop::EventLoop;

use crate::identity::NodeKey;
use crate::store::Store;

/// Settings of the network layer (filled from the node config).
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Network id, part of every protocol and topic name.
    pub network: NetworkId,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and whenever the node has no connections
    /// (bootstrap nodes or any known peer).
    pub peers: Vec<Multiaddr>,
    /// Run as the platform's bootstrap node: relay server, higher limits.
    pub bootstrap: bool,
    /// Serve the DHT (Kademlia server mode).
    pub kad_server: bool,
    /// Most established connections.
    pub max_connections: u32,
    /// Idle connections beyond this many peers are closed (not on a
    /// bootstrap node).
    pub target_peers: u32,
    /// DHT query timeout, seconds.
    pub query_timeout_secs: u64,
    /// DHT replication factor.
    pub replication: usize,
    /// Close connections idle for this long, seconds.
    pub idle_timeout_secs: u64,
}

impl NetworkConfig {
    /// Defaults for network `network`, listening on `listen`.
    pub fn new(network: NetworkId, listen: Vec<Multiaddr>) -> Self {
        Self {
            network,
            listen,
            peers: Vec::new(),
            bootstrap: false,
            kad_server: true,
            max_connections: 256,
            target_peers: 32,
            query_timeout_secs: 20,
            replication: 20,
            idle_timeout_secs: 120,
        }
    }
}

/// Why a network operation failed. No libp2p types leak out of this module.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetworkError {
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
    /// Building the swarm or listening failed.
    #[error("network setup failed: {0}")]
    Setup(String),
    /// Dialing failed.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Nobody is subscribed to the topic yet.
    #[error("no peer is subscribed to {0} yet")]
    NoSubscribers(String),
    /// Publishing failed.
    #[error("publish failed: {0}")]
    Publish(String),
    /// A DHT operation failed.
    #[error("DHT {op} failed: {reason}")]
    Dht {
        /// Which operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// A request to a peer failed.
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer answered something invalid.
    #[error("peer {peer} answered invalidly: {reason}")]
    BadAnswer {
        /// The peer.
        peer: PeerId,
        /// What was wrong.
        reason: String,
    },
    /// No provider could deliver a blob.
    #[error("no provider could deliver blob {blob}: {attempts}")]
    BlobUnavailable {
        /// The blob.
        blob: String,
        /// What each provider did.
        attempts: String,
    },
    /// The local store failed.
    #[error("store: {0}")]
    Store(String),
}

/// An inbound job-protocol request, answered with [`Client::respond_job`].
pub struct JobReply(pub(crate) ReplyTo);

/// Where the answer to a job request goes.
pub(crate) enum ReplyTo {
    /// Back over the wire to a peer.
    Peer(libp2p::request_response::ResponseChannel<JobResponse>),
    /// To this node's own worker or requester (a job request to itself).
    Local(client::Reply<JobResponse>),
}

impl std::fmt::Debug for JobReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobReply")
    }
}

/// Something the application should know about.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A new listen address.
    Listening(Multiaddr),
    /// First connection to a peer.
    PeerConnected(PeerId),
    /// Last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A validated gossip message.
    Gossip {
        /// The peer whose key signed it (its author: requester, worker,
        /// controller); none for a `Capacity` summary, which is not signed.
        author: Option<PeerId>,
        /// The message.
        message: Gossip,
    },
    /// A job-protocol request from a peer.
    JobRequest {
        /// The sender.
        peer: PeerId,
        /// The request.
        request: JobRequest,
        /// Where the answer goes.
        reply: JobReply,
    },
}

/// What the network hands the application, in two queues so that gossip
/// volume can never crowd out job RPCs.
pub struct Inbox {
    /// Job-protocol requests and connection events. Never shed: when the
    /// queue is full the event loop holds the overflow (bounded by
    /// request-response's per-connection stream limit) until there is room.
    pub control: mpsc::Receiver<NetworkEvent>,
    /// Validated gossip. Shed (and counted) when full: gossip is repeated
    /// (adverts are re-published, facts re-announced), RPCs are not.
    pub gossip: mpsc::Receiver<NetworkEvent>,
}

/// Capacity of the control queue to the application.
const CONTROL_QUEUE: usize = 1024;
/// Capacity of the gossip queue to the application.
const GOSSIP_QUEUE: usize = 1024;
/// Capacity of the command channel from clients.
const COMMAND_QUEUE: usize = 1024;

/// Build the swarm, start listening and return the three parts.
pub fn new(
    key: &NodeKey,
    cfg: NetworkConfig,
    store: Store,
) -> Result<(Client, Inbox, EventLoop), NetworkError> {
    let setup = |e: &dyn std::fmt::Display| NetworkError::Setup(e.to_string());
    let behaviour_cfg = cfg.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| setup(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|k, relay_client| {
            behaviour::Behaviour::new(k, relay_client, &behaviour_cfg)
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(cfg.idle_timeout_secs))
        })
        .build();
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetworkError::Setup(format!("cannot listen on {addr}: {e}")))?;
    }
    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
    let (gossip_tx, gossip) = mpsc::channel(GOSSIP_QUEUE);
    let client = Client::new(
        command_tx.clone(),
        *swarm.local_peer_id(),
        key.secret.clone(),
    );
    let event_loop = EventLoop::new(
        swarm,
        cfg,
        store,
        (command_rx, command_tx),
        (control_tx, gossip_tx),
    );
    Ok((client, Inbox { control, gossip }, event_loop))
}
