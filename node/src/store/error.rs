//! [`StoreError`]: everything that can go wrong in the store, one variant per cause.

use std::io;
use std::path::PathBuf;

use oda_protocol::fact::FactError;
use oda_protocol::{BlobId, EncodeError, FactId, VerifyError};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("cannot {op} `{}`: {source}", .path.display())]
    Io {
        /// What the store was doing ("create temporary blob file", "rename blob into place", …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The sled database could not be opened (often: another `oda-node` uses this data dir).
    #[error("cannot open the store database at `{}` (is another oda-node using this data dir?): {source}", .path.display())]
    OpenDb {
        /// Path of the database directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A sled operation failed.
    #[error("store database: cannot {op}: {source}")]
    Db {
        /// What the store was doing.
        op: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A record on disk does not decode, or does not match its key.
    #[error("corrupt record in tree `{tree}` at key {key}: {reason}")]
    Corrupt {
        /// The sled tree holding the record.
        tree: &'static str,
        /// The record's key, in hex.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded (it exceeds its size limit).
    #[error("cannot store a record in tree `{tree}`: {source}")]
    Encode {
        /// The sled tree the record was meant for.
        tree: &'static str,
        /// The codec's error.
        #[source]
        source: EncodeError,
    },
    /// Bytes written to the store do not hash to the id they were expected to have.
    #[error("blob bytes hash to {actual}, but {expected} was expected; the bytes were discarded")]
    HashMismatch {
        /// The id the caller expected.
        expected: BlobId,
        /// The id of the bytes actually written.
        actual: BlobId,
    },
    /// A blob-protocol range is not one the store serves (see
    /// [`super::piece_chunks`]).
    #[error("bad blob range: {0}")]
    BadRange(String),
    /// Bytes or hashes received for a blob being fetched do not match its id;
    /// nothing of them was kept.
    #[error("blob {blob}: {reason}")]
    BadPiece {
        /// The blob.
        blob: BlobId,
        /// Which part failed and how.
        reason: String,
    },
    /// The blob is not in the store.
    #[error("blob {0} is not in the store")]
    BlobNotFound(BlobId),
    /// The operation would remove a pinned blob.
    #[error("blob {0} is pinned; unpin it first")]
    Pinned(BlobId),
    /// The operation would remove a blob a running job reads.
    #[error("blob {0} is in use by a running job; try again when it has finished")]
    InUse(BlobId),
    /// A ranged read reaches past the end of the blob.
    #[error(
        "cannot read {len} bytes at offset {offset} of blob {id}: the blob has only {size} bytes"
    )]
    RangeOutOfBounds {
        /// The blob.
        id: BlobId,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// The blob's size.
        size: u64,
    },
    /// A ranged read asks for more bytes than one read may return.
    #[error("cannot read {len} bytes in one range read, the limit is {limit}; read smaller ranges or use the blob's path")]
    RangeTooLarge {
        /// Requested length.
        len: u64,
        /// [`super::MAX_RANGE_READ`].
        limit: u64,
    },
    /// A fact's signature or content is invalid; it was not stored.
    #[error("fact {fact} rejected: {source}")]
    BadFact {
        /// The fact's id.
        fact: FactId,
        /// Why it is invalid.
        #[source]
        source: FactError,
    },
    /// An endorsement's signature is invalid; it was not stored.
    #[error("endorsement rejected: {source}")]
    BadEndorsement {
        /// Why it is invalid.
        #[source]
        source: VerifyError,
    },
    /// A dispute's signature is invalid; it was not stored.
    #[error("dispute rejected: {source}")]
    BadDispute {
        /// Why it is invalid.
        #[source]
        source: VerifyError,
    },
    /// `put_own_fact` was given a fact whose output bytes the store does not hold.
    #[error("fact {fact} cannot be recorded as held: its output `{output}` (blob {blob}) is not in the store; store the output bytes first")]
    MissingOutput {
        /// The fact's id.
        fact: FactId,
        /// The output's name.
        output: String,
        /// The missing blob.
        blob: BlobId,
    },
    /// A caller asked [`super::Store::tree`] for one of the store's own trees.
    #[error("tree name `{0}` is reserved by the store; choose another name")]
    ReservedTree(String),
    /// A task doing blocking store work on the blocking pool failed (it
    /// panicked, or the runtime is shutting down).
    #[error("a blocking store task failed: {0}")]
    Task(String),
    /// The data dir was written by an incompatible version of the store.
    #[error("the store at `{}` has format version {found}, but this oda-node supports version {supported}", .path.display())]
    UnsupportedFormat {
        /// The data dir.
        path: PathBuf,
        /// Version found on disk.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
}

impl StoreError {
    /// An [`StoreError::Io`] for `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    /// A [`StoreError::Db`] for a failed sled operation.
    pub(crate) fn db(op: &'static str) -> impl FnOnce(sled::Error) -> Self {
        move |source| StoreError::Db { op, source }
    }

    /// A [`StoreError::Corrupt`] for the record at `key` in `tree`.
    pub fn corrupt(tree: &'static str, key: &[u8], reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            tree,
            key: hex::encode(key),
            reason: reason.into(),
        }
    }
}
