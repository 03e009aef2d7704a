//! Wire messages: gossip payloads and request-response pairs.
//!
//! Every enum here is encoded by variant index: never reorder or delete variants,
//! add new ones at the end and note the protocol version that added them.

use serde::{Deserialize, Serialize};

use crate::attest::{SignedEndorsement, SignedJobToken};
use crate::codec::{limits, Wire};
use crate::expression::Expression;
use crate::fact::{ResolvedInput, SignedFact};
use crate::ids::{BlobId, ExprId, FactId, WorkflowId};
use crate::keys::{PublicKey, Signable, Signed};
use crate::manifest::Resources;

/// Identifies one assignment of a job to a worker (random, chosen by the requester).
pub type LeaseId = u64;

/// Gossip on `/oda/<net>/jobs/<wf-prefix>/3`, signed by its requester
/// ([`SignedJobAdvert`]): "who can compute this?".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAdvert {
    /// The expression to evaluate.
    pub expr: Expression,
    /// How each `Output` argument resolved (the worker fetches these blobs).
    pub inputs: Vec<ResolvedInput>,
    /// The requester, who signs the advert; offers go to this key's peer.
    pub requester: PublicKey,
    /// What a run needs.
    pub requirements: Resources,
    /// After this Unix millisecond the requester no longer wants offers.
    pub deadline: u64,
    /// Higher runs first.
    pub priority: u8,
    /// Capability for anonymous runners.
    pub token: Option<SignedJobToken>,
    /// Blob holding the workflow bundle, so a worker that trusts the workflow
    /// but lacks it can fetch and verify it.
    pub bundle: BlobId,
    /// Endorsements of the workflow the requester holds (at most
    /// [`JobAdvert::MAX_ENDORSEMENTS`]); a worker runs a workflow it did not add
    /// only when one is by an expert it trusts.
    pub endorsements: Vec<SignedEndorsement>,
}

impl JobAdvert {
    /// Most endorsements attached to one advert.
    pub const MAX_ENDORSEMENTS: usize = 16;
}

impl Signable for JobAdvert {
    const CONTEXT: &'static str = "job-advert";
    fn signer(&self) -> &PublicKey {
        &self.requester
    }
}

/// A job advert signed by its requester (since v3: gossip messages are not
/// signed by gossipsub, each payload is signed by its author).
pub type SignedJobAdvert = Signed<JobAdvert>;

/// Gossip on `/oda/<net>/facts/3`, signed by its worker
/// ([`SignedFactAnnounce`]): a new fact exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactAnnounce {
    /// The expression.
    pub expr: ExprId,
    /// The fact.
    pub fact_id: FactId,
    /// Who signed it (and signs the announcement).
    pub worker: PublicKey,
}

impl Signable for FactAnnounce {
    const CONTEXT: &'static str = "fact-announce";
    fn signer(&self) -> &PublicKey {
        &self.worker
    }
}

/// A fact announcement signed by the fact's worker (since v3).
pub type SignedFactAnnounce = Signed<FactAnnounce>;

/// Gossip on `/oda/<net>/capacity/2`: a worker's periodic summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Workflows it is able and allowed to run (at most [`Capacity::MAX_LIST`]).
    pub workflows: Vec<WorkflowId>,
    /// Datasets it holds (at most [`Capacity::MAX_LIST`], most used first).
    pub blobs: Vec<BlobId>,
    /// Free job slots now.
    pub free_slots: u32,
    /// Total job slots.
    pub total_slots: u32,
}

impl Capacity {
    /// Longest list in a capacity message.
    pub const MAX_LIST: usize = 512;
}

/// Any gossip payload. The topic says which variant is expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Gossip {
    /// Since v1; signed by its requester since v3.
    JobAdvert(Box<SignedJobAdvert>),
    /// Since v1; signed by its worker since v3.
    FactAnnounce(SignedFactAnnounce),
    /// Since v1.
    Capacity(Capacity),
    /// Since v2, on `/oda/<net>/facts/2`: a worker's failure record,
    /// published by that worker.
    Failure(Box<crate::attest::SignedFailure>),
    /// Since v2, on `/oda/<net>/facts/2`: a signed dispute of a fact,
    /// published by the key that disputes it (a requester whose quorum
    /// outvoted the fact).
    Dispute(Box<crate::attest::SignedDispute>),
    /// Since v2, on `/oda/<net>/facts/2`: a controller's endorsement of a
    /// fact it re-computed and found right (subject [`Subject::Fact`]
    /// only), published by the controller.
    ///
    /// [`Subject::Fact`]: crate::attest::Subject::Fact
    Endorsement(Box<crate::attest::SignedEndorsement>),
}

impl Gossip {
    /// The key that signed the message (its author), if it is signed: every
    /// variant but `Capacity`.
    pub fn author(&self) -> Option<&PublicKey> {
        match self {
            Gossip::JobAdvert(a) => Some(&a.body.requester),
            Gossip::FactAnnounce(a) => Some(&a.body.worker),
            Gossip::Capacity(_) => None,
            Gossip::Failure(f) => Some(&f.body.worker),
            Gossip::Dispute(d) => Some(&d.body.controller),
            Gossip::Endorsement(e) => Some(&e.body.endorser),
        }
    }
}

impl Wire for Gossip {
    const WHAT: &'static str = "gossip message";
    const MAX_SIZE: usize = limits::GOSSIP;
}

/// How long a worker waits for the answer to an [`Offer`], ms: a requester
/// answers within this (its offer window must be shorter), else the worker
/// frees the slot the offer held and drops the requester's waiting adverts.
pub const OFFER_ANSWER_MS: u64 = 5_000;

/// Worker → requester: "I can run it".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The advertised expression.
    pub expr: ExprId,
    /// Bytes of the job's inputs the worker already holds.
    pub local_input_bytes: u64,
    /// Free slots now.
    pub free_slots: u32,
    /// Milliseconds until it could start.
    pub expected_start_ms: u64,
    /// The worker is already computing this expression (for another
    /// requester); assigning it joins that run instead of starting another.
    pub running: bool,
}

/// Requester → worker (as the answer to an offer): "run it under this lease".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    /// The expression.
    pub expr: ExprId,
    /// This assignment.
    pub lease: LeaseId,
    /// The lease ends unless a heartbeat arrives within this many milliseconds.
    pub ttl_ms: u64,
}

/// Why a worker or requester said no. Variants are encoded by index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeclineReason {
    /// The requester chose another worker or no longer needs the job.
    NotNeeded,
    /// The worker does not trust the workflow (not local, not endorsed).
    UntrustedWorkflow,
    /// The runner class does not admit this requester.
    NotAllowed,
    /// No free slot.
    Busy,
    /// Anything else; the text says what.
    Other(String),
}

/// Worker → requester while running: heartbeat and progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The expression.
    pub expr: ExprId,
    /// The lease being renewed.
    pub lease: LeaseId,
    /// Fraction done in [0, 1] if known.
    pub fraction: Option<f32>,
    /// Latest log line or status text.
    pub message: String,
}

/// Why a run failed without a fact (an unhandled failure: not cached, retried).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFailure {
    /// What went wrong.
    pub message: String,
    /// Last lines of stderr/stdout.
    pub log_tail: String,
}

/// Worker → requester: the job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The expression.
    pub expr: ExprId,
    /// The lease.
    pub lease: LeaseId,
    /// The signed fact, or an unhandled failure.
    pub result: Result<SignedFact, RunFailure>,
}

/// Requester → worker: stop working on a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// The expression.
    pub expr: ExprId,
    /// The lease.
    pub lease: LeaseId,
}

/// Requests on `/oda/<net>/job/2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobRequest {
    /// Since v1. Answered by `Assign` or `Decline`.
    Offer(Offer),
    /// Since v1. Answered by `Ack`, or `Decline(NotNeeded)` when the lease is gone.
    Progress(Progress),
    /// Since v1. Answered by `Ack`.
    Done(Box<Done>),
    /// Since v1. Answered by `Ack`.
    Cancel(Cancel),
}

/// Responses on `/oda/<net>/job/2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobResponse {
    /// Since v1.
    Assign(Assign),
    /// Since v1.
    Decline(DeclineReason),
    /// Since v1.
    Ack,
}

impl Wire for JobRequest {
    const WHAT: &'static str = "job request";
    const MAX_SIZE: usize = limits::JOB_MESSAGE;
}

impl Wire for JobResponse {
    const WHAT: &'static str = "job response";
    const MAX_SIZE: usize = limits::JOB_MESSAGE;
}

/// Requests on `/oda/<net>/fact/2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FactRequest {
    /// Since v1: every fact the peer holds for this expression.
    GetFacts(ExprId),
    /// Since v3: the endorsements and disputes of this fact the peer keeps
    /// (asked of the providers of `verdicts/<FactId>`: controllers that
    /// published one).
    GetVerdicts(FactId),
}

/// Responses on `/oda/<net>/fact/2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FactResponse {
    /// Since v1: at most [`FactResponse::MAX_FACTS`] facts.
    Facts(Vec<SignedFact>),
    /// Since v3, the answer to `GetVerdicts`: at most
    /// [`FactResponse::MAX_VERDICTS`] of each.
    Verdicts {
        /// Endorsements of the fact.
        endorsements: Vec<SignedEndorsement>,
        /// Disputes of the fact.
        disputes: Vec<crate::attest::SignedDispute>,
    },
}

impl FactResponse {
    /// Most facts in one reply.
    pub const MAX_FACTS: usize = 16;
    /// Most endorsements, and most disputes, in one reply.
    pub const MAX_VERDICTS: usize = 16;
}

impl Wire for FactRequest {
    const WHAT: &'static str = "fact request";
    const MAX_SIZE: usize = limits::SMALL_REQUEST;
}

impl Wire for FactResponse {
    const WHAT: &'static str = "fact response";
    const MAX_SIZE: usize = limits::FACT_MESSAGE;
}

/// Requests on `/oda/<net>/blob/2`: bytes `[offset, offset + len)` of a blob,
/// with the BLAKE3 tree hashes that prove them.
///
/// `offset` is a multiple of [`limits::BLOB_CHUNK_GROUP`] and below the blob's
/// size (0 for an empty blob); `len` is at most [`limits::BLOB_CHUNK`] and a
/// multiple of the chunk group unless the range reaches the blob's end (a range
/// past the end stops there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    /// The blob.
    pub blob: BlobId,
    /// First byte.
    pub offset: u64,
    /// Number of bytes, at most [`limits::BLOB_CHUNK`].
    pub len: u32,
}

/// Responses on `/oda/<net>/blob/2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobResponse {
    /// Since v2: the range asked for in the bao encoding of the blob's BLAKE3
    /// tree with chunk groups of [`limits::BLOB_CHUNK_GROUP`] bytes: a pre-order
    /// walk of the tree restricted to the range, each parent on the way giving
    /// its two 32-byte child hashes and each chunk group its bytes (see
    /// `docs/protocol.md`). The receiver checks every chunk group against the
    /// blob id as it arrives.
    Data {
        /// Total size of the blob.
        total: u64,
        /// Hash pairs and bytes, in tree order.
        #[serde(with = "serde_bytes")]
        encoded: Vec<u8>,
    },
    /// Since v1: the peer does not hold this blob.
    NotFound,
    /// Since v1: the request was invalid (offset past the end or not on a chunk
    /// group, len too large).
    BadRange(String),
}

impl Wire for BlobRequest {
    const WHAT: &'static str = "blob request";
    const MAX_SIZE: usize = limits::SMALL_REQUEST;
}

impl Wire for BlobResponse {
    const WHAT: &'static str = "blob response";
    const MAX_SIZE: usize = limits::BLOB_MESSAGE;
}
