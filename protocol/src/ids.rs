//! Content-addressed identifiers: [`WorkflowId`], [`ExprId`], [`BlobId`], [`FactId`].
//!
//! Every id is 32 bytes of BLAKE3. Structured objects are hashed in BLAKE3's
//! key-derivation mode with one context string per type (see [`contexts`]), so an
//! expression can never collide with a workflow or a fact. Blobs are hashed with
//! plain BLAKE3 over the raw bytes: that keeps a `BlobId` equal to the root of the
//! BLAKE3 tree used for verified streaming, and plain mode is itself a domain
//! distinct from every key-derivation context.
//!
//! Text form: 64 lowercase hex digits, optionally preceded by a type prefix
//! (`wf:`, `ex:`, `bl:`, `fa:`) on input. `Display` prints bare hex; the
//! alternate form (`{:#}`) prints the prefix.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// BLAKE3 key-derivation context strings, one per structured id type. These are
/// part of the wire format: changing one changes every id of that type.
pub mod contexts {
    /// Context for [`super::WorkflowId`].
    pub const WORKFLOW: &str = "oda-mesh v1 workflow-id";
    /// Context for [`super::ExprId`].
    pub const EXPRESSION: &str = "oda-mesh v1 expression-id";
    /// Context for [`super::FactId`].
    pub const FACT: &str = "oda-mesh v2 fact-id";
}

/// Why an id string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The string had a `xx:` prefix of another id type.
    #[error("expected an id of type {expected} (prefix `{prefix}:`), got prefix `{found}:`")]
    WrongPrefix {
        /// Name of the expected id type.
        expected: &'static str,
        /// The prefix that type uses.
        prefix: &'static str,
        /// The prefix that was given.
        found: String,
    },
    /// The hex part was not 64 characters long.
    #[error("a {kind} id is 64 hex digits, got {len} characters")]
    WrongLength {
        /// Name of the id type.
        kind: &'static str,
        /// Length that was given.
        len: usize,
    },
    /// A character was not a lowercase or uppercase hex digit.
    #[error("a {kind} id is hex, but character {position} is {found:?}")]
    NotHex {
        /// Name of the id type.
        kind: &'static str,
        /// Zero-based character position in the hex part.
        position: usize,
        /// The offending character.
        found: char,
    },
}

fn parse_hex32(
    kind: &'static str,
    prefix: &'static str,
    text: &str,
) -> Result<[u8; 32], IdParseError> {
    let hex_part = match text.split_once(':') {
        Some((p, rest)) if p == prefix => rest,
        Some((p, _)) => {
            return Err(IdParseError::WrongPrefix {
                expected: kind,
                prefix,
                found: p.to_string(),
            })
        }
        None => text,
    };
    if let Some((position, found)) = hex_part
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(IdParseError::NotHex {
            kind,
            position,
            found,
        });
    }
    if hex_part.len() != 64 {
        return Err(IdParseError::WrongLength {
            kind,
            len: hex_part.len(),
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| IdParseError::WrongLength {
        kind,
        len: hex_part.len(),
    })?;
    Ok(out)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(#[serde(with = "crate::fixed_bytes")] pub [u8; 32]);

        impl $name {
            /// Human name of this id type, used in error messages.
            pub const KIND: &'static str = $kind;
            /// The text prefix of this id type (without the colon).
            pub const PREFIX: &'static str = $prefix;

            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex of the first `n` bytes, for short displays and topic names.
            pub fn short(&self, n: usize) -> String {
                hex::encode(&self.0[..n.min(32)])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if f.alternate() {
                    write!(f, "{}:", $prefix)?;
                }
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}:{}", $prefix, self.short(8))
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32($kind, $prefix, s.trim()).map(Self)
            }
        }
    };
}

id_type!(
    /// Identifies a workflow: its canonical manifest plus the hashes of its files.
    WorkflowId, "workflow", "wf"
);
id_type!(
    /// Identifies an expression (one invocation of a workflow with normalised arguments).
    ExprId, "expression", "ex"
);
id_type!(
    /// Identifies bytes: plain BLAKE3 of the content.
    BlobId, "blob", "bl"
);
id_type!(
    /// Identifies a fact: BLAKE3 (fact context) of the encoded fact body.
    FactId, "fact", "fa"
);

impl BlobId {
    /// The id of the given bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

/// Hash `bytes` in BLAKE3 key-derivation mode with `context`.
pub(crate) fn derive(context: &str, bytes: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    hasher.update(bytes);
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_prefix() {
        let hex = "ab".repeat(32);
        let a: ExprId = hex.parse().unwrap();
        let b: ExprId = format!("ex:{hex}").parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), hex);
        assert_eq!(format!("{a:#}"), format!("ex:{hex}"));
        let upper: ExprId = hex.to_uppercase().parse().unwrap();
        assert_eq!(upper, a);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let hex = "ab".repeat(32);
        let e = format!("wf:{hex}").parse::<ExprId>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected an id of type expression (prefix `ex:`), got prefix `wf:`"
        );
        let e = "abc".parse::<BlobId>().unwrap_err();
        assert!(matches!(e, IdParseError::WrongLength { len: 3, .. }), "{e}");
        let e = format!("{}zz", "a".repeat(62))
            .parse::<FactId>()
            .unwrap_err();
        assert!(
            matches!(
                e,
                IdParseError::NotHex {
                    position: 62,
                    found: 'z',
                    ..
                }
            ),
            "{e}"
        );
        let e = "é".repeat(32).parse::<FactId>().unwrap_err();
        assert!(matches!(e, IdParseError::NotHex { position: 0, .. }), "{e}");
    }
}
