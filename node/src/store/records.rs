//! The store's sled layout: tree names, key layouts, the local record types kept in
//! the trees, and the one pair of functions that encode and decode every record
//! (through [`oda_protocol::codec::Wire`], so records use the protocol's canonical
//! bincode encoding and a named size limit).
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `exprs` | `ExprId` | [`Expression`](oda_protocol::Expression) |
//! | `workflows` | `WorkflowId` | [`WorkflowRecord`] (workflow and bundle blob) |
//! | `facts` | `FactId` | [`SignedFact`](oda_protocol::SignedFact) |
//! | `facts_by_expr` | `ExprId ‖ FactId` | empty |
//! | `held_facts` | `FactId` | [`HeldRecord`] (its output blobs) |
//! | `held_by_blob` | `BlobId ‖ FactId` | empty |
//! | `endorsements` | subject tag (0 workflow, 1 fact) ‖ id ‖ BLAKE3 of the record | [`SignedEndorsement`](oda_protocol::SignedEndorsement) |
//! | `disputes` | `FactId` ‖ the disputing key | [`SignedDispute`](oda_protocol::SignedDispute) |
//! | `blob_meta` | `BlobId` | [`BlobRecord`] |
//! | `store_meta` | name (UTF-8) | small values (the format version) |
//!
//! Ids are their raw 32 bytes; composite keys are concatenations, so a prefix scan
//! over the first id lists the second.

use oda_protocol::codec::{limits, Wire};
use oda_protocol::{BlobId, Subject, Workflow};
use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// Tree names. Callers of [`super::Store::tree`] may not use these.
pub(crate) mod trees {
    pub const EXPRS: &str = "exprs";
    pub const WORKFLOWS: &str = "workflows";
    pub const FACTS: &str = "facts";
    pub const FACTS_BY_EXPR: &str = "facts_by_expr";
    pub const HELD: &str = "held_facts";
    pub const HELD_BY_BLOB: &str = "held_by_blob";
    pub const ENDORSEMENTS: &str = "endorsements";
    pub const DISPUTES: &str = "disputes";
    pub const BLOB_META: &str = "blob_meta";
    pub const STORE_META: &str = "store_meta";
    /// Job records: owned by the scheduler's `JobStore` (through
    /// [`super::super::Store::tree`]); the store touches it only to upgrade
    /// its records' format.
    pub const JOBS: &str = "jobs";

    /// Every tree the store owns.
    pub const ALL: [&str; 10] = [
        EXPRS,
        WORKFLOWS,
        FACTS,
        FACTS_BY_EXPR,
        HELD,
        HELD_BY_BLOB,
        ENDORSEMENTS,
        DISPUTES,
        BLOB_META,
        STORE_META,
    ];
}

/// Key in `store_meta` holding the format version (u32, little-endian).
pub(crate) const FORMAT_KEY: &[u8] = b"format_version";
/// The on-disk format this build reads and writes (2 since protocol v2's
/// facts, 3 since job records carry a quorum; older stores are upgraded by
/// [`super::migrate`]).
pub(crate) const FORMAT_VERSION: u32 = 3;

/// What the store knows about one blob file, in tree `blob_meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobRecord {
    /// File size in bytes.
    pub size: u64,
    /// Pinned blobs are never evicted.
    pub pinned: bool,
    /// Last read or write, Unix milliseconds (for humans).
    pub last_access_ms: u64,
    /// Monotonic access counter (sled `generate_id`), the LRU order.
    pub access_seq: u64,
}

impl Wire for BlobRecord {
    const WHAT: &'static str = "blob metadata";
    const MAX_SIZE: usize = 64;
}

/// A workflow and the blob holding its bundle, in tree `workflows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkflowRecord {
    /// The workflow (manifest and file hashes).
    pub workflow: Workflow,
    /// The bundle: the workflow folder as one blob.
    pub bundle: BlobId,
}

impl Wire for WorkflowRecord {
    const WHAT: &'static str = "workflow record";
    const MAX_SIZE: usize = limits::WORKFLOW + 64;
}

/// A fact whose output bytes this node holds, in tree `held_facts`. Lists the
/// outputs so that demoting it does not need to decode the fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeldRecord {
    /// The fact's output blobs.
    pub outputs: Vec<BlobId>,
}

impl Wire for HeldRecord {
    const WHAT: &'static str = "held-fact record";
    const MAX_SIZE: usize = limits::SIGNED_OBJECT;
}

/// Encode a record for `tree`.
pub(crate) fn encode<T: Wire>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    value
        .encode()
        .map_err(|source| StoreError::Encode { tree, source })
}

/// Decode the record stored at `key` in `tree`.
pub(crate) fn decode<T: Wire>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    T::decode(bytes).map_err(|e| StoreError::corrupt(tree, key, e.to_string()))
}

/// The 32-byte id at `at` in a key of `tree`.
pub(crate) fn id_at(tree: &'static str, key: &[u8], at: usize) -> Result<[u8; 32], StoreError> {
    key.get(at..at + 32)
        .and_then(|s| <[u8; 32]>::try_from(s).ok())
        .ok_or_else(|| {
            StoreError::corrupt(tree, key, format!("key is {} bytes, too short", key.len()))
        })
}

/// The id that is the whole key of a record in `tree`.
pub(crate) fn key_id(tree: &'static str, key: &[u8]) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(key)
        .map_err(|_| StoreError::corrupt(tree, key, format!("key is {} bytes, not 32", key.len())))
}

/// A key made of two ids.
pub(crate) fn pair_key(a: &[u8; 32], b: &[u8; 32]) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(a);
    key[32..].copy_from_slice(b);
    key
}

/// The key prefix of all endorsements of `subject`.
pub(crate) fn subject_prefix(subject: &Subject) -> [u8; 33] {
    let (tag, id) = match subject {
        Subject::Workflow(w) => (0u8, w.as_bytes()),
        Subject::Fact(f) => (1u8, f.as_bytes()),
    };
    let mut key = [0u8; 33];
    key[0] = tag;
    key[1..].copy_from_slice(id);
    key
}

/// Map a sled transaction error whose closure never aborts with anything but a
/// [`StoreError`].
pub(crate) fn tx_error(
    op: &'static str,
) -> impl FnOnce(sled::transaction::TransactionError<StoreError>) -> StoreError {
    move |e| match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(source) => StoreError::Db { op, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_record_round_trips_and_rejects_garbage() {
        let r = BlobRecord {
            size: 5,
            pinned: true,
            last_access_ms: 1_700_000_000_000,
            access_seq: 42,
        };
        let bytes = encode(trees::BLOB_META, &r).unwrap();
        assert_eq!(
            decode::<BlobRecord>(trees::BLOB_META, b"k", &bytes).unwrap(),
            r
        );
        let err = decode::<BlobRecord>(trees::BLOB_META, b"\x01\x02", &bytes[..2]).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { tree: "blob_meta", key, .. } if key == "0102"),
            "{err}"
        );
        assert!(id_at(trees::BLOB_META, b"short", 0).is_err());
    }
}
