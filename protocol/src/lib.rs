//! `oda-protocol`: the ODA mesh data model and wire format, with no I/O.
//!
//! - [`ids`]: content-addressed ids ([`WorkflowId`], [`ExprId`], [`BlobId`], [`FactId`]).
//! - [`manifest`]: workflow manifests (TOML) and [`Workflow`].
//! - [`value`] and [`expression`]: typed arguments and normalised expressions.
//! - [`keys`]: ed25519 keys and the [`Signed`] envelope.
//! - [`fact`]: signed facts; [`attest`]: endorsements, disputes, job tokens, rosters.
//! - [`messages`]: gossip and request-response messages; [`names`]: protocol and
//!   topic names.
//! - [`codec`]: the only encoder/decoder, with a named size limit per message.
//!
//! The byte-level specification is `docs/protocol.md`.
#![warn(missing_docs)]

pub mod attest;
pub mod bundle;
pub mod codec;
pub mod expression;
pub mod fact;
mod fixed_bytes;
pub mod ids;
pub mod keys;
pub mod manifest;
pub mod messages;
pub mod names;
pub mod value;

pub use attest::{
    Dispute, Endorsement, Failure, GroupRoster, JobToken, SignedDispute, SignedEndorsement,
    SignedFailure, SignedGroupRoster, SignedJobToken, Subject, TokenScope,
};
pub use bundle::{BundleError, WorkflowBundle};
pub use codec::{DecodeError, EncodeError, Wire};
pub use expression::{ArgError, Expression};
pub use fact::{
    Fact, FactError, InputError, Outcome, OutputRef, ResolvedInput, RunnerClass, SignedFact, Usage,
};
pub use ids::{BlobId, ExprId, FactId, IdParseError, WorkflowId};
pub use keys::{PublicKey, SecretKey, Signable, Signature, Signed, VerifyError};
pub use manifest::{Executor, InputSpec, InputType, Manifest, ManifestError, Workflow};
pub use names::{NetworkId, Topic};
pub use value::Value;
