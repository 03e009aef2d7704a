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
//!
//! Structure: one actor task ([`actor`]) owns every piece of the requester's
//! state (job records, which jobs wait for which expression, open auctions and
//! leases, logs, adverts heard from other requesters) and is the only writer
//! of job records. [`Requester`] is its cloneable handle. Each resolution is
//! a task the actor owns ([`resolve`]); it runs auctions ([`auction`]) and
//! follows leases ([`lease`]), and reaches the actor's state only by sending
//! it commands. Network RPCs for jobs go to the actor, which routes them to
//! the auction or lease they belong to, or answers them itself.

mod actor;
mod auction;
mod failures;
mod lease;
mod resolve;
mod speculate;

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use oda_protocol::messages::{Done, JobAdvert, Offer, Progress};
use oda_protocol::{ExprId, Expression, Outcome, ResolvedInput, SignedFact};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::input_facts;
use super::jobs::{now_ms, Attempt, JobId, JobRecord, JobState, JobStore};
use super::quorum;
use super::trust::{TrustBook, Walk, CHAIN_LIMIT};
use super::worker::Worker;
use super::{ask, SchedulerConfig};
use crate::identity::{peer_id_of, NodeKey};
use crate::network::{Client, JobReply};
use crate::store::{Store, StoreError};
use actor::Cmd;

/// How a job wants its expression resolved; one resolution per expression
/// and `Want` is shared by every job that asks the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Want {
    /// Skip the caches and compute (the worker may still hand back its
    /// earlier fact for the same inputs).
    pub no_cache: bool,
    /// Distinct trusted workers that must agree (at least 1); inputs are
    /// resolved under the same quorum.
    pub quorum: u32,
    /// A worker not to ask: a controller re-checks that worker's fact.
    pub without: Option<oda_protocol::PublicKey>,
}

impl Want {
    fn quorum(self) -> usize {
        self.quorum.max(1) as usize
    }
}

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
    /// Trusted workers already ran it and it failed without a result on as
    /// many of them as this node would try.
    #[error("failed without a result on {} workers (their failure records of the last hour): {}; submit it with --no-cache to run it again", failures.len(), failures.iter().map(|(w, why)| format!("[{}: {why}]", short_peer(w))).collect::<Vec<_>>().join(" "))]
    FailedElsewhere {
        /// Each worker (peer id) and what happened.
        failures: Vec<(String, String)>,
    },
    /// With `[trust] quorum`: the results that came do not agree enough.
    #[error(
        "no {needed} trusted workers agree on a result (`[trust] quorum`); what they said: {said}"
    )]
    NoQuorum {
        /// The quorum.
        needed: usize,
        /// Each group of agreeing signers and what they said.
        said: String,
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

fn short_peer(p: &str) -> &str {
    &p[p.len().saturating_sub(8)..]
}

impl From<StoreError> for ResolveError {
    fn from(e: StoreError) -> Self {
        ResolveError::Store(e.to_string())
    }
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

/// Why a request to the requester could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RequesterError {
    /// Local storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node is shutting down (the requester's actor has stopped).
    #[error("the node is shutting down")]
    Stopped,
    /// A quorum above [`MAX_QUORUM`](super::MAX_QUORUM).
    #[error("a quorum of {0} is more than the {max} allowed", max = super::MAX_QUORUM)]
    Quorum(u32),
    /// A blocking step failed to run.
    #[error("a blocking step failed: {0}")]
    Task(String),
}

/// Commands waiting for the actor; senders wait when it is full.
const COMMAND_QUEUE: usize = 1024;

/// Most mesh lookups in flight at once. Each is two Kademlia queries, and
/// libp2p polls every open query on each event: thousands of jobs submitted
/// at once would otherwise spend their time walking the query pool.
const CONCURRENT_LOOKUPS: usize = 32;

/// What the requester is built from.
pub struct Parts {
    /// The network.
    pub client: Client,
    /// The store.
    pub store: Store,
    /// This node's key (adverts name it as the requester).
    pub key: NodeKey,
    /// Whose facts and offers are accepted.
    pub trust: TrustBook,
    /// Timing and retries.
    pub cfg: SchedulerConfig,
    /// This node's own worker, which hears every advert as gossip would
    /// bring it (gossip never delivers to its publisher) and competes in the
    /// same auction.
    pub local_worker: Option<Worker>,
}

/// What every resolution task shares: the immutable parts and a way to
/// reach the actor.
#[derive(Clone)]
struct Ctx(Arc<Shared>);

struct Shared {
    parts: Parts,
    commands: mpsc::Sender<Cmd>,
    /// Expressions a fact was announced or delivered for.
    announced: broadcast::Sender<ExprId>,
    lookups: tokio::sync::Semaphore,
}

impl Ctx {
    fn parts(&self) -> &Parts {
        &self.0.parts
    }

    /// Send the actor a command (nothing happens if it has stopped: the
    /// node is shutting down and this task is about to be stopped too).
    async fn tell(&self, cmd: Cmd) {
        let _ = self.0.commands.send(cmd).await;
    }

    /// Ask the actor something; `None` if it has stopped.
    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        ask(&self.0.commands, cmd).await
    }

    /// Publish `advert` on `topic`, signed by this node (its requester).
    async fn publish_advert(
        &self,
        topic: &oda_protocol::Topic,
        advert: JobAdvert,
    ) -> Result<(), crate::network::NetworkError> {
        let signed = self.parts().key.secret.sign(advert).map_err(|e| {
            crate::network::NetworkError::Setup(format!("cannot sign the advert: {e}"))
        })?;
        self.parts()
            .client
            .publish(
                topic.clone(),
                oda_protocol::messages::Gossip::JobAdvert(Box::new(signed)),
            )
            .await
    }

    /// Change the state of every job waiting for `expr`.
    async fn set_state(&self, expr: ExprId, state: JobState) {
        self.tell(Cmd::SetState { expr, state }).await
    }

    /// The best fact among `facts` that is a trusted result: by a signer
    /// the policy accepts, resting on input facts it accepts too
    /// ([`Ctx::inputs_trusted`]), and with a quorum `k` above 1 one of k
    /// such facts by distinct signers that agree ([`quorum::agreed`]);
    /// successes before analysis errors.
    async fn pick_trusted(&self, facts: &[SignedFact], k: usize) -> Option<SignedFact> {
        let trust = self.parts().trust.now();
        let mut candidates: Vec<&SignedFact> =
            facts.iter().filter(|f| trust.may_accept(f)).collect();
        candidates.sort_by_key(|f| !matches!(f.body.outcome, Outcome::Success { .. }));
        let mut trusted = Vec::new();
        for fact in candidates {
            match self.inputs_trusted(fact).await {
                Ok(()) if k == 1 => return Some(fact.clone()),
                Ok(()) => trusted.push(fact.clone()),
                Err(reason) => {
                    tracing::info!(fact = %fact.id(), %reason, "not a trusted result: an input is not trusted here");
                }
            }
        }
        let agreed = quorum::agreed(&trusted, k)?;
        Some(agreed.facts[0].clone())
    }

    /// Whether every input fact behind `fact`, back to the sources, is by a
    /// signer the policy accepts and gives the bytes the fact says were
    /// used ([`TrustPolicy::walk`](super::trust::TrustPolicy::walk) over the
    /// store, on the blocking pool). An input fact not in the store is asked
    /// of the worker that named it, then of the mesh, checked and kept, and
    /// the walk starts again.
    async fn inputs_trusted(&self, fact: &SignedFact) -> Result<(), String> {
        let parts = self.parts();
        for _ in 0..=CHAIN_LIMIT {
            let (policy, store, fact) = (parts.trust.now(), parts.store.clone(), fact.clone());
            let walk =
                crate::blocking::run(move || Ok::<_, String>(policy.walk(&fact, &store))).await?;
            match walk {
                Walk::Trusted(_) => return Ok(()),
                Walk::Untrusted(why) => return Err(why),
                Walk::Missing { input, named_by } => {
                    let first = peer_id_of(&named_by);
                    input_facts::checked(&parts.store, &parts.client, &input, first).await?;
                }
            }
        }
        Err(format!(
            "its provenance has more than {CHAIN_LIMIT} input facts not held here"
        ))
    }

    /// Whether `fact`, sent by `from`, is a valid result for `expr` that the
    /// trust policy accepts. `advertised`: the inputs the advert gave, which
    /// the fact must name (they were resolved by this node under its policy).
    fn check_result(
        &self,
        expr: &ExprId,
        fact: &SignedFact,
        from: &PeerId,
        advertised: Option<&[ResolvedInput]>,
    ) -> Result<(), String> {
        fact.verify_for(expr).map_err(|e| e.to_string())?;
        if peer_id_of(&fact.body.worker).as_ref() != Some(from) {
            return Err("fact signed by a key other than the sender's".into());
        }
        if !self.parts().trust.now().accepts(fact) {
            return Err("fact signer is not trusted".into());
        }
        if advertised.is_some_and(|inputs| fact.body.inputs != inputs) {
            return Err("the fact names other inputs than the advert gave".into());
        }
        Ok(())
    }
}

/// The requester half of the scheduler: a handle on its actor. Cheap to clone.
#[derive(Clone)]
pub struct Requester {
    commands: mpsc::Sender<Cmd>,
    jobs: JobStore,
    store: Store,
    events: broadcast::Sender<JobEvent>,
    own_key: oda_protocol::PublicKey,
    quorum: u32,
}

impl Requester {
    /// Start the requester's actor, resuming every unfinished job in the
    /// store (after a restart). Returns the handle, how many jobs were
    /// resumed, and the actor's task, which ends once `shutdown` is
    /// cancelled (unfinished jobs stay in the store for the next start).
    pub fn start(
        parts: Parts,
        shutdown: CancellationToken,
    ) -> Result<(Self, usize, JoinHandle<()>), StoreError> {
        let jobs = JobStore::open(&parts.store)?;
        let unfinished: Vec<JobRecord> = jobs
            .all()?
            .into_iter()
            .filter(|r| !r.state.is_terminal())
            .collect();
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        let events = broadcast::channel(1024).0;
        let handle = Self {
            commands: commands.clone(),
            jobs: jobs.clone(),
            store: parts.store.clone(),
            events: events.clone(),
            own_key: parts.key.public(),
            quorum: parts.cfg.quorum.max(1),
        };
        let ctx = Ctx(Arc::new(Shared {
            parts,
            commands,
            announced: broadcast::channel(256).0,
            lookups: tokio::sync::Semaphore::new(CONCURRENT_LOOKUPS),
        }));
        let mut actor = actor::Actor::new(ctx, inbox, jobs, events, shutdown);
        let resumed = unfinished.len();
        for record in unfinished {
            tracing::info!(job = %record.id, expr = %record.expr, state = record.state.name(), "resuming job");
            actor.start_job(&record);
        }
        Ok((handle, resumed, tokio::spawn(actor.run())))
    }

    /// How many distinct trusted workers must agree on a result
    /// (`[trust] quorum`).
    pub fn quorum(&self) -> u32 {
        self.quorum
    }

    /// Subscribe to job changes and log lines.
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Store `expression` and start a job evaluating it under the node's
    /// quorum. Both are durable when this returns (a job submitted while
    /// the node shuts down runs after the next start).
    pub async fn submit(
        &self,
        expression: &Expression,
        no_cache: bool,
    ) -> Result<JobRecord, RequesterError> {
        self.submit_with_quorum(expression, no_cache, None).await
    }

    /// [`Requester::submit`] with the quorum of this job (`None`: the
    /// node's `[trust] quorum`; at most [`MAX_QUORUM`](super::MAX_QUORUM)).
    pub async fn submit_with_quorum(
        &self,
        expression: &Expression,
        no_cache: bool,
        quorum: Option<u32>,
    ) -> Result<JobRecord, RequesterError> {
        let quorum = quorum.unwrap_or(self.quorum).max(1);
        if quorum > super::MAX_QUORUM {
            return Err(RequesterError::Quorum(quorum));
        }
        let (store, jobs, expression) = (self.store.clone(), self.jobs.clone(), expression.clone());
        let record = tokio::task::spawn_blocking(move || -> Result<JobRecord, StoreError> {
            let expr = store.put_expr(&expression)?;
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
                quorum,
            };
            jobs.put(&record)?;
            Ok(record)
        })
        .await
        .map_err(|e| RequesterError::Task(e.to_string()))??;
        // The resolution starts while the job is made durable: the caller
        // gets the job id only once it is (the job and its expression must
        // survive a crash; sled flushes by itself only every 500 ms), and
        // a crash before that loses only a job nobody was told of.
        if self
            .commands
            .send(Cmd::Start(record.clone()))
            .await
            .is_err()
        {
            tracing::info!(job = %record.id, "the node is stopping; the job runs after the next start");
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| RequesterError::Task(e.to_string()))??;
        Ok(record)
    }

    /// A job's record.
    pub fn status(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.jobs.get(id)
    }

    /// How many jobs are in each state (kept as records change; no scan).
    pub fn tally(&self) -> super::jobs::JobTally {
        self.jobs.tally()
    }

    /// All job records, oldest first.
    pub fn list(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.jobs.all()
    }

    /// Wait until a job is terminal, or `timeout` passes (then the current
    /// record). `None` for an unknown job.
    pub async fn wait(
        &self,
        id: &JobId,
        timeout: Duration,
    ) -> Result<Option<JobRecord>, StoreError> {
        let id = *id;
        let asked = ask(&self.commands, |reply| Cmd::Wait { id, reply });
        match tokio::time::timeout(timeout, asked).await {
            Ok(Some(record)) => Ok(record),
            _ => self.status(&id),
        }
    }

    /// Recent log lines of a job's expression.
    pub async fn logs(&self, id: &JobId) -> Result<Vec<String>, RequesterError> {
        let id = *id;
        ask(&self.commands, |reply| Cmd::Logs { id, reply })
            .await
            .ok_or(RequesterError::Stopped)
    }

    /// Cancel a job; `None` for an unknown job. The resolution it waited for
    /// stops when nothing else waits for it.
    pub async fn cancel(&self, id: &JobId) -> Result<Option<JobRecord>, RequesterError> {
        let id = *id;
        let cancelled = ask(&self.commands, |reply| Cmd::Cancel { id, reply }).await;
        Ok(cancelled.ok_or(RequesterError::Stopped)??)
    }

    /// An offer from a worker (network event).
    pub async fn on_offer(&self, peer: PeerId, offer: Offer, reply: JobReply) {
        self.deliver(Cmd::Offer { peer, offer, reply }).await
    }

    /// A heartbeat from a worker (network event).
    pub async fn on_progress(&self, peer: PeerId, progress: Progress, reply: JobReply) {
        self.deliver(Cmd::Progress {
            peer,
            progress,
            reply,
        })
        .await
    }

    /// A result from a worker (network event).
    pub async fn on_done(&self, peer: PeerId, done: Done, reply: JobReply) {
        self.deliver(Cmd::Done {
            peer,
            done: Box::new(done),
            reply,
        })
        .await
    }

    async fn deliver(&self, cmd: Cmd) {
        if self.commands.send(cmd).await.is_err() {
            // Stopping: the peer's request gets no answer and it times out,
            // as it would if this node had gone.
            tracing::debug!("a job RPC arrived while the requester stops");
        }
    }

    /// Another requester's advert (gossip): remember it for single-flight.
    /// Never waits: under overload the hint is dropped.
    pub fn on_foreign_advert(&self, advert: &JobAdvert) {
        if advert.requester != self.own_key {
            self.hint(Cmd::ForeignAdvert(advert.expr.id(), advert.requester));
        }
    }

    /// The failure records of trusted workers this node keeps for `expr`
    /// (runs that failed without a result in the last hour).
    pub async fn failures(&self, expr: ExprId) -> Vec<oda_protocol::SignedFailure> {
        ask(&self.commands, |reply| Cmd::FailuresOf { expr, reply })
            .await
            .unwrap_or_default()
    }

    /// A worker's failure record (gossip, signature checked). Never waits,
    /// as above.
    pub fn on_failure(&self, record: Box<oda_protocol::SignedFailure>) {
        self.hint(Cmd::Failure(record));
    }

    /// A dispute or an endorsement of a fact (gossip, signature checked):
    /// kept as [`verdicts::keep`](crate::scheduler::verdicts::keep) says.
    /// Never waits, as above.
    pub fn on_verdict(&self, verdict: crate::scheduler::verdicts::Incoming) {
        self.hint(Cmd::Verdict(verdict));
    }

    /// Compute `expr` (stored here) afresh on a trusted worker other than
    /// `without`, whatever any cache holds: a controller's re-check of
    /// `without`'s fact. Inputs are resolved as for a job (from caches).
    pub async fn recheck(
        &self,
        expr: ExprId,
        without: oda_protocol::PublicKey,
    ) -> Result<Resolved, ResolveError> {
        let want = Want {
            no_cache: true,
            quorum: 1,
            without: Some(without),
        };
        ask(&self.commands, |reply| Cmd::Resolve { expr, want, reply })
            .await
            .unwrap_or(Err(ResolveError::Cancelled))
    }

    /// A fact announcement (gossip). Never waits, as above.
    pub fn on_fact_announce(&self, expr: ExprId) {
        self.hint(Cmd::FactAnnounce(expr));
    }

    fn hint(&self, cmd: Cmd) {
        if let Err(e) = self.commands.try_send(cmd) {
            tracing::debug!(error = %e, "requester busy; dropping a gossip hint");
        }
    }
}
