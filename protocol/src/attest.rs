//! Signed statements other than facts: [`Endorsement`] (of a workflow or a fact),
//! [`Dispute`], [`JobToken`] (a capability for anonymous runners),
//! [`GroupRoster`] (members of a group for `group` runners) and [`Failure`]
//! (a worker's record that running an expression failed without a result).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::codec::{limits, Wire};
use crate::fact::ResolvedInput;
use crate::ids::{BlobId, ExprId, FactId, WorkflowId};
use crate::keys::{PublicKey, Signable, Signed};

/// What an endorsement vouches for. Variants are encoded by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Subject {
    /// An expert vouches that this workflow is fit to run.
    Workflow(WorkflowId),
    /// A controller re-computed this fact and agrees.
    Fact(FactId),
}

/// "I, `endorser`, vouch for `subject`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// The vouching key.
    pub endorser: PublicKey,
    /// What is vouched for.
    pub subject: Subject,
    /// When, Unix milliseconds.
    pub issued_at: u64,
    /// Free text, at most [`Endorsement::MAX_NOTE`] bytes.
    pub note: String,
}

impl Endorsement {
    /// Longest `note` a receiver keeps, bytes.
    pub const MAX_NOTE: usize = 2048;
}

impl Signable for Endorsement {
    const CONTEXT: &'static str = "endorsement";
    fn signer(&self) -> &PublicKey {
        &self.endorser
    }
}

/// A signed endorsement.
pub type SignedEndorsement = Signed<Endorsement>;

impl Wire for SignedEndorsement {
    const WHAT: &'static str = "signed endorsement";
    const MAX_SIZE: usize = limits::SIGNED_OBJECT;
}

/// "I, `worker`, ran `expr` on these `inputs` and it failed without a result"
/// (since v2): an unhandled failure — a crash, a signal, a timeout, a missing
/// output — of the run itself, never a cancellation or a fault of what the
/// worker was handed (inputs that do not check, a fetch that failed).
/// Requesters that trust `worker` count such records so that an expression
/// that fails everywhere is not retried by every requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The worker that ran it.
    pub worker: PublicKey,
    /// The expression.
    pub expr: ExprId,
    /// Its workflow.
    pub workflow: WorkflowId,
    /// The inputs it ran on, as in the advert (and as a fact would name them).
    pub inputs: Vec<ResolvedInput>,
    /// When the run ended, Unix milliseconds.
    pub at: u64,
    /// What happened, for humans, at most [`Failure::MAX_REASON`] bytes.
    pub reason: String,
    /// The end of the run's log, at most [`Failure::MAX_LOG_TAIL`] bytes.
    pub log_tail: String,
}

impl Failure {
    /// Longest `reason`, bytes.
    pub const MAX_REASON: usize = 1024;
    /// Longest `log_tail`, bytes.
    pub const MAX_LOG_TAIL: usize = 4096;
}

impl Signable for Failure {
    const CONTEXT: &'static str = "failure";
    fn signer(&self) -> &PublicKey {
        &self.worker
    }
}

/// A signed failure record.
pub type SignedFailure = Signed<Failure>;

impl Wire for SignedFailure {
    const WHAT: &'static str = "signed failure";
    const MAX_SIZE: usize = limits::SIGNED_OBJECT;
}

/// "I, `controller`, re-ran `expr` and got other outputs than `fact` claims."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    /// The key that re-computed.
    pub controller: PublicKey,
    /// The disputed fact.
    pub fact: FactId,
    /// Its expression.
    pub expr: ExprId,
    /// What the controller got, by output name.
    pub observed: BTreeMap<String, BlobId>,
    /// When, Unix milliseconds.
    pub issued_at: u64,
    /// Explanation for humans.
    pub reason: String,
}

impl Signable for Dispute {
    const CONTEXT: &'static str = "dispute";
    fn signer(&self) -> &PublicKey {
        &self.controller
    }
}

/// A signed dispute.
pub type SignedDispute = Signed<Dispute>;

impl Wire for SignedDispute {
    const WHAT: &'static str = "signed dispute";
    const MAX_SIZE: usize = limits::SIGNED_OBJECT;
}

/// What a job token allows. Variants are encoded by index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenScope {
    /// Exactly these expressions.
    Exprs(BTreeSet<ExprId>),
    /// Any expression of this workflow.
    Workflow(WorkflowId),
}

/// A capability signed by a requester: run these jobs, until then, maybe only on
/// this runner key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobToken {
    /// The requester granting it.
    pub issuer: PublicKey,
    /// What may be run.
    pub scope: TokenScope,
    /// Expiry, Unix milliseconds (exclusive).
    pub expires_at: u64,
    /// If set, only this runner key may use it.
    pub runner: Option<PublicKey>,
    /// Random bytes making every token distinct.
    pub nonce: u64,
}

impl Signable for JobToken {
    const CONTEXT: &'static str = "job-token";
    fn signer(&self) -> &PublicKey {
        &self.issuer
    }
}

/// A signed job token.
pub type SignedJobToken = Signed<JobToken>;

impl Wire for SignedJobToken {
    const WHAT: &'static str = "signed job token";
    const MAX_SIZE: usize = limits::SIGNED_OBJECT;
}

/// Why a job token does not allow a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Bad signature.
    #[error(transparent)]
    Signature(#[from] crate::keys::VerifyError),
    /// Past its expiry.
    #[error("job token expired at {expires_at} (now {now})")]
    Expired {
        /// Expiry.
        expires_at: u64,
        /// The time checked.
        now: u64,
    },
    /// The expression is not in scope.
    #[error("job token does not cover expression {0}")]
    ExprNotInScope(ExprId),
    /// The workflow is not in scope.
    #[error("job token covers workflow {allowed}, not {asked}")]
    WorkflowNotInScope {
        /// Covered.
        allowed: WorkflowId,
        /// Asked.
        asked: WorkflowId,
    },
    /// Bound to another runner.
    #[error("job token is for runner {allowed}, not {asked}")]
    WrongRunner {
        /// Bound runner.
        allowed: PublicKey,
        /// Runner that tried.
        asked: PublicKey,
    },
}

impl SignedJobToken {
    /// Check signature, expiry, scope and runner binding for one run.
    pub fn allows(
        &self,
        expr: &ExprId,
        workflow: &WorkflowId,
        runner: &PublicKey,
        now_ms: u64,
    ) -> Result<(), TokenError> {
        self.verify()?;
        let t = &self.body;
        if now_ms >= t.expires_at {
            return Err(TokenError::Expired {
                expires_at: t.expires_at,
                now: now_ms,
            });
        }
        match &t.scope {
            TokenScope::Exprs(set) if !set.contains(expr) => {
                return Err(TokenError::ExprNotInScope(*expr))
            }
            TokenScope::Workflow(w) if w != workflow => {
                return Err(TokenError::WorkflowNotInScope {
                    allowed: *w,
                    asked: *workflow,
                })
            }
            _ => {}
        }
        if let Some(bound) = t.runner {
            if &bound != runner {
                return Err(TokenError::WrongRunner {
                    allowed: bound,
                    asked: *runner,
                });
            }
        }
        Ok(())
    }
}

/// The members of a group, signed by the group's owner. A newer `version`
/// replaces an older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRoster {
    /// The owner key that signs rosters of this group.
    pub owner: PublicKey,
    /// Group name.
    pub name: String,
    /// Monotonic version.
    pub version: u64,
    /// Member keys.
    pub members: BTreeSet<PublicKey>,
    /// When, Unix milliseconds.
    pub issued_at: u64,
}

impl Signable for GroupRoster {
    const CONTEXT: &'static str = "group-roster";
    fn signer(&self) -> &PublicKey {
        &self.owner
    }
}

/// A signed group roster.
pub type SignedGroupRoster = Signed<GroupRoster>;

impl Wire for SignedGroupRoster {
    const WHAT: &'static str = "signed group roster";
    const MAX_SIZE: usize = limits::SIGNED_OBJECT;
}

impl SignedGroupRoster {
    /// Whether `key` is a member (or the owner) according to a verified roster.
    pub fn admits(&self, key: &PublicKey) -> Result<bool, crate::keys::VerifyError> {
        self.verify()?;
        Ok(&self.body.owner == key || self.body.members.contains(key))
    }
}
