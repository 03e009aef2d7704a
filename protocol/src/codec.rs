//! The only place that turns ODA mesh values into bytes and back.
//!
//! One fixed bincode 2.0.1 configuration ([`config`]): little-endian, variable-length
//! integers, as documented in `docs/protocol.md`. Every decode names a maximum size
//! ([`limits`]); input longer than that, truncated input, trailing bytes and any
//! malformed content give a [`DecodeError`], never a panic.

use serde::{de::DeserializeOwned, Serialize};

/// Named maximum encoded sizes, in bytes. Decoders refuse anything larger.
pub mod limits {
    /// A gossip message payload (job advert, fact announce, capacity). Gossipsub's
    /// own transmit limit is 64 KiB including framing and signature.
    pub const GOSSIP: usize = 60 * 1024;
    /// One signed object on its own (fact, endorsement, dispute, token, roster).
    pub const SIGNED_OBJECT: usize = 256 * 1024;
    /// A job-protocol request or response (offer, assign, progress, done, cancel).
    pub const JOB_MESSAGE: usize = 512 * 1024;
    /// A fact-protocol response (a list of facts).
    pub const FACT_MESSAGE: usize = 4 * 1024 * 1024;
    /// A fact or blob request: an id, and for a blob a range (33 and at most
    /// 46 bytes encoded). Since v2 (it was the response's limit before), so a
    /// peer cannot make a node hold a large buffer per stream it opens.
    pub const SMALL_REQUEST: usize = 64;
    /// Largest number of data bytes in one blob range reply.
    pub const BLOB_CHUNK: usize = 1024 * 1024;
    /// Bytes under one leaf of the BLAKE3 tree that blob ranges are proved
    /// with (16 BLAKE3 chunks of 1 KiB): the unit a receiver checks and the
    /// alignment of every blob range request.
    pub const BLOB_CHUNK_GROUP: usize = 16 * 1024;
    /// A blob-protocol response: one range of [`BLOB_CHUNK`] bytes,
    /// the hash pairs proving it (at most 127 of 64 bytes: 63 inside the range
    /// and one per level above it) and framing.
    pub const BLOB_MESSAGE: usize = BLOB_CHUNK + 16 * 1024;
    /// A workflow (canonical manifest and file hashes).
    pub const WORKFLOW: usize = 512 * 1024;
    /// An expression on its own.
    pub const EXPRESSION: usize = 256 * 1024;
    /// A workflow manifest in TOML.
    pub const MANIFEST_TOML: usize = 256 * 1024;
    /// A workflow bundle (manifest text and bundled files, [`crate::bundle::WorkflowBundle`]).
    pub const BUNDLE: usize = 64 * 1024 * 1024;
    /// Deepest nesting of recursive types (a [`crate::Value::List`] inside a list,
    /// a list [`crate::InputType`] inside a list type) a decoder accepts. Valid
    /// expressions nest at most 2 deep; without a bound, a few kilobytes of
    /// nested lists overflow the decoder's stack and abort the process.
    pub const MAX_NESTING: usize = 32;
}

/// Counts how deep the current thread is inside recursive types being
/// deserialised; see [`limits::MAX_NESTING`].
pub(crate) struct NestingGuard(());

thread_local! {
    static NESTING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl NestingGuard {
    /// Enter one level of a recursive type; an error once the limit is reached.
    pub(crate) fn enter<E: serde::de::Error>(what: &str) -> Result<Self, E> {
        NESTING.with(|n| {
            let depth = n.get();
            if depth >= limits::MAX_NESTING {
                return Err(E::custom(format!(
                    "{what} nested more than {} levels deep",
                    limits::MAX_NESTING
                )));
            }
            n.set(depth + 1);
            Ok(Self(()))
        })
    }
}

impl Drop for NestingGuard {
    fn drop(&mut self) {
        NESTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// The one bincode configuration used for every encoding in ODA mesh.
pub fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the named limit for this message type.
    #[error("{what} is {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Which message type was being decoded.
        what: &'static str,
        /// Input length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// bincode rejected the bytes.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message type was being decoded.
        what: &'static str,
        /// bincode's explanation.
        reason: String,
    },
    /// The value decoded but did not use all the bytes.
    #[error("malformed {what}: {extra} trailing bytes")]
    TrailingBytes {
        /// Which message type was being decoded.
        what: &'static str,
        /// Number of unused bytes.
        extra: usize,
    },
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoding is longer than the limit for this message type.
    #[error("{what} would be {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Which message type was being encoded.
        what: &'static str,
        /// Encoded length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The value cannot be represented (should not happen for protocol types).
    #[error("cannot encode {what}: {reason}")]
    Unencodable {
        /// Which message type was being encoded.
        what: &'static str,
        /// bincode's explanation.
        reason: String,
    },
}

/// A type with a canonical encoding and a named maximum size.
pub trait Wire: Serialize + DeserializeOwned {
    /// Name used in errors.
    const WHAT: &'static str;
    /// Maximum encoded size in bytes.
    const MAX_SIZE: usize;

    /// Encode canonically; fails if the encoding exceeds [`Wire::MAX_SIZE`].
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let bytes = encode_unbounded(self).map_err(|reason| EncodeError::Unencodable {
            what: Self::WHAT,
            reason,
        })?;
        if bytes.len() > Self::MAX_SIZE {
            return Err(EncodeError::TooLarge {
                what: Self::WHAT,
                len: bytes.len(),
                limit: Self::MAX_SIZE,
            });
        }
        Ok(bytes)
    }

    /// Decode, refusing input over [`Wire::MAX_SIZE`], malformed input and trailing bytes.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_bounded(Self::WHAT, Self::MAX_SIZE, bytes)
    }
}

/// Canonical bytes of any serialisable protocol value, used for hashing and signing.
///
/// Protocol types contain only types bincode can always encode (no maps with
/// non-string keys of unknown length, no `f64` NaN after normalisation), so an
/// error here is a programming error reported as a string.
pub(crate) fn encode_unbounded<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

/// Canonical bytes for hashing and signing; protocol types always encode.
pub(crate) fn canonical<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serialisation of our own derive(Serialize) types into a Vec cannot fail:
    // every field is a plain integer, string, byte array, sequence or map.
    encode_unbounded(value).expect("protocol types always encode")
}

/// Decode with bincode's limit on claimed bytes set to `CLAIM`.
fn decode_claiming<T: DeserializeOwned, const CLAIM: usize>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, config().with_limit::<CLAIM>())
}

fn decode_bounded<T: DeserializeOwned>(
    what: &'static str,
    limit: usize,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            what,
            len: bytes.len(),
            limit,
        });
    }
    // The input is already bounded by `limit`. bincode's own limit bounds what
    // length prefixes may claim (and so allocate before the bytes are read; serde
    // caps pre-allocation for sequences). bincode counts the full length of every
    // string and byte string, and 8 bytes for every varint however short, so a
    // valid input claims at most 8 bytes per input byte: a limit of 8 times the
    // input, rounded up to one of a few steps, never refuses a valid input (a
    // fixed 64 MiB did refuse bundles near their 64 MiB limit) while a lying
    // length prefix in a small message cannot allocate more than a few MiB.
    const MIB: usize = 1024 * 1024;
    let decoded = match bytes.len().saturating_mul(8) {
        n if n <= MIB => decode_claiming::<T, MIB>(bytes),
        n if n <= 64 * MIB => decode_claiming::<T, { 64 * MIB }>(bytes),
        n if n <= 512 * MIB => decode_claiming::<T, { 512 * MIB }>(bytes),
        _ => decode_claiming::<T, { usize::MAX }>(bytes),
    };
    let (value, used) = decoded.map_err(|e| DecodeError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            what,
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}
