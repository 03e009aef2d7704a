//! One lease: assign the job to the chosen worker, follow its heartbeats
//! (the actor routes them here and keeps the jobs' state and logs), and end
//! with its verified fact, its failure, an expiry, or a cancellation. While
//! the lease runs, the advert is re-published now and then so other
//! requesters join this computation instead of repeating it.

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use oda_protocol::messages::{Assign, Cancel, JobAdvert, JobRequest, JobResponse, LeaseId};
use oda_protocol::names::Topic;
use oda_protocol::{ExprId, SignedFact};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::actor::{Cmd, LeaseRoute};
use super::Ctx;
use crate::network::scoring::Offence;
use crate::network::JobReply;
use crate::scheduler::jobs::{now_ms, JobState};

/// How a lease ended.
pub(super) enum LeaseEnd {
    Fact(Box<SignedFact>),
    Cancelled,
    Failed { outcome: String, log_tail: String },
}

/// What a `Progress` from a peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heartbeat {
    /// Renews the open lease it names.
    Renews,
    /// Names a lease this process did not issue (one from before a
    /// restart) for an expression it still wants: the run is adopted and its
    /// result awaited instead of a second run.
    Adopts,
    /// Answered `Decline(NotNeeded)` and otherwise ignored.
    Refused,
}

/// What a `Progress` from `peer` naming a lease does: it renews the lease
/// only when `peer` is the worker the lease was issued to (`lease_worker`);
/// a lease this process never issued is adopted only from a trusted worker
/// (whose result could be taken) and only for an expression still `wanted`.
/// A made-up lease id from anyone else cannot make the requester wait for a
/// run that does not exist.
pub(super) fn heartbeat(
    lease_worker: Option<PeerId>,
    peer: PeerId,
    issued_here: bool,
    wanted: bool,
    trusted: bool,
) -> Heartbeat {
    match lease_worker {
        Some(worker) if worker == peer => Heartbeat::Renews,
        Some(_) => Heartbeat::Refused,
        None if !issued_here && wanted && trusted => Heartbeat::Adopts,
        None => Heartbeat::Refused,
    }
}

/// Assign `expr` to `worker` (answering its offer through `reply`) and
/// follow the lease to its end.
pub(super) async fn run_lease(
    ctx: &Ctx,
    (expr, worker, reply): (ExprId, PeerId, JobReply),
    cancel: &CancellationToken,
    (topic, advert): (&Topic, &JobAdvert),
) -> LeaseEnd {
    let lease: LeaseId = rand::random();
    let ttl = Duration::from_millis(ctx.parts().cfg.lease_ttl_ms);
    let heartbeat = Arc::new(Notify::new());
    let (done_tx, mut done_rx) = oneshot::channel();
    let route = LeaseRoute {
        worker,
        heartbeat: heartbeat.clone(),
        done: Some(done_tx),
        running: false,
    };
    ctx.tell(Cmd::OpenLease { expr, lease, route }).await;
    let assign = Assign {
        expr,
        lease,
        ttl_ms: ttl.as_millis() as u64,
    };
    let client = &ctx.parts().client;
    client.respond_job(reply, JobResponse::Assign(assign)).await;
    ctx.set_state(
        expr,
        JobState::Assigned {
            worker: worker.to_string(),
        },
    )
    .await;
    let mut expires = tokio::time::Instant::now() + ttl;
    let mut still_computing = tokio::time::interval_at(expires, ttl);
    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let cancel_msg = JobRequest::Cancel(Cancel { expr, lease });
                if let Err(e) = client.send_job(worker, cancel_msg).await {
                    tracing::debug!(%worker, error = %e, "cannot tell the worker to cancel");
                }
                break LeaseEnd::Cancelled;
            }
            _ = heartbeat.notified() => expires = tokio::time::Instant::now() + ttl,
            _ = tokio::time::sleep_until(expires) => {
                client.penalise(worker, Offence::BrokenLease).await;
                break LeaseEnd::Failed {
                    outcome: format!("lease expired: no heartbeat for {} ms", ttl.as_millis()),
                    log_tail: String::new(),
                };
            }
            done = &mut done_rx => match done {
                // The actor stopped: the node is shutting down.
                Err(_) => break LeaseEnd::Cancelled,
                Ok((done, from)) => match done.result {
                    Ok(fact) => match ctx.check_result(&expr, &fact, &from, Some(&advert.inputs)) {
                        Ok(()) => break LeaseEnd::Fact(Box::new(fact)),
                        Err(reason) => {
                            client.penalise(from, Offence::BadMessage).await;
                            break LeaseEnd::Failed { outcome: format!("invalid result: {reason}"), log_tail: String::new() };
                        }
                    },
                    Err(failure) => break LeaseEnd::Failed { outcome: failure.message, log_tail: failure.log_tail },
                },
            },
            // Tell the mesh it is being computed, so other requesters join
            // it (workers that offer meanwhile are declined).
            _ = still_computing.tick() => {
                let mut fresh = advert.clone();
                fresh.deadline = now_ms() + ttl.as_millis() as u64;
                if let Err(e) = ctx.publish_advert(topic, fresh).await {
                    tracing::debug!(error = %e, "in-progress advert not published");
                }
            }
        }
    };
    ctx.tell(Cmd::CloseLease { expr, lease }).await;
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lease_holder_renews_and_only_a_trusted_worker_is_adopted() {
        let (w, other) = (PeerId::random(), PeerId::random());
        // An open lease: its worker renews it; nobody else does, whatever
        // they claim.
        assert_eq!(heartbeat(Some(w), w, true, true, true), Heartbeat::Renews);
        assert_eq!(
            heartbeat(Some(w), other, true, true, true),
            Heartbeat::Refused
        );
        // A lease from before a restart, for an expression still wanted.
        assert_eq!(heartbeat(None, w, false, true, true), Heartbeat::Adopts);
        assert_eq!(
            heartbeat(None, other, false, true, false),
            Heartbeat::Refused
        );
        // Not wanted, or a lease this process issued and closed.
        assert_eq!(heartbeat(None, w, false, false, true), Heartbeat::Refused);
        assert_eq!(heartbeat(None, w, true, true, true), Heartbeat::Refused);
    }
}
