//! The requester: resolves expressions cache-first, then by scheduling compute.
//!
//! `resolve(E)`: (1) a local fact the trust policy accepts; (2) facts from the
//! mesh (DHT record + providers) the policy accepts; (3) otherwise resolve the
//! `Output` inputs first, in parallel and recursively; (4) advertise on the
//! workflow's jobs topic, collect offers for a window, assign the best trusted
//! worker under a lease renewed by its heartbeats; a lease that expires or an
//! unhandled failure re-assigns elsewhere with back-off, up to a bounded number
//! of attempts, then fails with the whole attempt history. While every worker
//! is busy the job waits advertised (re-published less and less often) for up
//! to `offer_timeout_ms`; only then does it fail for want of a worker.
//!
//! Single-flight: concurrent requests for one expression on this node share one
//! resolution; an expression another requester is already advertising is joined
//! (wait for its fact) before advertising it ourselves.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use libp2p::PeerId;
use oda_protocol::messages::{
    Assign, Cancel, DeclineReason, Done, Gossip, JobAdvert, JobResponse, LeaseId, Offer, Progress,
};
use oda_protocol::names::Topic;
use oda_protocol::{ExprId, Expression, Outcome, ResolvedInput, SignedFact, Subject};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::jobs::{now_ms, Attempt, JobId, JobRecord, JobState, JobStore};
use super::trust::TrustPolicy;
use super::worker::Worker;
use super::SchedulerConfig;
use crate::identity::{peer_id_of, public_key_of, NodeKey};
use crate::network::scoring::Offence;
use crate::network::{Client, JobReply, NetworkError};
use crate::store::{Store, StoreError};

/// A resolved expression.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The accepted fact.
    pub fact: SignedFact,
    /// Whether it came from a cache without computing here and now.
    pub from_cache: bool,
}

/// Why an expression could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The expression is not in the store.
    #[error("expression {0} is unknown to this node; submit it first")]
    UnknownExpression(ExprId),
    /// The workflow is not in the store.
    #[error("workflow {0} is unknown to this node; add it with `oda workflow add`")]
    UnknownWorkflow(String),
    /// An input expression failed.
    #[error("input {expr} failed: {reason}")]
    Input {
        /// The input expression.
        expr: ExprId,
        /// Why.
        reason: String,
    },
    /// Every attempt failed.
    #[error("all {} attempts failed: {}", attempts.len(), summary(attempts))]
    Exhausted {
        /// The attempts.
        attempts: Vec<Attempt>,
    },
    /// No trusted worker offered while the job was advertised.
    #[error("no trusted worker offered within {waited_s} s (is a worker that has or trusts this workflow online, and is its key in [trust] keys?){}", earlier(attempts))]
    NoOffer {
        /// How long the job was advertised, s.
        waited_s: u64,
        /// Failed attempts before that.
        attempts: Vec<Attempt>,
    },
    /// Cancelled.
    #[error("cancelled")]
    Cancelled,
    /// Local storage failed.
    #[error("store: {0}")]
    Store(String),
}

fn summary(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("[{}: {}]", short_peer(&a.worker), a.outcome))
        .collect::<Vec<_>>()
        .join(" ")
}

fn earlier(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        String::new()
    } else {
        format!("; earlier attempts: {}", summary(attempts))
    }
}

/// Re-publication of an unanswered advert slows down to this interval.
const READVERTISE_MAX: Duration = Duration::from_secs(30);
/// Most mesh lookups in flight at once. Each is two Kademlia queries, and
/// libp2p polls every open query on each event: thousands of jobs submitted
/// at once would otherwise spend their time walking the query pool.
const CONCURRENT_LOOKUPS: usize = 32;

/// An advert that could not be published at all is retried this soon.
const UNPUBLISHED_RETRY: Duration = Duration::from_millis(500);

fn short_peer(p: &str) -> &str {
    &p[p.len().saturating_sub(8)..]
}

impl From<StoreError> for ResolveError {
    fn from(e: StoreError) -> Self {
        ResolveError::Store(e.to_string())
    }
}

type SharedResolution = Shared<BoxFuture<'static, Result<Resolved, ResolveError>>>;

/// An offer waiting for the requester's decision.
struct OfferIn {
    peer: PeerId,
    offer: Offer,
    reply: JobReply,
}

/// What the assigned worker reported.
enum LeaseEvent {
    Progress(Progress),
    Done(Box<Done>, PeerId),
}

/// A change visible to API clients.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// A job's record changed.
    State(JobRecord),
    /// A log line from the worker running the job's expression.
    Log {
        /// The job.
        job: JobId,
        /// The line.
        line: String,
    },
}

/// How many log lines are kept per expression for `logs`.
const LOG_LINES: usize = 500;

struct Inner {
    client: Client,
    store: Store,
    jobs: JobStore,
    key: NodeKey,
    trust: TrustPolicy,
    cfg: SchedulerConfig,
    inflight: Mutex<HashMap<(ExprId, bool), SharedResolution>>,
    attached: Mutex<HashMap<ExprId, BTreeSet<JobId>>>,
    offers: Mutex<HashMap<ExprId, mpsc::Sender<OfferIn>>>,
    leases: Mutex<HashMap<(ExprId, LeaseId), mpsc::Sender<LeaseEvent>>>,
    /// Every lease this process issued; a lease not in here was issued
    /// before a restart.
    issued: Mutex<HashSet<LeaseId>>,
    /// Expressions some worker is still computing under a lease issued
    /// before a restart: when its last heartbeat came, Unix ms.
    adopted: Mutex<HashMap<ExprId, u64>>,
    cancels: Mutex<HashMap<ExprId, CancellationToken>>,
    logs: Mutex<HashMap<ExprId, VecDeque<String>>>,
    foreign_adverts: Mutex<HashMap<ExprId, u64>>,
    announced: broadcast::Sender<ExprId>,
    events: broadcast::Sender<JobEvent>,
    lookups: tokio::sync::Semaphore,
    /// This node's own worker, which hears every advert as gossip would
    /// bring it (gossip never delivers to its publisher) and competes in
    /// the same auction.
    local_worker: Option<Worker>,
}

/// The requester half of the scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Requester {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere already; the maps stay usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Requester {
    /// A requester for this node.
    pub fn new(
        client: Client,
        store: Store,
        key: NodeKey,
        trust: TrustPolicy,
        cfg: SchedulerConfig,
        local_worker: Option<Worker>,
    ) -> Result<Self, StoreError> {
        let jobs = JobStore::open(&store)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                store,
                jobs,
                key,
                trust,
                cfg,
                inflight: Mutex::default(),
                attached: Mutex::default(),
                offers: Mutex::default(),
                leases: Mutex::default(),
                issued: Mutex::default(),
                adopted: Mutex::default(),
                cancels: Mutex::default(),
                logs: Mutex::default(),
                foreign_adverts: Mutex::default(),
                announced: broadcast::channel(256).0,
                events: broadcast::channel(1024).0,
                lookups: tokio::sync::Semaphore::new(CONCURRENT_LOOKUPS),
                local_worker,
            }),
        })
    }

    /// Subscribe to job changes and log lines.
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    /// Store `expression` and start a job evaluating it. Both are durable
    /// when this returns. Blocks on disk I/O (call it off the async threads).
    pub fn submit(&self, expression: &Expression, no_cache: bool) -> Result<JobRecord, StoreError> {
        let expr = self.inner.store.put_expr(expression)?;
        let now = now_ms();
        let record = JobRecord {
            id: JobId::random(),
            expr,
            state: JobState::Queued,
            attempts: Vec::new(),
            created_at: now,
            updated_at: now,
            fact: None,
            from_cache: false,
            error: None,
            no_cache,
        };
        self.inner.jobs.put(&record)?;
        // The caller is about to hand out the job id: the job and its
        // expression must survive a crash (sled flushes only every 500 ms).
        self.inner.store.flush()?;
        self.start(record.clone());
        Ok(record)
    }

    /// Resume every unfinished job (after a restart).
    pub fn resume(&self) -> Result<usize, StoreError> {
        let unfinished: Vec<JobRecord> = self
            .inner
            .jobs
            .all()?
            .into_iter()
            .filter(|r| !r.state.is_terminal())
            .collect();
        let n = unfinished.len();
        for record in unfinished {
            tracing::info!(job = %record.id, expr = %record.expr, state = record.state.name(), "resuming job");
            self.start(record);
        }
        Ok(n)
    }

    fn start(&self, record: JobRecord) {
        lock(&self.inner.attached)
            .entry(record.expr)
            .or_default()
            .insert(record.id);
        let this = self.clone();
        // Every log line of the job carries its id and expression.
        let span = tracing::info_span!("job", job = %record.id, expr = %record.expr);
        tokio::spawn(tracing::Instrument::instrument(this.drive(record), span));
    }

    async fn drive(self, record: JobRecord) {
        let result = self.resolve_shared(record.expr, record.no_cache).await;
        if let Some(set) = lock(&self.inner.attached).get_mut(&record.expr) {
            set.remove(&record.id);
        }
        let updated = self.inner.jobs.update(&record.id, |r| {
            if r.state == JobState::Cancelled {
                return;
            }
            match &result {
                Ok(resolved) => {
                    r.fact = Some(resolved.fact.id());
                    r.from_cache = resolved.from_cache;
                    match &resolved.fact.body.outcome {
                        Outcome::Success { .. } => r.state = JobState::Done,
                        Outcome::AnalysisError { kind, message } => {
                            r.state = JobState::Failed;
                            r.error = Some(format!("analysis error {kind}: {message}"));
                        }
                    }
                }
                Err(ResolveError::Cancelled) => r.state = JobState::Cancelled,
                Err(e) => {
                    r.state = JobState::Failed;
                    r.error = Some(e.to_string());
                }
            }
        });
        match updated {
            Ok(Some(r)) => {
                tracing::info!(job = %r.id, state = r.state.name(), from_cache = r.from_cache, "job finished");
                let _ = self.inner.events.send(JobEvent::State(r));
            }
            Ok(None) => {}
            Err(e) => tracing::error!(job = %record.id, error = %e, "cannot record job result"),
        }
    }

    /// A job's record.
    pub fn status(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.inner.jobs.get(id)
    }

    /// How many jobs are in each state (kept as records change; no scan).
    pub fn tally(&self) -> super::jobs::JobTally {
        self.inner.jobs.tally()
    }

    /// All job records, oldest first.
    pub fn list(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.jobs.all()
    }

    /// Wait until a job is terminal, or `timeout` passes (then the current record).
    pub async fn wait(
        &self,
        id: &JobId,
        timeout: Duration,
    ) -> Result<Option<JobRecord>, StoreError> {
        let mut events = self.events();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let record = self.status(id)?;
            match &record {
                Some(r) if !r.state.is_terminal() => {}
                _ => return Ok(record),
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return self.status(id),
                Ok(Err(broadcast::error::RecvError::Closed)) => return self.status(id),
                Ok(_) => {}
            }
        }
    }

    /// Recent log lines of a job's expression.
    pub fn logs(&self, id: &JobId) -> Result<Vec<String>, StoreError> {
        let Some(record) = self.status(id)? else {
            return Ok(Vec::new());
        };
        Ok(lock(&self.inner.logs)
            .get(&record.expr)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default())
    }

    /// Cancel a job. The shared resolution stops when no other job waits for it.
    pub fn cancel(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let updated = self.inner.jobs.update(id, |r| {
            if !r.state.is_terminal() {
                r.state = JobState::Cancelled;
            }
        })?;
        if let Some(r) = &updated {
            let others = {
                let mut attached = lock(&self.inner.attached);
                let set = attached.entry(r.expr).or_default();
                set.remove(id);
                set.len()
            };
            if others == 0 {
                if let Some(token) = lock(&self.inner.cancels).get(&r.expr) {
                    token.cancel();
                }
            }
            let _ = self.inner.events.send(JobEvent::State(r.clone()));
        }
        Ok(updated)
    }

    fn resolve_shared(&self, expr: ExprId, no_cache: bool) -> SharedResolution {
        let mut inflight = lock(&self.inner.inflight);
        if let Some(existing) = inflight.get(&(expr, no_cache)) {
            return existing.clone();
        }
        let this = self.clone();
        let fut = async move {
            let token = CancellationToken::new();
            lock(&this.inner.cancels).insert(expr, token.clone());
            let result = this.resolve(expr, no_cache, token).await;
            lock(&this.inner.cancels).remove(&expr);
            lock(&this.inner.inflight).remove(&(expr, no_cache));
            result
        }
        .boxed()
        .shared();
        inflight.insert((expr, no_cache), fut.clone());
        fut
    }

    fn set_state(&self, expr: &ExprId, state: JobState) {
        let ids: Vec<JobId> = lock(&self.inner.attached)
            .get(expr)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            match self.inner.jobs.update(&id, |r| {
                if !r.state.is_terminal() {
                    r.state = state.clone();
                }
            }) {
                Ok(Some(r)) => {
                    let _ = self.inner.events.send(JobEvent::State(r));
                }
                Ok(None) => {}
                Err(e) => tracing::error!(job = %id, error = %e, "cannot update job state"),
            }
        }
    }

    fn add_attempt(&self, expr: &ExprId, attempt: Attempt) {
        let ids: Vec<JobId> = lock(&self.inner.attached)
            .get(expr)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            if let Err(e) = self
                .inner
                .jobs
                .update(&id, |r| r.attempts.push(attempt.clone()))
            {
                tracing::error!(job = %id, error = %e, "cannot record attempt");
            }
        }
    }

    fn push_log(&self, expr: &ExprId, line: String) {
        {
            let mut logs = lock(&self.inner.logs);
            let buf = logs.entry(*expr).or_default();
            if buf.len() >= LOG_LINES {
                buf.pop_front();
            }
            buf.push_back(line.clone());
        }
        let ids: Vec<JobId> = lock(&self.inner.attached)
            .get(expr)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for job in ids {
            let _ = self.inner.events.send(JobEvent::Log {
                job,
                line: line.clone(),
            });
        }
    }

    /// The best trusted fact among `facts`: successes before analysis errors.
    fn pick_trusted(&self, facts: &[SignedFact]) -> Option<SignedFact> {
        let mut trusted: Vec<&SignedFact> = facts
            .iter()
            .filter(|f| self.inner.trust.accepts(f))
            .collect();
        trusted.sort_by_key(|f| !matches!(f.body.outcome, Outcome::Success { .. }));
        trusted.first().map(|f| (*f).clone())
    }

    fn resolve(
        &self,
        expr: ExprId,
        no_cache: bool,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Resolved, ResolveError>> {
        let this = self.clone();
        async move {
            let expression = this
                .inner
                .store
                .expr(&expr)?
                .ok_or(ResolveError::UnknownExpression(expr))?;
            if !no_cache {
                if let Some(fact) = this.pick_trusted(&this.inner.store.facts_for(&expr)?) {
                    tracing::debug!(%expr, "served from the local store");
                    return Ok(Resolved {
                        fact,
                        from_cache: true,
                    });
                }
                if let Some(found) = this.mesh_lookup(expr).await? {
                    return Ok(found);
                }
            }
            let deps = expression.dependencies();
            let mut inputs = Vec::new();
            let mut input_bytes = 0;
            if !deps.is_empty() {
                this.set_state(&expr, JobState::ResolvingInputs);
                let results =
                    futures::future::join_all(deps.iter().map(|d| this.resolve_shared(*d, false)))
                        .await;
                let mut by_expr = HashMap::new();
                for (dep, result) in deps.iter().zip(results) {
                    let resolved = result.map_err(|e| ResolveError::Input {
                        expr: *dep,
                        reason: e.to_string(),
                    })?;
                    by_expr.insert(*dep, resolved.fact);
                }
                for (dep, name) in expression.output_refs() {
                    let fact = &by_expr[&dep];
                    let output = match &fact.body.outcome {
                        Outcome::Success { outputs } => {
                            outputs.get(&name).ok_or_else(|| ResolveError::Input {
                                expr: dep,
                                reason: format!("it has no output named {name:?}"),
                            })?
                        }
                        Outcome::AnalysisError { kind, message } => {
                            return Err(ResolveError::Input {
                                expr: dep,
                                reason: format!("analysis error {kind}: {message}"),
                            })
                        }
                    };
                    input_bytes += output.size;
                    inputs.push(ResolvedInput {
                        expr: dep,
                        name,
                        blob: output.blob,
                    });
                }
                inputs.sort();
            }
            if cancel.is_cancelled() {
                return Err(ResolveError::Cancelled);
            }
            this.compute(expression, (inputs, input_bytes), cancel)
                .await
        }
        .boxed()
    }

    async fn mesh_lookup(&self, expr: ExprId) -> Result<Option<Resolved>, ResolveError> {
        let Ok(_permit) = self.inner.lookups.acquire().await else {
            return Ok(None);
        };
        // A trusted success ends the lookup at once; otherwise every fact
        // found is considered (an analysis error, untrusted signers).
        let trust = &self.inner.trust;
        let facts = self
            .inner
            .client
            .lookup_facts_until(expr, |f| {
                trust.accepts(f) && matches!(f.body.outcome, Outcome::Success { .. })
            })
            .await;
        let Some(fact) = self.pick_trusted(&facts) else {
            if !facts.is_empty() {
                tracing::info!(%expr, n = facts.len(), "mesh has facts, none by a trusted signer");
            }
            return Ok(None);
        };
        self.inner.store.put_fact(&fact)?;
        // Keep it and say so: the next ask from a neighbour is one
        // request-response away.
        self.inner.client.announce_facts_held(&expr).await;
        tracing::debug!(%expr, "served from the mesh cache");
        Ok(Some(Resolved {
            fact,
            from_cache: true,
        }))
    }

    /// Schedule `expression` on a worker; `inputs` are its resolved `Output`
    /// arguments and their total size in bytes.
    async fn compute(
        &self,
        expression: Expression,
        (inputs, input_bytes): (Vec<ResolvedInput>, u64),
        cancel: CancellationToken,
    ) -> Result<Resolved, ResolveError> {
        let expr = expression.id();
        let (workflow, bundle) = self
            .inner
            .store
            .workflow(&expression.workflow)?
            .ok_or_else(|| ResolveError::UnknownWorkflow(expression.workflow.to_string()))?;
        let topic = Topic::jobs(&expression.workflow);
        if let Err(e) = self.inner.client.subscribe(topic.clone()).await {
            tracing::debug!(error = %e, "cannot subscribe to the jobs topic");
        }
        let endorsements = self
            .inner
            .store
            .endorsements_of(&Subject::Workflow(expression.workflow))?
            .into_iter()
            .take(JobAdvert::MAX_ENDORSEMENTS)
            .collect();
        let advert = JobAdvert {
            expr: expression.clone(),
            inputs,
            requester: self.inner.key.public(),
            requirements: workflow.manifest.resources.clone(),
            deadline: 0,
            priority: 0,
            token: None,
            bundle,
            endorsements,
        };
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut excluded: HashSet<PeerId> = HashSet::new();
        let cfg = &self.inner.cfg;
        while attempts.len() < cfg.max_attempts as usize {
            if !attempts.is_empty() {
                let backoff = Duration::from_millis(cfg.backoff_ms << (attempts.len() - 1).min(6));
                tokio::select! {
                    _ = cancel.cancelled() => return Err(ResolveError::Cancelled),
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            if let Some(found) = self.join_foreign(expr, &cancel).await? {
                return Ok(found);
            }
            self.set_state(&expr, JobState::Advertised);
            let chosen = self
                .advertise_and_choose(&topic, (&advert, input_bytes), &excluded, &cancel)
                .await?;
            let (worker, reply) = match chosen {
                Choice::Worker(worker, reply) => (worker, reply),
                Choice::Found(found) => return Ok(*found),
                Choice::Nobody => {
                    return Err(ResolveError::NoOffer {
                        waited_s: cfg.offer_timeout_ms / 1000,
                        attempts,
                    })
                }
            };
            let started_at = now_ms();
            match self
                .run_lease(expr, worker, reply, &cancel, (&topic, &advert))
                .await
            {
                LeaseEnd::Fact(fact) => {
                    self.inner.store.put_fact(&fact)?;
                    self.inner.client.announce_facts_held(&expr).await;
                    return Ok(Resolved {
                        fact: *fact,
                        from_cache: false,
                    });
                }
                LeaseEnd::Cancelled => return Err(ResolveError::Cancelled),
                LeaseEnd::Failed { outcome, log_tail } => {
                    tracing::warn!(%expr, %worker, %outcome, "attempt failed");
                    excluded.insert(worker);
                    let attempt = Attempt {
                        worker: worker.to_string(),
                        started_at,
                        ended_at: now_ms(),
                        outcome,
                        log_tail,
                    };
                    self.add_attempt(&expr, attempt.clone());
                    attempts.push(attempt);
                }
            }
        }
        Err(ResolveError::Exhausted { attempts })
    }

    /// If another requester is advertising `expr`, wait for its fact (up to the
    /// lease TTL) instead of advertising a duplicate.
    async fn join_foreign(
        &self,
        expr: ExprId,
        cancel: &CancellationToken,
    ) -> Result<Option<Resolved>, ResolveError> {
        let until = lock(&self.inner.foreign_adverts).get(&expr).copied();
        let Some(until) = until.filter(|u| *u > now_ms()) else {
            return Ok(None);
        };
        tracing::info!(%expr, "another requester is computing this; waiting for its fact");
        let mut announced = self.inner.announced.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(until - now_ms());
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(ResolveError::Cancelled),
                _ = tokio::time::sleep_until(deadline) => return self.mesh_lookup(expr).await,
                got = announced.recv() => match got {
                    Ok(e) if e == expr => {
                        if let Some(found) = self.mesh_lookup(expr).await? {
                            return Ok(Some(found));
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(None),
                },
            }
        }
    }

    /// Publish the advert (repeatedly, less often each time, until offers
    /// come), collect offers for the window after the first, and pick the best
    /// trusted one not excluded (falling back to excluded workers when nobody
    /// else offers). See [`window_close`] for when the window closes early.
    async fn advertise_and_choose(
        &self,
        topic: &Topic,
        (advert, input_bytes): (&JobAdvert, u64),
        excluded: &HashSet<PeerId>,
        cancel: &CancellationToken,
    ) -> Result<Choice, ResolveError> {
        let expr = advert.expr.id();
        let mut announced = self.inner.announced.subscribe();
        let (tx, mut rx) = mpsc::channel(64);
        lock(&self.inner.offers).insert(expr, tx);
        let cfg = &self.inner.cfg;
        let give_up = tokio::time::Instant::now() + Duration::from_millis(cfg.offer_timeout_ms);
        let mut window_end: Option<tokio::time::Instant> = None;
        let mut offers: Vec<OfferIn> = Vec::new();
        let mut every = Duration::from_millis(cfg.readvertise_ms);
        let mut next_publish = tokio::time::Instant::now();
        let mut last_publish = next_publish;
        loop {
            let deadline = window_end.unwrap_or(give_up);
            tokio::select! {
                _ = cancel.cancelled() => {
                    lock(&self.inner.offers).remove(&expr);
                    self.decline_all(offers).await;
                    return Err(ResolveError::Cancelled);
                }
                _ = tokio::time::sleep_until(deadline) => break,
                // Somebody computed it meanwhile (for example a worker that
                // finished a lease this node lost in a restart): use that fact.
                Ok(e) = announced.recv() => {
                    if e != expr {
                        continue;
                    }
                    let local = self.pick_trusted(&self.inner.store.facts_for(&expr)?);
                    let found = match local {
                        Some(fact) => Some(Resolved { fact, from_cache: true }),
                        None => self.mesh_lookup(expr).await?,
                    };
                    if let Some(found) = found {
                        lock(&self.inner.offers).remove(&expr);
                        self.decline_all(offers).await;
                        return Ok(Choice::Found(Box::new(found)));
                    }
                }
                _ = tokio::time::sleep_until(next_publish), if window_end.is_none() => {
                    // Busy workers keep the advert in their backlog until its
                    // deadline; each re-publication extends it, and the fresh
                    // deadline makes it a new gossip message (ids are content
                    // hashes) for workers that missed it or just subscribed.
                    let mut fresh = advert.clone();
                    let left = give_up.saturating_duration_since(tokio::time::Instant::now());
                    fresh.deadline = now_ms() + (every * 2).min(left).as_millis() as u64;
                    // The local worker hears it as a peer would; for the
                    // schedule it counts as a subscriber that received it.
                    let local = match &self.inner.local_worker {
                        Some(worker) => {
                            worker.on_advert(fresh.clone());
                            true
                        }
                        None => false,
                    };
                    let message = Gossip::JobAdvert(Box::new(fresh));
                    let published = match self.inner.client.publish(topic.clone(), message).await {
                        Err(NetworkError::NoSubscribers(_)) if local => Ok(()),
                        other => other,
                    };
                    match published {
                        Ok(()) => {
                            last_publish = tokio::time::Instant::now();
                            next_publish += every;
                            every = (every * 2).min(READVERTISE_MAX);
                        }
                        // Nobody received it (no subscriber known yet): try
                        // again soon, without backing off.
                        Err(e) => {
                            tracing::debug!(%expr, error = %e, "advert not published yet");
                            next_publish = tokio::time::Instant::now() + every.min(UNPUBLISHED_RETRY);
                        }
                    }
                }
                Some(offer) = rx.recv() => {
                    let trusted = public_key_of(&offer.peer).is_some_and(|k| self.inner.trust.trusts_worker(&k));
                    if !trusted {
                        tracing::debug!(peer = %offer.peer, "declining an offer from an untrusted worker");
                        self.inner.client.respond_job(offer.reply, JobResponse::Decline(DeclineReason::NotAllowed)).await;
                        continue;
                    }
                    // A worker still runs it under a lease from before a
                    // restart: wait for that result instead of a second run.
                    let adopted = lock(&self.inner.adopted).get(&expr).copied();
                    if adopted.is_some_and(|seen| now_ms() < seen + cfg.lease_ttl_ms) {
                        self.inner.client.respond_job(offer.reply, JobResponse::Decline(DeclineReason::NotNeeded)).await;
                        continue;
                    }
                    if offer.offer.running {
                        offers.push(offer);
                        break;
                    }
                    let ideal = !excluded.contains(&offer.peer) && offer.offer.local_input_bytes >= input_bytes;
                    offers.push(offer);
                    let end = window_close(ideal, last_publish, Duration::from_millis(cfg.offer_window_ms));
                    window_end = Some(window_end.map_or(end, |e| e.min(end)));
                }
            }
        }
        lock(&self.inner.offers).remove(&expr);
        // Late offers still queued get declined too.
        while let Ok(o) = rx.try_recv() {
            offers.push(o);
        }
        if offers.is_empty() {
            return Ok(Choice::Nobody);
        }
        // A worker already running the expression is joined; otherwise prefer
        // workers that did not fail this job, hold more input bytes, have more
        // free slots.
        offers.sort_by_key(|o| offer_rank(&o.offer, excluded.contains(&o.peer)));
        let best = offers.remove(0);
        self.decline_all(offers).await;
        Ok(Choice::Worker(best.peer, best.reply))
    }

    async fn decline_all(&self, offers: Vec<OfferIn>) {
        for o in offers {
            self.inner
                .client
                .respond_job(o.reply, JobResponse::Decline(DeclineReason::NotNeeded))
                .await;
        }
    }

    async fn run_lease(
        &self,
        expr: ExprId,
        worker: PeerId,
        reply: JobReply,
        cancel: &CancellationToken,
        (topic, advert): (&Topic, &JobAdvert),
    ) -> LeaseEnd {
        let lease: LeaseId = rand::random();
        lock(&self.inner.issued).insert(lease);
        let ttl = self.inner.cfg.lease_ttl_ms;
        // While the job runs, keep telling the mesh it is being computed, so
        // other requesters join it instead of computing it again (workers that
        // offer meanwhile are declined).
        let still_computing = {
            let client = self.inner.client.clone();
            let (topic, mut advert) = (topic.clone(), advert.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(ttl));
                every.tick().await;
                loop {
                    every.tick().await;
                    advert.deadline = now_ms() + ttl;
                    let message = Gossip::JobAdvert(Box::new(advert.clone()));
                    if let Err(e) = client.publish(topic.clone(), message).await {
                        tracing::debug!(error = %e, "in-progress advert not published");
                    }
                }
            })
        };
        let (tx, mut rx) = mpsc::channel(64);
        lock(&self.inner.leases).insert((expr, lease), tx);
        self.inner
            .client
            .respond_job(
                reply,
                JobResponse::Assign(Assign {
                    expr,
                    lease,
                    ttl_ms: ttl,
                }),
            )
            .await;
        self.set_state(
            &expr,
            JobState::Assigned {
                worker: worker.to_string(),
            },
        );
        let end = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let cancel_msg = oda_protocol::messages::JobRequest::Cancel(Cancel { expr, lease });
                    if let Err(e) = self.inner.client.send_job(worker, cancel_msg).await {
                        tracing::debug!(%worker, error = %e, "cannot tell the worker to cancel");
                    }
                    break LeaseEnd::Cancelled;
                }
                event = tokio::time::timeout(Duration::from_millis(ttl), rx.recv()) => match event {
                    Err(_) | Ok(None) => {
                        self.inner.client.penalise(worker, Offence::BrokenLease).await;
                        break LeaseEnd::Failed { outcome: format!("lease expired: no heartbeat for {} ms", ttl), log_tail: String::new() };
                    }
                    Ok(Some(LeaseEvent::Progress(p))) => {
                        self.set_state(&expr, JobState::Running { worker: worker.to_string() });
                        if !p.message.is_empty() {
                            self.push_log(&expr, p.message);
                        }
                    }
                    Ok(Some(LeaseEvent::Done(done, from))) => match done.result {
                        Ok(fact) => match self.check_result(&expr, &fact, &from) {
                            Ok(()) => break LeaseEnd::Fact(Box::new(fact)),
                            Err(reason) => {
                                self.inner.client.penalise(from, Offence::BadMessage).await;
                                break LeaseEnd::Failed { outcome: format!("invalid result: {reason}"), log_tail: String::new() };
                            }
                        },
                        Err(failure) => break LeaseEnd::Failed { outcome: failure.message, log_tail: failure.log_tail },
                    },
                },
            }
        };
        still_computing.abort();
        lock(&self.inner.leases).remove(&(expr, lease));
        end
    }

    fn check_result(&self, expr: &ExprId, fact: &SignedFact, from: &PeerId) -> Result<(), String> {
        fact.verify_for(expr).map_err(|e| e.to_string())?;
        if peer_id_of(&fact.body.worker).as_ref() != Some(from) {
            return Err("fact signed by a key other than the sender's".into());
        }
        if !self.inner.trust.accepts(fact) {
            return Err("fact signer is not trusted".into());
        }
        Ok(())
    }

    /// An offer from a worker (network event).
    pub async fn on_offer(&self, peer: PeerId, offer: Offer, reply: JobReply) {
        let tx = lock(&self.inner.offers).get(&offer.expr).cloned();
        match tx {
            Some(tx) => {
                if let Err(mpsc::error::SendError(o)) =
                    tx.send(OfferIn { peer, offer, reply }).await
                {
                    self.inner
                        .client
                        .respond_job(o.reply, JobResponse::Decline(DeclineReason::NotNeeded))
                        .await;
                }
            }
            None => {
                self.inner
                    .client
                    .respond_job(reply, JobResponse::Decline(DeclineReason::NotNeeded))
                    .await
            }
        }
    }

    /// A heartbeat from a worker (network event).
    pub async fn on_progress(&self, progress: Progress, reply: JobReply) {
        let (expr, lease) = (progress.expr, progress.lease);
        let tx = lock(&self.inner.leases)
            .get(&(progress.expr, progress.lease))
            .cloned();
        let response = match tx {
            Some(tx) if tx.send(LeaseEvent::Progress(progress)).await.is_ok() => JobResponse::Ack,
            // A lease issued before this node restarted, for an expression it
            // still wants: let the run finish; its `Done` is kept (see
            // `on_done`) instead of computing the expression again.
            None if !lock(&self.inner.issued).contains(&lease) && self.wants(&expr) => {
                lock(&self.inner.adopted).insert(expr, now_ms());
                JobResponse::Ack
            }
            _ => JobResponse::Decline(DeclineReason::NotNeeded),
        };
        self.inner.client.respond_job(reply, response).await;
    }

    /// Whether a job that is not finished waits for `expr` (directly or as
    /// an input), including jobs not yet resumed after a restart.
    fn wants(&self, expr: &ExprId) -> bool {
        if lock(&self.inner.attached)
            .get(expr)
            .is_some_and(|jobs| !jobs.is_empty())
            || lock(&self.inner.inflight).keys().any(|(e, _)| e == expr)
        {
            return true;
        }
        self.inner
            .jobs
            .all()
            .map(|all| {
                all.iter()
                    .any(|r| r.expr == *expr && !r.state.is_terminal())
            })
            .unwrap_or(false)
    }

    /// A result from a worker (network event). A valid trusted fact for an
    /// expression this node needs is kept even if its lease is gone (for
    /// example after this node restarted).
    pub async fn on_done(&self, peer: PeerId, done: Done, reply: JobReply) {
        self.inner.client.respond_job(reply, JobResponse::Ack).await;
        let tx = lock(&self.inner.leases)
            .get(&(done.expr, done.lease))
            .cloned();
        if let Some(tx) = tx {
            let _ = tx.send(LeaseEvent::Done(Box::new(done), peer)).await;
            return;
        }
        lock(&self.inner.adopted).remove(&done.expr);
        if let Ok(fact) = &done.result {
            if self.check_result(&done.expr, fact, &peer).is_ok() {
                if let Err(e) = self.inner.store.put_fact(fact) {
                    tracing::warn!(error = %e, "cannot store a late result");
                }
                let _ = self.inner.announced.send(done.expr);
            }
        }
    }

    /// Another requester's advert (gossip): remember it for single-flight.
    pub fn on_foreign_advert(&self, advert: &JobAdvert) {
        if advert.requester == self.inner.key.public() {
            return;
        }
        let until = now_ms() + self.inner.cfg.lease_ttl_ms * 2;
        lock(&self.inner.foreign_adverts).insert(advert.expr.id(), until);
    }

    /// A fact announcement (gossip).
    pub fn on_fact_announce(&self, expr: ExprId) {
        lock(&self.inner.foreign_adverts).remove(&expr);
        let _ = self.inner.announced.send(expr);
    }
}

/// How an offer ranks, best first: a worker already running the expression
/// (joining it costs nothing), then one that did not fail this job before,
/// then the one holding more input bytes, with more free slots, starting
/// sooner.
fn offer_rank(offer: &Offer, failed_before: bool) -> impl Ord {
    (
        !offer.running,
        failed_before,
        std::cmp::Reverse(offer.local_input_bytes),
        std::cmp::Reverse(offer.free_slots),
        offer.expected_start_ms,
    )
}

/// The least time an ideal offer waits for a better one.
const MIN_GRACE: Duration = Duration::from_millis(2);

/// When to stop collecting offers, given one that just arrived.
///
/// An offer from a worker already running the expression is taken at once
/// (not here). An *ideal* offer — from a worker that did not fail this job
/// and holds every input byte, e.g. any such worker for a job without inputs
/// — can only be beaten by a worker already running the expression, which
/// answers each publication about as fast as this one did: so wait as long
/// again as this offer took since the last publication (at least
/// [`MIN_GRACE`]), within the window; if the window since that publication
/// has already passed, such an offer would have come, so close now. Any
/// other offer opens the full window for better ones (locality).
fn window_close(
    ideal: bool,
    last_publish: tokio::time::Instant,
    window: Duration,
) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    if !ideal {
        return now + window;
    }
    let since = now.saturating_duration_since(last_publish);
    match window.checked_sub(since) {
        Some(left) => now + since.max(MIN_GRACE).min(left),
        None => now,
    }
}

/// What advertising gave.
enum Choice {
    /// This worker's offer won.
    Worker(PeerId, JobReply),
    /// A trusted fact appeared meanwhile.
    Found(Box<Resolved>),
    /// Nobody trusted offered in time.
    Nobody,
}

enum LeaseEnd {
    Fact(Box<SignedFact>),
    Cancelled,
    Failed { outcome: String, log_tail: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(running: bool, local_input_bytes: u64, free_slots: u32) -> Offer {
        Offer {
            expr: ExprId([1; 32]),
            local_input_bytes,
            free_slots,
            expected_start_ms: 0,
            running,
        }
    }

    fn best(candidates: &[(Offer, bool)]) -> usize {
        (0..candidates.len())
            .min_by_key(|i| offer_rank(&candidates[*i].0, candidates[*i].1))
            .expect("candidates")
    }

    #[test]
    fn offers_rank_running_then_not_failed_then_locality_then_free_slots() {
        // A running worker wins even without inputs or slots, even if it failed before.
        assert_eq!(
            best(&[(offer(false, 100, 8), false), (offer(true, 0, 0), true)]),
            1
        );
        // A worker that failed this job loses to one that did not.
        assert_eq!(
            best(&[(offer(false, 100, 8), true), (offer(false, 0, 1), false)]),
            1
        );
        // More input bytes held beats more free slots.
        assert_eq!(
            best(&[(offer(false, 10, 8), false), (offer(false, 20, 1), false)]),
            1
        );
        // All else equal, more free slots.
        assert_eq!(
            best(&[(offer(false, 0, 1), false), (offer(false, 0, 2), false)]),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_offer_window_closes_early_only_for_an_ideal_offer() {
        let window = Duration::from_millis(300);
        let published = tokio::time::Instant::now();
        // An offer 1 ms after publication: wait the minimum grace.
        tokio::time::advance(Duration::from_millis(1)).await;
        let now = tokio::time::Instant::now();
        assert_eq!(window_close(true, published, window), now + MIN_GRACE);
        // An offer 40 ms after: as long again.
        tokio::time::advance(Duration::from_millis(39)).await;
        let now = tokio::time::Instant::now();
        assert_eq!(
            window_close(true, published, window),
            now + Duration::from_millis(40)
        );
        // Not ideal (locality in question): the whole window.
        assert_eq!(window_close(false, published, window), now + window);
        // An ideal offer after the window since publication (from a backlog): close now.
        tokio::time::advance(window).await;
        let now = tokio::time::Instant::now();
        assert_eq!(window_close(true, published, window), now);
    }
}
