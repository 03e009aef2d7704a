//! Trust state changed at run time, kept in the data dir so that the trust
//! policy has it again after a restart: group rosters imported with
//! `oda trust import` (one file per group under `rosters/`: the encoded
//! signed roster, named by the owner key and a hash of the group name), and
//! keys added with `oda trust add` (`trusted_keys`, one hex key per line).
//! Files are written atomically with mode 0600 (a temporary file, fsynced,
//! then renamed); all file I/O runs on the blocking pool.

use std::path::{Path, PathBuf};

use oda_protocol::{PublicKey, SignedGroupRoster, Wire};

use crate::blocking::run as blocking;
use crate::identity::write_private_file;

/// The rosters' folder under the data dir.
pub const ROSTERS_DIR: &str = "rosters";
/// The file of keys added at run time, under the data dir.
pub const KEYS_FILE: &str = "trusted_keys";

fn roster_file(dir: &Path, roster: &SignedGroupRoster) -> PathBuf {
    let name = blake3::hash(roster.body.name.as_bytes());
    dir.join(format!(
        "{}-{}.roster",
        roster.body.owner,
        &name.to_hex()[..16]
    ))
}

/// Write `bytes` to `path` (its folder made if need be), atomically and
/// readable by the owner only ([`write_private_file`]): nobody else may
/// read or change whom this node trusts (blocking).
fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private_file(path, bytes)
}

/// Every roster stored in `dir` that decodes (others are skipped with a
/// warning; signatures are checked when they are imported).
pub async fn load_rosters(dir: &Path) -> Vec<SignedGroupRoster> {
    let dir = dir.to_path_buf();
    let read = blocking(move || -> std::io::Result<Vec<SignedGroupRoster>> {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "roster") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| SignedGroupRoster::decode(&bytes).map_err(|e| e.to_string()))
            {
                Ok(roster) => out.push(roster),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable roster")
                }
            }
        }
        Ok(out)
    });
    read.await.unwrap_or_default()
}

/// Keep `roster` in `dir`, replacing the file of its group.
pub async fn save_roster(dir: &Path, roster: &SignedGroupRoster) -> Result<(), String> {
    let bytes = roster.encode().map_err(|e| e.to_string())?;
    let path = roster_file(dir, roster);
    blocking(move || write(&path, &bytes))
        .await
        .map_err(|e| format!("cannot store the roster: {e}"))
}

/// The keys in `path` (a missing file holds none). A line that is not a key
/// is an error naming it: the file is written by the node, so a bad line
/// means it was damaged or edited by hand.
pub async fn load_keys(path: &Path) -> Result<Vec<PublicKey>, String> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    let text = blocking(move || match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        other => other,
    })
    .await
    .map_err(|e| format!("cannot read {shown}: {e}"))?;
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            l.parse::<PublicKey>()
                .map_err(|e| {
                    format!(
                        "{shown} line {}: {e}; correct or delete the line (the file lists keys added with `oda trust add`)",
                        i + 1
                    )
                })
        })
        .collect()
}

/// Replace the keys in `path` with `keys`.
pub async fn save_keys(path: &Path, keys: &[PublicKey]) -> Result<(), String> {
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    let path = path.to_path_buf();
    blocking(move || write(&path, text.as_bytes()))
        .await
        .map_err(|e| format!("cannot store the trusted keys: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oda_protocol::SecretKey;

    #[tokio::test]
    async fn keys_and_rosters_come_back_as_they_were_saved() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys_at = dir.path().join(KEYS_FILE);
        assert_eq!(load_keys(&keys_at).await, Ok(vec![]), "no file: no keys");
        let keys: Vec<PublicKey> = (1..4)
            .map(|s| SecretKey::from_seed([s; 32]).public())
            .collect();
        save_keys(&keys_at, &keys).await.expect("saved");
        assert_eq!(load_keys(&keys_at).await, Ok(keys));
        std::fs::write(&keys_at, "not a key\n").expect("write");
        let err = load_keys(&keys_at).await.expect_err("a bad line");
        assert!(err.contains("line 1"), "{err}");

        let owner = SecretKey::from_seed([7; 32]);
        let roster = |version| {
            owner
                .sign(oda_protocol::GroupRoster {
                    owner: owner.public(),
                    name: "team".into(),
                    version,
                    members: Default::default(),
                    issued_at: 0,
                })
                .expect("signs")
        };
        let rosters = dir.path().join(ROSTERS_DIR);
        save_roster(&rosters, &roster(1)).await.expect("saved");
        save_roster(&rosters, &roster(2)).await.expect("saved");
        std::fs::write(rosters.join("junk.roster"), b"junk").expect("write");
        let loaded = load_rosters(&rosters).await;
        assert_eq!(loaded.len(), 1, "one file per group, junk skipped");
        assert_eq!(loaded[0].body.version, 2);
    }
}
