//! Assembles a running node from its parts: opens the store (reporting any
//! repair), builds the network, re-announces what the node holds, writes the
//! runtime file (peer id and listen addresses) for scripts and tests, and shuts
//! everything down in order: the requester (its resolutions stop; unfinished
//! jobs resume at the next start), the dispatch of network events, the
//! network, then a store flush. The API is stopped before, by its server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::{files, Validated};
use crate::executor::{Executors, SandboxPolicy};
use crate::identity::NodeKey;
use crate::network::{self, Client, Inbox, NetworkConfig, NetworkEvent};
use crate::scheduler::controller::{self, Controller};
use crate::scheduler::trust::RosterImport;
use crate::scheduler::{
    requester, worker, Dispatcher, Requester, TrustBook, TrustPolicy, Worker, WorkerConfig,
};
use crate::store::{Store, StoreConfig, StoreError};
use crate::trust_files;
use oda_protocol::PublicKey;

/// The JSON written to `node.json` in the data dir.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RuntimeInfo {
    /// The node's peer id.
    pub peer_id: String,
    /// The node's public key (hex), the key that signs its facts.
    pub public_key: String,
    /// Listen addresses, each ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Process id.
    pub pid: u32,
}

/// A node that is running.
pub struct Node {
    /// The network handle.
    pub client: Client,
    /// The store.
    pub store: Store,
    /// The node key.
    pub key: NodeKey,
    /// Resolves expressions and schedules jobs.
    pub requester: Requester,
    /// Computes jobs, if enabled.
    pub worker: Option<Worker>,
    /// Whose facts this node trusts (the requester's and the worker's
    /// policy; views label every fact with [`TrustPolicy::verdict`]).
    pub trust: TrustBook,
    /// Held while a change of the trust policy is made and stored, so that
    /// concurrent changes neither lose one another nor write a file at once.
    trust_writes: tokio::sync::Mutex<()>,
    data_dir: PathBuf,
    /// Stops the requester.
    stop_scheduler: CancellationToken,
    /// Stops the network (after the scheduler).
    stop_network: CancellationToken,
    tasks: std::sync::Mutex<Option<Tasks>>,
}

/// The node's long-lived tasks, stopped in this order.
struct Tasks {
    requester: JoinHandle<()>,
    worker: Option<JoinHandle<()>>,
    controller: Option<JoinHandle<()>>,
    events: JoinHandle<()>,
    network: JoinHandle<()>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The network could not be set up.
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    /// The job directory could not be created.
    #[error("cannot create the jobs directory {path}: {source}")]
    JobsDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The keys added with `oda trust add` could not be read.
    #[error("{0}")]
    TrustFiles(String),
    /// `[worker] sandbox` asks for a sandbox this machine cannot give.
    #[error("[worker] sandbox: {0}")]
    Sandbox(String),
}

impl Node {
    /// Open the store in `data_dir`, start the network and return the running node.
    pub async fn start(data_dir: &Path, key: NodeKey, cfg: &Validated) -> Result<Self, StartError> {
        // Before anything starts: a worker that was asked to sandbox jobs
        // and cannot must not run them unsandboxed.
        let (sandbox, executors) = match &cfg.worker {
            Some(w) => {
                let (mode, extra) = (w.sandbox, w.sandbox_paths.clone());
                tokio::task::spawn_blocking(move || {
                    let path = std::env::var_os("PATH");
                    let sandbox = SandboxPolicy::start(mode, extra, path.as_deref())?;
                    Ok::<_, String>((sandbox, Executors::probe(path.as_deref())))
                })
                .await
                .map_err(|e| StartError::Sandbox(e.to_string()))?
                .map_err(StartError::Sandbox)?
            }
            None => (SandboxPolicy::default(), Executors::default()),
        };
        let (store, report) = Store::open(StoreConfig {
            cache_bytes: cfg.store_cache_bytes,
            ..StoreConfig::new(data_dir.join(files::STORE), cfg.blob_cap_bytes)
        })?;
        tracing::info!(?report, "store opened");
        let mut net = NetworkConfig::new(cfg.network.clone(), cfg.listen.clone());
        net.peers = cfg.peers.clone();
        net.bootstrap = cfg.bootstrap;
        net.kad_server = cfg.dht_server;
        net.max_connections = cfg.max_connections;
        net.target_peers = cfg.target_peers;
        let (client, inbox, event_loop) = network::new(&key, net, store.clone())?;
        let (stop_scheduler, stop_network) = (CancellationToken::new(), CancellationToken::new());
        let network_task = tokio::spawn(event_loop.run(stop_network.clone()));
        let mut policy = TrustPolicy::new(
            key.public(),
            cfg.trusted_keys.iter().copied(),
            cfg.trusted_experts.iter().copied(),
        )
        .with_groups(cfg.trusted_groups.iter().cloned())
        .with_controllers(cfg.controllers.iter().copied());
        let added = trust_files::load_keys(&data_dir.join(trust_files::KEYS_FILE))
            .await
            .map_err(StartError::TrustFiles)?;
        for key in added {
            policy.add_key(key);
        }
        for roster in trust_files::load_rosters(&data_dir.join(trust_files::ROSTERS_DIR)).await {
            if let Err(e) = policy.import(roster) {
                tracing::warn!(error = %e, "skipping a stored group roster");
            }
        }
        let policy = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                crate::scheduler::verdicts::count_stored_disputes(&store, &mut policy)
                    .map(|()| policy)
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??
        };
        let trust = TrustBook::new(policy);
        let mut worker_task = None;
        let worker = match &cfg.worker {
            Some(w) => {
                let jobs_dir = data_dir.join("jobs");
                std::fs::create_dir_all(&jobs_dir).map_err(|source| StartError::JobsDir {
                    path: jobs_dir.clone(),
                    source,
                })?;
                let parts = worker::Parts {
                    client: client.clone(),
                    store: store.clone(),
                    key: key.clone(),
                    trust: trust.clone(),
                    cfg: WorkerConfig {
                        slots: w.slots,
                        serves: w.serves.clone(),
                        extra_workflows: w.workflows.clone(),
                        jobs_dir,
                        sandbox: sandbox.clone(),
                        executors,
                    },
                };
                let (worker, task) = Worker::start(parts, stop_scheduler.clone()).await?;
                worker_task = Some(task);
                Some(worker)
            }
            None => None,
        };
        // The node's own worker hears its requester's adverts and competes
        // for them like any other worker: a node alone computes what it is
        // asked.
        let parts = requester::Parts {
            client: client.clone(),
            store: store.clone(),
            key: key.clone(),
            trust: trust.clone(),
            cfg: cfg.scheduler.clone(),
            local_worker: worker.clone(),
        };
        let (requester, resumed, requester_task) = Requester::start(parts, stop_scheduler.clone())?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed unfinished jobs");
        }
        let (controller, controller_task) = match &cfg.controller {
            Some(c) => {
                let parts = controller::Parts {
                    client: client.clone(),
                    store: store.clone(),
                    key: key.clone(),
                    trust: trust.clone(),
                    requester: requester.clone(),
                };
                let (handle, task) = Controller::start(parts, c.clone(), stop_scheduler.clone());
                (Some(handle), Some(task))
            }
            None => (None, None),
        };
        let dispatcher = Dispatcher {
            requester: requester.clone(),
            worker: worker.clone(),
            controller,
            client: client.clone(),
        };
        let events_task = tokio::spawn(handle_events(
            inbox,
            dispatcher,
            key.clone(),
            data_dir.to_path_buf(),
            store.clone(),
        ));
        for (id, _, _) in store.workflows()? {
            if let Err(e) = client.subscribe(oda_protocol::Topic::jobs(&id)).await {
                tracing::warn!(error = %e, "cannot subscribe to a jobs topic");
            }
        }
        let node = Self {
            client,
            store,
            key,
            requester,
            worker,
            trust,
            trust_writes: tokio::sync::Mutex::new(()),
            data_dir: data_dir.to_path_buf(),
            stop_scheduler,
            stop_network,
            tasks: std::sync::Mutex::new(Some(Tasks {
                requester: requester_task,
                worker: worker_task,
                controller: controller_task,
                events: events_task,
                network: network_task,
            })),
        };
        Ok(node)
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.key.peer_id()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Import a signed group roster: kept (in the trust policy and under
    /// `rosters/` in the data dir) when it verifies and is newer than the
    /// version this node holds of its group. Its members' facts are trusted
    /// when the node names the group in `[trust] groups`.
    pub async fn import_roster(
        &self,
        roster: oda_protocol::SignedGroupRoster,
    ) -> Result<RosterImport, String> {
        let _one_change = self.trust_writes.lock().await;
        let mut probe = (*self.trust.now()).clone();
        if probe.import(roster.clone())? == RosterImport::NotNewer {
            return Ok(RosterImport::NotNewer);
        }
        trust_files::save_roster(&self.data_dir.join(trust_files::ROSTERS_DIR), &roster).await?;
        self.trust.update(|policy| policy.import(roster))
    }

    /// Trust `key`'s facts from now on (kept in `trusted_keys` in the data
    /// dir); false if they already were.
    pub async fn add_trusted_key(&self, key: PublicKey) -> Result<bool, String> {
        self.change_keys(|p| Ok(p.add_key(key))).await
    }

    /// Stop trusting a key added with [`Node::add_trusted_key`]; false if it
    /// was not added. Keys of `[trust] keys` and the node's own are refused.
    pub async fn remove_trusted_key(&self, key: PublicKey) -> Result<bool, String> {
        self.change_keys(|p| p.remove_key(&key)).await
    }

    /// Apply `change` to a copy of the policy, store the added keys it
    /// leaves, then make it the policy (so the file never lags a change in
    /// force).
    async fn change_keys(
        &self,
        change: impl Fn(&mut TrustPolicy) -> Result<bool, String>,
    ) -> Result<bool, String> {
        let _one_change = self.trust_writes.lock().await;
        let mut next = (*self.trust.now()).clone();
        if !change(&mut next)? {
            return Ok(false);
        }
        let keys: Vec<PublicKey> = next.added.iter().copied().collect();
        trust_files::save_keys(&self.data_dir.join(trust_files::KEYS_FILE), &keys).await?;
        self.trust.update(|p| change(p))
    }

    /// Add a workflow folder (owner-added: trusted by this node's worker) and
    /// listen for its jobs.
    pub async fn add_workflow(
        &self,
        dir: &Path,
    ) -> Result<oda_protocol::WorkflowId, crate::registry::RegistryError> {
        // Reading and hashing the bundle is blocking file I/O: keep it off
        // the async threads, which serve the API and the network.
        let (store, folder) = (self.store.clone(), dir.to_path_buf());
        let id = tokio::task::spawn_blocking(move || crate::registry::add(&store, &folder))
            .await
            .map_err(|e| crate::registry::RegistryError::Task(e.to_string()))??;
        // Requesters listen too: seeing other requesters' adverts lets them
        // join a computation instead of duplicating it.
        if let Err(e) = self.client.subscribe(oda_protocol::Topic::jobs(&id)).await {
            tracing::warn!(error = %e, "cannot subscribe to the workflow's jobs topic");
        }
        if let Some((_, bundle)) = self.store.workflow(&id).ok().flatten() {
            if let Err(e) = self.client.provide_blob(&bundle).await {
                tracing::debug!(error = %e, "cannot announce the workflow bundle yet");
            }
        }
        Ok(id)
    }
}

/// Re-announces held facts and workflow bundles (the DHT keeps records in
/// memory) each time the node goes from no connections to some. One pass at
/// a time: a reconnection during a pass starts it over, since the mesh may
/// have lost what was announced. The pass reads held facts a page at a time
/// on the blocking pool and publishes a few at once. Owned by the event
/// handler: dropping it stops the pass.
struct Reannouncer {
    client: Client,
    store: Store,
    pass: JoinSet<()>,
}

/// Held facts read from the store at a time.
const REANNOUNCE_PAGE: usize = 256;
/// Facts published at once (each is a few DHT queries and a gossip message).
const REANNOUNCE_AT_ONCE: usize = 8;

impl Reannouncer {
    fn new(client: Client, store: Store) -> Self {
        Self {
            client,
            store,
            pass: JoinSet::new(),
        }
    }

    /// Stop the pass in progress, if any, and start one from the beginning.
    fn restart(&mut self) {
        self.pass.abort_all();
        while self.pass.try_join_next().is_some() {}
        let (client, store) = (self.client.clone(), self.store.clone());
        self.pass.spawn(async move {
            if let Err(e) = reannounce(&client, &store).await {
                tracing::error!(error = %e, "cannot re-announce held facts");
            }
        });
    }
}

/// Read the store on the blocking pool.
async fn read_store<T: Send + 'static>(
    store: &Store,
    read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || read(&store)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the store read stopped: {e}")),
    }
}

async fn reannounce(client: &Client, store: &Store) -> Result<(), String> {
    let mut after = None;
    loop {
        let page = read_store(store, move |s| {
            s.held_facts_after(after.as_ref(), REANNOUNCE_PAGE)
        })
        .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id());
        futures::stream::iter(page)
            .for_each_concurrent(REANNOUNCE_AT_ONCE, |fact| async move {
                if let Err(e) = client.publish_fact(&fact).await {
                    tracing::debug!(error = %e, "re-announce failed");
                }
            })
            .await;
    }
    for (_, _, bundle) in read_store(store, Store::workflows).await? {
        let _ = client.provide_blob(&bundle).await;
    }
    Ok(())
}

impl Node {
    /// Listen addresses with `/p2p/<id>`, waiting up to `timeout` for the first.
    pub async fn wait_listening(&self, timeout: Duration) -> Vec<Multiaddr> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let addrs = self.client.listen_addrs().await.unwrap_or_default();
            if !addrs.is_empty() || tokio::time::Instant::now() >= deadline {
                return addrs
                    .into_iter()
                    .map(|a| a.with(Protocol::P2p(self.peer_id())))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop the requester and the worker, the dispatch of network events
    /// and the network, in that order, then flush the store. Later calls only flush.
    pub async fn shutdown(&self) -> Result<(), crate::store::StoreError> {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tasks) = tasks {
            self.stop_scheduler.cancel();
            if let Some(controller) = tasks.controller {
                let _ = controller.await;
            }
            let _ = tasks.requester.await;
            if let Some(worker) = tasks.worker {
                let _ = worker.await;
            }
            tasks.events.abort();
            let _ = tasks.events.await;
            self.stop_network.cancel();
            let _ = tasks.network.await;
        }
        self.store.flush()
    }
}

/// Consume network events: keep `node.json` current, re-announce on
/// (re)connection, and hand everything else to the scheduler. Job RPCs and
/// connection events come first; gossip only when none waits.
async fn handle_events(
    mut inbox: Inbox,
    dispatcher: Dispatcher,
    key: NodeKey,
    data_dir: PathBuf,
    store: Store,
) {
    let mut connected = 0usize;
    let mut reannouncer = Reannouncer::new(dispatcher.client.clone(), store);
    loop {
        let event = tokio::select! {
            biased;
            Some(event) = inbox.control.recv() => event,
            Some(event) = inbox.gossip.recv() => event,
            else => break,
        };
        match event {
            NetworkEvent::Listening(_) => {
                let addrs = dispatcher.client.listen_addrs().await.unwrap_or_default();
                if let Err(e) = write_runtime_info(&data_dir, &key, &addrs) {
                    tracing::error!(error = %e, "cannot write {}", files::RUNTIME);
                }
            }
            NetworkEvent::PeerConnected(_) => {
                connected += 1;
                if connected == 1 {
                    reannouncer.restart();
                }
            }
            NetworkEvent::PeerDisconnected(_) => connected = connected.saturating_sub(1),
            NetworkEvent::Gossip { message, .. } => dispatcher.on_gossip(message),
            NetworkEvent::JobRequest {
                peer,
                request,
                reply,
            } => dispatcher.on_job_request(peer, request, reply).await,
        }
    }
}

fn write_runtime_info(data_dir: &Path, key: &NodeKey, addrs: &[Multiaddr]) -> std::io::Result<()> {
    let peer = key.peer_id();
    let info = RuntimeInfo {
        peer_id: peer.to_string(),
        public_key: key.public().to_string(),
        listen: addrs
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(peer)).to_string())
            .collect(),
        pid: std::process::id(),
    };
    let json = serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?;
    let path = data_dir.join(files::RUNTIME);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, path)
}

/// Returns at SIGINT or SIGTERM: how `oda-node run` and `oda-node execute`
/// are told to stop.
pub async fn stop_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
