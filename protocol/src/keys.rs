//! ed25519 identities: [`PublicKey`], [`Signature`], [`SecretKey`], and the
//! [`Signed`] envelope that every signed object of the protocol uses.
//!
//! A node's fact-signing key is also its libp2p identity. This crate stays free of
//! libp2p: the conversion between a [`PublicKey`] and a libp2p `PeerId` lives in
//! the node crate (`oda_node::identity`), which owns the libp2p dependency.
//!
//! Signing is domain separated: the signed message is
//! `"oda-mesh v1 sign " || context || 0x00 || canonical(body)`, where `context`
//! names the object type ([`Signable::CONTEXT`]), so a signature over a fact can
//! never be replayed as an endorsement. Verification uses ed25519 strict
//! verification (no malleable signatures, no small-order keys).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::codec::canonical;
use crate::ids::IdParseError;

/// An ed25519 public key (32 bytes). Display: lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(#[serde(with = "crate::fixed_bytes")] pub [u8; 32]);

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "crate::fixed_bytes")] pub [u8; 64]);

/// An ed25519 secret key. Never serialised by this crate; the node stores it.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// The key whose 32-byte seed is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed, for storing the key.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Sign `body` under its type's context. The body must name this key as its signer.
    pub fn sign<T: Signable>(&self, body: T) -> Result<Signed<T>, SignError> {
        if body.signer() != &self.public() {
            return Err(SignError::SignerMismatch {
                declared: *body.signer(),
                key: self.public(),
            });
        }
        let signature = Signature(self.0.sign(&signing_message::<T>(&body)).to_bytes());
        Ok(Signed { body, signature })
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pk:{}", hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sig:{}", hex::encode(&self.0[..8]))
    }
}

impl FromStr for PublicKey {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s.strip_prefix("pk:").unwrap_or(s);
        if let Some((position, found)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit())
        {
            return Err(IdParseError::NotHex {
                kind: "public key",
                position,
                found,
            });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| IdParseError::WrongLength {
            kind: "public key",
            len: s.len(),
        })?;
        Ok(Self(out))
    }
}

/// Why signing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The object names a different signer than the key used.
    #[error("object names signer {declared} but the signing key is {key}")]
    SignerMismatch {
        /// Signer named in the object.
        declared: PublicKey,
        /// Public half of the key used.
        key: PublicKey,
    },
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signer field is not a valid ed25519 public key.
    #[error("signer {0} is not a valid ed25519 public key")]
    BadKey(PublicKey),
    /// The signature does not match the body and signer.
    #[error("bad signature on {what} by {signer}")]
    BadSignature {
        /// Object type.
        what: &'static str,
        /// Claimed signer.
        signer: PublicKey,
    },
}

/// An object that can be signed: it names its signer and a signing context.
pub trait Signable: Serialize {
    /// Domain-separation context for signatures over this type.
    const CONTEXT: &'static str;
    /// The key that must have signed this object.
    fn signer(&self) -> &PublicKey;
}

/// A signed object: the body and an ed25519 signature by `body.signer()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    /// The signed content.
    pub body: T,
    /// Signature over the domain-separated canonical encoding of `body`.
    pub signature: Signature,
}

impl<T: Signable> Signed<T> {
    /// Check the signature against the signer the body names.
    pub fn verify(&self) -> Result<(), VerifyError> {
        let signer = *self.body.signer();
        let key = VerifyingKey::from_bytes(&signer.0).map_err(|_| VerifyError::BadKey(signer))?;
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature.0);
        key.verify_strict(&signing_message::<T>(&self.body), &sig)
            .map_err(|_| VerifyError::BadSignature {
                what: T::CONTEXT,
                signer,
            })
    }

    /// The signer named by the body.
    pub fn signer(&self) -> &PublicKey {
        self.body.signer()
    }
}

/// The exact bytes an ed25519 signature covers for `body`.
pub fn signing_message<T: Signable>(body: &T) -> Vec<u8> {
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(b"oda-mesh v1 sign ");
    msg.extend_from_slice(T::CONTEXT.as_bytes());
    msg.push(0);
    msg.extend_from_slice(&canonical(body));
    msg
}
