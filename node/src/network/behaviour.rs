//! The node's one libp2p `NetworkBehaviour` and the builder of each part's
//! configuration. Gatekeeping behaviours (block list, connection limits) come
//! first so a refused peer never reaches the others.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::allow_block_list::{self, BlockedPeers};
use libp2p::gossipsub::{self, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::kad::{
    self, store::MemoryStore, store::MemoryStoreConfig, BucketInserts, StoreInserts,
};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{behaviour::toggle::Toggle, NetworkBehaviour};
use libp2p::{connection_limits, dcutr, identify, ping, relay, StreamProtocol};
use oda_protocol::messages::{
    BlobRequest, BlobResponse, FactRequest, FactResponse, JobRequest, JobResponse,
};

use super::codec::WireCodec;
use super::NetworkConfig;

/// Request-response behaviour for the fact protocol.
pub type FactRr = request_response::Behaviour<WireCodec<FactRequest, FactResponse>>;
/// Request-response behaviour for the blob protocol.
pub type BlobRr = request_response::Behaviour<WireCodec<BlobRequest, BlobResponse>>;
/// Request-response behaviour for the job protocol.
pub type JobRr = request_response::Behaviour<WireCodec<JobRequest, JobResponse>>;

/// Everything the node speaks, in one behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Peers we refuse to talk to (repeat offenders).
    pub blocked: allow_block_list::Behaviour<BlockedPeers>,
    /// Caps on pending and established connections.
    pub limits: connection_limits::Behaviour,
    /// Exchanges listen addresses and protocols; feeds the Kademlia routing table.
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// The DHT: fact records and providers of expressions and blobs.
    pub kad: kad::Behaviour<MemoryStore>,
    /// Job adverts, fact announcements, capacity.
    pub gossipsub: gossipsub::Behaviour,
    /// `GetFacts`.
    pub facts: FactRr,
    /// Ranged blob reads.
    pub blobs: BlobRr,
    /// Offers, assignments, progress, results.
    pub jobs: JobRr,
    /// Relay server (bootstrap nodes only).
    pub relay_server: Toggle<relay::Behaviour>,
    /// Relay client, for peers behind NAT.
    pub relay_client: relay::client::Behaviour,
    /// Hole punching through a relay.
    pub dcutr: dcutr::Behaviour,
}

/// Largest Kademlia message: one fact record plus framing.
const KAD_MAX_PACKET: usize = 512 * 1024;

impl Behaviour {
    /// Build every part from the node's network configuration.
    pub fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        cfg: &NetworkConfig,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let peer_id = key.public().to_peer_id();
        Ok(Self {
            blocked: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(connection_limits(cfg)),
            identify: identify::Behaviour::new(
                identify::Config::new(cfg.network.identify_protocol(), key.public())
                    .with_agent_version(format!("oda-node/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            kad: kademlia(peer_id, cfg)?,
            gossipsub: gossipsub()?,
            facts: request_response(cfg.network.fact_protocol(), Duration::from_secs(20))?,
            blobs: request_response(cfg.network.blob_protocol(), Duration::from_secs(60))?,
            jobs: request_response(cfg.network.job_protocol(), Duration::from_secs(30))?,
            relay_server: Toggle::from(cfg.bootstrap.then(|| {
                relay::Behaviour::new(
                    peer_id,
                    relay::Config {
                        max_reservations: 512,
                        max_circuits: 256,
                        ..Default::default()
                    },
                )
            })),
            relay_client,
            dcutr: dcutr::Behaviour::new(peer_id),
        })
    }
}

fn connection_limits(cfg: &NetworkConfig) -> connection_limits::ConnectionLimits {
    let max = cfg.max_connections;
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(max / 4 + 8))
        .with_max_pending_outgoing(Some(max / 4 + 8))
        .with_max_established(Some(max))
        // One peer needs at most a TCP and a QUIC connection (plus a relayed one).
        .with_max_established_per_peer(Some(3))
}

fn kademlia(
    peer_id: libp2p::PeerId,
    cfg: &NetworkConfig,
) -> Result<kad::Behaviour<MemoryStore>, Box<dyn std::error::Error + Send + Sync>> {
    let protocol = StreamProtocol::try_from_owned(cfg.network.kad_protocol())?;
    let mut kcfg = kad::Config::new(protocol);
    // Every incoming record and provider record is validated by the event loop
    // before it is stored; nothing enters the store unchecked.
    kcfg.set_record_filtering(StoreInserts::FilterBoth)
        // Peers enter the routing table from the event loop, on identify, and
        // only while their k-bucket has room: inserting on every connection
        // would make Kademlia dial a disconnected entry to test it each time.
        .set_kbucket_inserts(BucketInserts::Manual)
        // Fact records are up to a few KiB; the default 16 KiB packet is too tight.
        .set_max_packet_size(KAD_MAX_PACKET)
        .set_query_timeout(Duration::from_secs(cfg.query_timeout_secs))
        // Facts are immutable: keep records for a week, republished daily by holders.
        .set_record_ttl(Some(Duration::from_secs(7 * 24 * 3600)))
        .set_publication_interval(Some(Duration::from_secs(24 * 3600)))
        .set_provider_record_ttl(Some(Duration::from_secs(48 * 3600)))
        .set_replication_factor(
            NonZeroUsize::new(cfg.replication).ok_or("replication must be at least 1")?,
        );
    let store = MemoryStore::with_config(
        peer_id,
        MemoryStoreConfig {
            max_records: 100_000,
            max_value_bytes: oda_protocol::codec::limits::SIGNED_OBJECT + 1,
            max_providers_per_key: 32,
            max_provided_keys: 100_000,
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kcfg);
    // Kademlia only turns to server mode by itself once an external address is
    // confirmed, which never happens on a LAN or loopback. Nodes that should
    // serve the DHT say so.
    kad.set_mode(cfg.kad_server.then_some(kad::Mode::Server));
    Ok(kad)
}

fn gossipsub() -> Result<gossipsub::Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let config = gossipsub::ConfigBuilder::default()
        // Nothing is forwarded until the application has validated it. The
        // payloads are signed by their authors (protocol v3), so gossipsub
        // neither signs nor checks: a message is verified once per node,
        // after deduplication, not once per copy received.
        .validate_messages()
        .validation_mode(ValidationMode::Anonymous)
        // Message id = BLAKE3 of topic and data, so duplicates are recognised by content.
        .message_id_fn(|m: &gossipsub::Message| {
            let mut h = blake3::Hasher::new_derive_key("oda-mesh v1 gossip-message-id");
            h.update(m.topic.as_str().as_bytes());
            h.update(&[0]);
            h.update(&m.data);
            MessageId::from(h.finalize().as_bytes().to_vec())
        })
        // Our payloads are at most limits::GOSSIP; leave room for signature and framing.
        .max_transmit_size(64 * 1024)
        .heartbeat_interval(Duration::from_millis(700))
        .build()?;
    let mut gs = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)?;
    gs.with_peer_score(
        super::scoring::peer_score_params(),
        super::scoring::thresholds(),
    )?;
    Ok(gs)
}

fn request_response<
    C: request_response::Codec<Protocol = StreamProtocol> + Default + Clone + Send + 'static,
>(
    name: String,
    timeout: Duration,
) -> Result<request_response::Behaviour<C>, Box<dyn std::error::Error + Send + Sync>> {
    let protocol = StreamProtocol::try_from_owned(name)?;
    Ok(request_response::Behaviour::with_codec(
        C::default(),
        [(protocol, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(256),
    ))
}
