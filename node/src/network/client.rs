//! [`Client`]: the cloneable handle the rest of the node uses to talk to the
//! network. Each method sends a [`Command`] to the event loop and awaits the
//! reply. Composite operations (fact lookup, verified blob fetch) are built here
//! from the primitive commands.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::future::Either;
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::{Multiaddr, PeerId};
use oda_protocol::messages::{
    BlobRequest, BlobResponse, FactAnnounce, Gossip, JobRequest, JobResponse,
};
use oda_protocol::names::Topic;
use oda_protocol::{BlobId, ExprId, FactId, SignedFact};
use tokio::sync::{mpsc, oneshot};

use super::scoring::Offence;
use super::{JobReply, NetworkError};
use crate::store::Store;

/// Result of a command.
pub type Reply<T> = oneshot::Sender<Result<T, NetworkError>>;

/// What the event loop can be asked to do.
#[derive(Debug)]
pub enum Command {
    /// Dial an address.
    Dial(Multiaddr, Reply<()>),
    /// Subscribe to a gossip topic.
    Subscribe(Topic, Reply<u64>),
    /// Unsubscribe from a gossip topic.
    Unsubscribe(Topic, Reply<()>),
    /// Publish on a gossip topic.
    Publish(Topic, Gossip, Reply<()>),
    /// Publish raw bytes (fault-injection tests only).
    PublishRaw(Topic, Vec<u8>, Reply<()>),
    /// Put a fact record in the DHT.
    PutFact(Box<SignedFact>, Reply<()>),
    /// Put an unvalidated record (fault-injection tests only).
    PutRaw(Vec<u8>, Vec<u8>, Reply<()>),
    /// Get the valid fact records for an expression from the DHT.
    GetFactRecords(ExprId, Reply<Vec<SignedFact>>),
    /// Announce that this node provides a DHT key.
    Provide(libp2p::kad::RecordKey, Reply<()>),
    /// Find the providers of a DHT key.
    GetProviders(libp2p::kad::RecordKey, Reply<HashSet<PeerId>>),
    /// Ask a peer for its facts about an expression (validated).
    RequestFacts(PeerId, ExprId, Reply<Vec<SignedFact>>),
    /// The peers known to hold facts about an expression (they answered
    /// with some, or signed one), the latest first.
    Holders(ExprId, Reply<Vec<PeerId>>),
    /// Ask a peer for the endorsements and disputes of a fact it keeps
    /// (each verified).
    RequestVerdicts(PeerId, FactId, Reply<Verdicts>),
    /// Ask a peer for a range of a blob.
    RequestBlob(PeerId, BlobRequest, Reply<BlobResponse>),
    /// Send a job-protocol request.
    SendJob(PeerId, Box<JobRequest>, Reply<JobResponse>),
    /// Answer a job-protocol request.
    RespondJob(JobReply, JobResponse),
    /// Answer a blob request (from the task that read the bytes).
    RespondBlob(
        libp2p::request_response::ResponseChannel<BlobResponse>,
        BlobResponse,
    ),
    /// Penalise a peer.
    Penalise(PeerId, Offence),
    /// List connected peers.
    Peers(Reply<Vec<PeerInfo>>),
    /// A peer's reputation, connected or not.
    Reputation(PeerId, Reply<f64>),
    /// The addresses the node listens on.
    ListenAddrs(Reply<Vec<Multiaddr>>),
    /// How the queues to the application fare, and the traffic so far.
    Stats(Reply<NetStats>),
}

/// How the event loop's queues to the application fare, and what it has
/// sent and served since start (what a job costs the mesh in messages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Gossip messages shed since start because the gossip queue was full.
    pub gossip_shed: u64,
    /// Valid job adverts dropped (not delivered, not forwarded) because
    /// their author was over its advert budget.
    pub adverts_over_budget: u64,
    /// Job RPCs and connection events waiting for room in the control queue.
    pub control_waiting: usize,
    /// Gossip messages received (each once, after gossipsub's de-duplication).
    pub gossip_received: u64,
    /// Gossip messages this node published.
    pub gossip_published: u64,
    /// DHT queries this node started (record puts and gets, provides,
    /// provider lookups).
    pub dht_queries: u64,
    /// DHT requests from other peers this node answered.
    pub dht_requests_served: u64,
    /// Blob ranges (pieces of up to 1 MiB with their hashes) this node
    /// served to other peers.
    pub blob_ranges_served: u64,
}

/// A connected peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its id.
    pub peer: PeerId,
    /// Addresses we know for it.
    pub addrs: Vec<Multiaddr>,
    /// Its agent version, once identified.
    pub agent: Option<String>,
    /// Its reputation with this node (0 = clean).
    pub reputation: f64,
    /// Its gossipsub score with this node, if scored.
    pub gossip_score: Option<f64>,
}

/// Endorsements and disputes of one fact, as a peer answered them (each
/// signature verified, each about that fact).
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    /// Endorsements of the fact.
    pub endorsements: Vec<oda_protocol::SignedEndorsement>,
    /// Disputes of the fact.
    pub disputes: Vec<oda_protocol::SignedDispute>,
}

/// Providers asked for a fact's verdicts at most.
const VERDICT_PROVIDERS: usize = 8;

/// How long a fact request to one provider may take during a lookup.
const LOOKUP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lookup waits for the peers that answered before (they hold
/// facts about the expression) before it also walks the DHT. Peers that
/// answer without a fact the lookup takes end the wait at once.
pub const DIRECT_FIRST: Duration = Duration::from_millis(250);
/// Pauses before asking the DHT again for the providers of a blob nobody
/// provided yet (about 1.4 s in all).
const PROVIDER_RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(1000),
];

/// Cloneable handle to the network.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    local: PeerId,
    /// Signs this node's fact announcements.
    key: std::sync::Arc<oda_protocol::SecretKey>,
}

impl Client {
    pub(super) fn new(
        commands: mpsc::Sender<Command>,
        local: PeerId,
        key: oda_protocol::SecretKey,
    ) -> Self {
        Self {
            commands,
            local,
            key: std::sync::Arc::new(key),
        }
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    pub(super) async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetworkError::Stopped)?;
        rx.await.map_err(|_| NetworkError::Stopped)?
    }

    async fn tell(&self, command: Command) {
        // If the event loop has stopped there is nobody left to tell.
        let _ = self.commands.send(command).await;
    }

    /// Dial a peer address (with or without `/p2p/<id>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetworkError> {
        self.ask(|r| Command::Dial(addr, r)).await
    }

    /// Subscribe to a topic (again: nothing changes); since when this node
    /// has listened to it, Unix ms.
    pub async fn subscribe(&self, topic: Topic) -> Result<u64, NetworkError> {
        self.ask(|r| Command::Subscribe(topic, r)).await
    }

    /// Unsubscribe from a topic.
    pub async fn unsubscribe(&self, topic: Topic) -> Result<(), NetworkError> {
        self.ask(|r| Command::Unsubscribe(topic, r)).await
    }

    /// Publish a gossip message.
    pub async fn publish(&self, topic: Topic, message: Gossip) -> Result<(), NetworkError> {
        self.ask(|r| Command::Publish(topic, message, r)).await
    }

    /// Publish arbitrary bytes on a topic, bypassing the codec. Honest code
    /// never needs this: fault-injection tests use it to play a rogue peer.
    pub async fn publish_raw(&self, topic: Topic, bytes: Vec<u8>) -> Result<(), NetworkError> {
        self.ask(|r| Command::PublishRaw(topic, bytes, r)).await
    }

    /// Publish a fact to the mesh: provide its outputs and publish its
    /// record and announcement, concurrently. The caller has stored
    /// the fact (and its outputs) already. Each DHT step waits for
    /// unreachable peers in a slow or partitioned mesh, and a provider record
    /// is served by this node as soon as its step starts. Steps that fail
    /// because the mesh is still small are logged, not fatal; the first hard
    /// failure is returned after all steps were tried.
    pub async fn publish_fact(&self, fact: &SignedFact) -> Result<(), NetworkError> {
        let (outputs, record) =
            futures::join!(self.provide_outputs(fact), self.publish_fact_record(fact));
        outputs.and(record)
    }

    /// Provide `blob/<BlobId>` for each of the fact's outputs: the bytes can
    /// be fetched from this node. DHT failures caused by a still-small mesh
    /// are logged, not returned.
    async fn provide_outputs(&self, fact: &SignedFact) -> Result<(), NetworkError> {
        let expr = fact.body.expr;
        let provided = futures::future::join_all(
            fact.body
                .output_blobs()
                .into_iter()
                .map(|blob| self.provide(super::keys::blob_providers(&blob))),
        )
        .await;
        // Every step is checked (and logged); the first hard failure is returned.
        let mut first = Ok(());
        for r in provided {
            first = first.and(tolerate_small_mesh(&expr, r, "provide blob"));
        }
        first
    }

    /// Put the DHT record `fact/<ExprId>` (quorum 1) and provide
    /// `expr/<ExprId>` concurrently, then announce `FactAnnounce` if this node signed
    /// the fact. Failures caused by a still-small mesh are logged, not returned.
    async fn publish_fact_record(&self, fact: &SignedFact) -> Result<(), NetworkError> {
        let expr = fact.body.expr;
        let (put, provide_expr) = futures::join!(
            self.ask(|r| Command::PutFact(Box::new(fact.clone()), r)),
            self.provide(super::keys::expr_providers(&expr)),
        );
        // Only the worker announces a fact (the announcement is signed by
        // the fact's key); a node re-publishing another's fact it holds
        // puts the record and provides it, and says nothing on gossip.
        let announced = if fact.body.worker == self.key.public() {
            let fact_id = fact.id();
            match self.key.sign(FactAnnounce {
                expr,
                fact_id,
                worker: fact.body.worker,
            }) {
                Ok(signed) => {
                    self.publish(Topic::Facts, Gossip::FactAnnounce(signed))
                        .await
                }
                Err(e) => Err(NetworkError::Setup(format!(
                    "cannot sign the announcement of {fact_id}: {e}"
                ))),
            }
        } else {
            Ok(())
        };
        tolerate_small_mesh(&expr, put, "put record")
            .and(tolerate_small_mesh(
                &expr,
                provide_expr,
                "provide expression",
            ))
            .and(tolerate_small_mesh(&expr, announced, "announce"))
    }

    /// Put an arbitrary DHT record without any validation. Honest code never
    /// needs this: fault-injection tests use it to play a rogue peer.
    pub async fn put_raw_record(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), NetworkError> {
        self.ask(|r| Command::PutRaw(key, value, r)).await
    }

    /// Announce that this node holds a blob's bytes.
    pub async fn provide_blob(&self, blob: &BlobId) -> Result<(), NetworkError> {
        self.provide(super::keys::blob_providers(blob)).await
    }

    async fn provide(&self, key: libp2p::kad::RecordKey) -> Result<(), NetworkError> {
        self.ask(|r| Command::Provide(key, r)).await
    }

    /// Start announcing that this node holds facts for `expr` (it answers
    /// `GetFacts` for it), without waiting for the DHT: the event loop runs
    /// the query and nobody waits for its end.
    pub async fn announce_facts_held(&self, expr: &ExprId) {
        self.provide_unwaited(super::keys::expr_providers(expr))
            .await
    }

    /// Provide `key` without waiting for the DHT work to end.
    async fn provide_unwaited(&self, key: libp2p::kad::RecordKey) {
        let (reply, _) = tokio::sync::oneshot::channel();
        self.tell(Command::Provide(key, reply)).await
    }

    /// Every valid signed fact the mesh holds for `expr`: the DHT record, and
    /// `GetFacts` to every provider of the expression. Invalid facts are dropped
    /// (and their senders penalised) before they get here.
    pub async fn lookup_facts(&self, expr: ExprId) -> Result<Vec<SignedFact>, NetworkError> {
        Ok(self.lookup_facts_until(expr, |_| false).await)
    }

    /// Like [`Client::lookup_facts`], but returns as soon as a fact that
    /// `enough` takes is found (with the facts found so far): a cache hit
    /// costs one record query instead of waiting for every query and
    /// provider to answer. The peers that answered with facts about `expr`
    /// before are asked first (a repeated ask is one request-response);
    /// the record and provider queries run at once after [`DIRECT_FIRST`]
    /// if they have not answered enough.
    pub async fn lookup_facts_until(
        &self,
        expr: ExprId,
        enough: impl Fn(&SignedFact) -> bool,
    ) -> Vec<SignedFact> {
        let mut found: BTreeMap<FactId, SignedFact> = BTreeMap::new();
        let mut add = |facts| gather(&mut found, facts, &enough);
        let holders: HashSet<PeerId> = self
            .ask(|r| Command::Holders(expr, r))
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        // Peers that answered before are asked first: a hit is then one
        // request-response, and the DHT is not walked at all. The walk
        // starts when they have not answered enough within DIRECT_FIRST.
        let mut direct = self.facts_from(expr, holders);
        let first = tokio::time::sleep(DIRECT_FIRST);
        tokio::pin!(first);
        while !direct.is_empty() {
            tokio::select! {
                Some(facts) = direct.next() => {
                    if add(facts) {
                        return found.into_values().collect();
                    }
                }
                _ = &mut first => break,
            }
        }
        let mut dht = Box::pin(self.dht_facts_until(expr, &enough));
        let from_dht = loop {
            tokio::select! {
                Some(facts) = direct.next(), if !direct.is_empty() => {
                    if add(facts) {
                        return found.into_values().collect();
                    }
                }
                facts = &mut dht => break facts,
            }
        };
        if add(from_dht) {
            return found.into_values().collect();
        }
        while let Some(facts) = direct.next().await {
            if add(facts) {
                break;
            }
        }
        found.into_values().collect()
    }

    /// The DHT half of [`Client::lookup_facts_until`]: the record query and
    /// `GetFacts` to the providers; the facts found, ending early once one
    /// is `enough`.
    async fn dht_facts_until(
        &self,
        expr: ExprId,
        enough: &impl Fn(&SignedFact) -> bool,
    ) -> Vec<SignedFact> {
        let mut found: BTreeMap<FactId, SignedFact> = BTreeMap::new();
        let mut add = |facts| gather(&mut found, facts, enough);
        let records = Box::pin(self.ask(|r| Command::GetFactRecords(expr, r)));
        let providers =
            Box::pin(self.ask(|r| Command::GetProviders(super::keys::expr_providers(&expr), r)));
        let (records, providers) = match futures::future::select(records, providers).await {
            Either::Left((records, providers)) => {
                if add(records.unwrap_or_default()) {
                    return found.into_values().collect();
                }
                (Vec::new(), providers.await)
            }
            Either::Right((providers, records)) => (records.await.unwrap_or_default(), providers),
        };
        if add(records) {
            return found.into_values().collect();
        }
        let mut answers = self.facts_from(expr, providers.unwrap_or_default());
        while let Some(facts) = answers.next().await {
            if add(facts) {
                break;
            }
        }
        found.into_values().collect()
    }

    /// Say that this node keeps verdicts on `fact` (its own endorsement or
    /// dispute), so that nodes that were not listening when it was
    /// published can look it up; the DHT work runs without waiting.
    pub async fn provide_verdicts(&self, fact: &FactId) {
        self.provide_unwaited(super::keys::verdict_providers(fact))
            .await
    }

    /// The endorsements and disputes of `fact` the mesh keeps: asked of the
    /// providers of `verdicts/<fact>` (the controllers that published one),
    /// at most [`VERDICT_PROVIDERS`] of them at once, each verified.
    pub async fn lookup_verdicts(&self, fact: &FactId) -> Verdicts {
        let key = super::keys::verdict_providers(fact);
        let providers = self
            .ask(|r| Command::GetProviders(key, r))
            .await
            .unwrap_or_default();
        let asked = providers
            .into_iter()
            .filter(|p| *p != self.local)
            .take(VERDICT_PROVIDERS)
            .map(|peer| async move {
                let asked = tokio::time::timeout(
                    LOOKUP_REQUEST_TIMEOUT,
                    self.ask(|r| Command::RequestVerdicts(peer, *fact, r)),
                )
                .await;
                match asked {
                    Ok(Ok(v)) => v,
                    _ => Verdicts::default(),
                }
            });
        let mut all = Verdicts::default();
        for v in futures::future::join_all(asked).await {
            all.endorsements.extend(v.endorsements);
            all.disputes.extend(v.disputes);
        }
        all
    }

    /// The fact `id` about `expr`, verified: asked of `first` (a peer likely
    /// to hold it, such as the requester that names it), then of the mesh.
    pub async fn find_fact(
        &self,
        expr: ExprId,
        id: FactId,
        first: Option<PeerId>,
    ) -> Option<SignedFact> {
        let pick = |facts: Vec<SignedFact>| facts.into_iter().find(|f| f.id() == id);
        if let Some(peer) = first {
            let mut asked = self.facts_from(expr, HashSet::from([peer]));
            if let Some(fact) = asked.next().await.and_then(pick) {
                return Some(fact);
            }
        }
        pick(self.lookup_facts_until(expr, |f| f.id() == id).await)
    }

    /// `GetFacts` to each provider (but this node) at once; the answers as
    /// they come (failed or timed-out requests give none).
    fn facts_from(
        &self,
        expr: ExprId,
        providers: HashSet<PeerId>,
    ) -> FuturesUnordered<impl std::future::Future<Output = Vec<SignedFact>> + '_> {
        providers
            .into_iter()
            .filter(|p| *p != self.local)
            .map(|peer| async move {
                let asked = tokio::time::timeout(
                    LOOKUP_REQUEST_TIMEOUT,
                    self.ask(|r| Command::RequestFacts(peer, expr, r)),
                )
                .await;
                match asked {
                    Ok(Ok(facts)) => facts,
                    Ok(Err(e)) => {
                        tracing::debug!(%expr, %peer, error = %e, "fact request failed");
                        Vec::new()
                    }
                    Err(_) => {
                        tracing::debug!(%expr, %peer, "fact request timed out");
                        Vec::new()
                    }
                }
            })
            .collect()
    }

    /// Peers providing a blob (excluding this node).
    pub async fn blob_providers(&self, blob: &BlobId) -> Result<HashSet<PeerId>, NetworkError> {
        let mut peers = self
            .ask(|r| Command::GetProviders(super::keys::blob_providers(blob), r))
            .await?;
        peers.remove(&self.local);
        Ok(peers)
    }

    /// Fetch a blob into the store from the mesh, verified: pieces come from
    /// every provider at once, each chunk group checked against the blob id as
    /// it arrives, and the blob becomes visible only once every piece has (see
    /// [`super::fetch`]). A provider that sends a bad chunk is penalised and
    /// dropped at that chunk; an interrupted fetch resumes where it stopped.
    /// When the size is known (facts carry it), a provider announcing another
    /// size is treated as lying before any byte is written. Returns the blob's
    /// size. Does nothing if the store already holds it.
    ///
    /// A blob nobody provides is asked for again a few times
    /// ([`PROVIDER_RETRIES`]) before the fetch fails: a worker provides its
    /// outputs right after it reports them, so a result can be known a
    /// moment before its bytes are findable.
    pub async fn fetch_blob(
        &self,
        blob: BlobId,
        expected_size: Option<u64>,
        store: &Store,
    ) -> Result<u64, NetworkError> {
        if let Some(size) = store.blob_size(&blob) {
            return Ok(size);
        }
        let mut providers = self.blob_providers(&blob).await?;
        for pause in PROVIDER_RETRIES {
            if !providers.is_empty() {
                break;
            }
            tokio::time::sleep(pause).await;
            providers = self.blob_providers(&blob).await?;
        }
        self.fetch_blob_from(blob, expected_size, providers.into_iter().collect(), store)
            .await
    }

    /// Like [`Client::fetch_blob`], from the given peers (all at once).
    pub async fn fetch_blob_from(
        &self,
        blob: BlobId,
        expected_size: Option<u64>,
        providers: Vec<PeerId>,
        store: &Store,
    ) -> Result<u64, NetworkError> {
        super::fetch::fetch(self, blob, expected_size, providers, store).await
    }

    /// Send a job-protocol request and await the answer.
    pub async fn send_job(
        &self,
        peer: PeerId,
        request: JobRequest,
    ) -> Result<JobResponse, NetworkError> {
        self.ask(|r| Command::SendJob(peer, Box::new(request), r))
            .await
    }

    /// Answer an inbound job-protocol request.
    pub async fn respond_job(&self, reply: JobReply, response: JobResponse) {
        self.tell(Command::RespondJob(reply, response)).await
    }

    /// Penalise a misbehaving peer.
    pub async fn penalise(&self, peer: PeerId, offence: Offence) {
        self.tell(Command::Penalise(peer, offence)).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetworkError> {
        self.ask(Command::Peers).await
    }

    /// A peer's reputation with this node (0 = clean; at or below
    /// [`super::scoring::BAN_THRESHOLD`] it is blocked), connected or not.
    pub async fn reputation(&self, peer: PeerId) -> Result<f64, NetworkError> {
        self.ask(|r| Command::Reputation(peer, r)).await
    }

    /// Listen addresses.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetworkError> {
        self.ask(Command::ListenAddrs).await
    }

    /// How the queues to the application fare (gossip shed, RPCs waiting)
    /// and the gossip and DHT traffic since start.
    pub async fn stats(&self) -> Result<NetStats, NetworkError> {
        self.ask(Command::Stats).await
    }
}

/// A publication step's result, with the failures that only mean the mesh
/// is small (no subscriber yet, too few DHT peers) logged and dropped.
fn tolerate_small_mesh(
    expr: &ExprId,
    result: Result<(), NetworkError>,
    what: &str,
) -> Result<(), NetworkError> {
    match result {
        Err(NetworkError::NoSubscribers(_) | NetworkError::Dht { .. }) => {
            tracing::debug!(%expr, ?result, "publish_fact: {what}");
            Ok(())
        }
        Err(e) => {
            tracing::debug!(%expr, error = %e, "publish_fact: {what}");
            Err(e)
        }
        Ok(()) => Ok(()),
    }
}

/// Add `facts` to `found` (by id); whether one of them is `enough`.
fn gather(
    found: &mut BTreeMap<FactId, SignedFact>,
    facts: Vec<SignedFact>,
    enough: &impl Fn(&SignedFact) -> bool,
) -> bool {
    let done = facts.iter().any(enough);
    found.extend(facts.into_iter().map(|f| (f.id(), f)));
    done
}
