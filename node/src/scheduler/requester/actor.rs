//! The requester's actor: the one task that owns the requester's state.
//!
//! It owns the job records (it is their only writer after submission),
//! which jobs wait for which expression, the resolutions in flight (each a
//! task in its `JoinSet`, with its cancellation token and the resolutions
//! waiting for it), the open auctions and leases that job RPCs are routed
//! to, the auctions waiting for room in their workflow's window (at most
//! `max_open_adverts` open per workflow), the leases issued by this
//! process, leases adopted from before a restart, per-expression log lines,
//! and the adverts heard from other requesters. It selects over its command channel, its finished
//! resolutions and a pruning timer; it never waits on a resolution.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use oda_protocol::messages::{DeclineReason, Done, JobResponse, LeaseId, Offer, Progress};
use oda_protocol::{ExprId, Outcome, WorkflowId};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::auction::{admit_offer, OfferIn, Windows};
use super::failures::Failures;
use super::lease::{heartbeat, Heartbeat};
use super::speculate::LookupHistory;
use super::{Ctx, JobEvent, ResolveError, Resolved, Want};
use crate::identity::public_key_of;
use crate::network::JobReply;
use crate::recent::Recent;
use crate::scheduler::jobs::{now_ms, Attempt, JobId, JobRecord, JobState, JobStore};
use crate::store::StoreError;

/// What the actor is asked to do.
pub(super) enum Cmd {
    /// Run a job just submitted.
    Start(JobRecord),
    /// A resolution ended (sent by its task, after everything else it
    /// sent, so its last attempt is recorded before its result).
    Finished {
        key: Key,
        result: Result<Resolved, ResolveError>,
    },
    /// Resolve an expression (an input of another resolution, or a
    /// controller's re-computation).
    Resolve {
        expr: ExprId,
        want: Want,
        reply: oneshot::Sender<Result<Resolved, ResolveError>>,
    },
    /// Answer once the job is terminal (at once if it is, or is unknown).
    Wait {
        id: JobId,
        reply: oneshot::Sender<Option<JobRecord>>,
    },
    /// Recent log lines of the job's expression.
    Logs {
        id: JobId,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Cancel a job.
    Cancel {
        id: JobId,
        reply: oneshot::Sender<Result<Option<JobRecord>, StoreError>>,
    },
    /// Every job waiting for `expr` is now in `state`.
    SetState { expr: ExprId, state: JobState },
    /// An attempt for `expr` failed.
    Attempt { expr: ExprId, attempt: Attempt },
    /// Route offers for `expr` to this auction once its workflow has room
    /// for another open auction; `admitted` says when.
    OpenAuction {
        expr: ExprId,
        workflow: WorkflowId,
        offers: mpsc::Sender<OfferIn>,
        admitted: oneshot::Sender<()>,
    },
    /// The auction for `expr` is over.
    CloseAuction { expr: ExprId },
    /// Route heartbeats and the result of this lease to its resolution.
    OpenLease {
        expr: ExprId,
        lease: LeaseId,
        route: LeaseRoute,
    },
    /// The lease is over.
    CloseLease { expr: ExprId, lease: LeaseId },
    /// Until when (Unix ms) another requester is known to compute `expr`,
    /// and whether one of them is a key this node trusts.
    ForeignUntil {
        expr: ExprId,
        reply: oneshot::Sender<Option<(u64, bool)>>,
    },
    /// Another requester, with this key, advertised `expr` (gossip).
    ForeignAdvert(ExprId, oda_protocol::PublicKey),
    /// A fact for `expr` was announced (gossip).
    FactAnnounce(ExprId),
    /// A worker's failure record (gossip, signature checked).
    Failure(Box<oda_protocol::SignedFailure>),
    /// A dispute or an endorsement of a fact (gossip, signature checked).
    Verdict(crate::scheduler::verdicts::Incoming),
    /// Whether to advertise a job while its mesh lookup runs
    /// ([`LookupHistory::speculate`]).
    Speculate { reply: oneshot::Sender<bool> },
    /// A job's mesh lookup ended: `true` if it found a trusted fact.
    LookupEnded(bool),
    /// The failure records kept for `expr`.
    FailuresOf {
        expr: ExprId,
        reply: oneshot::Sender<Vec<oda_protocol::SignedFailure>>,
    },
    /// Job RPCs from workers.
    Offer {
        peer: PeerId,
        offer: Offer,
        reply: JobReply,
    },
    Progress {
        peer: PeerId,
        progress: Progress,
        reply: JobReply,
    },
    Done {
        peer: PeerId,
        done: Box<Done>,
        reply: JobReply,
    },
}

/// Where a lease's heartbeats and result go.
pub(super) struct LeaseRoute {
    /// The assigned worker.
    pub worker: PeerId,
    /// Notified on each heartbeat.
    pub heartbeat: Arc<Notify>,
    /// Takes the worker's `Done`.
    pub done: Option<oneshot::Sender<(Box<Done>, PeerId)>>,
    /// Whether a heartbeat came yet (the jobs are then `Running`).
    pub running: bool,
}

/// A resolution in flight: the expression and how it is wanted.
pub(super) type Key = (ExprId, Want);

struct Resolution {
    cancel: CancellationToken,
    /// Other resolutions waiting for this one (as an input).
    waiters: Vec<oneshot::Sender<Result<Resolved, ResolveError>>>,
}

/// How many log lines are kept per expression for `logs`.
const LOG_LINES: usize = 500;
/// How many expressions' log lines are kept; the oldest go first.
const LOG_EXPRESSIONS: usize = 1024;
/// How often expired hints and abandoned waiters are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// An auction waiting for room in its workflow's window.
pub(super) struct WaitingAuction {
    expr: ExprId,
    offers: mpsc::Sender<OfferIn>,
    admitted: oneshot::Sender<()>,
}

pub(super) struct Actor {
    ctx: Ctx,
    inbox: mpsc::Receiver<Cmd>,
    jobs: JobStore,
    events: broadcast::Sender<JobEvent>,
    shutdown: CancellationToken,
    resolutions: HashMap<Key, Resolution>,
    tasks: JoinSet<()>,
    task_keys: HashMap<tokio::task::Id, Key>,
    /// Short jobs of this process's own (storing a late result).
    chores: JoinSet<()>,
    /// Jobs waiting for each expression, with how each wants it.
    attached: HashMap<ExprId, BTreeMap<JobId, Want>>,
    job_waiters: HashMap<JobId, Vec<oneshot::Sender<Option<JobRecord>>>>,
    /// Open auctions: the workflow (for its window) and where offers go.
    auctions: HashMap<ExprId, (WorkflowId, mpsc::Sender<OfferIn>)>,
    /// Auctions waiting for room in their workflow's window.
    windows: Windows<WaitingAuction>,
    leases: HashMap<(ExprId, LeaseId), LeaseRoute>,
    /// Every lease this process issued; a lease not in here was issued
    /// before a restart.
    issued: HashSet<LeaseId>,
    /// Expressions some worker is still computing under a lease issued
    /// before a restart: when its last heartbeat came, Unix ms.
    adopted: HashMap<ExprId, u64>,
    logs: Recent<ExprId, VecDeque<String>>,
    /// Expressions other requesters advertise: until when (Unix ms), and
    /// whether a requester this node trusts is among them.
    foreign_adverts: HashMap<ExprId, (u64, bool)>,
    /// Trusted workers' records of runs that failed without a result.
    failures: Failures,
    /// Whether recent mesh lookups of jobs hit or missed.
    lookups: LookupHistory,
}

impl Actor {
    pub(super) fn new(
        ctx: Ctx,
        inbox: mpsc::Receiver<Cmd>,
        jobs: JobStore,
        events: broadcast::Sender<JobEvent>,
        shutdown: CancellationToken,
    ) -> Self {
        let windows = Windows::new(ctx.parts().cfg.max_open_adverts);
        Self {
            ctx,
            inbox,
            jobs,
            events,
            shutdown,
            resolutions: HashMap::new(),
            tasks: JoinSet::new(),
            task_keys: HashMap::new(),
            chores: JoinSet::new(),
            attached: HashMap::new(),
            job_waiters: HashMap::new(),
            auctions: HashMap::new(),
            windows,
            leases: HashMap::new(),
            issued: HashSet::new(),
            adopted: HashMap::new(),
            logs: Recent::new(LOG_EXPRESSIONS),
            foreign_adverts: HashMap::new(),
            failures: Failures::default(),
            lookups: LookupHistory::default(),
        }
    }

    pub(super) async fn run(mut self) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(ended) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.task_ended(ended);
                }
                Some(_) = self.chores.join_next(), if !self.chores.is_empty() => {}
                cmd = self.inbox.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = prune.tick() => self.prune(),
            }
        }
        // Resolutions stop where they are; their jobs stay unfinished in the
        // store and resume at the next start.
        self.tasks.shutdown().await;
        self.chores.shutdown().await;
        tracing::debug!("requester stopped");
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start(record) => self.start_job(&record),
            Cmd::Finished { key, result } => self.finished(key, result),
            Cmd::Resolve { expr, want, reply } => self.resolution(expr, want, None).push(reply),
            Cmd::Wait { id, reply } => self.wait(id, reply),
            Cmd::Logs { id, reply } => {
                let lines = match self.jobs.get(&id) {
                    Ok(Some(r)) => self
                        .logs
                        .get(&r.expr)
                        .map(|l| l.iter().cloned().collect())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                let _ = reply.send(lines);
            }
            Cmd::Cancel { id, reply } => {
                let _ = reply.send(self.cancel(&id));
            }
            Cmd::SetState { expr, state } => self.set_state(&expr, &state),
            Cmd::Attempt { expr, attempt } => {
                for id in self.jobs_for(&expr) {
                    self.update_job(&id, |r| r.attempts.push(attempt.clone()));
                }
            }
            Cmd::OpenAuction {
                expr,
                workflow,
                offers,
                admitted,
            } => {
                let waiting = WaitingAuction {
                    expr,
                    offers,
                    admitted,
                };
                self.windows.enqueue(workflow, waiting);
                self.open_auctions(workflow);
            }
            Cmd::CloseAuction { expr } => {
                if let Some((workflow, _)) = self.auctions.remove(&expr) {
                    self.windows.closed(&workflow);
                    self.open_auctions(workflow);
                }
            }
            Cmd::OpenLease { expr, lease, route } => {
                self.issued.insert(lease);
                self.leases.insert((expr, lease), route);
            }
            Cmd::CloseLease { expr, lease } => {
                self.leases.remove(&(expr, lease));
            }
            Cmd::Speculate { reply } => {
                let _ = reply.send(self.lookups.speculate());
            }
            Cmd::LookupEnded(hit) => self.lookups.record(hit),
            Cmd::ForeignUntil { expr, reply } => {
                let known = self.foreign_adverts.get(&expr).copied();
                let _ = reply.send(known.filter(|(until, _)| *until > now_ms()));
            }
            Cmd::ForeignAdvert(expr, requester) => {
                let parts = self.ctx.parts();
                let until = now_ms() + parts.cfg.lease_ttl_ms * 2;
                let trusted = parts.trust.now().trusts_worker(&requester);
                let entry = self.foreign_adverts.entry(expr).or_insert((until, trusted));
                *entry = (until, entry.1 || trusted);
            }
            Cmd::Verdict(verdict) => {
                let (store, trust) = (
                    self.ctx.parts().store.clone(),
                    self.ctx.parts().trust.clone(),
                );
                self.chores.spawn(async move {
                    let kept = crate::blocking::run(move || {
                        crate::scheduler::verdicts::keep(&store, &trust, verdict)
                    })
                    .await;
                    if let Err(e) = kept {
                        tracing::debug!(error = %e, "cannot keep a verdict on a fact");
                    }
                });
            }
            Cmd::Failure(record) => {
                if self
                    .ctx
                    .parts()
                    .trust
                    .now()
                    .trusts_worker(&record.body.worker)
                {
                    self.failures.add(*record, now_ms());
                }
            }
            Cmd::FailuresOf { expr, reply } => {
                let _ = reply.send(self.failures.of(&expr));
            }
            Cmd::FactAnnounce(expr) => {
                self.foreign_adverts.remove(&expr);
                let _ = self.ctx.0.announced.send(expr);
            }
            Cmd::Offer { peer, offer, reply } => self.offer(peer, offer, reply).await,
            Cmd::Progress {
                peer,
                progress,
                reply,
            } => {
                let response = self.progress(peer, progress);
                self.ctx.parts().client.respond_job(reply, response).await;
            }
            Cmd::Done { peer, done, reply } => {
                self.ctx
                    .parts()
                    .client
                    .respond_job(reply, JobResponse::Ack)
                    .await;
                self.done(peer, done);
            }
        }
    }

    /// Attach a job to the resolution of its expression (started if need be).
    pub(super) fn start_job(&mut self, record: &JobRecord) {
        self.attached
            .entry(record.expr)
            .or_default()
            .insert(record.id, want_of(record));
        self.resolution(record.expr, want_of(record), Some(record.id));
    }

    /// The resolution of `expr` as `want` says, started if none is in flight.
    fn resolution(
        &mut self,
        expr: ExprId,
        want: Want,
        job: Option<JobId>,
    ) -> &mut Vec<oneshot::Sender<Result<Resolved, ResolveError>>> {
        let key = (expr, want);
        if !self.resolutions.contains_key(&key) {
            let cancel = self.shutdown.child_token();
            // Every log line of the resolution carries its expression and
            // the job that asked for it first.
            let span = match job {
                Some(job) => tracing::info_span!("job", %job, %expr),
                None => tracing::info_span!("input", %expr),
            };
            let work = super::resolve::resolve(self.ctx.clone(), expr, want, cancel.clone());
            let commands = self.ctx.0.commands.clone();
            let task = self.tasks.spawn(
                async move {
                    let result = work.await;
                    let _ = commands.send(Cmd::Finished { key, result }).await;
                }
                .instrument(span),
            );
            self.task_keys.insert(task.id(), key);
            self.resolutions.insert(
                key,
                Resolution {
                    cancel,
                    waiters: Vec::new(),
                },
            );
        }
        &mut self
            .resolutions
            .get_mut(&key)
            .expect("inserted above")
            .waiters
    }

    /// A resolution's task ended. Its result came as [`Cmd::Finished`];
    /// a task that panicked sent none, so its resolution fails here.
    fn task_ended(&mut self, ended: Result<(tokio::task::Id, ()), JoinError>) {
        match ended {
            Ok((id, ())) => {
                self.task_keys.remove(&id);
            }
            Err(e) => {
                let Some(key) = self.task_keys.remove(&e.id()) else {
                    return;
                };
                tracing::error!(expr = %key.0, error = %e, "a resolution failed");
                let reason = format!("the resolution stopped: {e}");
                self.finished(key, Err(ResolveError::Store(reason)));
            }
        }
    }

    /// A resolution ended: answer the resolutions waiting for it and record
    /// the outcome in the jobs that asked for it.
    fn finished(&mut self, key: Key, result: Result<Resolved, ResolveError>) {
        if let Some(resolution) = self.resolutions.remove(&key) {
            for waiter in resolution.waiters {
                let _ = waiter.send(result.clone());
            }
        }
        let (expr, want) = key;
        let done: Vec<JobId> = match self.attached.get_mut(&expr) {
            Some(jobs) => {
                let ids: Vec<JobId> = jobs
                    .iter()
                    .filter(|(_, w)| **w == want)
                    .map(|(id, _)| *id)
                    .collect();
                jobs.retain(|_, w| *w != want);
                if jobs.is_empty() {
                    self.attached.remove(&expr);
                }
                ids
            }
            None => Vec::new(),
        };
        for id in done {
            if let Some(r) = self.update_job(&id, |r| record_result(r, &result)) {
                tracing::info!(job = %r.id, state = r.state.name(), from_cache = r.from_cache, "job finished");
            }
        }
    }

    fn wait(&mut self, id: JobId, reply: oneshot::Sender<Option<JobRecord>>) {
        match self.jobs.get(&id) {
            Ok(Some(r)) if !r.state.is_terminal() => {
                let waiters = self.job_waiters.entry(id).or_default();
                waiters.retain(|w| !w.is_closed());
                waiters.push(reply);
            }
            Ok(record) => {
                let _ = reply.send(record);
            }
            // The caller reads the record itself and reports the error.
            Err(_) => drop(reply),
        }
    }

    fn cancel(&mut self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let updated = self.jobs.update(id, |r| {
            if !r.state.is_terminal() {
                r.state = JobState::Cancelled;
            }
        })?;
        let Some(r) = updated else {
            return Ok(None);
        };
        self.published(&r);
        let others = match self.attached.get_mut(&r.expr) {
            Some(jobs) => {
                jobs.remove(id);
                jobs.len()
            }
            None => 0,
        };
        if others == 0 {
            self.attached.remove(&r.expr);
            for ((expr, _), res) in &self.resolutions {
                if *expr == r.expr && res.waiters.iter().all(|w| w.is_closed()) {
                    res.cancel.cancel();
                }
            }
        }
        Ok(Some(r))
    }

    fn jobs_for(&self, expr: &ExprId) -> Vec<JobId> {
        self.attached
            .get(expr)
            .map(|jobs| jobs.keys().copied().collect())
            .unwrap_or_default()
    }

    fn set_state(&mut self, expr: &ExprId, state: &JobState) {
        for id in self.jobs_for(expr) {
            self.update_job(&id, |r| {
                if !r.state.is_terminal() {
                    r.state = state.clone();
                }
            });
        }
    }

    /// Change a job record, tell API clients, and answer its waiters once
    /// it is terminal.
    fn update_job(&mut self, id: &JobId, change: impl FnOnce(&mut JobRecord)) -> Option<JobRecord> {
        match self.jobs.update(id, change) {
            Ok(Some(r)) => {
                self.published(&r);
                Some(r)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(job = %id, error = %e, "cannot update a job record");
                None
            }
        }
    }

    fn published(&mut self, r: &JobRecord) {
        let _ = self.events.send(JobEvent::State(r.clone()));
        if r.state.is_terminal() {
            for waiter in self.job_waiters.remove(&r.id).unwrap_or_default() {
                let _ = waiter.send(Some(r.clone()));
            }
        }
    }

    fn push_log(&mut self, expr: ExprId, line: String) {
        let buf = self.logs.entry(expr);
        if buf.len() >= LOG_LINES {
            buf.pop_front();
        }
        buf.push_back(line.clone());
        for job in self.jobs_for(&expr) {
            let _ = self.events.send(JobEvent::Log {
                job,
                line: line.clone(),
            });
        }
    }

    /// Whether a job or a resolution of this process waits for `expr`.
    fn wants(&self, expr: &ExprId) -> bool {
        self.attached.contains_key(expr) || self.resolutions.keys().any(|(e, _)| e == expr)
    }

    /// Open the auctions of `workflow` its window has room for. One whose
    /// resolution has gone meanwhile (cancelled) gives its turn away.
    fn open_auctions(&mut self, workflow: WorkflowId) {
        while let Some(w) = self.windows.next(&workflow) {
            if w.admitted.send(()).is_ok() {
                self.auctions.insert(w.expr, (workflow, w.offers));
            } else {
                self.windows.closed(&workflow);
            }
        }
    }

    /// Route an offer to its auction, or decline it.
    async fn offer(&mut self, peer: PeerId, offer: Offer, reply: JobReply) {
        let parts = self.ctx.parts();
        let auction = self.auctions.get(&offer.expr).map(|(_, offers)| offers);
        let trusted = public_key_of(&peer).is_some_and(|k| parts.trust.now().trusts_worker(&k));
        let adopted = self
            .adopted
            .get(&offer.expr)
            .is_some_and(|seen| now_ms() < seen + parts.cfg.lease_ttl_ms);
        let (reason, reply) = match admit_offer(auction, trusted, adopted) {
            Ok(auction) => match auction.try_send(OfferIn { peer, offer, reply }) {
                Ok(()) => return,
                // The auction is over or has more offers than it can weigh.
                Err(e) => (DeclineReason::NotNeeded, e.into_inner().reply),
            },
            Err(reason) => (reason, reply),
        };
        if reason == DeclineReason::NotAllowed {
            tracing::debug!(%peer, "declining an offer from an untrusted worker");
        }
        parts
            .client
            .respond_job(reply, JobResponse::Decline(reason))
            .await;
    }

    fn progress(&mut self, peer: PeerId, progress: Progress) -> JobResponse {
        let (expr, lease) = (progress.expr, progress.lease);
        let trusted =
            public_key_of(&peer).is_some_and(|k| self.ctx.parts().trust.now().trusts_worker(&k));
        let (issued_here, wanted) = (self.issued.contains(&lease), self.wants(&expr));
        let route = self.leases.get_mut(&(expr, lease));
        let lease_worker = route.as_ref().map(|r| r.worker);
        match (
            heartbeat(lease_worker, peer, issued_here, wanted, trusted),
            route,
        ) {
            (Heartbeat::Renews, Some(route)) => {
                route.heartbeat.notify_one();
                let first = !route.running;
                route.running = true;
                let worker = route.worker.to_string();
                if first {
                    self.set_state(&expr, &JobState::Running { worker });
                }
                if !progress.message.is_empty() {
                    self.push_log(expr, progress.message);
                }
                JobResponse::Ack
            }
            // A lease issued before this node restarted, for an expression
            // it still wants: let the run finish; its `Done` is kept (see
            // `done`) instead of computing the expression again.
            (Heartbeat::Adopts, _) => {
                self.adopted.insert(expr, now_ms());
                JobResponse::Ack
            }
            _ => {
                tracing::debug!(%peer, %expr, lease, "refusing a heartbeat for a lease not issued to it");
                JobResponse::Decline(DeclineReason::NotNeeded)
            }
        }
    }

    /// A result: to its lease, or, for a lease that is gone (for example
    /// issued before a restart), kept if it is a valid trusted fact.
    fn done(&mut self, peer: PeerId, done: Box<Done>) {
        let key = (done.expr, done.lease);
        if let Some(route) = self.leases.get(&key).filter(|r| r.worker != peer) {
            tracing::debug!(%peer, worker = %route.worker, "ignoring a result for a lease issued to another worker");
            return;
        }
        let done = match self.leases.get_mut(&key).and_then(|r| r.done.take()) {
            Some(tx) => match tx.send((done, peer)) {
                Ok(()) => return,
                Err((done, _)) => done,
            },
            None => done,
        };
        self.adopted.remove(&done.expr);
        let Ok(fact) = done.result else {
            return;
        };
        // Its inputs are checked when it is picked as a result.
        if let Err(reason) = self.ctx.check_result(&done.expr, &fact, &peer, None) {
            tracing::debug!(%peer, %reason, "ignoring a late result");
            return;
        }
        let (ctx, expr) = (self.ctx.clone(), done.expr);
        self.chores.spawn(async move {
            let store = ctx.parts().store.clone();
            match tokio::task::spawn_blocking(move || store.put_fact(&fact)).await {
                Ok(Ok(_)) => {
                    let _ = ctx.0.announced.send(expr);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot store a late result"),
                Err(e) => tracing::warn!(error = %e, "cannot store a late result"),
            }
        });
    }

    fn prune(&mut self) {
        let now = now_ms();
        let ttl = self.ctx.parts().cfg.lease_ttl_ms;
        self.foreign_adverts.retain(|_, (until, _)| *until > now);
        self.failures.prune(now);
        self.adopted.retain(|_, seen| *seen + ttl > now);
        self.job_waiters.retain(|_, waiters| {
            waiters.retain(|w| !w.is_closed());
            !waiters.is_empty()
        });
    }
}

/// Record a resolution's outcome in a job (unless it was cancelled).
fn record_result(r: &mut JobRecord, result: &Result<Resolved, ResolveError>) {
    if r.state == JobState::Cancelled {
        return;
    }
    match result {
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
}

/// How `record` wants its expression resolved.
fn want_of(record: &JobRecord) -> Want {
    Want {
        no_cache: record.no_cache,
        quorum: record.quorum,
        without: None,
    }
}
