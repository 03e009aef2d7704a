//! The worker: listens to the jobs topics of workflows it can run, offers when
//! it is able and allowed, and on assignment fetches the workflow and inputs,
//! runs the executor, stores the outputs, signs the fact, publishes it and
//! reports `Done`, sending heartbeats while it runs.
//!
//! Checks before offering: the workflow is trusted (added by the owner, or
//! endorsed by a configured expert), the executor is supported here, the
//! runner class admits the requester, a slot is free, and the expression is
//! not already running here. An acceptable advert heard while every slot is
//! busy waits in the [`Backlog`] and is offered for when a slot frees.
//!
//! A journal (sled tree `journal`) records each lease: a restart never loses a
//! finished result (its `Done` is sent again) and never re-runs an interrupted
//! job silently (it is logged as interrupted; the requester's lease expires
//! and it reassigns).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use oda_protocol::messages::{
    Cancel, DeclineReason, Done, JobAdvert, JobRequest, JobResponse, LeaseId, Offer, Progress,
    RunFailure,
};
use oda_protocol::names::Topic;
use oda_protocol::{
    BlobId, ExprId, Fact, Outcome, OutputRef, PublicKey, RunnerClass, Subject, Value, Wire,
    Workflow, WorkflowId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backlog::Backlog;
use super::jobs::now_ms;
use super::trust::TrustPolicy;
use crate::executor::{self, RunOutcome, RunRequest};
use crate::identity::{peer_id_of, NodeKey};
use crate::network::{Client, JobReply};
use crate::registry;
use crate::store::{Store, StoreError};

/// How long a worker waits for its outputs' provider records before it
/// reports the result anyway.
const PROVIDE_BEFORE_REPORT: Duration = Duration::from_secs(3);

/// Most adverts waiting for a free slot (about 1 KiB each).
const BACKLOG_CAP: usize = 10_000;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Concurrent jobs.
    pub slots: u32,
    /// Whom it serves: `Public` (anyone) or `User` (only `owners`).
    pub runner_class: RunnerClass,
    /// Owner keys (for the `user` class).
    pub owners: HashSet<PublicKey>,
    /// Workflows it listens for besides those in its store (run only when
    /// endorsed by a trusted expert).
    pub extra_workflows: Vec<WorkflowId>,
    /// Where job directories are created.
    pub jobs_dir: PathBuf,
}

/// A journal entry, keyed by lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum JournalEntry {
    Running {
        expr: ExprId,
        requester: String,
    },
    Finished {
        expr: ExprId,
        requester: String,
        done: Vec<u8>,
        delivered: bool,
    },
    Interrupted {
        expr: ExprId,
    },
}

impl Wire for JournalEntry {
    const WHAT: &'static str = "worker journal entry";
    const MAX_SIZE: usize = 1024 * 1024;
}

struct Inner {
    client: Client,
    store: Store,
    key: NodeKey,
    trust: TrustPolicy,
    cfg: WorkerConfig,
    free: AtomicU32,
    busy: Mutex<HashSet<ExprId>>,
    /// Runs in progress by expression: the requesters that joined them.
    shared: Mutex<HashMap<ExprId, SharedRun>>,
    running: Mutex<HashMap<LeaseId, CancellationToken>>,
    backlog: Mutex<Backlog>,
    journal: sled::Tree,
    executions: AtomicU64,
    declined: AtomicU64,
}

/// The worker half of the scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A run other requesters can join: who started it, who joined (with their
/// lease and heartbeat task), and who is being offered a join right now.
struct SharedRun {
    primary: PublicKey,
    joined: Vec<(PeerId, LeaseId, tokio::task::JoinHandle<()>)>,
    offering: HashSet<PublicKey>,
    last_line: Arc<Mutex<String>>,
}

/// Returns a slot to the pool when dropped, and offers it to the backlog.
struct Slot(Arc<Inner>, ExprId);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.free.fetch_add(1, Ordering::SeqCst);
        lock(&self.0.busy).remove(&self.1);
        // Offering spawns tasks: only possible inside the runtime (a slot
        // dropped while the runtime shuts down has nobody to offer to).
        if tokio::runtime::Handle::try_current().is_ok() {
            Worker {
                inner: self.0.clone(),
            }
            .drain_backlog();
        }
    }
}

impl Worker {
    /// A worker for this node.
    pub fn new(
        client: Client,
        store: Store,
        key: NodeKey,
        trust: TrustPolicy,
        cfg: WorkerConfig,
    ) -> Result<Self, StoreError> {
        let journal = store.tree("journal")?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                store,
                key,
                trust,
                free: AtomicU32::new(cfg.slots),
                cfg,
                busy: Mutex::default(),
                shared: Mutex::default(),
                running: Mutex::default(),
                backlog: Mutex::new(Backlog::new(BACKLOG_CAP)),
                journal,
                executions: AtomicU64::new(0),
                declined: AtomicU64::new(0),
            }),
        })
    }

    /// Executions started since this process began.
    pub fn executions(&self) -> u64 {
        self.inner.executions.load(Ordering::SeqCst)
    }

    /// Adverts declined since this process began.
    pub fn declined(&self) -> u64 {
        self.inner.declined.load(Ordering::SeqCst)
    }

    /// Free slots now.
    pub fn free_slots(&self) -> u32 {
        self.inner.free.load(Ordering::SeqCst)
    }

    /// Adverts waiting for a free slot.
    pub fn backlog_len(&self) -> usize {
        lock(&self.inner.backlog).len()
    }

    /// Listen for the configured extra workflows (those in the store are
    /// subscribed by the runtime for every node).
    pub async fn subscribe_extra(&self) {
        for id in &self.inner.cfg.extra_workflows {
            if let Err(e) = self.inner.client.subscribe(Topic::jobs(id)).await {
                tracing::warn!(workflow = %id, error = %e, "cannot subscribe to a jobs topic");
            }
        }
    }

    /// Look at the journal after a restart: re-deliver finished results, mark
    /// interrupted runs.
    pub async fn recover(&self) -> Result<(), StoreError> {
        for item in self.inner.journal.iter() {
            let (key, bytes) = item.map_err(|source| StoreError::Db {
                op: "read journal",
                source,
            })?;
            let Ok(entry) = JournalEntry::decode(&bytes) else {
                tracing::warn!(key = %hex::encode(&key), "skipping a corrupt journal entry");
                continue;
            };
            let lease = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8]));
            match entry {
                JournalEntry::Running { expr, requester } => {
                    tracing::warn!(%expr, lease, "job was interrupted by a restart; not re-running it (the requester will reassign)");
                    self.journal_put(lease, &JournalEntry::Interrupted { expr });
                    // Say so at once: the requester retries without waiting
                    // for the lease to expire, and an honest worker that
                    // crashed is not penalised for a broken lease.
                    let this = self.clone();
                    tokio::spawn(async move {
                        let Ok(peer) = requester.parse::<PeerId>() else {
                            return;
                        };
                        let done = JobRequest::Done(Box::new(Done {
                            expr,
                            lease,
                            result: Err(RunFailure {
                                message: "interrupted: the worker restarted".into(),
                                log_tail: String::new(),
                            }),
                        }));
                        this.deliver(peer, done).await;
                    });
                }
                JournalEntry::Finished {
                    expr,
                    requester,
                    done,
                    delivered: false,
                } => {
                    tracing::info!(%expr, lease, "re-delivering a result finished before the restart");
                    let this = self.clone();
                    tokio::spawn(async move {
                        if let (Ok(peer), Ok(done)) =
                            (requester.parse::<PeerId>(), JobRequest::decode(&done))
                        {
                            if this.deliver(peer, done).await {
                                this.journal_put(
                                    lease,
                                    &JournalEntry::Finished {
                                        expr,
                                        requester,
                                        done: Vec::new(),
                                        delivered: true,
                                    },
                                );
                            }
                        }
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn journal_put(&self, lease: LeaseId, entry: &JournalEntry) {
        match entry.encode() {
            Ok(bytes) => {
                if let Err(e) = self.inner.journal.insert(lease.to_be_bytes(), bytes) {
                    tracing::error!(error = %e, "cannot write the worker journal");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a journal entry"),
        }
    }

    /// Why this worker will not take a job, if it will not.
    fn refusal(&self, advert: &JobAdvert) -> Option<DeclineReason> {
        let workflow = advert.expr.workflow;
        match self.inner.cfg.runner_class {
            RunnerClass::Public => {}
            RunnerClass::User
                if self.inner.cfg.owners.contains(&advert.requester)
                    || advert.requester == self.inner.key.public() => {}
            _ => return Some(DeclineReason::NotAllowed),
        }
        let local = registry::is_local(&self.inner.store, &workflow).unwrap_or(false);
        if !local {
            let stored = self
                .inner
                .store
                .endorsements_of(&Subject::Workflow(workflow))
                .unwrap_or_default();
            let endorsed = self
                .inner
                .trust
                .endorsed(&workflow, advert.endorsements.iter().chain(stored.iter()));
            if endorsed.is_none() {
                return Some(DeclineReason::UntrustedWorkflow);
            }
        }
        None
    }

    /// A job advert arrived (gossip).
    pub fn on_advert(&self, advert: JobAdvert) {
        if let Some(reason) = self.refusal(&advert) {
            self.inner.declined.fetch_add(1, Ordering::SeqCst);
            tracing::info!(expr = %advert.expr.id(), ?reason, "not offering");
            return;
        }
        let expr = advert.expr.id();
        if self.offer_join(&advert) || lock(&self.inner.busy).contains(&expr) {
            return;
        }
        if let Some(advert) = self.try_offer(advert) {
            if !lock(&self.inner.backlog).push(advert) {
                tracing::debug!(%expr, "backlog full; the advert waits for its re-publication");
            }
        }
    }

    /// Reserve a slot and offer for `advert`; gives the advert back when no
    /// slot is free.
    fn try_offer(&self, advert: JobAdvert) -> Option<JobAdvert> {
        let expr = advert.expr.id();
        // Reserve a slot for the offer; it is released if not assigned.
        let reserved = self
            .inner
            .free
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok();
        if !reserved {
            return Some(advert);
        }
        if !lock(&self.inner.busy).insert(expr) {
            // Already offering for or running it: nothing more to do.
            self.inner.free.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        let slot = Slot(self.inner.clone(), expr);
        let this = self.clone();
        // Every log line of the run carries its expression.
        let span = tracing::info_span!("run", %expr);
        tokio::spawn(tracing::Instrument::instrument(
            this.offer_and_run(advert, slot),
            span,
        ));
        None
    }

    /// Offer for waiting adverts while slots are free.
    fn drain_backlog(&self) {
        while self.free_slots() > 0 {
            let Some(advert) = lock(&self.inner.backlog).pop(now_ms()) else {
                return;
            };
            if let Some(advert) = self.try_offer(advert) {
                lock(&self.inner.backlog).push(advert);
                return;
            }
        }
    }

    /// The fact for `expr` exists now: its advert no longer needs a worker.
    pub fn on_fact_announce(&self, expr: &ExprId) {
        lock(&self.inner.backlog).remove(expr);
    }

    /// If this worker is already running the advertised expression for another
    /// requester, offer that requester to join the run (no new slot, no second
    /// execution). Returns whether the advert was handled that way.
    fn offer_join(&self, advert: &JobAdvert) -> bool {
        let expr = advert.expr.id();
        let last_line = {
            let mut shared = lock(&self.inner.shared);
            let Some(run) = shared.get_mut(&expr) else {
                return false;
            };
            let known = run.primary == advert.requester
                || run.offering.contains(&advert.requester)
                || run
                    .joined
                    .iter()
                    .any(|(p, _, _)| Some(*p) == peer_id_of(&advert.requester));
            if known {
                return true;
            }
            run.offering.insert(advert.requester);
            run.last_line.clone()
        };
        let Some(requester) = peer_id_of(&advert.requester) else {
            return true;
        };
        let this = self.clone();
        let key = advert.requester;
        tokio::spawn(async move {
            let offer = Offer {
                expr,
                local_input_bytes: 0,
                free_slots: this.free_slots(),
                expected_start_ms: 0,
                running: true,
            };
            let answer = this
                .inner
                .client
                .send_job(requester, JobRequest::Offer(offer))
                .await;
            let mut shared = lock(&this.inner.shared);
            let Some(run) = shared.get_mut(&expr) else {
                // The run ended meanwhile; the requester will find the fact.
                return;
            };
            run.offering.remove(&key);
            if let Ok(JobResponse::Assign(a)) = answer {
                tracing::info!(%expr, %requester, "another requester joined a running job");
                let heartbeat = tokio::spawn(heartbeats(
                    this.inner.client.clone(),
                    requester,
                    expr,
                    a.lease,
                    Duration::from_millis((a.ttl_ms / 3).max(100)),
                    last_line,
                    CancellationToken::new(),
                ));
                run.joined.push((requester, a.lease, heartbeat));
            }
        });
        true
    }

    async fn offer_and_run(self, advert: JobAdvert, slot: Slot) {
        let expr = advert.expr.id();
        let Some(requester) = peer_id_of(&advert.requester) else {
            return;
        };
        let local_input_bytes = advert
            .inputs
            .iter()
            .filter_map(|i| self.inner.store.blob_size(&i.blob))
            .sum();
        let offer = Offer {
            expr,
            local_input_bytes,
            free_slots: self.free_slots() + 1,
            expected_start_ms: 0,
            running: false,
        };
        let assign = match self
            .inner
            .client
            .send_job(requester, JobRequest::Offer(offer))
            .await
        {
            Ok(JobResponse::Assign(a)) if a.expr == expr => a,
            Ok(other) => {
                tracing::debug!(%expr, ?other, "offer not taken");
                return;
            }
            Err(e) => {
                // The requester is unreachable: its other waiting adverts
                // would only hold slots while dials time out.
                let dropped = lock(&self.inner.backlog).remove_requester(&advert.requester);
                tracing::debug!(%expr, error = %e, dropped, "offer failed; requester's waiting adverts dropped");
                return;
            }
        };
        tracing::info!(%expr, lease = assign.lease, %requester, "assigned; running");
        self.journal_put(
            assign.lease,
            &JournalEntry::Running {
                expr,
                requester: requester.to_string(),
            },
        );
        // Durable before the run starts: a restart after a crash must find
        // the run to report it as interrupted.
        let journal = self.inner.journal.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || journal.flush()).await {
            tracing::warn!(error = %e, "cannot flush the worker journal");
        }
        let cancel = CancellationToken::new();
        lock(&self.inner.running).insert(assign.lease, cancel.clone());
        let last_line = Arc::new(Mutex::new(String::new()));
        lock(&self.inner.shared).insert(
            expr,
            SharedRun {
                primary: advert.requester,
                joined: Vec::new(),
                offering: HashSet::new(),
                last_line: last_line.clone(),
            },
        );
        let heartbeat = tokio::spawn(heartbeats(
            self.inner.client.clone(),
            requester,
            expr,
            assign.lease,
            Duration::from_millis((assign.ttl_ms / 3).max(100)),
            last_line.clone(),
            cancel.clone(),
        ));
        let result = self
            .execute(&advert, assign.lease, cancel.clone(), last_line)
            .await;
        // The run is over: the slot takes the next job while the fact is
        // published.
        drop(slot);
        let publish = result.as_ref().ok().cloned();
        if let Some(fact) = &publish {
            self.provide_outputs(fact).await;
        }
        heartbeat.abort();
        lock(&self.inner.running).remove(&assign.lease);
        let joined = lock(&self.inner.shared)
            .remove(&expr)
            .map(|s| s.joined)
            .unwrap_or_default();
        for (peer, lease, heartbeat) in joined {
            heartbeat.abort();
            let done = JobRequest::Done(Box::new(Done {
                expr,
                lease,
                result: result.clone(),
            }));
            let this = self.clone();
            tokio::spawn(async move {
                this.deliver(peer, done).await;
            });
        }
        let done = JobRequest::Done(Box::new(Done {
            expr,
            lease: assign.lease,
            result,
        }));
        let encoded = done.encode().unwrap_or_default();
        self.journal_put(
            assign.lease,
            &JournalEntry::Finished {
                expr,
                requester: requester.to_string(),
                done: encoded,
                delivered: false,
            },
        );
        // The result first, then the fact's record and announcement: queued
        // behind them in the event loop, `Done` took milliseconds longer.
        let delivered = self.deliver(requester, done).await;
        if let Some(fact) = publish {
            self.publish_record(&fact);
        }
        if delivered {
            self.journal_put(
                assign.lease,
                &JournalEntry::Finished {
                    expr,
                    requester: requester.to_string(),
                    done: Vec::new(),
                    delivered: true,
                },
            );
        }
    }

    /// Send `Done`, retrying a few times while the requester is unreachable.
    async fn deliver(&self, requester: PeerId, done: JobRequest) -> bool {
        for attempt in 0..5u32 {
            match self.inner.client.send_job(requester, done.clone()).await {
                Ok(_) => return true,
                Err(e) => {
                    tracing::debug!(%requester, error = %e, attempt, "cannot deliver result yet");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
            }
        }
        false
    }

    async fn execute(
        &self,
        advert: &JobAdvert,
        lease: LeaseId,
        cancel: CancellationToken,
        last_line: Arc<Mutex<String>>,
    ) -> Result<oda_protocol::SignedFact, RunFailure> {
        let fail = |message: String| RunFailure {
            message,
            log_tail: String::new(),
        };
        if let Some(fact) = self.own_fact(&advert.expr.id()) {
            tracing::info!(expr = %fact.body.expr, "computed here before; sending the stored fact");
            return Ok(fact);
        }
        let workflow = self.ensure_workflow(advert).await.map_err(fail)?;
        let manifest = &workflow.manifest;
        executor::supported(&manifest.executor).map_err(fail)?;
        // Inputs: upstream outputs and literal blobs, fetched if missing.
        let mut needed: Vec<BlobId> = advert.inputs.iter().map(|i| i.blob).collect();
        needed.extend(advert.expr.args.values().flat_map(literal_blobs));
        // Each input is kept from eviction until the run is over.
        let mut in_use = Vec::new();
        for blob in needed {
            self.inner
                .client
                .fetch_blob(blob, None, &self.inner.store)
                .await
                .map_err(|e| fail(format!("cannot fetch input {blob}: {e}")))?;
            let guard = self.inner.store.use_blob(&blob).ok_or_else(|| {
                fail(format!(
                    "input {blob} was evicted from the store right after it was fetched (is the blob cap smaller than the job's inputs?)"
                ))
            })?;
            in_use.push((blob, guard));
        }
        let blob_paths: HashMap<BlobId, PathBuf> = in_use
            .iter()
            .map(|(blob, guard)| (*blob, guard.path().to_path_buf()))
            .collect();
        let outputs_of: HashMap<(ExprId, String), BlobId> = advert
            .inputs
            .iter()
            .map(|i| ((i.expr, i.name.clone()), i.blob))
            .collect();
        let job_dir = self.inner.cfg.jobs_dir.join(format!("{lease:016x}"));
        let bundle_dir = job_dir.join("bundle");
        let work_dir = job_dir.join("work");
        let (store, workflow_id, bundle_at) = (
            self.inner.store.clone(),
            advert.expr.workflow,
            bundle_dir.clone(),
        );
        off_async(move || {
            registry::materialise(&store, &workflow_id, &bundle_at)
                .map_err(|e| fail(format!("cannot unpack the workflow: {e}")))
        })
        .await?;
        let (log_tx, mut log_rx) = mpsc::channel::<String>(256);
        let forward = tokio::spawn(async move {
            while let Some(line) = log_rx.recv().await {
                *lock(&last_line) = line;
            }
        });
        self.inner.executions.fetch_add(1, Ordering::SeqCst);
        let report = executor::run(
            RunRequest {
                manifest,
                args: &advert.expr.args,
                outputs_of: &outputs_of,
                blob_paths: &blob_paths,
                bundle_dir: &bundle_dir,
                work_dir: &work_dir,
            },
            cancel,
            Some(log_tx),
        )
        .await;
        forward.abort();
        drop(in_use);
        // Importing the outputs (hashing, fsync), signing, storing, removing
        // the job directory and making the fact durable are blocking work.
        let (this, advert) = (self.clone(), advert.clone());
        off_async(move || {
            let result = this.sign_outcome(&advert, &workflow, report);
            if let Err(e) = std::fs::remove_dir_all(&job_dir) {
                tracing::debug!(dir = %job_dir.display(), error = %e, "cannot remove job dir");
            }
            let fact = result?;
            // Durable before anybody hears of it: a crash must not make this
            // worker forget a fact it has published and reported.
            if let Err(e) = this.inner.store.flush() {
                tracing::warn!(error = %e, "cannot flush the store after a fact");
            }
            Ok(fact)
        })
        .await
    }

    /// A fact this worker signed earlier for `expr`, if its store still has
    /// it and its outputs.
    fn own_fact(&self, expr: &ExprId) -> Option<oda_protocol::SignedFact> {
        let own = self.inner.key.public();
        self.inner
            .store
            .facts_for(expr)
            .ok()?
            .into_iter()
            .find(|f| {
                f.body.worker == own
                    && f.body
                        .output_blobs()
                        .iter()
                        .all(|b| self.inner.store.has_blob(b))
            })
    }

    /// Provide the fact's outputs before its result is reported, so the
    /// requester can fetch them as soon as it has the fact; in a slow or
    /// partitioned mesh the DHT step waits for unreachable peers (tens of
    /// seconds), so after a while the result is reported and providing goes
    /// on in the background.
    async fn provide_outputs(&self, fact: &oda_protocol::SignedFact) {
        let client = self.inner.client.clone();
        let published = fact.clone();
        let provide = tokio::spawn(async move {
            if let Err(e) = client.provide_outputs(&published).await {
                tracing::debug!(error = %e, "providing the outputs partly failed");
            }
        });
        if tokio::time::timeout(PROVIDE_BEFORE_REPORT, provide)
            .await
            .is_err()
        {
            tracing::info!(expr = %fact.body.expr, "providing the outputs is slow; reporting the result first");
        }
    }

    /// Put the fact's DHT record and announce it, in the background once its
    /// result is reported: those steps are not on the job's critical path.
    /// The requester that receives the fact provides it too, so the fact
    /// stays findable if this worker goes away meanwhile.
    fn publish_record(&self, fact: &oda_protocol::SignedFact) {
        lock(&self.inner.backlog).remove(&fact.body.expr);
        let client = self.inner.client.clone();
        let published = fact.clone();
        tokio::spawn(async move {
            if let Err(e) = client.publish_fact_record(&published).await {
                tracing::debug!(error = %e, "publishing the fact partly failed");
            }
        });
    }

    fn sign_outcome(
        &self,
        advert: &JobAdvert,
        workflow: &Workflow,
        report: executor::RunReport,
    ) -> Result<oda_protocol::SignedFact, RunFailure> {
        let fail = |message: String| RunFailure {
            message,
            log_tail: report.log_tail.clone(),
        };
        let (outcome, usage) = match report.outcome {
            RunOutcome::Success { outputs, usage } => {
                let mut refs = BTreeMap::new();
                for (name, path) in outputs {
                    let blob = self
                        .inner
                        .store
                        .import_file(&path)
                        .map_err(|e| fail(format!("cannot store output {name}: {e}")))?;
                    let size = self.inner.store.blob_size(&blob).unwrap_or(0);
                    refs.insert(name, OutputRef { blob, size });
                }
                (Outcome::Success { outputs: refs }, usage)
            }
            RunOutcome::AnalysisError {
                kind,
                message,
                usage,
            } => (Outcome::AnalysisError { kind, message }, usage),
            RunOutcome::Failed { reason } => return Err(fail(reason)),
        };
        let mut inputs = advert.inputs.clone();
        inputs.sort();
        let fact = Fact {
            expr: advert.expr.id(),
            workflow: advert.expr.workflow,
            outcome,
            worker: self.inner.key.public(),
            runner_class: self.inner.cfg.runner_class,
            inputs,
            started_at: report.started_at,
            finished_at: report.finished_at.max(report.started_at),
            usage,
            environment: executor::environment_digest(&workflow.manifest),
        };
        let signed = self
            .inner
            .key
            .secret
            .sign(fact)
            .map_err(|e| fail(format!("cannot sign: {e}")))?;
        self.inner
            .store
            .put_own_fact(&signed)
            .map_err(|e| fail(format!("cannot store the fact: {e}")))?;
        Ok(signed)
    }

    /// The workflow, from the store or fetched from the mesh and verified.
    async fn ensure_workflow(&self, advert: &JobAdvert) -> Result<Workflow, String> {
        let id = advert.expr.workflow;
        if let Some((wf, bundle)) = self.inner.store.workflow(&id).map_err(|e| e.to_string())? {
            if self.inner.store.has_blob(&bundle) {
                return Ok(wf);
            }
            // The record is here but its bundle bytes were evicted: fetch them
            // again (verified against the blob id), so the job can be unpacked.
            self.inner
                .client
                .fetch_blob(bundle, None, &self.inner.store)
                .await
                .map_err(|e| format!("workflow bundle was evicted and cannot be fetched: {e}"))?;
            return Ok(wf);
        }
        self.inner
            .client
            .fetch_blob(advert.bundle, None, &self.inner.store)
            .await
            .map_err(|e| format!("cannot fetch workflow bundle: {e}"))?;
        registry::install_bundle(&self.inner.store, &id, &advert.bundle)
            .map_err(|e| format!("bad workflow bundle: {e}"))
    }

    /// A requester cancelled a lease (job protocol).
    pub async fn on_cancel(&self, cancel: Cancel, reply: JobReply) {
        if let Some(token) = lock(&self.inner.running).get(&cancel.lease) {
            tracing::info!(expr = %cancel.expr, lease = cancel.lease, "cancelled by the requester");
            token.cancel();
        }
        self.inner.client.respond_job(reply, JobResponse::Ack).await;
    }
}

/// Run a step of a job's blocking file work (unpacking, importing outputs,
/// signing, flushing) on the blocking pool.
async fn off_async<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RunFailure> + Send + 'static,
) -> Result<T, RunFailure> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(RunFailure {
            message: format!("a blocking step of the run failed: {e}"),
            log_tail: String::new(),
        })
    })
}

fn literal_blobs(value: &Value) -> Vec<BlobId> {
    match value {
        Value::Blob(b) => vec![*b],
        Value::List(items) => items.iter().flat_map(literal_blobs).collect(),
        _ => Vec::new(),
    }
}

/// Send progress heartbeats until aborted; a `Decline` means the requester no
/// longer wants the job, so the run is cancelled.
async fn heartbeats(
    client: Client,
    requester: PeerId,
    expr: ExprId,
    lease: LeaseId,
    every: Duration,
    last_line: Arc<Mutex<String>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let message = std::mem::take(&mut *lock(&last_line));
        let progress = JobRequest::Progress(Progress {
            expr,
            lease,
            fraction: None,
            message,
        });
        match client.send_job(requester, progress).await {
            Ok(JobResponse::Decline(_)) => {
                tracing::info!(%expr, lease, "requester no longer wants this job; cancelling");
                cancel.cancel();
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%expr, error = %e, "heartbeat failed"),
        }
    }
}
