//! Blobs being fetched ([`PartialBlob`]): their bytes and BLAKE3 tree hashes
//! under `partial/<hex>-<size>` and `partial/<hex>-<size>.obao`, written piece
//! by piece ([`limits::BLOB_CHUNK`] bytes) as each piece's chunk groups check
//! out against the blob id, and moved into place once every piece has.
//!
//! An interrupted fetch leaves its files behind and the next fetch of the same
//! blob and size resumes from them: opening re-checks what they hold (a crash
//! may have torn any write), so only verified chunk groups count. Partial files
//! are not counted against the blob cap; [`Store::open`] deletes those not
//! touched for [`STALE_PARTIAL`]. One fetch per blob at a time
//! ([`Store::fetch_lock`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::io::sync::{decode_ranges, valid_ranges};
use bao_tree::io::DecodeError;
use bao_tree::{BaoTree, ChunkNum, ChunkRanges};
use oda_protocol::codec::limits;
use oda_protocol::BlobId;

use super::blobs::TempFile;
use super::error::StoreError;
use super::outboards::{piece_chunks, tree, HashWrites, Region};
use super::Store;

/// Partial files untouched for this long are deleted when the store opens.
pub const STALE_PARTIAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Bytes in one piece: the unit a fetch asks one provider for.
const PIECE: u64 = limits::BLOB_CHUNK as u64;

/// Per-blob locks of the fetches under way (entries die with their last user).
pub(super) type FetchLocks = Mutex<HashMap<BlobId, Weak<tokio::sync::Mutex<()>>>>;

/// A blob being fetched. Pieces may be written from several threads at once;
/// [`PartialBlob::finish`] makes it a stored blob once all are verified.
#[derive(Debug)]
pub struct PartialBlob {
    store: Store,
    id: BlobId,
    tree: BaoTree,
    data_path: PathBuf,
    outboard_path: PathBuf,
    data: File,
    outboard: File,
    /// Whether each piece has been verified.
    verified: Mutex<Vec<bool>>,
}

impl Store {
    /// The lock that one fetch of `id` holds, so that two fetches of the same
    /// blob do not write the same partial files at once.
    pub fn fetch_lock(&self, id: &BlobId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .fetch_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.retain(|_, lock| lock.strong_count() > 0);
        if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(*id, Arc::downgrade(&lock));
        lock
    }

    /// Start fetching a blob of `size` bytes, or resume an earlier fetch of it
    /// (re-checking what that one wrote). Partial files of the same blob with
    /// another size are deleted: a blob has one size. Hold
    /// [`Store::fetch_lock`] while using the result.
    pub fn partial_blob(&self, id: BlobId, size: u64) -> Result<PartialBlob, StoreError> {
        let dir = &self.inner.partial_dir;
        let stem = format!("{id}-{size}");
        self.remove_other_partials(&id, &stem)?;
        let data_path = dir.join(&stem);
        let outboard_path = dir.join(format!("{stem}.obao"));
        let tree = tree(size);
        let resumed = data_path.exists();
        let open = |path: &Path, len: u64| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(StoreError::io("open partial blob file", path))?;
            file.set_len(len)
                .map_err(StoreError::io("size partial blob file", path))?;
            Ok::<_, StoreError>(file)
        };
        let data = open(&data_path, size)?;
        let outboard = open(&outboard_path, tree.outboard_size())?;
        let partial = PartialBlob {
            store: self.clone(),
            id,
            tree,
            data_path,
            outboard_path,
            data,
            outboard,
            verified: Mutex::new(vec![false; pieces(size) as usize]),
        };
        if resumed {
            partial.recheck()?;
        }
        Ok(partial)
    }

    /// Delete partial files of `id` not named `<stem>` or `<stem>.obao`.
    fn remove_other_partials(&self, id: &BlobId, stem: &str) -> Result<(), StoreError> {
        let dir = &self.inner.partial_dir;
        let prefix = format!("{id}-");
        for entry in fs::read_dir(dir).map_err(StoreError::io("list directory", dir))? {
            let entry = entry.map_err(StoreError::io("list directory", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let same = name == stem || name.strip_suffix(".obao") == Some(stem);
            if name.starts_with(&prefix) && !same {
                tracing::warn!(blob = %id, file = name, "deleting a partial fetch of the blob with another size");
                remove_if_there(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Delete partial files untouched for longer than `age`; returns how many.
    pub(super) fn remove_stale_partials(&self, age: Duration) -> Result<usize, StoreError> {
        let dir = &self.inner.partial_dir;
        let mut removed = 0;
        for entry in fs::read_dir(dir).map_err(StoreError::io("list directory", dir))? {
            let entry = entry.map_err(StoreError::io("list directory", dir))?;
            let path = entry.path();
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(StoreError::io("inspect", &path))?;
            if modified.elapsed().is_ok_and(|e| e > age) {
                remove_if_there(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl PartialBlob {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The pieces still to fetch as `(offset, len)`, in the order to fetch
    /// them: the first, the last (whose chunk proves the blob's size), then
    /// the others in order.
    pub fn missing(&self) -> Vec<(u64, u32)> {
        let verified = self.lock();
        let n = verified.len() as u64;
        let mut order: Vec<u64> = Vec::with_capacity(verified.len());
        order.push(0);
        if n > 1 {
            order.push(n - 1);
        }
        order.extend(1..n.saturating_sub(1));
        order
            .into_iter()
            .filter(|&i| !verified[i as usize])
            .map(|i| {
                let offset = i * PIECE;
                // At most PIECE, which fits in u32.
                let len = PIECE.min(self.size() - offset) as u32;
                (offset, len)
            })
            .collect()
    }

    /// Check and write one piece, the blob protocol's `encoded` answer to the
    /// range `(offset, len)` that [`PartialBlob::missing`] listed. Bytes that
    /// do not hash to the blob id, hash pairs that do not lead to it, a short or
    /// overlong answer all give [`StoreError::BadPiece`] naming the first byte
    /// that failed; the piece then counts as missing. Blocking: writes files.
    pub fn write_piece(&self, offset: u64, len: u32, encoded: &[u8]) -> Result<(), StoreError> {
        let size = self.size();
        let ranges = piece_chunks(offset, u64::from(len), size).map_err(StoreError::BadRange)?;
        // Decoded in memory, then written in one go (and the hashes in a few).
        let end = (offset + u64::from(len)).min(size);
        let mut data = Region::zeroed(offset, (end - offset) as usize);
        let mut hashes = HashWrites::default();
        let outboard = PostOrderOutboard {
            root: self.root(),
            tree: self.tree,
            data: &mut hashes,
        };
        let mut reader = Cursor::new(encoded);
        decode_ranges(&mut reader, &ranges, &mut data, outboard).map_err(|e| self.bad(e))?;
        let extra = encoded.len() as u64 - reader.position();
        if extra > 0 {
            return Err(self.bad_piece(format!(
                "{extra} bytes past the end of the range at {offset}"
            )));
        }
        data.write_to(&self.data)
            .map_err(StoreError::io("write partial blob file", &self.data_path))?;
        hashes.write_to(&self.outboard).map_err(StoreError::io(
            "write partial outboard",
            &self.outboard_path,
        ))?;
        self.lock()[(offset / PIECE) as usize] = true;
        Ok(())
    }

    /// Make the verified bytes a stored blob: `fsync` both files, move the
    /// hashes and then the bytes into place. Fails, keeping the files, if a
    /// piece has not been verified.
    pub fn finish(self) -> Result<BlobId, StoreError> {
        if let Some(i) = self.lock().iter().position(|v| !v) {
            return Err(self.bad_piece(format!(
                "the piece at {} has not been fetched",
                i as u64 * PIECE
            )));
        }
        let sync = |file: &File, path: &Path| {
            file.sync_all()
                .map_err(StoreError::io("sync partial blob file", path))
        };
        sync(&self.data, &self.data_path)?;
        if self.tree.outboard_size() > 0 {
            sync(&self.outboard, &self.outboard_path)?;
            let target = self.store.outboard_file(&self.id);
            fs::rename(&self.outboard_path, &target)
                .map_err(StoreError::io("move outboard into place", &target))?;
        } else {
            remove_if_there(&self.outboard_path)?;
        }
        let mut temp = TempFile::new(self.data_path.clone());
        self.store.commit_blob(&mut temp, self.id, self.size())?;
        Ok(self.id)
    }

    /// Forget the fetch: delete its files.
    pub fn discard(self) -> Result<(), StoreError> {
        remove_if_there(&self.data_path)?;
        remove_if_there(&self.outboard_path)
    }

    /// Mark the pieces that an earlier fetch left complete and valid.
    fn recheck(&self) -> Result<(), StoreError> {
        let outboard = PostOrderOutboard {
            root: self.root(),
            tree: self.tree,
            data: &self.outboard,
        };
        let mut valid = ChunkRanges::empty();
        for range in valid_ranges(outboard, &self.data, &ChunkRanges::all()) {
            let range = range.map_err(StoreError::io("check partial blob", &self.data_path))?;
            valid |= ChunkRanges::from(range);
        }
        let mut verified = self.lock();
        for (i, v) in verified.iter_mut().enumerate() {
            let offset = i as u64 * PIECE;
            let len = PIECE.min(self.size() - offset);
            *v =
                piece_chunks(offset, len, self.size()).is_ok_and(|piece| valid.is_superset(&piece));
        }
        let kept = verified.iter().filter(|v| **v).count();
        tracing::info!(blob = %self.id, pieces = verified.len(), kept, "resuming an interrupted fetch");
        Ok(())
    }

    fn root(&self) -> bao_tree::blake3::Hash {
        bao_tree::blake3::Hash::from_bytes(self.id.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<bool>> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bad_piece(&self, reason: String) -> StoreError {
        StoreError::BadPiece {
            blob: self.id,
            reason,
        }
    }

    /// Name what failed to decode by the bytes it covers.
    fn bad(&self, e: DecodeError) -> StoreError {
        let bytes = |chunk: ChunkNum| chunk.to_bytes();
        let reason = match e {
            DecodeError::LeafHashMismatch(chunk) => format!(
                "the chunk group at byte {} does not hash to the blob id",
                bytes(chunk)
            ),
            DecodeError::ParentHashMismatch(node) => {
                // A node's range counts chunk groups, not chunks.
                let range = node.chunk_range();
                let group = limits::BLOB_CHUNK_GROUP as u64;
                format!(
                    "the hashes of bytes {}..{} do not lead to the blob id",
                    range.start.0 * group,
                    (range.end.0 * group).min(self.size())
                )
            }
            DecodeError::LeafNotFound(chunk) => {
                format!("the answer ends before byte {}", bytes(chunk))
            }
            DecodeError::ParentNotFound(node) => format!(
                "the answer ends before the hashes of byte {}",
                node.chunk_range().start.0 * limits::BLOB_CHUNK_GROUP as u64
            ),
            DecodeError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                "the answer ends early".to_string()
            }
            DecodeError::Io(e) => {
                return StoreError::io("write partial blob file", &self.data_path)(e)
            }
        };
        self.bad_piece(reason)
    }
}

/// Number of pieces of a blob of `size` bytes (an empty blob has one).
fn pieces(size: u64) -> u64 {
    size.div_ceil(PIECE).max(1)
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("delete partial blob file", path)(e)),
    }
}
