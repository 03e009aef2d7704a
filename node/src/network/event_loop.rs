//! [`EventLoop`]: the only owner of the libp2p `Swarm`. It executes client
//! commands, turns swarm events into [`NetworkEvent`]s, validates every record,
//! message and reply from peers, answers `GetFacts` and blob reads from the
//! store, and keeps the node connected (re-dialing known peers when it has none).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::kad::{
    self, store::RecordStore, GetProvidersOk, GetRecordOk, QueryId, QueryResult, Quorum, Record,
};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, Multiaddr, PeerId, Swarm};
use oda_protocol::messages::{BlobRequest, BlobResponse, FactRequest, FactResponse, JobResponse};
use oda_protocol::names::Topic;
use oda_protocol::{ExprId, SignedFact, Wire};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::client::{Command, NetStats, PeerInfo, Reply};
use super::peers::{to_trim, Activity, Connected};
use super::scoring::{Offence, Reputation};
use super::{keys, validate, JobReply, NetworkConfig, NetworkError, NetworkEvent, ReplyTo};
use crate::store::{Store, StoreError};

/// How often the loop checks that it is connected to somebody.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// A fact-record query in flight: the expression, valid facts found so far, and
/// where the answer goes.
type PendingRecords = (ExprId, Vec<SignedFact>, Reply<Vec<SignedFact>>);

/// Owns the swarm; run it with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    cfg: NetworkConfig,
    store: Store,
    commands: mpsc::Receiver<Command>,
    /// For tasks that answer requests off the loop (blob reads).
    loopback: mpsc::Sender<Command>,
    /// Job RPCs and connection events for the application (never shed).
    control: mpsc::Sender<NetworkEvent>,
    /// What did not fit in `control` yet, oldest first.
    overflow: VecDeque<NetworkEvent>,
    /// Validated gossip for the application (shed when full).
    gossip: mpsc::Sender<NetworkEvent>,
    /// Gossip shed and traffic so far (`control_waiting` is counted when asked).
    stats: NetStats,
    reputation: Reputation,
    /// Job adverts each author may still publish.
    advert_budget: super::budget::AdvertBudget,
    /// When each peer last exchanged a request with this node (trimming).
    activity: Activity,
    agents: HashMap<PeerId, String>,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    listen_addrs: Vec<Multiaddr>,
    /// Since when (Unix ms) this node listens to each topic it subscribed to.
    subscribed: HashMap<Topic, u64>,
    pending_put: HashMap<QueryId, Reply<()>>,
    pending_provide: HashMap<QueryId, Reply<()>>,
    pending_records: HashMap<QueryId, PendingRecords>,
    pending_providers: HashMap<QueryId, (HashSet<PeerId>, Reply<HashSet<PeerId>>)>,
    pending_facts: HashMap<OutboundRequestId, FactAsk>,
    /// Peers that answered with facts, by expression.
    holders: super::holders::Holders,
    pending_blobs: HashMap<OutboundRequestId, Reply<BlobResponse>>,
    pending_jobs: HashMap<OutboundRequestId, Reply<JobResponse>>,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        cfg: NetworkConfig,
        store: Store,
        (commands, loopback): (mpsc::Receiver<Command>, mpsc::Sender<Command>),
        (control, gossip): (mpsc::Sender<NetworkEvent>, mpsc::Sender<NetworkEvent>),
    ) -> Self {
        Self {
            swarm,
            cfg,
            store,
            commands,
            loopback,
            control,
            overflow: VecDeque::new(),
            gossip,
            stats: NetStats::default(),
            reputation: Reputation::default(),
            advert_budget: Default::default(),
            activity: Activity::default(),
            agents: HashMap::new(),
            addrs: HashMap::new(),
            listen_addrs: Vec::new(),
            subscribed: HashMap::new(),
            pending_put: HashMap::new(),
            pending_provide: HashMap::new(),
            pending_records: HashMap::new(),
            pending_providers: HashMap::new(),
            pending_facts: HashMap::new(),
            holders: Default::default(),
            pending_blobs: HashMap::new(),
            pending_jobs: HashMap::new(),
        }
    }

    /// Run until `shutdown` is cancelled or every client is dropped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        for topic in [Topic::Facts, Topic::Capacity] {
            if let Err(e) = self.subscribe(&topic) {
                tracing::warn!(error = %e, "cannot subscribe to a core topic");
            }
        }
        self.dial_known_peers();
        let mut maintenance = tokio::time::interval(MAINTENANCE_INTERVAL);
        // Room in the control queue is awaited through this handle, so that
        // the other branches may borrow the loop mutably.
        let control = self.control.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = maintenance.tick() => self.maintain(),
                permit = control.reserve(), if !self.overflow.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.overflow.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => self.overflow.clear(),
                },
            }
        }
        tracing::info!("network event loop stopped");
    }

    fn dial_known_peers(&mut self) {
        for addr in self.cfg.peers.clone() {
            if let Err(e) = self.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial configured peer");
            }
        }
    }

    /// Re-dial configured peers this node is not connected to, for example
    /// a bootstrap node that restarted: a node still connected to others
    /// would otherwise never rejoin it. Addresses without `/p2p/<id>` are
    /// re-dialed only while the node has no connection at all.
    fn maintain(&mut self) {
        // Gossipsub keeps its own copy of the reputation: bring it up to date
        // as offences are forgiven.
        for (peer, score) in self.reputation.refresh() {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .set_application_score(&peer, score);
        }
        self.trim();
        let isolated = self.swarm.connected_peers().next().is_none();
        let missing: Vec<Multiaddr> = self
            .cfg
            .peers
            .iter()
            .filter(|addr| match addr.iter().last() {
                Some(Protocol::P2p(peer)) => !self.swarm.is_connected(&peer),
                _ => isolated,
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            tracing::debug!(
                n = missing.len(),
                "re-dialing configured peers that are not connected"
            );
            for addr in missing {
                if let Err(e) = self.dial(addr.clone()) {
                    tracing::debug!(%addr, error = %e, "cannot re-dial configured peer");
                }
            }
        }
    }

    /// Close idle connections beyond the target (see [`super::peers`]).
    /// A bootstrap node, everybody's way in, keeps what it has.
    fn trim(&mut self) {
        if self.cfg.bootstrap {
            return;
        }
        let configured: HashSet<PeerId> = self
            .cfg
            .peers
            .iter()
            .filter_map(|addr| match addr.iter().last() {
                Some(Protocol::P2p(peer)) => Some(peer),
                _ => None,
            })
            .collect();
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let meshed: HashSet<PeerId> = gossipsub.all_mesh_peers().copied().collect();
        let now = std::time::Instant::now();
        let connected: Vec<Connected> = self
            .swarm
            .connected_peers()
            .map(|peer| Connected {
                peer: *peer,
                protected: configured.contains(peer) || meshed.contains(peer),
                idle: self.activity.idle(peer, now),
            })
            .collect();
        let trimmed = to_trim(connected, self.cfg.target_peers as usize);
        if !trimmed.is_empty() {
            tracing::debug!(
                n = trimmed.len(),
                "closing idle connections beyond the target"
            );
        }
        for peer in trimmed {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), NetworkError> {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            if peer == *self.swarm.local_peer_id() {
                return Ok(());
            }
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        self.swarm
            .dial(addr.clone())
            .map_err(|e| NetworkError::Dial {
                addr: addr.to_string(),
                reason: e.to_string(),
            })
    }

    /// Subscribe to `topic` (a second time changes nothing); since when
    /// this node listens to it, Unix ms.
    fn subscribe(&mut self, topic: &Topic) -> Result<u64, NetworkError> {
        if let Some(since) = self.subscribed.get(topic) {
            return Ok(*since);
        }
        let t = IdentTopic::new(topic.encode(&self.cfg.network));
        let gs = &mut self.swarm.behaviour_mut().gossipsub;
        gs.subscribe(&t)
            .map_err(|e| NetworkError::Publish(e.to_string()))?;
        // Every ODA topic gets the same scoring: invalid messages cost score.
        gs.set_topic_params(t, super::scoring::topic_params())
            .map_err(|e| NetworkError::Publish(e.to_string()))?;
        Ok(*self
            .subscribed
            .entry(topic.clone())
            .or_insert_with(crate::scheduler::jobs::now_ms))
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial(addr, reply) => {
                let _ = reply.send(self.dial(addr));
            }
            Command::Subscribe(topic, reply) => {
                let _ = reply.send(self.subscribe(&topic));
            }
            Command::Unsubscribe(topic, reply) => {
                let t = IdentTopic::new(topic.encode(&self.cfg.network));
                self.swarm.behaviour_mut().gossipsub.unsubscribe(&t);
                self.subscribed.remove(&topic);
                let _ = reply.send(Ok(()));
            }
            Command::Publish(topic, message, reply) => {
                let result = message
                    .encode()
                    .map_err(|e| NetworkError::Publish(e.to_string()))
                    .and_then(|bytes| self.publish(&topic, bytes));
                let _ = reply.send(result);
            }
            Command::PublishRaw(topic, bytes, reply) => {
                let _ = reply.send(self.publish(&topic, bytes));
            }
            Command::PutFact(fact, reply) => match fact.encode() {
                Ok(value) => self.put_record(
                    Record::new(keys::fact_record(&fact.body.expr), value),
                    reply,
                ),
                Err(e) => {
                    let _ = reply.send(Err(dht("put", e)));
                }
            },
            Command::PutRaw(key, value, reply) => self.put_record(Record::new(key, value), reply),
            Command::GetFactRecords(expr, reply) => {
                self.stats.dht_queries += 1;
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(keys::fact_record(&expr));
                self.pending_records.insert(id, (expr, Vec::new(), reply));
            }
            Command::Provide(key, reply) => {
                self.stats.dht_queries += 1;
                match self.swarm.behaviour_mut().kad.start_providing(key) {
                    Ok(id) => {
                        self.pending_provide.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(dht("provide", e)));
                    }
                }
            }
            Command::GetProviders(key, reply) => {
                self.stats.dht_queries += 1;
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.pending_providers.insert(id, (HashSet::new(), reply));
            }
            Command::Holders(expr, reply) => {
                let _ = reply.send(Ok(self.holders.of(&expr)));
            }
            Command::RequestFacts(peer, expr, reply) => {
                self.ask_facts(peer, FactAsk::Facts(expr, reply));
            }
            Command::RequestVerdicts(peer, fact, reply) => {
                self.ask_facts(peer, FactAsk::Verdicts(fact, reply));
            }
            Command::RequestBlob(peer, request, reply) => {
                self.activity.touch(peer);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .blobs
                    .send_request(&peer, request);
                self.pending_blobs.insert(id, reply);
            }
            // A job request to this node itself (its requester offering to
            // its own worker, and back): delivered without the wire.
            Command::SendJob(peer, request, reply) if peer == *self.swarm.local_peer_id() => {
                self.emit(NetworkEvent::JobRequest {
                    peer,
                    request: *request,
                    reply: JobReply(ReplyTo::Local(reply)),
                });
            }
            Command::SendJob(peer, request, reply) => {
                self.activity.touch(peer);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .jobs
                    .send_request(&peer, *request);
                self.pending_jobs.insert(id, reply);
            }
            Command::RespondJob(JobReply(ReplyTo::Local(reply)), response) => {
                let _ = reply.send(Ok(response));
            }
            Command::RespondJob(JobReply(ReplyTo::Peer(channel)), response) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .jobs
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!("job response dropped: the requester went away");
                }
            }
            Command::RespondBlob(channel, response) => {
                if matches!(response, BlobResponse::Data { .. }) {
                    self.stats.blob_ranges_served += 1;
                }
                if self
                    .swarm
                    .behaviour_mut()
                    .blobs
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!("blob response dropped: the requester went away");
                }
            }
            Command::Penalise(peer, offence) => self.penalise(peer, offence),
            Command::Peers(reply) => {
                let peers = self
                    .swarm
                    .connected_peers()
                    .map(|p| PeerInfo {
                        peer: *p,
                        addrs: self.addrs.get(p).cloned().unwrap_or_default(),
                        agent: self.agents.get(p).cloned(),
                        reputation: self.reputation.score(p),
                        gossip_score: self.swarm.behaviour().gossipsub.peer_score(p),
                    })
                    .collect();
                let _ = reply.send(Ok(peers));
            }
            Command::Reputation(peer, reply) => {
                let _ = reply.send(Ok(self.reputation.score(&peer)));
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(Ok(self.listen_addrs.clone()));
            }
            Command::Stats(reply) => {
                let _ = reply.send(Ok(NetStats {
                    control_waiting: self.overflow.len(),
                    ..self.stats
                }));
            }
        }
    }

    fn publish(&mut self, topic: &Topic, bytes: Vec<u8>) -> Result<(), NetworkError> {
        let name = topic.encode(&self.cfg.network);
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(name.clone()), bytes)
        {
            Ok(_) => {
                self.stats.gossip_published += 1;
                Ok(())
            }
            Err(gossipsub::PublishError::Duplicate) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(NetworkError::NoSubscribers(name))
            }
            Err(e) => Err(NetworkError::Publish(e.to_string())),
        }
    }

    fn put_record(&mut self, record: Record, reply: Reply<()>) {
        self.stats.dht_queries += 1;
        match self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, Quorum::One)
        {
            Ok(id) => {
                self.pending_put.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(dht("put", e)));
            }
        }
    }

    fn penalise(&mut self, peer: PeerId, offence: Offence) {
        let (score, banned) = self.reputation.penalise(peer, offence);
        tracing::warn!(%peer, ?offence, score, banned, "peer penalised");
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score);
        if banned {
            self.swarm.behaviour_mut().blocked.block_peer(peer);
            self.swarm.behaviour_mut().kad.remove_peer(&peer);
        }
    }

    /// Hand the application a job RPC or connection event. Never dropped:
    /// what does not fit waits in `overflow`, in order.
    fn emit(&mut self, event: NetworkEvent) {
        if !self.overflow.is_empty() {
            self.overflow.push_back(event);
            return;
        }
        match self.control.try_send(event) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(event)) => self.overflow.push_back(event),
        }
    }

    /// Hand the application a gossip message, or shed it when the
    /// application is behind (it is repeated; RPCs are never shed).
    fn emit_gossip(&mut self, event: NetworkEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.gossip.try_send(event) {
            self.stats.gossip_shed += 1;
            if self.stats.gossip_shed.is_power_of_two() {
                tracing::warn!(
                    shed = self.stats.gossip_shed,
                    "gossip queue full: gossip shed"
                );
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address
                    .clone()
                    .with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!(address = %full, "listening");
                self.listen_addrs.push(address.clone());
                self.emit(NetworkEvent::Listening(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if num_established.get() == 1 {
                    self.activity.touch(peer_id);
                    tracing::info!(peer = %peer_id, remote = %endpoint.get_remote_address(), "peer connected");
                    self.emit(NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.activity.forget(&peer_id);
                    tracing::info!(peer = %peer_id, "peer disconnected");
                    self.emit(NetworkEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.on_identify(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Facts(e)) => {
                self.activity.touch(rr_peer(&e));
                self.on_facts(e)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Blobs(e)) => {
                self.activity.touch(rr_peer(&e));
                self.on_blobs(e)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Jobs(e)) => {
                self.activity.touch(rr_peer(&e));
                self.on_jobs(e)
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        let kad_protocol = self.cfg.network.kad_protocol();
        let serves_kad = info.protocols.iter().any(|p| p.as_ref() == kad_protocol);
        if serves_kad && self.routing_has_room_for(&peer_id) {
            for addr in &info.listen_addrs {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer_id, addr.clone());
            }
        }
        self.agents.insert(peer_id, info.agent_version);
        self.addrs.insert(peer_id, info.listen_addrs);
    }

    /// Whether a peer may enter (or is already in) the routing table. A peer
    /// whose k-bucket is full stays out: asked to insert it, Kademlia would
    /// dial the bucket's oldest disconnected entry to test it, and with
    /// idle connections trimmed (see [`Self::trim`]) such an entry is
    /// always at hand, so every new connection would open another one, to
    /// be trimmed again (a 100-node mesh churned ~300 connections a second).
    /// Dead entries still leave the table: a query that fails to dial one
    /// removes its address.
    fn routing_has_room_for(&mut self, peer: &PeerId) -> bool {
        let Some(bucket) = self.swarm.behaviour_mut().kad.kbucket(*peer) else {
            return false;
        };
        bucket.num_entries() < kad::K_VALUE.get()
            || bucket.iter().any(|e| e.node.key.preimage() == peer)
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_query(id, result, step.last),
            kad::Event::InboundRequest { request } => self.on_kad_inbound(request),
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            } => {
                tracing::debug!(%peer, "added to the routing table");
            }
            other => tracing::trace!(?other, "kad event"),
        }
    }

    fn on_kad_inbound(&mut self, request: kad::InboundRequest) {
        self.stats.dht_requests_served += 1;
        match request {
            kad::InboundRequest::PutRecord {
                source,
                record: Some(record),
                ..
            } => match validate::fact_record(&record) {
                Ok(_) => {
                    if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
                        tracing::warn!(error = %e, "DHT record store full");
                    }
                }
                Err(reason) => {
                    tracing::warn!(peer = %source, %reason, "rejected an invalid DHT record");
                    self.penalise(source, Offence::InvalidRecord);
                }
            },
            kad::InboundRequest::AddProvider {
                record: Some(record),
            } => {
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_provider(record)
                {
                    tracing::warn!(error = %e, "DHT provider store full");
                }
            }
            _ => {}
        }
    }

    fn on_query(&mut self, id: QueryId, result: QueryResult, last: bool) {
        match result {
            QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                let Some((expr, facts, _)) = self.pending_records.get_mut(&id) else {
                    return;
                };
                match validate::fact_record(&found.record) {
                    Ok(fact) if fact.body.expr == *expr => {
                        // Its worker holds it: ask it directly next time.
                        if let Some(worker) = crate::identity::peer_id_of(&fact.body.worker) {
                            self.holders.note(*expr, worker);
                        }
                        if !facts.contains(&fact) {
                            facts.push(fact);
                        }
                        // One valid record is enough; providers give the rest.
                        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            q.finish();
                        }
                    }
                    Ok(_) | Err(_) => {
                        if let Some(peer) = found.peer {
                            tracing::warn!(%peer, "peer returned an invalid fact record");
                            self.penalise(peer, Offence::InvalidRecord);
                        }
                    }
                }
            }
            QueryResult::GetRecord(_) => {}
            QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) => {
                if let Some((found, _)) = self.pending_providers.get_mut(&id) {
                    found.extend(providers);
                }
            }
            QueryResult::GetProviders(_) => {}
            QueryResult::PutRecord(result) => {
                if let Some(reply) = self.pending_put.remove(&id) {
                    let _ = reply.send(result.map(|_| ()).map_err(|e| dht("put", e)));
                }
            }
            QueryResult::StartProviding(result) => {
                if let Some(reply) = self.pending_provide.remove(&id) {
                    let _ = reply.send(result.map(|_| ()).map_err(|e| dht("provide", e)));
                }
            }
            other => tracing::trace!(?other, "kad query progressed"),
        }
        if last {
            if let Some((_, facts, reply)) = self.pending_records.remove(&id) {
                let _ = reply.send(Ok(facts));
            }
            if let Some((found, reply)) = self.pending_providers.remove(&id) {
                let _ = reply.send(Ok(found));
            }
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        self.stats.gossip_received += 1;
        let verdict = validate::gossip(&self.cfg.network, message.topic.as_str(), &message.data);
        let author = verdict
            .as_ref()
            .ok()
            .and_then(|m| m.author())
            .and_then(crate::identity::peer_id_of);
        // A valid advert over its author's budget is dropped: neither
        // delivered nor forwarded, and not held against the relaying peer.
        let over_budget = matches!(verdict, Ok(oda_protocol::messages::Gossip::JobAdvert(_)))
            && author
                .is_some_and(|author| !self.advert_budget.admit(author, std::time::Instant::now()));
        let acceptance = match &verdict {
            Ok(_) if over_budget => MessageAcceptance::Ignore,
            Ok(_) => MessageAcceptance::Accept,
            Err(reason) => {
                tracing::warn!(peer = %propagation_source, %reason, "rejected gossip message");
                MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
        if over_budget {
            self.stats.adverts_over_budget += 1;
            return;
        }
        if let Ok(msg) = verdict {
            self.emit_gossip(NetworkEvent::Gossip {
                author,
                message: msg,
            });
        }
    }

    /// Send `peer` the fact-protocol request `ask` waits for.
    fn ask_facts(&mut self, peer: PeerId, ask: FactAsk) {
        self.activity.touch(peer);
        let id = self
            .swarm
            .behaviour_mut()
            .facts
            .send_request(&peer, ask.request());
        self.pending_facts.insert(id, ask);
    }

    fn on_facts(&mut self, event: request_response::Event<FactRequest, FactResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let response = answer_fact_request(&self.store, request);
                    if self
                        .swarm
                        .behaviour_mut()
                        .facts
                        .send_response(channel, response)
                        .is_err()
                    {
                        tracing::debug!(%peer, "fact response dropped");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let Some(ask) = self.pending_facts.remove(&request_id) else {
                        return;
                    };
                    let (expr, reply, facts) = match (ask, response) {
                        (FactAsk::Facts(expr, reply), FactResponse::Facts(facts)) => {
                            (expr, reply, facts)
                        }
                        (
                            FactAsk::Verdicts(fact, reply),
                            FactResponse::Verdicts {
                                endorsements,
                                disputes,
                            },
                        ) => {
                            let (verdicts, forged) =
                                checked_verdicts(&fact, endorsements, disputes);
                            if forged > 0 {
                                tracing::warn!(%peer, forged, "peer sent invalid verdicts");
                                self.penalise(peer, Offence::InvalidRecord);
                            }
                            let _ = reply.send(Ok(verdicts));
                            return;
                        }
                        (ask, _) => {
                            tracing::warn!(%peer, "peer answered a fact request with the wrong kind");
                            self.penalise(peer, Offence::BadMessage);
                            ask.fail(NetworkError::BadAnswer {
                                peer,
                                reason: "another kind of answer than the request asked for".into(),
                            });
                            return;
                        }
                    };
                    let mut valid = Vec::new();
                    let mut forged = 0;
                    for fact in facts.into_iter().take(FactResponse::MAX_FACTS) {
                        match fact.verify_for(&expr) {
                            Ok(()) => valid.push(fact),
                            Err(_) => forged += 1,
                        }
                    }
                    if forged > 0 {
                        tracing::warn!(%peer, forged, "peer sent invalid facts");
                        self.penalise(peer, Offence::InvalidRecord);
                    } else if !valid.is_empty() {
                        self.holders.note(expr, peer);
                    }
                    let _ = reply.send(Ok(valid));
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(ask) = self.pending_facts.remove(&request_id) {
                    ask.fail(request_failed(peer, error));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                self.inbound_failed(peer, &error);
            }
            _ => {}
        }
    }

    /// An inbound request that failed: a peer that sent one over its limit
    /// or undecodable is penalised; timeouts and closed connections are not.
    fn inbound_failed(&mut self, peer: PeerId, error: &request_response::InboundFailure) {
        tracing::debug!(%peer, %error, "inbound request failed");
        if is_bad_request(error) {
            self.penalise(peer, Offence::BadMessage);
        }
    }

    fn on_blobs(&mut self, event: request_response::Event<BlobRequest, BlobResponse>) {
        if let request_response::Event::InboundFailure { peer, error, .. } = &event {
            self.inbound_failed(*peer, error);
        }
        if let Some((_, request, channel)) = settle(event, &mut self.pending_blobs) {
            let store = self.store.clone();
            let loopback = self.loopback.clone();
            tokio::task::spawn_blocking(move || {
                let response = read_blob_range(&store, &request);
                let _ = loopback.blocking_send(Command::RespondBlob(channel, response));
            });
        }
    }

    fn on_jobs(
        &mut self,
        event: request_response::Event<oda_protocol::messages::JobRequest, JobResponse>,
    ) {
        if let request_response::Event::InboundFailure { peer, error, .. } = &event {
            self.inbound_failed(*peer, error);
        }
        if let Some((peer, request, channel)) = settle(event, &mut self.pending_jobs) {
            self.emit(NetworkEvent::JobRequest {
                peer,
                request,
                reply: JobReply(ReplyTo::Peer(channel)),
            });
        }
    }
}

/// Whether an inbound request failed because of what the peer sent: the
/// codec refuses a message over its limit or one that does not decode with
/// `InvalidData` (a timeout, a closed connection or this node's own missing
/// answer are not the peer's fault).
fn is_bad_request(error: &request_response::InboundFailure) -> bool {
    matches!(error, request_response::InboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData)
}

/// Deliver a request-response answer or failure to whoever waits for it, and
/// hand back an inbound request for the caller to serve (inbound failures are
/// the caller's: [`EventLoop::inbound_failed`]).
fn settle<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    pending: &mut HashMap<OutboundRequestId, Reply<Resp>>,
) -> Option<(PeerId, Req, request_response::ResponseChannel<Resp>)> {
    match event {
        request_response::Event::Message { peer, message, .. } => match message {
            request_response::Message::Request {
                request, channel, ..
            } => return Some((peer, request, channel)),
            request_response::Message::Response {
                request_id,
                response,
            } => {
                if let Some(reply) = pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
        },
        request_response::Event::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Err(request_failed(peer, error)));
            }
        }
        _ => {}
    }
    None
}

/// Serve one blob range from the store, with the hashes that prove it
/// (runs on a blocking thread).
fn read_blob_range(store: &Store, request: &BlobRequest) -> BlobResponse {
    match store.encode_range(&request.blob, request.offset, u64::from(request.len)) {
        Ok((total, encoded)) => BlobResponse::Data { total, encoded },
        Err(StoreError::BlobNotFound(_)) => BlobResponse::NotFound,
        Err(StoreError::BadRange(why)) => BlobResponse::BadRange(why),
        Err(e) => {
            tracing::warn!(blob = %request.blob, error = %e, "cannot read blob for a peer");
            BlobResponse::NotFound
        }
    }
}

fn dht(op: &'static str, e: impl std::fmt::Display) -> NetworkError {
    NetworkError::Dht {
        op,
        reason: e.to_string(),
    }
}

fn request_failed(peer: PeerId, error: request_response::OutboundFailure) -> NetworkError {
    NetworkError::Request {
        peer,
        reason: error.to_string(),
    }
}

/// The peer a request-response event is about.
fn rr_peer<Req, Resp>(event: &request_response::Event<Req, Resp>) -> PeerId {
    match event {
        request_response::Event::Message { peer, .. }
        | request_response::Event::OutboundFailure { peer, .. }
        | request_response::Event::InboundFailure { peer, .. }
        | request_response::Event::ResponseSent { peer, .. } => *peer,
    }
}

/// A fact-protocol request this node sent, waiting for its answer.
enum FactAsk {
    /// `GetFacts` about an expression.
    Facts(ExprId, Reply<Vec<SignedFact>>),
    /// `GetVerdicts` about a fact.
    Verdicts(oda_protocol::FactId, Reply<super::Verdicts>),
}

impl FactAsk {
    /// The request this waits for the answer to.
    fn request(&self) -> FactRequest {
        match self {
            FactAsk::Facts(expr, _) => FactRequest::GetFacts(*expr),
            FactAsk::Verdicts(fact, _) => FactRequest::GetVerdicts(*fact),
        }
    }

    /// Answer the waiting caller with `e`.
    fn fail(self, e: NetworkError) {
        match self {
            FactAsk::Facts(_, reply) => {
                let _ = reply.send(Err(e));
            }
            FactAsk::Verdicts(_, reply) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// The answer to a peer's fact-protocol request, from the store (bounded).
fn answer_fact_request(store: &Store, request: FactRequest) -> FactResponse {
    fn read<T>(what: &str, r: Result<Vec<T>, crate::store::StoreError>) -> Vec<T> {
        r.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read {what} to answer a peer");
            Vec::new()
        })
    }
    match request {
        FactRequest::GetFacts(expr) => {
            let mut facts = read("facts", store.facts_for(&expr));
            facts.truncate(FactResponse::MAX_FACTS);
            FactResponse::Facts(facts)
        }
        FactRequest::GetVerdicts(fact) => {
            let subject = oda_protocol::Subject::Fact(fact);
            let mut endorsements = read("endorsements", store.endorsements_of(&subject));
            let mut disputes = read("disputes", store.disputes_of(&fact));
            endorsements.truncate(FactResponse::MAX_VERDICTS);
            disputes.truncate(FactResponse::MAX_VERDICTS);
            FactResponse::Verdicts {
                endorsements,
                disputes,
            }
        }
    }
}

/// The verdicts of a peer's answer that are about `fact` and verify, and
/// how many did not.
fn checked_verdicts(
    fact: &oda_protocol::FactId,
    endorsements: Vec<oda_protocol::SignedEndorsement>,
    disputes: Vec<oda_protocol::SignedDispute>,
) -> (super::Verdicts, usize) {
    let mut out = super::Verdicts::default();
    let mut forged = 0;
    for e in endorsements.into_iter().take(FactResponse::MAX_VERDICTS) {
        if e.body.subject == oda_protocol::Subject::Fact(*fact) && e.verify().is_ok() {
            out.endorsements.push(e);
        } else {
            forged += 1;
        }
    }
    for d in disputes.into_iter().take(FactResponse::MAX_VERDICTS) {
        if d.body.fact == *fact && d.verify().is_ok() {
            out.disputes.push(d);
        } else {
            forged += 1;
        }
    }
    (out, forged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use request_response::InboundFailure;

    #[test]
    fn only_verdicts_about_the_fact_asked_for_that_verify_are_taken() {
        let key = oda_protocol::SecretKey::from_seed([3; 32]);
        let (asked, other) = (oda_protocol::FactId([1; 32]), oda_protocol::FactId([2; 32]));
        let endorse = |about| {
            key.sign(oda_protocol::Endorsement {
                endorser: key.public(),
                subject: oda_protocol::Subject::Fact(about),
                issued_at: 1,
                note: String::new(),
            })
            .unwrap()
        };
        let dispute = |about| {
            key.sign(oda_protocol::Dispute {
                controller: key.public(),
                fact: about,
                expr: ExprId([4; 32]),
                observed: Default::default(),
                issued_at: 1,
                reason: String::new(),
            })
            .unwrap()
        };
        let mut forged = endorse(asked);
        forged.body.issued_at = 2;
        let (taken, refused) = checked_verdicts(
            &asked,
            vec![endorse(asked), endorse(other), forged],
            vec![dispute(asked), dispute(other)],
        );
        assert_eq!(taken.endorsements, vec![endorse(asked)]);
        assert_eq!(taken.disputes, vec![dispute(asked)]);
        assert_eq!(refused, 3);
    }

    #[test]
    fn only_requests_the_codec_refused_count_against_the_peer() {
        let refused = |kind| InboundFailure::Io(std::io::Error::new(kind, "x"));
        assert!(is_bad_request(&refused(std::io::ErrorKind::InvalidData)));
        assert!(!is_bad_request(&refused(std::io::ErrorKind::TimedOut)));
        assert!(!is_bad_request(&refused(std::io::ErrorKind::UnexpectedEof)));
        assert!(!is_bad_request(&InboundFailure::Timeout));
        assert!(!is_bad_request(&InboundFailure::ConnectionClosed));
        assert!(!is_bad_request(&InboundFailure::ResponseOmission));
    }
}
