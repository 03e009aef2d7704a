//! Jobs: the requester (cache-first resolution and scheduling), the worker
//! (offers, runs, signs facts), the trust policy, and the dispatcher that
//! routes network events to them. Job state machines and exception rules are
//! described in docs/architecture.md.

pub mod backlog;
pub mod controller;
pub(crate) mod input_facts;
pub mod jobs;
pub mod quorum;
pub mod requester;
pub mod trust;
pub mod verdicts;
pub mod worker;

use oda_protocol::messages::{Gossip, JobRequest, JobResponse};

pub use jobs::{JobId, JobRecord, JobState};
pub use requester::{JobEvent, Requester, RequesterError};
pub use trust::{TrustBook, TrustPolicy};
pub use worker::{Worker, WorkerConfig};

use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::network::{Client, JobReply};

/// Send an actor a command carrying a reply sender and wait for the reply;
/// `None` if the actor has stopped.
async fn ask<C, T>(
    commands: &mpsc::Sender<C>,
    cmd: impl FnOnce(oneshot::Sender<T>) -> C,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    commands.send(cmd(tx)).await.ok()?;
    rx.await.ok()
}

/// Requester timing and retry settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Collect offers for this long after the first, ms.
    pub offer_window_ms: u64,
    /// A job fails when no trusted worker offers within this long while it
    /// is advertised (it waits this long for busy workers), ms.
    pub offer_timeout_ms: u64,
    /// Re-publish an unanswered advert after this long, then twice as long
    /// each time (up to 30 s), ms.
    pub readvertise_ms: u64,
    /// A lease ends unless a heartbeat arrives within this long, ms.
    pub lease_ttl_ms: u64,
    /// Most attempts (assignments) per expression.
    pub max_attempts: u32,
    /// Back-off before the second attempt, doubled each time, ms.
    pub backoff_ms: u64,
    /// Most jobs of one workflow advertised at a time (collecting offers,
    /// not yet assigned); the others stay queued until one is assigned.
    pub max_open_adverts: usize,
    /// Distinct trusted workers that must agree on a result before it is
    /// accepted (`[trust] quorum`; 1: any one).
    pub quorum: u32,
}

/// The largest `[trust] quorum`.
pub const MAX_QUORUM: u32 = 16;

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            offer_window_ms: 300,
            offer_timeout_ms: 600_000,
            readvertise_ms: 1_000,
            lease_ttl_ms: 10_000,
            max_attempts: 3,
            backoff_ms: 500,
            max_open_adverts: 256,
            quorum: 1,
        }
    }
}

/// Routes network events to the requester and (if enabled) the worker.
#[derive(Clone)]
pub struct Dispatcher {
    /// The requester.
    pub requester: Requester,
    /// The worker, if this node computes.
    pub worker: Option<Worker>,
    /// The controller, if this node re-computes samples.
    pub controller: Option<controller::Controller>,
    /// For answering requests nobody handles.
    pub client: Client,
}

impl Dispatcher {
    /// Handle one gossip message. Never waits: gossip is handled in the
    /// order it comes, without a task per message.
    pub fn on_gossip(&self, message: Gossip) {
        match message {
            Gossip::JobAdvert(signed) => {
                let advert = signed.body;
                self.requester.on_foreign_advert(&advert);
                if let Some(c) = &self.controller {
                    c.on_advert(&advert);
                }
                if let Some(w) = &self.worker {
                    w.on_advert(advert);
                }
            }
            Gossip::FactAnnounce(signed) => {
                let a = signed.body;
                if let Some(w) = &self.worker {
                    w.on_fact_announce(&a.expr);
                }
                self.requester.on_fact_announce(a.expr);
                if let Some(c) = &self.controller {
                    c.on_fact_announce(&a);
                }
            }
            Gossip::Capacity(_) => {}
            Gossip::Failure(record) => self.requester.on_failure(record),
            Gossip::Dispute(d) => self.requester.on_verdict(verdicts::Incoming::Dispute(d)),
            Gossip::Endorsement(e) => self
                .requester
                .on_verdict(verdicts::Incoming::Endorsement(e)),
        }
    }

    /// Handle one job-protocol request (from a peer or from this node):
    /// hand it to the requester's actor or the worker, which answer it;
    /// waits only while the requester's command queue is full.
    pub async fn on_job_request(&self, peer: PeerId, request: JobRequest, reply: JobReply) {
        match request {
            JobRequest::Offer(offer) => self.requester.on_offer(peer, offer, reply).await,
            JobRequest::Progress(p) => self.requester.on_progress(peer, p, reply).await,
            JobRequest::Done(done) => self.requester.on_done(peer, *done, reply).await,
            JobRequest::Cancel(cancel) => match &self.worker {
                Some(w) => w.on_cancel(cancel, reply).await,
                None => self.client.respond_job(reply, JobResponse::Ack).await,
            },
        }
    }
}
