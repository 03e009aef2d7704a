//! The consistency check that [`Store::open`] runs before anything else uses the
//! store: it undoes whatever a crash (or a hand edit of the data dir) left behind
//! and reports each repair in the [`OpenReport`]. See the module doc of
//! [`super`] for the invariant it restores.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use oda_protocol::{BlobId, FactId};

use super::blobs::IO_CHUNK;
use super::error::StoreError;
use super::records::{decode, id_at, key_id, trees, BlobRecord, HeldRecord};
use super::{now_ms, OpenReport, Store};

impl Store {
    /// Check blob files against their metadata and held facts against their
    /// outputs; repair and report. Also sets the running total of blob bytes and
    /// evicts if it is above the cap.
    pub(super) fn check_and_repair(&self) -> Result<OpenReport, StoreError> {
        let mut report = OpenReport::default();
        let mut state = self.lock_blobs();
        self.remove_temp_files(&mut report)?;
        let known = self.check_blob_metas(&mut report)?;
        let adopted = self.adopt_orphan_files(&mut report)?;
        state.total_bytes = known.saturating_add(adopted);
        report.orphan_outboards_removed = self.remove_orphan_outboards()?;
        report.stale_partials_removed = self.remove_stale_partials(super::STALE_PARTIAL)?;
        self.check_held_facts(&mut report)?;
        if state.total_bytes > self.inner.cap {
            report.gc = Some(self.gc_locked(&mut state, None)?);
        }
        Ok(report)
    }

    /// Delete everything under `blobs/tmp/`: writes that never finished.
    fn remove_temp_files(&self, report: &mut OpenReport) -> Result<(), StoreError> {
        let dir = &self.inner.tmp_dir;
        for entry in fs::read_dir(dir).map_err(StoreError::io("list directory", dir))? {
            let entry = entry.map_err(StoreError::io("list directory", dir))?;
            let path = entry.path();
            let is_dir = entry
                .file_type()
                .map_err(StoreError::io("inspect", &path))?
                .is_dir();
            if is_dir {
                fs::remove_dir_all(&path)
                    .map_err(StoreError::io("delete temporary directory", &path))?;
            } else {
                fs::remove_file(&path)
                    .map_err(StoreError::io("delete temporary blob file", &path))?;
            }
            report.temp_files_removed += 1;
        }
        Ok(())
    }

    /// Drop metadata that is unreadable or has no (or a wrong-sized) file. Returns
    /// the total size of the blobs that passed.
    fn check_blob_metas(&self, report: &mut OpenReport) -> Result<u64, StoreError> {
        let tree = &self.inner.t.blob_meta;
        let mut total = 0u64;
        let mut remove = Vec::new();
        for item in tree.iter() {
            let (k, v) = item.map_err(StoreError::db("scan blob metadata"))?;
            let parsed = key_id(trees::BLOB_META, &k)
                .and_then(|id| Ok((BlobId(id), decode::<BlobRecord>(trees::BLOB_META, &k, &v)?)));
            let (id, rec) = match parsed {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "removing corrupt blob metadata");
                    report.corrupt_metas_removed += 1;
                    remove.push(k);
                    continue;
                }
            };
            let path = self.blob_file(&id);
            match fs::metadata(&path) {
                Ok(m) if m.is_file() && m.len() == rec.size => {
                    total = total.saturating_add(rec.size)
                }
                Ok(m) if m.is_file() => {
                    tracing::warn!(blob = %id, expected = rec.size, found = m.len(), "blob file has the wrong size; removing it");
                    fs::remove_file(&path).map_err(StoreError::io("delete blob file", &path))?;
                    report.wrong_size_files_removed += 1;
                    remove.push(k);
                }
                Ok(_) => {
                    tracing::warn!(blob = %id, path = %path.display(), "blob path is not a file; forgetting the blob");
                    report.metas_without_file += 1;
                    remove.push(k);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    report.metas_without_file += 1;
                    remove.push(k);
                }
                Err(e) => return Err(StoreError::io("inspect blob file", path)(e)),
            }
        }
        for k in remove {
            tree.remove(k)
                .map_err(StoreError::db("remove blob metadata"))?;
        }
        Ok(total)
    }

    /// Files in `blobs/` without metadata: adopt those whose content hashes to
    /// their name, delete the rest. Returns the bytes adopted.
    fn adopt_orphan_files(&self, report: &mut OpenReport) -> Result<u64, StoreError> {
        let dir = &self.inner.blob_dir;
        let mut adopted_bytes = 0u64;
        for entry in fs::read_dir(dir).map_err(StoreError::io("list directory", dir))? {
            let entry = entry.map_err(StoreError::io("list directory", dir))?;
            let path = entry.path();
            if path == self.inner.tmp_dir {
                continue;
            }
            if !entry
                .file_type()
                .map_err(StoreError::io("inspect", &path))?
                .is_file()
            {
                tracing::warn!(path = %path.display(), "ignoring an unexpected entry in the blob directory");
                continue;
            }
            let Some(id) = entry.file_name().to_str().and_then(parse_blob_file_name) else {
                tracing::warn!(path = %path.display(), "deleting a file that is not named like a blob");
                fs::remove_file(&path).map_err(StoreError::io("delete stray file", &path))?;
                report.orphan_files_removed += 1;
                continue;
            };
            if self.blob_record(&id)?.is_some() {
                continue;
            }
            let (actual, size) = hash_file(&path)?;
            if actual == id {
                let rec = BlobRecord {
                    size,
                    pinned: false,
                    last_access_ms: now_ms(),
                    access_seq: self.next_access_seq()?,
                };
                self.put_blob_record(&id, &rec)?;
                adopted_bytes = adopted_bytes.saturating_add(size);
                report.orphan_files_adopted += 1;
            } else {
                tracing::warn!(blob = %id, %actual, "deleting a blob file whose content does not match its name");
                fs::remove_file(&path).map_err(StoreError::io("delete blob file", &path))?;
                report.orphan_files_removed += 1;
            }
        }
        Ok(adopted_bytes)
    }

    /// Delete outboards (and stray files) in `outboards/` whose blob the
    /// store does not hold; returns how many.
    fn remove_orphan_outboards(&self) -> Result<usize, StoreError> {
        let dir = &self.inner.outboard_dir;
        let mut removed = 0;
        for entry in fs::read_dir(dir).map_err(StoreError::io("list directory", dir))? {
            let entry = entry.map_err(StoreError::io("list directory", dir))?;
            let path = entry.path();
            let id = entry.file_name().to_str().and_then(parse_blob_file_name);
            let held = match id {
                Some(id) => self.blob_record(&id)?.is_some(),
                None => false,
            };
            if !held {
                fs::remove_file(&path).map_err(StoreError::io("delete orphan outboard", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Demote held facts whose record is unreadable, whose fact is missing or whose
    /// outputs are not all present; drop reverse-index entries of facts not held.
    fn check_held_facts(&self, report: &mut OpenReport) -> Result<(), StoreError> {
        let t = &self.inner.t;
        let mut demote: Vec<FactId> = Vec::new();
        let mut bad_keys = Vec::new();
        for item in t.held.iter() {
            let (k, v) = item.map_err(StoreError::db("scan held facts"))?;
            let Ok(id) = key_id(trees::HELD, &k).map(FactId) else {
                bad_keys.push(k);
                continue;
            };
            let complete = match decode::<HeldRecord>(trees::HELD, &k, &v) {
                Ok(rec) => {
                    let mut all = t
                        .facts
                        .contains_key(&k)
                        .map_err(StoreError::db("read fact"))?;
                    for blob in &rec.outputs {
                        all = all && self.blob_record(blob)?.is_some();
                    }
                    all
                }
                Err(_) => false,
            };
            if !complete {
                demote.push(id);
            }
        }
        for k in bad_keys {
            tracing::warn!(key = %hex::encode(&k), "removing a held-fact record with a malformed key");
            t.held
                .remove(k)
                .map_err(StoreError::db("remove held fact"))?;
        }
        for fact in &demote {
            self.demote_locked(fact, &[])?;
        }
        // Reverse-index entries whose fact is no longer held (left by an unreadable
        // held record, or a key of the wrong shape).
        let mut dangling = Vec::new();
        for item in t.held_by_blob.iter() {
            let (k, _) = item.map_err(StoreError::db("scan held facts by blob"))?;
            let held = match id_at(trees::HELD_BY_BLOB, &k, 32) {
                Ok(fact) if k.len() == 64 => t
                    .held
                    .contains_key(fact)
                    .map_err(StoreError::db("read held facts"))?,
                _ => false,
            };
            if !held {
                dangling.push(k);
            }
        }
        for k in dangling {
            t.held_by_blob
                .remove(k)
                .map_err(StoreError::db("remove held-by-blob entry"))?;
        }
        report.facts_demoted = demote;
        Ok(())
    }
}

/// The blob id a file in `blobs/` is named after: exactly 64 lowercase hex digits.
fn parse_blob_file_name(name: &str) -> Option<BlobId> {
    if name.len() != 64 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut id = [0u8; 32];
    hex::decode_to_slice(name, &mut id).ok()?;
    Some(BlobId(id))
}

/// BLAKE3 and size of a file, streaming.
fn hash_file(path: &Path) -> Result<(BlobId, u64), StoreError> {
    let mut file = File::open(path).map_err(StoreError::io("open blob file", path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; IO_CHUNK];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("read blob file", path)(e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((BlobId(*hasher.finalize().as_bytes()), size))
}
