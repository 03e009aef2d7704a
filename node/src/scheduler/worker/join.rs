//! Runs other requesters join: a worker already running an expression that
//! another requester advertises offers that requester `Offer { running: true
//! }`; once assigned, the new lease gets heartbeats from the same run and the
//! same `Done`. One execution, one fact.
//!
//! The actor keeps a [`SharedRun`] per expression in progress; the offer and
//! each joined requester's heartbeats are tasks it owns.

use std::collections::HashSet;

use libp2p::PeerId;
use oda_protocol::messages::{Assign, JobResponse, LeaseId, Offer};
use oda_protocol::{ExprId, PublicKey};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::Ctx;

/// A run in progress that other requesters can join.
pub(super) struct SharedRun {
    /// The requester the run was assigned by.
    pub primary: PublicKey,
    /// The run's latest log line, for the joined requesters' heartbeats.
    pub lines: watch::Receiver<String>,
    /// Requesters that joined: their peer, lease and heartbeat task.
    pub joined: Vec<(PeerId, LeaseId, AbortHandle)>,
    /// Requesters being offered a join right now.
    pub offering: HashSet<PublicKey>,
}

impl SharedRun {
    pub(super) fn new(primary: PublicKey, lines: watch::Receiver<String>) -> Self {
        Self {
            primary,
            lines,
            joined: Vec::new(),
            offering: HashSet::new(),
        }
    }

    /// Whether `requester` has this run already, or is being offered it.
    pub(super) fn knows(&self, requester: &PublicKey, peer: &PeerId) -> bool {
        self.primary == *requester
            || self.offering.contains(requester)
            || self.joined.iter().any(|(p, _, _)| p == peer)
    }
}

/// Offer `requester` to join the run of `expr`; the lease if it accepts.
pub(super) async fn offer(
    ctx: &Ctx,
    requester: PeerId,
    expr: ExprId,
    free_slots: u32,
) -> Option<Assign> {
    let offer = Offer {
        expr,
        local_input_bytes: 0,
        free_slots,
        expected_start_ms: 0,
        running: true,
    };
    match super::run::send_offer(&ctx.parts.client, requester, offer).await {
        Ok(JobResponse::Assign(a)) if a.expr == expr => Some(a),
        _ => None,
    }
}
