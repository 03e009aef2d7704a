//! Facts: "expression E evaluates to data D", signed by the worker that computed it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::{canonical, limits, Wire};
use crate::ids::{contexts, derive, BlobId, ExprId, FactId, WorkflowId};
use crate::keys::{PublicKey, Signable, Signed, VerifyError};

/// Who a worker serves. Variants are encoded by index: never reorder or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunnerClass {
    /// Anyone.
    Public,
    /// Members of a signed group roster.
    Group,
    /// Only its owner keys.
    User,
    /// One requester, until an expiry.
    Session,
    /// Exactly one job, then exits.
    Job,
    /// No trusted identity: runs what a signed job token allows.
    Anonymous,
}

impl RunnerClass {
    /// Every class, in the order of their encoding.
    pub const ALL: [RunnerClass; 6] = [
        RunnerClass::Public,
        RunnerClass::Group,
        RunnerClass::User,
        RunnerClass::Session,
        RunnerClass::Job,
        RunnerClass::Anonymous,
    ];

    /// Name as written in configs.
    pub fn name(&self) -> &'static str {
        match self {
            RunnerClass::Public => "public",
            RunnerClass::Group => "group",
            RunnerClass::User => "user",
            RunnerClass::Session => "session",
            RunnerClass::Job => "job",
            RunnerClass::Anonymous => "anonymous",
        }
    }
}

/// One produced output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    /// Content id of the bytes.
    pub blob: BlobId,
    /// Size in bytes.
    pub size: u64,
}

/// What evaluating the expression gave. Variants are encoded by index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The run succeeded and produced these outputs, by output name.
    Success {
        /// Output name → bytes.
        outputs: BTreeMap<String, OutputRef>,
    },
    /// The workflow ran correctly and reported an analysis exception (for example
    /// "no data in this time range"). Cached like a success.
    AnalysisError {
        /// Machine-readable kind chosen by the workflow.
        kind: String,
        /// Message for humans.
        message: String,
    },
}

/// How an `Output` argument was resolved for this run: the input fact used
/// (its id and signer, since v2) and the bytes it names. Inputs are facts,
/// not claims: anyone can fetch the input fact and check it with
/// [`ResolvedInput::check`], so provenance is a chain of signatures.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResolvedInput {
    /// The upstream expression.
    pub expr: ExprId,
    /// Its output name.
    pub name: String,
    /// The bytes used.
    pub blob: BlobId,
    /// The fact about `expr` that gave `blob` as output `name`.
    pub fact: FactId,
    /// That fact's signer.
    pub signer: PublicKey,
}

impl ResolvedInput {
    /// The input named by `fact`'s output `name`.
    pub fn from_fact(fact: &SignedFact, name: &str) -> Result<Self, InputError> {
        let id = fact.id();
        let blob = match &fact.body.outcome {
            Outcome::Success { outputs } => {
                outputs
                    .get(name)
                    .ok_or_else(|| InputError::NoSuchOutput {
                        fact: id,
                        name: name.to_string(),
                    })?
                    .blob
            }
            Outcome::AnalysisError { .. } => return Err(InputError::NotASuccess(id)),
        };
        Ok(Self {
            expr: fact.body.expr,
            name: name.to_string(),
            blob,
            fact: id,
            signer: fact.body.worker,
        })
    }

    /// Check that `fact` is the input fact this names: its id and signer,
    /// a valid signature for `expr`, and output `name` is `blob`.
    pub fn check(&self, fact: &SignedFact) -> Result<(), InputError> {
        self.matches(fact)?;
        fact.verify_for(&self.expr)
            .map_err(|e| InputError::Invalid(self.fact, e))
    }

    /// [`ResolvedInput::check`] without the signature check, for a fact
    /// whose signature was verified before (one from a store that verifies
    /// what it stores): its id and signer, its expression, and output
    /// `name` is `blob`.
    pub fn matches(&self, fact: &SignedFact) -> Result<(), InputError> {
        let id = fact.id();
        if id != self.fact {
            return Err(InputError::OtherFact {
                named: self.fact,
                found: id,
            });
        }
        if fact.body.worker != self.signer {
            return Err(InputError::OtherSigner(self.fact));
        }
        if fact.body.expr != self.expr {
            return Err(InputError::OtherExpr(self.fact));
        }
        let named = Self::from_fact(fact, &self.name)?;
        if named.blob != self.blob {
            return Err(InputError::OtherBlob {
                fact: self.fact,
                name: self.name.clone(),
                claimed: self.blob,
                found: named.blob,
            });
        }
        Ok(())
    }
}

/// Why a fact is not the input a [`ResolvedInput`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Another fact than the one named.
    #[error("fact {found} is not the input fact {named}")]
    OtherFact {
        /// Named by the input.
        named: FactId,
        /// Given.
        found: FactId,
    },
    /// The named fact has another signer than the input says.
    #[error("input fact {0} has another signer than the input names")]
    OtherSigner(FactId),
    /// The fact does not verify.
    #[error("input fact {0} is invalid: {1}")]
    Invalid(FactId, FactError),
    /// The named fact is about another expression than the input says.
    #[error("input fact {0} is about another expression than the input names")]
    OtherExpr(FactId),
    /// The fact is an analysis error: it has no outputs.
    #[error("input fact {0} is an analysis error, not a success")]
    NotASuccess(FactId),
    /// The fact has no output of that name.
    #[error("input fact {fact} has no output named {name:?}")]
    NoSuchOutput {
        /// The fact.
        fact: FactId,
        /// The output asked for.
        name: String,
    },
    /// The fact's output is other bytes than the input claims.
    #[error("input fact {fact} gives output {name:?} as blob {found}, not {claimed}")]
    OtherBlob {
        /// The fact.
        fact: FactId,
        /// The output.
        name: String,
        /// The blob the input claims.
        claimed: BlobId,
        /// The blob the fact names.
        found: BlobId,
    },
}

/// Resources a run used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time of the process tree, milliseconds.
    pub cpu_ms: u64,
    /// Peak resident set size, KiB.
    pub peak_rss_kib: u64,
}

/// The body of a fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// The expression evaluated.
    pub expr: ExprId,
    /// Its workflow.
    pub workflow: WorkflowId,
    /// The result.
    pub outcome: Outcome,
    /// The key that computed and signed it.
    pub worker: PublicKey,
    /// The class of runner that computed it.
    pub runner_class: RunnerClass,
    /// Upstream outputs used, sorted.
    pub inputs: Vec<ResolvedInput>,
    /// Run start, Unix milliseconds.
    pub started_at: u64,
    /// Run end, Unix milliseconds.
    pub finished_at: u64,
    /// Resources used.
    pub usage: Usage,
    /// Digest of the execution environment (executor, tool versions), opaque.
    #[serde(with = "crate::fixed_bytes")]
    pub environment: [u8; 32],
}

impl Signable for Fact {
    const CONTEXT: &'static str = "fact";
    fn signer(&self) -> &PublicKey {
        &self.worker
    }
}

impl Fact {
    /// `BLAKE3-derive("oda-mesh v2 fact-id", canonical(fact body))`.
    pub fn id(&self) -> FactId {
        FactId(derive(contexts::FACT, &canonical(self)))
    }

    /// Output `name`, if the outcome is a success that has it.
    pub fn output(&self, name: &str) -> Option<&OutputRef> {
        match &self.outcome {
            Outcome::Success { outputs } => outputs.get(name),
            Outcome::AnalysisError { .. } => None,
        }
    }

    /// Output blob ids, if the outcome is a success.
    pub fn output_blobs(&self) -> Vec<BlobId> {
        match &self.outcome {
            Outcome::Success { outputs } => outputs.values().map(|o| o.blob).collect(),
            Outcome::AnalysisError { .. } => Vec::new(),
        }
    }
}

/// A fact with its worker's signature.
pub type SignedFact = Signed<Fact>;

impl Wire for SignedFact {
    const WHAT: &'static str = "signed fact";
    const MAX_SIZE: usize = limits::SIGNED_OBJECT;
}

/// Why a signed fact is not acceptable as a record for an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactError {
    /// The signature is bad.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// The fact is about another expression than the one asked for.
    #[error("fact is about expression {found}, not {expected}")]
    WrongExpression {
        /// Asked for.
        expected: ExprId,
        /// Found in the fact.
        found: ExprId,
    },
    /// Timestamps are inconsistent.
    #[error("fact finished ({finished}) before it started ({started})")]
    BadTimes {
        /// started_at.
        started: u64,
        /// finished_at.
        finished: u64,
    },
}

impl SignedFact {
    /// Verify the signature and that the fact is about `expected`.
    pub fn verify_for(&self, expected: &ExprId) -> Result<(), FactError> {
        if &self.body.expr != expected {
            return Err(FactError::WrongExpression {
                expected: *expected,
                found: self.body.expr,
            });
        }
        if self.body.finished_at < self.body.started_at {
            return Err(FactError::BadTimes {
                started: self.body.started_at,
                finished: self.body.finished_at,
            });
        }
        self.verify()?;
        Ok(())
    }

    /// The fact's id.
    pub fn id(&self) -> FactId {
        self.body.id()
    }
}
