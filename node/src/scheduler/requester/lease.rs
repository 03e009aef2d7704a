//! One lease: assign the job to the chosen worker, follow its heartbeats
//! (the actor routes them here and keeps the jobs' state and logs), and end
//! with its verified fact, its failure, an expiry, or a cancellation. While
//! the lease runs, the advert is re-published now and then so other
//! requesters join this computation instead of repeating it.

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use oda_protocol::messages::{Assign, Cancel, Gossip, JobAdvert, JobRequest, JobResponse, LeaseId};
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
                if let Err(e) = client.publish(topic.clone(), Gossip::JobAdvert(Box::new(fresh))).await {
                    tracing::debug!(error = %e, "in-progress advert not published");
                }
            }
        }
    };
    ctx.tell(Cmd::CloseLease { expr, lease }).await;
    end
}
