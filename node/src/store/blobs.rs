//! Blob bytes: one file per blob under `blobs/`, written through [`BlobWriter`]
//! (`fsync`, hashed with its BLAKE3 tree, atomic rename, `fsync` of the directory), their
//! metadata in tree `blob_meta`, ranged reads, pins, guards for blobs that
//! running jobs read ([`BlobInUse`]), and least-recently-used eviction under
//! the size cap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use oda_protocol::{BlobId, FactId};

use super::error::StoreError;
use super::records::{decode, encode, key_id, trees, BlobRecord};
use super::{now_ms, BlobState, Store};

/// Largest number of bytes one [`Store::read_range`] returns. Whole large blobs
/// are read through [`Store::blob_path`].
pub const MAX_RANGE_READ: u64 = 64 * 1024 * 1024;

/// Buffer size for streaming file copies and hashing.
pub(crate) const IO_CHUNK: usize = 1024 * 1024;

/// A blob file a job reads: the blob is not evicted while this lives.
#[derive(Debug)]
pub struct BlobInUse {
    store: Store,
    id: BlobId,
    path: PathBuf,
}

impl BlobInUse {
    /// The blob's file (read only).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BlobInUse {
    fn drop(&mut self) {
        let mut state = self.store.lock_blobs();
        if let Some(n) = state.in_use.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                state.in_use.remove(&self.id);
            }
        }
    }
}

/// What the store knows about one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobMeta {
    /// The blob.
    pub id: BlobId,
    /// Size in bytes.
    pub size: u64,
    /// Pinned blobs are never evicted.
    pub pinned: bool,
    /// Last read or write, Unix milliseconds.
    pub last_access_ms: u64,
}

/// What one eviction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Evicted blobs, least recently used first.
    pub evicted: Vec<BlobId>,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Total blob bytes after the run.
    pub total_bytes_after: u64,
    /// The cap the run aimed for.
    pub cap_bytes: u64,
    /// Held facts demoted because one of their outputs was evicted.
    pub facts_demoted: Vec<FactId>,
}

impl GcReport {
    /// Whether the store is still above its cap: everything left is pinned,
    /// read by a running job, or was just written. Not an error: pins and
    /// running jobs win over the cap.
    pub fn over_cap(&self) -> bool {
        self.total_bytes_after > self.cap_bytes
    }
}

/// Streams bytes into a new blob. Obtain one from [`Store::blob_writer`], call
/// [`BlobWriter::write`] any number of times, then [`BlobWriter::finish`].
/// Dropping it without finishing deletes the temporary file: no partial blob is
/// ever visible.
pub struct BlobWriter {
    // Field order matters: the file is closed before the guard deletes it.
    file: BufWriter<File>,
    guard: TempFile,
    written: u64,
    store: Store,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.guard.path)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    /// Append bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(bytes).map_err(StoreError::io(
            "write temporary blob file",
            &self.guard.path,
        ))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Make the bytes durable and move them into place as a blob. If `expected` is
    /// given and the bytes hash to something else, the bytes are discarded and
    /// [`StoreError::HashMismatch`] is returned. Writing a blob the store already
    /// has is allowed (it refreshes the file and its last access). May evict other
    /// blobs if the store is now above its cap.
    pub fn finish(self, expected: Option<BlobId>) -> Result<BlobId, StoreError> {
        let BlobWriter {
            file,
            mut guard,
            written,
            store,
        } = self;
        let file = file.into_inner().map_err(|e| {
            StoreError::io("write temporary blob file", &guard.path)(e.into_error())
        })?;
        file.sync_all()
            .map_err(StoreError::io("sync temporary blob file", &guard.path))?;
        drop(file);
        // One pass over the bytes (in the page cache now) gives the id and
        // the tree hashes that peers' ranged reads are proved with.
        let (actual, outboard) = store.hash_file(&guard.path, written)?;
        if let Some(expected) = expected {
            if expected != actual {
                // The guards delete the temporary files.
                return Err(StoreError::HashMismatch { expected, actual });
            }
        }
        if let Some(mut outboard) = outboard {
            store.place_outboard(&mut outboard, &actual)?;
        }
        store.commit_blob(&mut guard, actual, written)?;
        Ok(actual)
    }
}

/// Deletes a temporary file when dropped, unless disarmed.
pub(super) struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Guard the file at `path` (armed).
    pub(super) fn new(path: PathBuf) -> Self {
        TempFile { path, armed: true }
    }

    /// The guarded file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the file: it has been moved into place.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot delete temporary blob file; it will be removed at the next start");
            }
        }
    }
}

/// `fsync` a directory so that a rename inside it is durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io("sync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl Store {
    /// Start writing a new blob (a temporary file under `blobs/tmp/`).
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let path = self
            .inner
            .tmp_dir
            .join(format!("{:016x}.tmp", rand::random::<u64>()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(StoreError::io("create temporary blob file", &path))?;
        Ok(BlobWriter {
            file: BufWriter::with_capacity(256 * 1024, file),
            guard: TempFile::new(path),
            written: 0,
            store: self.clone(),
        })
    }

    /// Store `bytes` as a blob.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<BlobId, StoreError> {
        let mut w = self.blob_writer()?;
        w.write(bytes)?;
        w.finish(None)
    }

    /// Copy the file at `path` into the store as a blob, streaming (constant memory).
    pub fn import_file(&self, path: &Path) -> Result<BlobId, StoreError> {
        let mut src = File::open(path).map_err(StoreError::io("open file to import", path))?;
        let mut w = self.blob_writer()?;
        let mut buf = vec![0u8; IO_CHUNK];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("read file to import", path)(e)),
            };
            w.write(&buf[..n])?;
        }
        w.finish(None)
    }

    /// Whether the store holds the blob.
    pub fn has_blob(&self, id: &BlobId) -> bool {
        self.blob_size(id).is_some()
    }

    /// The blob's size, if the store holds it.
    pub fn blob_size(&self, id: &BlobId) -> Option<u64> {
        match self.blob_record(id) {
            Ok(rec) => rec.map(|r| r.size),
            Err(e) => {
                tracing::warn!(blob = %id, error = %e, "cannot read blob metadata");
                None
            }
        }
    }

    /// Path of the blob's file, if the store holds it. For reading only; a
    /// path handed to a job must come from [`Store::use_blob`] instead, or
    /// the blob may be evicted while the job reads it.
    pub fn blob_path(&self, id: &BlobId) -> Option<PathBuf> {
        self.has_blob(id).then(|| self.blob_file(id))
    }

    /// The blob's file, kept from eviction (and from `remove_blob`) until the
    /// returned guard is dropped; `None` if the store does not hold it.
    pub fn use_blob(&self, id: &BlobId) -> Option<BlobInUse> {
        let mut state = self.lock_blobs();
        if !self.has_blob(id) {
            return None;
        }
        *state.in_use.entry(*id).or_default() += 1;
        Some(BlobInUse {
            store: self.clone(),
            id: *id,
            path: self.blob_file(id),
        })
    }

    /// Read `len` bytes at `offset`. The range must lie within the blob (a range
    /// ending exactly at its end is fine) and `len` must not exceed
    /// [`MAX_RANGE_READ`]. Counts as an access for eviction.
    pub fn read_range(&self, id: &BlobId, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        if len > MAX_RANGE_READ {
            return Err(StoreError::RangeTooLarge {
                len,
                limit: MAX_RANGE_READ,
            });
        }
        let rec = self.blob_record(id)?.ok_or(StoreError::BlobNotFound(*id))?;
        if offset.checked_add(len).is_none_or(|end| end > rec.size) {
            return Err(StoreError::RangeOutOfBounds {
                id: *id,
                offset,
                len,
                size: rec.size,
            });
        }
        let path = self.blob_file(id);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            // Evicted between the metadata lookup and the open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobNotFound(*id))
            }
            Err(e) => return Err(StoreError::io("open blob file", path)(e)),
        };
        // `len` is at most MAX_RANGE_READ, so it fits in usize.
        let mut buf = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(StoreError::io("read blob file", &path))?;
        self.touch(id)?;
        Ok(buf)
    }

    /// Protect the blob from eviction.
    pub fn pin(&self, id: &BlobId) -> Result<(), StoreError> {
        self.set_pinned(id, true)
    }

    /// Allow the blob to be evicted again. Does not evict by itself: the next
    /// write or [`Store::gc`] does.
    pub fn unpin(&self, id: &BlobId) -> Result<(), StoreError> {
        self.set_pinned(id, false)
    }

    /// Every blob, ordered by id.
    pub fn list_blobs(&self) -> Result<Vec<BlobMeta>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.t.blob_meta.iter() {
            let (k, v) = item.map_err(StoreError::db("list blob metadata"))?;
            let id = BlobId(key_id(trees::BLOB_META, &k)?);
            let rec: BlobRecord = decode(trees::BLOB_META, &k, &v)?;
            out.push(BlobMeta {
                id,
                size: rec.size,
                pinned: rec.pinned,
                last_access_ms: rec.last_access_ms,
            });
        }
        Ok(out)
    }

    /// Evict least-recently-used unpinned blobs until the total is within the cap.
    /// Held facts using an evicted blob are demoted. If only pinned blobs are left
    /// above the cap, that is reported ([`GcReport::over_cap`]), not an error.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let mut state = self.lock_blobs();
        self.gc_locked(&mut state, None)
    }

    /// Delete one blob now, whatever the cap. Refuses pinned blobs. Returns the held
    /// facts demoted because of it.
    pub fn remove_blob(&self, id: &BlobId) -> Result<Vec<FactId>, StoreError> {
        let mut state = self.lock_blobs();
        let rec = self.blob_record(id)?.ok_or(StoreError::BlobNotFound(*id))?;
        if rec.pinned {
            return Err(StoreError::Pinned(*id));
        }
        if state.in_use.contains_key(id) {
            return Err(StoreError::InUse(*id));
        }
        self.evict_locked(&mut state, id, rec.size)
    }

    /// Total size of all blobs, bytes.
    pub fn blob_bytes(&self) -> u64 {
        self.lock_blobs().total_bytes
    }

    // ---- internals ----

    pub(super) fn blob_file(&self, id: &BlobId) -> PathBuf {
        self.inner.blob_dir.join(id.to_string())
    }

    pub(super) fn blob_record(&self, id: &BlobId) -> Result<Option<BlobRecord>, StoreError> {
        let key = id.as_bytes();
        match self
            .inner
            .t
            .blob_meta
            .get(key)
            .map_err(StoreError::db("read blob metadata"))?
        {
            Some(v) => Ok(Some(decode(trees::BLOB_META, key, &v)?)),
            None => Ok(None),
        }
    }

    pub(super) fn put_blob_record(&self, id: &BlobId, rec: &BlobRecord) -> Result<(), StoreError> {
        let bytes = encode(trees::BLOB_META, rec)?;
        let old = self
            .inner
            .t
            .blob_meta
            .insert(id.as_bytes(), bytes)
            .map_err(StoreError::db("write blob metadata"))?;
        let old = old.and_then(|v| decode::<BlobRecord>(trees::BLOB_META, id.as_bytes(), &v).ok());
        self.inner.counts.blob_changed(old.as_ref(), Some(rec));
        Ok(())
    }

    /// The next value of the access counter (monotonic across restarts).
    pub(super) fn next_access_seq(&self) -> Result<u64, StoreError> {
        self.inner
            .db
            .generate_id()
            .map_err(StoreError::db("advance access counter"))
    }

    /// Rename a finished temporary file into place and record its metadata.
    pub(super) fn commit_blob(
        &self,
        temp: &mut TempFile,
        id: BlobId,
        size: u64,
    ) -> Result<(), StoreError> {
        let final_path = self.blob_file(&id);
        let mut state = self.lock_blobs();
        let existing = self.blob_record(&id)?;
        // Renaming over an existing copy replaces it atomically with bytes just
        // verified; readers holding the old file open keep reading it.
        fs::rename(&temp.path, &final_path)
            .map_err(StoreError::io("move blob into place", &final_path))?;
        temp.armed = false;
        sync_dir(&self.inner.blob_dir)?;
        let rec = BlobRecord {
            size,
            pinned: existing.is_some_and(|r| r.pinned),
            last_access_ms: now_ms(),
            access_seq: self.next_access_seq()?,
        };
        self.put_blob_record(&id, &rec)?;
        state.total_bytes = state
            .total_bytes
            .saturating_sub(existing.map_or(0, |r| r.size))
            .saturating_add(size);
        if state.total_bytes > self.inner.cap {
            // The blob is stored; a failing eviction must not make the write fail.
            if let Err(e) = self.gc_locked(&mut state, Some(id)) {
                tracing::warn!(error = %e, "eviction after a blob write failed");
            }
        }
        Ok(())
    }

    pub(super) fn touch(&self, id: &BlobId) -> Result<(), StoreError> {
        let _state = self.lock_blobs();
        if let Some(mut rec) = self.blob_record(id)? {
            rec.last_access_ms = now_ms();
            rec.access_seq = self.next_access_seq()?;
            self.put_blob_record(id, &rec)?;
        }
        Ok(())
    }

    fn set_pinned(&self, id: &BlobId, pinned: bool) -> Result<(), StoreError> {
        let _state = self.lock_blobs();
        let mut rec = self.blob_record(id)?.ok_or(StoreError::BlobNotFound(*id))?;
        if rec.pinned != pinned {
            rec.pinned = pinned;
            self.put_blob_record(id, &rec)?;
        }
        Ok(())
    }

    /// Evict in LRU order until within the cap, never `protect` nor pinned blobs.
    pub(super) fn gc_locked(
        &self,
        state: &mut BlobState,
        protect: Option<BlobId>,
    ) -> Result<GcReport, StoreError> {
        let cap = self.inner.cap;
        let mut report = GcReport {
            total_bytes_after: state.total_bytes,
            cap_bytes: cap,
            ..GcReport::default()
        };
        if state.total_bytes <= cap {
            return Ok(report);
        }
        let mut candidates = Vec::new();
        for item in self.inner.t.blob_meta.iter() {
            let (k, v) = item.map_err(StoreError::db("scan blob metadata"))?;
            let id = BlobId(key_id(trees::BLOB_META, &k)?);
            let rec: BlobRecord = decode(trees::BLOB_META, &k, &v)?;
            if !rec.pinned && Some(id) != protect && !state.in_use.contains_key(&id) {
                candidates.push((rec.access_seq, id, rec.size));
            }
        }
        candidates.sort_unstable();
        for (_, id, size) in candidates {
            if state.total_bytes <= cap {
                break;
            }
            let demoted = self.evict_locked(state, &id, size)?;
            report.evicted.push(id);
            report.freed_bytes += size;
            report.facts_demoted.extend(demoted);
        }
        report.total_bytes_after = state.total_bytes;
        if report.over_cap() {
            tracing::warn!(
                total = state.total_bytes,
                cap,
                "blob store stays above its cap: the remaining blobs are pinned or were just written"
            );
        } else {
            tracing::debug!(
                evicted = report.evicted.len(),
                freed = report.freed_bytes,
                "evicted blobs"
            );
        }
        Ok(report)
    }

    /// Remove one blob: demote the held facts using it, then remove its metadata,
    /// then its file and its outboard (see the module doc for why this order).
    fn evict_locked(
        &self,
        state: &mut BlobState,
        id: &BlobId,
        size: u64,
    ) -> Result<Vec<FactId>, StoreError> {
        let demoted = self.demote_holders_locked(id)?;
        let old = self
            .inner
            .t
            .blob_meta
            .remove(id.as_bytes())
            .map_err(StoreError::db("remove blob metadata"))?;
        let old = old.and_then(|v| decode::<BlobRecord>(trees::BLOB_META, id.as_bytes(), &v).ok());
        self.inner.counts.blob_changed(old.as_ref(), None);
        state.total_bytes = state.total_bytes.saturating_sub(size);
        let path = self.blob_file(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("delete blob file", path)(e)),
        }
        self.remove_outboard(id)?;
        Ok(demoted)
    }
}
