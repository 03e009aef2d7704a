//! Group rosters this node imported, kept as files under `<data dir>/rosters/`
//! (one per group: the encoded signed roster, named by the owner key and a
//! hash of the group name), so that the trust policy has them again after a
//! restart. Written to a temporary file, fsynced, then renamed. File I/O
//! runs on the blocking pool.

use std::path::{Path, PathBuf};

use oda_protocol::{SignedGroupRoster, Wire};

/// The folder under the data dir.
pub const DIR: &str = "rosters";

fn file_of(dir: &Path, roster: &SignedGroupRoster) -> PathBuf {
    let name = blake3::hash(roster.body.name.as_bytes());
    dir.join(format!(
        "{}-{}.roster",
        roster.body.owner,
        &name.to_hex()[..16]
    ))
}

/// Every roster stored in `dir` that decodes (others are skipped with a
/// warning; their signatures are checked when they are imported).
pub async fn load(dir: &Path) -> Vec<SignedGroupRoster> {
    let dir = dir.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
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
        out
    });
    read.await.unwrap_or_default()
}

/// Keep `roster` in `dir`, replacing the file of its group.
pub async fn save(dir: &Path, roster: &SignedGroupRoster) -> Result<(), String> {
    let bytes = roster.encode().map_err(|e| e.to_string())?;
    let (dir, path) = (dir.to_path_buf(), file_of(dir, roster));
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(&dir)?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot store the roster: {e}"))
}
