//! The node's ed25519 identity: one key is both the libp2p `PeerId` and the
//! fact-signing key, so attribution is the peer identity. This module owns the
//! conversions between `oda_protocol` keys and libp2p keys (kept out of the
//! protocol crate so it stays free of libp2p) and the key file on disk.

use std::io::Write;
use std::path::Path;

use libp2p::identity::{self, Keypair};
use libp2p::PeerId;
use oda_protocol::{PublicKey, SecretKey};

/// Why a key could not be loaded or converted.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file does not hold a 32-byte hex seed.
    #[error("key file {path} is not a 64-hex-digit ed25519 seed")]
    BadKeyFile {
        /// The file.
        path: String,
    },
    /// A secret file gives other users more than it may (as ssh refuses a
    /// private key others can read).
    #[error("{path} has mode {mode:04o}: {problem}; run `chmod {fix:03o} {path}`")]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
        /// What other users may do that they must not.
        problem: &'static str,
        /// The mode that fixes it.
        fix: u32,
    },
    /// The key file exists and overwriting was not asked for.
    #[error("key file {path} already exists; pass --force to replace it (this changes the node's identity)")]
    Exists {
        /// The file.
        path: String,
    },
}

/// The node's key in both forms.
#[derive(Clone)]
pub struct NodeKey {
    /// For signing facts and endorsements.
    pub secret: SecretKey,
    /// For libp2p (noise, gossipsub signatures).
    pub keypair: Keypair,
}

impl NodeKey {
    /// The key with this seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let keypair =
            Keypair::ed25519_from_bytes(seed).expect("any 32 bytes are a valid ed25519 secret key");
        Self {
            secret: SecretKey::from_seed(seed),
            keypair,
        }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_seed(rand::random())
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.secret.public()
    }

    /// The libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// Load the seed from `path` (64 hex digits). A file that users other
    /// than its owner may read or write is refused with the `chmod` that
    /// fixes it: the key is the node's identity and signs its facts.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        check_permissions(path, 0o077)?;
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| IdentityError::BadKeyFile {
            path: path.display().to_string(),
        })?;
        Ok(Self::from_seed(seed))
    }

    /// Write the seed to `path` with mode 0600; refuses to overwrite unless `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        if path.exists() && !force {
            return Err(IdentityError::Exists {
                path: path.display().to_string(),
            });
        }
        write_private_file(
            path,
            format!("{}\n", hex::encode(self.secret.seed())).as_bytes(),
        )
        .map_err(io)
    }
}

/// Refuse the secret file at `path` if its mode has any of the group and
/// other bits in `forbidden` (0o077: only the owner may read or write it;
/// 0o022: only the owner may write it). A file that does not exist passes:
/// reading it reports that.
pub fn check_permissions(path: &Path, forbidden: u32) -> Result<(), IdentityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode() & 0o7777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let bad = mode & forbidden & 0o077;
        if bad != 0 {
            let problem = match (bad & 0o044 != 0, bad & 0o022 != 0) {
                (true, true) => "other users can read and write it",
                (true, false) => "other users can read it",
                _ => "other users can write it",
            };
            return Err(IdentityError::Permissions {
                path: path.display().to_string(),
                mode,
                problem,
                fix: mode & 0o777 & !forbidden,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, forbidden);
    Ok(())
}

/// Write `bytes` to `path` atomically, readable only by the owner (mode 0600).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The libp2p peer id of an ODA public key, or `None` if the bytes are not a
/// valid ed25519 point.
pub fn peer_id_of(key: &PublicKey) -> Option<PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(identity::PublicKey::from(pk).to_peer_id())
}

/// The ODA public key inside an ed25519 peer id (inlined with the identity
/// multihash), or `None` for other key types.
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    if mh.code() != 0x00 {
        return None;
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(PublicKey(pk.try_into_ed25519().ok()?.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_and_public_key_round_trip() {
        let key = NodeKey::from_seed([3; 32]);
        assert_eq!(peer_id_of(&key.public()), Some(key.peer_id()));
        assert_eq!(public_key_of(&key.peer_id()), Some(key.public()));
        // A non-ed25519 peer id has no ODA key.
        let rsa_like = PeerId::random();
        assert_eq!(public_key_of(&rsa_like), None);
    }

    #[test]
    fn key_file_is_private_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = NodeKey::generate();
        key.save(&path, false).unwrap();
        assert!(matches!(
            NodeKey::generate().save(&path, false),
            Err(IdentityError::Exists { .. })
        ));
        assert_eq!(NodeKey::load(&path).unwrap().public(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            NodeKey::load(&path),
            Err(IdentityError::BadKeyFile { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_or_write_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeKey::generate().save(&path, false).unwrap();
        let shown = path.display().to_string();
        for (mode, problem, fix) in [
            (0o644, "other users can read it", "chmod 600"),
            (0o620, "other users can write it", "chmod 600"),
            (0o666, "other users can read and write it", "chmod 600"),
            (0o640, "other users can read it", "chmod 600"),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = NodeKey::load(&path).err().expect("refused");
            assert_eq!(
                err.to_string(),
                format!("{shown} has mode {mode:04o}: {problem}; run `{fix} {shown}`")
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        NodeKey::load(&path).expect("an owner-only key loads");
        // Writable by others but not readable: a token may be read by others.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o646)).unwrap();
        let err = check_permissions(&path, 0o022).unwrap_err().to_string();
        assert!(
            err.contains("other users can write it; run `chmod 644"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        check_permissions(&path, 0o022).expect("readable by others is allowed here");
    }
}
