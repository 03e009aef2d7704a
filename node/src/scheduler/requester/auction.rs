//! One auction: publish a job advert (again and again, less often each
//! time, until offers come), collect the offers the actor admits, and choose
//! the best. The decisions are pure functions: which offers are admitted
//! ([`admit_offer`]), how offers rank ([`offer_rank`]), when the offer window
//! closes ([`window_close`]), when the advert is published next
//! ([`Republish`]) and which auctions may be open at once ([`Windows`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use libp2p::PeerId;
use oda_protocol::messages::{DeclineReason, JobAdvert, JobResponse, Offer};
use oda_protocol::names::Topic;
use oda_protocol::WorkflowId;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actor::Cmd;
use super::resolve::Lookup;
use super::{Ctx, ResolveError, Resolved};
use crate::network::{JobReply, NetworkError};
use crate::scheduler::jobs::now_ms;

/// An offer waiting for the auction's decision.
pub(super) struct OfferIn {
    pub peer: PeerId,
    pub offer: Offer,
    pub reply: JobReply,
}

/// What an auction gave.
pub(super) enum Choice {
    /// This worker's offer won.
    Worker(PeerId, JobReply),
    /// A trusted fact appeared meanwhile.
    Found(Box<Resolved>),
    /// Nobody trusted offered in time.
    Nobody,
}

/// Offers an auction holds at most; more are declined.
const OFFERS_HELD: usize = 64;
/// Re-publication of an unanswered advert slows down to this interval.
const READVERTISE_MAX: Duration = Duration::from_secs(30);
/// An advert that could not be published at all is retried this soon.
const UNPUBLISHED_RETRY: Duration = Duration::from_millis(500);
/// The least time an ideal offer waits for a better one.
const MIN_GRACE: Duration = Duration::from_millis(2);
/// How long offers are held while the job's mesh lookup still runs; then
/// they are declined (the advert goes out again once the lookup has
/// missed). Well under the [`OFFER_ANSWER_MS`] a worker waits for an
/// answer before it takes the requester for unreachable.
///
/// [`OFFER_ANSWER_MS`]: oda_protocol::messages::OFFER_ANSWER_MS
const LOOKUP_HOLD: Duration = Duration::from_millis(1_000);

/// Whether an offer goes to the `auction` for its expression: only while
/// one is open, from a worker the trust policy accepts, and not while a
/// worker still computes the expression under a lease from before a restart
/// (`adopted`: its result is awaited instead of a second run).
pub(super) fn admit_offer<A>(
    auction: Option<A>,
    trusted: bool,
    adopted: bool,
) -> Result<A, DeclineReason> {
    let auction = auction.ok_or(DeclineReason::NotNeeded)?;
    if !trusted {
        return Err(DeclineReason::NotAllowed);
    }
    if adopted {
        return Err(DeclineReason::NotNeeded);
    }
    Ok(auction)
}

/// How an offer ranks, best first: a worker that did not fail this job
/// before, then one already running the expression (joining it costs
/// nothing), then the one holding more input bytes, with more free slots,
/// starting sooner. A worker that failed the job cannot win it back by
/// claiming to be running it.
pub(super) fn offer_rank(offer: &Offer, failed_before: bool) -> impl Ord {
    (
        failed_before,
        !offer.running,
        std::cmp::Reverse(offer.local_input_bytes),
        std::cmp::Reverse(offer.free_slots),
        offer.expected_start_ms,
    )
}

/// When to stop collecting offers, given one that just arrived.
///
/// An offer from a worker already running the expression is taken at once
/// (not here). An *ideal* offer — from a worker that did not fail this job
/// and holds every input byte, e.g. any such worker for a job without inputs
/// — can only be beaten by a worker already running the expression. Unless
/// the job is `contested` (`contested` in `resolve.rs` says when) nobody can
/// be, so the window closes now. If it is contested, such a worker answers each publication about as
/// fast as this one did: so wait as long again as this offer took since the
/// last publication (at least [`MIN_GRACE`]), within the window; if the
/// window since that publication has already passed, such an offer would
/// have come, so close now. Any other offer opens the full window for
/// better ones (locality).
fn window_close(ideal: bool, contested: bool, last_publish: Instant, window: Duration) -> Instant {
    let now = Instant::now();
    if !ideal {
        return now + window;
    }
    if !contested {
        return now;
    }
    let since = now.saturating_duration_since(last_publish);
    match window.checked_sub(since) {
        Some(left) => now + since.max(MIN_GRACE).min(left),
        None => now,
    }
}

/// When an advert is published next: the first interval after a
/// publication, then twice as long each time up to [`READVERTISE_MAX`]; an
/// advert nobody received is tried again soon without backing off.
struct Republish {
    every: Duration,
    next: Instant,
    last: Instant,
}

impl Republish {
    fn new(first: Duration, now: Instant) -> Self {
        Self {
            every: first,
            next: now,
            last: now,
        }
    }

    fn published(&mut self, now: Instant) {
        self.last = now;
        self.next += self.every;
        self.every = (self.every * 2).min(READVERTISE_MAX);
    }

    fn unpublished(&mut self, now: Instant) {
        self.next = now + self.every.min(UNPUBLISHED_RETRY);
    }

    /// Publish again now (the offers that came were let go).
    fn again(&mut self, now: Instant) {
        self.next = now;
    }
}

/// Which auctions may be open: at most `limit` per workflow, the others
/// waiting first come, first served. An open auction keeps its advert
/// published (again and again until offers come) and sits in the backlog
/// of every busy worker; a burst of thousands of jobs for a handful of
/// slots would otherwise keep thousands of adverts re-published for
/// nothing. Per workflow, so that jobs of a workflow nobody runs (which
/// wait out `offer_timeout_ms`) never hold back the others.
pub(super) struct Windows<T> {
    limit: usize,
    by_workflow: HashMap<WorkflowId, Window<T>>,
}

struct Window<T> {
    open: usize,
    waiting: VecDeque<T>,
}

impl<T> Windows<T> {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            by_workflow: HashMap::new(),
        }
    }

    /// An auction of `workflow` wants to open: it waits its turn.
    pub(super) fn enqueue(&mut self, workflow: WorkflowId, waiting: T) {
        self.by_workflow
            .entry(workflow)
            .or_insert_with(|| Window {
                open: 0,
                waiting: VecDeque::new(),
            })
            .waiting
            .push_back(waiting);
    }

    /// The next auction of `workflow` that may open now (counted open).
    pub(super) fn next(&mut self, workflow: &WorkflowId) -> Option<T> {
        let w = self.by_workflow.get_mut(workflow)?;
        if w.open >= self.limit {
            return None;
        }
        let next = w.waiting.pop_front()?;
        w.open += 1;
        Some(next)
    }

    /// An open auction of `workflow` closed (or never started).
    pub(super) fn closed(&mut self, workflow: &WorkflowId) {
        if let Some(w) = self.by_workflow.get_mut(workflow) {
            w.open = w.open.saturating_sub(1);
            if w.open == 0 && w.waiting.is_empty() {
                self.by_workflow.remove(workflow);
            }
        }
    }
}

/// Publish the advert (repeatedly, less often each time, until offers come),
/// collect offers for the window after the first, and pick the best one not
/// excluded (falling back to excluded workers when nobody else offers).
/// Offers from `signed` (workers whose result for it is held, when a quorum
/// needs another) are declined outright. `contested`: a worker may already
/// be running it ([`window_close`]).
/// Waits first until the workflow has room for another open auction
/// ([`Windows`]); the job is `advertised` from then on.
pub(super) async fn advertise_and_choose(
    ctx: &Ctx,
    topic: &Topic,
    (advert, input_bytes): (&JobAdvert, u64),
    (excluded, signed, contested, quorum): (&HashSet<PeerId>, &HashSet<PeerId>, bool, usize),
    cancel: &CancellationToken,
    lookup: &mut Option<Lookup<'_>>,
) -> Result<Choice, ResolveError> {
    let expr = advert.expr.id();
    let (tx, mut rx) = mpsc::channel(OFFERS_HELD);
    // Subscribe before opening, so no announcement falls between the two.
    let mut announced = ctx.0.announced.subscribe();
    let (admitted, turn) = oneshot::channel();
    ctx.tell(Cmd::OpenAuction {
        expr,
        workflow: advert.expr.workflow,
        offers: tx,
        admitted,
    })
    .await;
    tokio::select! {
        _ = cancel.cancelled() => {
            // Opened meanwhile or not, the actor lets go of it.
            ctx.tell(Cmd::CloseAuction { expr }).await;
            return Err(ResolveError::Cancelled);
        }
        turn = turn => if turn.is_err() {
            // The actor stopped: the node is shutting down.
            return Err(ResolveError::Cancelled);
        },
    }
    ctx.set_state(expr, crate::scheduler::JobState::Advertised)
        .await;
    let mut offers = Vec::new();
    let outcome = collect(
        ctx,
        (topic, advert, input_bytes),
        (excluded, signed, contested, quorum),
        cancel,
        (&mut rx, &mut announced),
        (&mut offers, lookup),
    )
    .await;
    ctx.tell(Cmd::CloseAuction { expr }).await;
    // Offers the actor routed before the auction closed get an answer too.
    rx.close();
    while let Some(o) = rx.recv().await {
        offers.push(o);
    }
    let choice = match outcome {
        Ok(None) if !offers.is_empty() => {
            offers.sort_by_key(|o| offer_rank(&o.offer, excluded.contains(&o.peer)));
            let best = offers.remove(0);
            Ok(Choice::Worker(best.peer, best.reply))
        }
        Ok(None) => Ok(Choice::Nobody),
        Ok(Some(found)) => Ok(Choice::Found(Box::new(found))),
        Err(e) => Err(e),
    };
    decline(ctx, offers).await;
    choice
}

/// Let the workers behind `offers` go.
async fn decline(ctx: &Ctx, offers: impl IntoIterator<Item = OfferIn>) {
    for o in offers {
        ctx.parts()
            .client
            .respond_job(o.reply, JobResponse::Decline(DeclineReason::NotNeeded))
            .await;
    }
}

/// The auction's loop: until the window closes (`Ok(None)`: choose among
/// `offers`), a fact appears (`Ok(Some)`: the `lookup` still running hit, or
/// a fact was announced), or the job is cancelled. The window never closes
/// while the lookup runs; offers held for it longer than [`LOOKUP_HOLD`]
/// are declined, and the advert is published again once it has missed.
async fn collect(
    ctx: &Ctx,
    (topic, advert, input_bytes): (&Topic, &JobAdvert, u64),
    (excluded, signed, contested, quorum): (&HashSet<PeerId>, &HashSet<PeerId>, bool, usize),
    cancel: &CancellationToken,
    (rx, announced): (
        &mut mpsc::Receiver<OfferIn>,
        &mut tokio::sync::broadcast::Receiver<oda_protocol::ExprId>,
    ),
    (offers, lookup): (&mut Vec<OfferIn>, &mut Option<Lookup<'_>>),
) -> Result<Option<Resolved>, ResolveError> {
    let expr = advert.expr.id();
    let cfg = &ctx.parts().cfg;
    let offer_timeout = Duration::from_millis(cfg.offer_timeout_ms);
    let mut give_up = Instant::now() + offer_timeout;
    let mut window_end: Option<Instant> = None;
    // When the first offer still held for the lookup came.
    let mut held_since: Option<Instant> = None;
    let mut schedule = Republish::new(Duration::from_millis(cfg.readvertise_ms), Instant::now());
    loop {
        let deadline = window_end.unwrap_or(give_up);
        tokio::select! {
            _ = cancel.cancelled() => return Err(ResolveError::Cancelled),
            _ = tokio::time::sleep_until(deadline), if lookup.is_none() => return Ok(None),
            found = async { lookup.as_mut().expect("checked").await }, if lookup.is_some() => {
                *lookup = None;
                if let Some(found) = found? {
                    return Ok(Some(found));
                }
                // It missed: the job is advertised for the full offer
                // timeout from now, as if the lookup had come first.
                give_up = Instant::now() + offer_timeout;
                if offers.is_empty() {
                    schedule.again(Instant::now());
                }
            }
            _ = tokio::time::sleep_until(held_since.unwrap_or(give_up) + LOOKUP_HOLD),
                if lookup.is_some() && held_since.is_some() => {
                // The lookup is slow (unreachable peers time out): do not
                // hold the workers' slots meanwhile.
                decline(ctx, offers.drain(..)).await;
                window_end = None;
                held_since = None;
            }
            // Somebody computed it meanwhile (for example a worker that
            // finished a lease this node lost in a restart): use that fact.
            Ok(e) = announced.recv() => {
                if e != expr {
                    continue;
                }
                let local = ctx.pick_trusted(&ctx.parts().store.facts_for(&expr)?, quorum).await;
                let found = match local {
                    Some(fact) => Some(Resolved { fact, from_cache: true }),
                    None => super::resolve::mesh_lookup(ctx, expr, quorum).await?,
                };
                if found.is_some() {
                    return Ok(found);
                }
            }
            _ = tokio::time::sleep_until(schedule.next), if window_end.is_none() => {
                publish(ctx, topic, advert, give_up, &mut schedule).await;
            }
            Some(offer) = rx.recv() => {
                if signed.contains(&offer.peer) {
                    decline(ctx, [offer]).await;
                    continue;
                }
                if lookup.is_some() {
                    held_since.get_or_insert_with(Instant::now);
                }
                // A running worker is joined at once, unless it failed this
                // job before (then its claim weighs like any other offer).
                if offer.offer.running && !excluded.contains(&offer.peer) {
                    offers.push(offer);
                    window_end = Some(Instant::now());
                    continue;
                }
                let ideal = !excluded.contains(&offer.peer) && offer.offer.local_input_bytes >= input_bytes;
                offers.push(offer);
                let window = Duration::from_millis(cfg.offer_window_ms);
                let end = window_close(ideal, contested, schedule.last, window);
                window_end = Some(window_end.map_or(end, |e| e.min(end)));
            }
        }
    }
}

/// Publish the advert once. Busy workers keep it in their backlog until its
/// deadline; each re-publication extends it, and the fresh deadline makes it
/// a new gossip message (ids are content hashes) for workers that missed it
/// or just subscribed.
async fn publish(
    ctx: &Ctx,
    topic: &Topic,
    advert: &JobAdvert,
    give_up: Instant,
    schedule: &mut Republish,
) {
    let mut fresh = advert.clone();
    let left = give_up.saturating_duration_since(Instant::now());
    fresh.deadline = now_ms() + (schedule.every * 2).min(left).as_millis() as u64;
    // The local worker hears it as a peer would; for the schedule it
    // counts as a subscriber that received it.
    let local = match &ctx.parts().local_worker {
        Some(worker) => {
            worker.on_advert(fresh.clone());
            true
        }
        None => false,
    };
    let published = match ctx.publish_advert(topic, fresh).await {
        Err(NetworkError::NoSubscribers(_)) if local => Ok(()),
        other => other,
    };
    match published {
        Ok(()) => schedule.published(Instant::now()),
        // Nobody received it (no subscriber known yet): try again soon.
        Err(e) => {
            tracing::debug!(expr = %advert.expr.id(), error = %e, "advert not published yet");
            schedule.unpublished(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oda_protocol::ExprId;

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
    fn windows_open_at_most_the_limit_per_workflow_first_come_first_served() {
        let (a, b) = (WorkflowId([1; 32]), WorkflowId([2; 32]));
        let mut w = Windows::new(2);
        for i in 0..4 {
            w.enqueue(a, i);
        }
        w.enqueue(b, 10);
        assert_eq!(w.next(&a), Some(0));
        assert_eq!(w.next(&a), Some(1));
        assert_eq!(w.next(&a), None, "two of a are open");
        // Another workflow is not held back by a full one.
        assert_eq!(w.next(&b), Some(10));
        w.closed(&a);
        assert_eq!(w.next(&a), Some(2));
        assert_eq!(w.next(&a), None);
        w.closed(&a);
        w.closed(&a);
        assert_eq!(w.next(&a), Some(3));
        w.closed(&a);
        w.closed(&b);
        assert!(w.by_workflow.is_empty(), "empty windows are forgotten");
        // Closing more than was opened never underflows.
        w.closed(&a);
        assert_eq!(w.next(&a), None);
    }

    #[test]
    fn offers_rank_not_failed_then_running_then_locality_then_free_slots() {
        // A running worker wins even without inputs or slots.
        assert_eq!(
            best(&[(offer(false, 100, 8), false), (offer(true, 0, 0), false)]),
            1
        );
        // A worker that failed this job loses to one that did not, even
        // when it says it is running it.
        assert_eq!(
            best(&[(offer(false, 100, 8), true), (offer(false, 0, 1), false)]),
            1
        );
        assert_eq!(
            best(&[(offer(true, 100, 8), true), (offer(false, 0, 1), false)]),
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

    #[test]
    fn offers_are_admitted_only_to_an_open_auction_from_trusted_workers_without_an_adopted_run() {
        assert_eq!(admit_offer(Some(()), true, false), Ok(()));
        // No auction: not needed, whoever offers.
        assert_eq!(
            admit_offer(None::<()>, true, false),
            Err(DeclineReason::NotNeeded)
        );
        assert_eq!(
            admit_offer(None::<()>, false, false),
            Err(DeclineReason::NotNeeded)
        );
        // An untrusted worker is told it is not allowed.
        assert_eq!(
            admit_offer(Some(()), false, false),
            Err(DeclineReason::NotAllowed)
        );
        // A run from before a restart is awaited instead.
        assert_eq!(
            admit_offer(Some(()), true, true),
            Err(DeclineReason::NotNeeded)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_offer_window_closes_early_only_for_an_ideal_offer() {
        let window = Duration::from_millis(300);
        let published = Instant::now();
        // An offer 1 ms after publication: wait the minimum grace.
        tokio::time::advance(Duration::from_millis(1)).await;
        let now = Instant::now();
        assert_eq!(window_close(true, true, published, window), now + MIN_GRACE);
        // An offer 40 ms after: as long again.
        tokio::time::advance(Duration::from_millis(39)).await;
        let now = Instant::now();
        assert_eq!(
            window_close(true, true, published, window),
            now + Duration::from_millis(40)
        );
        // Not ideal (locality in question): the whole window.
        assert_eq!(window_close(false, true, published, window), now + window);
        // An ideal offer after the window since publication (from a backlog): close now.
        tokio::time::advance(window).await;
        let now = Instant::now();
        assert_eq!(window_close(true, true, published, window), now);
        // Nobody else advertised it and no earlier attempt runs: an ideal
        // offer closes the window at once, a non-ideal one opens it whole.
        assert_eq!(window_close(true, false, published, window), now);
        assert_eq!(window_close(false, false, published, window), now + window);
    }

    #[tokio::test(start_paused = true)]
    async fn adverts_are_republished_less_and_less_often_and_retried_soon_when_unheard() {
        let start = Instant::now();
        let mut s = Republish::new(Duration::from_secs(1), start);
        assert_eq!(s.next, start, "the first publication is immediate");
        s.published(start);
        assert_eq!(s.next, start + Duration::from_secs(1));
        s.published(s.next);
        assert_eq!(s.next, start + Duration::from_secs(3));
        // Nobody heard it: again within half a second, with no back-off.
        let now = Instant::now();
        s.unpublished(now);
        assert_eq!(s.next, now + UNPUBLISHED_RETRY);
        assert_eq!(s.every, Duration::from_secs(4));
        for _ in 0..10 {
            s.published(s.next);
        }
        assert_eq!(s.every, READVERTISE_MAX, "the interval is capped");
    }
}
