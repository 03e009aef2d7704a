//! The worker's actor: the one task that owns the worker's state.
//!
//! It owns the slots, the backlog of adverts waiting for a slot, the
//! cancellation token of each lease running here, and the runs other
//! requesters can join; and it owns every task the worker starts: runs (in
//! `runs`), join offers, joined requesters' heartbeats and re-deliveries
//! (in `chores`). It selects over its command channel and its finished
//! tasks; it never waits on a run. Shutdown aborts every task it owns.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use oda_protocol::messages::{Assign, Cancel, JobAdvert, JobResponse, LeaseId};
use oda_protocol::{ExprId, PublicKey};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admission::{refusal, workflow_trust};
use super::inputs::unfit;
use super::join::{self, SharedRun};
use super::journal::Redelivery;
use super::run::{deliver, heartbeats, mark_delivered, offer_and_run};
use super::slots::{Slots, Take};
use super::{Backlog, Ctx};
use crate::identity::peer_id_of;
use crate::network::JobReply;
use crate::scheduler::jobs::now_ms;

/// Most adverts waiting for a free slot (about 1 KiB each).
const BACKLOG_CAP: usize = 10_000;

/// How long a requester that did not answer an offer (or could not be
/// reached) is not offered for again, ms: a peer that advertises and never
/// answers cannot hold a slot again and again.
const UNANSWERED_MS: u64 = 60_000;

/// What the actor is told.
pub(super) enum Cmd {
    /// A job advert (gossip or this node's requester).
    Advert(Box<JobAdvert>),
    /// A fact for `expr` exists: drop its advert from the backlog.
    FactKnown(ExprId),
    /// A requester cancels a lease.
    Cancel { cancel: Cancel, reply: JobReply },
    /// An offer was not taken (`unreachable`: the requester could not be
    /// reached, so its other waiting adverts are dropped too).
    OfferEnded {
        expr: ExprId,
        unreachable: Option<PublicKey>,
    },
    /// An offer was taken: the run of `lease` has started.
    Running {
        expr: ExprId,
        lease: LeaseId,
        primary: PublicKey,
        cancel: CancellationToken,
        lines: watch::Receiver<String>,
    },
    /// The run of `expr` no longer needs its slot.
    SlotFree { expr: ExprId },
    /// The run is over: stop routing to it; reply with the joined
    /// requesters' peers and leases, which get its `Done` too.
    RunEnded {
        expr: ExprId,
        lease: LeaseId,
        reply: oneshot::Sender<Vec<(PeerId, LeaseId)>>,
    },
    /// The answer of a requester offered to join the run of `expr`.
    JoinAnswer {
        expr: ExprId,
        requester: PublicKey,
        peer: PeerId,
        assign: Option<Assign>,
    },
}

pub(super) struct Actor {
    ctx: Arc<Ctx>,
    /// For the tasks it starts, to report back.
    commands: mpsc::Sender<Cmd>,
    inbox: mpsc::Receiver<Cmd>,
    shutdown: CancellationToken,
    slots: Slots,
    backlog: Backlog,
    /// Requesters that did not answer an offer: until when (Unix ms) their
    /// adverts are not taken.
    unanswered: HashMap<PublicKey, u64>,
    /// The offer each requester has not answered yet: at most one per
    /// requester, so a requester that never answers holds one slot at a
    /// time (for at most `OFFER_ANSWER_MS`), never all of them.
    awaiting: HashMap<PublicKey, ExprId>,
    /// Cancellation of each lease running here.
    running: HashMap<LeaseId, CancellationToken>,
    /// Runs in progress by expression, which other requesters can join.
    shared: HashMap<ExprId, SharedRun>,
    runs: JoinSet<()>,
    chores: JoinSet<()>,
}

impl Actor {
    pub(super) fn new(
        ctx: Arc<Ctx>,
        commands: mpsc::Sender<Cmd>,
        inbox: mpsc::Receiver<Cmd>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            slots: Slots::new(ctx.parts.cfg.slots),
            ctx,
            commands,
            inbox,
            shutdown,
            backlog: Backlog::new(BACKLOG_CAP),
            unanswered: HashMap::new(),
            awaiting: HashMap::new(),
            running: HashMap::new(),
            shared: HashMap::new(),
            runs: JoinSet::new(),
            chores: JoinSet::new(),
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(ended) = self.runs.join_next(), if !self.runs.is_empty() => {
                    if let Err(e) = ended {
                        if e.is_panic() {
                            tracing::error!(error = %e, "a run panicked");
                        }
                    }
                }
                Some(_) = self.chores.join_next(), if !self.chores.is_empty() => {}
                cmd = self.inbox.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
            }
            self.publish_stats();
        }
        // Running jobs are killed (dropping a run kills its process group);
        // their journal entries say `running`, so the next start reports
        // them interrupted.
        for cancel in self.running.values() {
            cancel.cancel();
        }
        self.runs.shutdown().await;
        self.chores.shutdown().await;
        tracing::debug!("worker stopped");
    }

    fn publish_stats(&self) {
        let stats = &self.ctx.stats;
        stats.free.store(self.slots.free(), Ordering::Relaxed);
        stats.backlog.store(self.backlog.len(), Ordering::Relaxed);
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Advert(advert) => self.advert(*advert),
            Cmd::FactKnown(expr) => self.backlog.remove(&expr),
            Cmd::Cancel { cancel, reply } => {
                if let Some(token) = self.running.get(&cancel.lease) {
                    tracing::info!(expr = %cancel.expr, lease = cancel.lease, "cancelled by the requester");
                    token.cancel();
                }
                self.ctx
                    .parts
                    .client
                    .respond_job(reply, JobResponse::Ack)
                    .await;
            }
            Cmd::OfferEnded { expr, unreachable } => {
                self.answered(&expr);
                if let Some(requester) = unreachable {
                    // Its other waiting adverts would only hold slots while
                    // dials or answers time out.
                    let now = now_ms();
                    self.unanswered.retain(|_, until| *until > now);
                    self.unanswered.insert(requester, now + UNANSWERED_MS);
                    let dropped = self.backlog.remove_requester(&requester);
                    tracing::debug!(%expr, dropped, "requester unreachable; its waiting adverts dropped");
                }
                self.release(&expr);
            }
            Cmd::Running {
                expr,
                lease,
                primary,
                cancel,
                lines,
            } => {
                self.running.insert(lease, cancel);
                self.shared.insert(expr, SharedRun::new(primary, lines));
                self.answered(&expr);
                self.fill();
            }
            Cmd::SlotFree { expr } => self.release(&expr),
            Cmd::RunEnded { expr, lease, reply } => {
                self.running.remove(&lease);
                let joined = self.shared.remove(&expr).map(|s| s.joined);
                let peers = joined
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(peer, lease, heartbeat)| {
                        heartbeat.abort();
                        (peer, lease)
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Cmd::JoinAnswer {
                expr,
                requester,
                peer,
                assign,
            } => self.join_answer(expr, requester, peer, assign),
        }
    }

    /// The offer for `expr` was answered (taken or not).
    fn answered(&mut self, expr: &ExprId) {
        self.awaiting.retain(|_, offered| offered != expr);
    }

    /// Give back the slot `expr` holds, then offer for waiting adverts.
    fn release(&mut self, expr: &ExprId) {
        self.slots.release(expr);
        self.fill();
    }

    /// Offer for waiting adverts while slots are free, passing over the
    /// requesters this worker waits on.
    fn fill(&mut self) {
        while self.slots.free() > 0 {
            let awaiting = &self.awaiting;
            let Some(advert) = self.backlog.pop(now_ms(), |r| !awaiting.contains_key(r)) else {
                return;
            };
            if self.offer_join(&advert) {
                continue;
            }
            if let Some(advert) = self.try_offer(advert) {
                self.backlog.push(advert);
                return;
            }
        }
    }

    fn advert(&mut self, advert: JobAdvert) {
        // First, before any store read: a requester that left an offer
        // unanswered may be flooding.
        if self
            .unanswered
            .get(&advert.requester)
            .is_some_and(|until| *until > now_ms())
        {
            self.ctx.stats.declined.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(expr = %advert.expr.id(), "not offering: the requester did not answer an offer");
            return;
        }
        let parts = &self.ctx.parts;
        let reason = refusal(
            &parts.cfg.serves,
            &parts.trust.now(),
            (&parts.key.public(), &advert.requester, &advert.expr.id()),
            now_ms(),
            workflow_trust(&self.ctx, &advert),
        );
        if let Some(reason) = reason {
            self.ctx.stats.declined.fetch_add(1, Ordering::Relaxed);
            tracing::info!(expr = %advert.expr.id(), ?reason, "not offering");
            return;
        }
        if let Some(problem) = unfit(&self.ctx, &advert) {
            self.ctx.stats.declined.fetch_add(1, Ordering::Relaxed);
            tracing::info!(expr = %advert.expr.id(), %problem, "not offering");
            return;
        }
        let expr = advert.expr.id();
        if self.offer_join(&advert) {
            return;
        }
        // Offered to another requester, or waiting for this requester's
        // answer to another offer: this one waits.
        if self.slots.is_busy(&expr) || self.awaiting.contains_key(&advert.requester) {
            self.backlog.push(advert);
            return;
        }
        if let Some(advert) = self.try_offer(advert) {
            if !self.backlog.push(advert) {
                tracing::debug!(%expr, "backlog full; the advert waits for its re-publication");
            }
        }
    }

    /// Hold a slot and start the run that offers for `advert`; gives the
    /// advert back when no slot is free.
    fn try_offer(&mut self, advert: JobAdvert) -> Option<JobAdvert> {
        let expr = advert.expr.id();
        match self.slots.take(expr) {
            Take::Full => Some(advert),
            Take::Busy => None,
            Take::Taken => {
                self.awaiting.insert(advert.requester, expr);
                // Every log line of the run carries its expression.
                let span = tracing::info_span!("run", %expr);
                let free = self.slots.free() + 1;
                let run = offer_and_run(self.ctx.clone(), self.commands.clone(), advert, free);
                self.runs.spawn(run.instrument(span));
                None
            }
        }
    }

    /// If this worker is already running the advertised expression for
    /// another requester, offer that requester to join the run (no new
    /// slot, no second execution). Returns whether the advert was handled
    /// that way.
    fn offer_join(&mut self, advert: &JobAdvert) -> bool {
        let expr = advert.expr.id();
        let Some(run) = self.shared.get_mut(&expr) else {
            return false;
        };
        let Some(peer) = peer_id_of(&advert.requester) else {
            return true;
        };
        if run.knows(&advert.requester, &peer) {
            return true;
        }
        run.offering.insert(advert.requester);
        let (ctx, commands, requester) =
            (self.ctx.clone(), self.commands.clone(), advert.requester);
        let free = self.slots.free();
        self.chores.spawn(async move {
            let assign = join::offer(&ctx, peer, expr, free).await;
            let _ = commands
                .send(Cmd::JoinAnswer {
                    expr,
                    requester,
                    peer,
                    assign,
                })
                .await;
        });
        true
    }

    fn join_answer(
        &mut self,
        expr: ExprId,
        requester: PublicKey,
        peer: PeerId,
        assign: Option<Assign>,
    ) {
        let Some(run) = self.shared.get_mut(&expr) else {
            // The run ended meanwhile; the requester will find the fact.
            return;
        };
        run.offering.remove(&requester);
        let Some(assign) = assign else {
            return;
        };
        tracing::info!(%expr, %peer, "another requester joined a running job");
        let heartbeat = self.chores.spawn(heartbeats(
            self.ctx.parts.client.clone(),
            peer,
            expr,
            assign.lease,
            Duration::from_millis((assign.ttl_ms / 3).max(100)),
            run.lines.clone(),
            None,
        ));
        run.joined.push((peer, assign.lease, heartbeat));
    }

    /// Send a `Done` the journal kept from before a restart.
    pub(super) fn redeliver(&mut self, r: Redelivery) {
        let ctx = self.ctx.clone();
        self.chores.spawn(async move {
            let delivered = deliver(&ctx.parts.client, r.requester, r.done).await;
            if delivered && r.finished {
                mark_delivered(&ctx, r.lease, r.expr, r.requester.to_string()).await;
            }
        });
    }
}
