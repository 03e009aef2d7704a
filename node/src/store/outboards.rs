//! The BLAKE3 tree of each stored blob, for verified ranged reads: the tree's
//! geometry (chunk groups of [`limits::BLOB_CHUNK_GROUP`] bytes), which chunks a
//! blob-protocol range covers ([`piece_chunks`]), and the tree's hashes (a
//! bao-tree post-order outboard) under `outboards/<hex>`, written when a blob
//! is fetched, computed from the blob's bytes the first time a peer asks for a
//! range of one stored another way, and deleted with the blob.
//!
//! An outboard depends only on the blob's bytes, so it is never stale; one
//! with the wrong length (a crash while it was written) is recomputed. Blobs
//! of one chunk group or less have an empty outboard and no file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::io::sync::{encode_ranges, outboard_post_order};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use oda_protocol::codec::limits;
use oda_protocol::BlobId;

use super::blobs::IO_CHUNK;
use super::error::StoreError;
use super::Store;

/// The chunk group: 2^4 BLAKE3 chunks of 1 KiB = [`limits::BLOB_CHUNK_GROUP`].
pub(super) const BLOCK: BlockSize = BlockSize::from_chunk_log(4);
const _: () = assert!(BLOCK.bytes() == limits::BLOB_CHUNK_GROUP);

/// The BLAKE3 tree of a blob of `size` bytes.
pub(super) fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BLOCK)
}

/// The chunks that the blob-protocol range `[offset, offset + len)` of a blob
/// of `total` bytes covers, or why the range is not valid: `offset` must lie on
/// a chunk group and inside the blob (0 for an empty blob), `len` must be at
/// most [`limits::BLOB_CHUNK`] and end on a chunk group or at the blob's end.
pub fn piece_chunks(offset: u64, len: u64, total: u64) -> Result<ChunkRanges, String> {
    let group = limits::BLOB_CHUNK_GROUP as u64;
    if len > limits::BLOB_CHUNK as u64 {
        return Err(format!("len {len} exceeds {}", limits::BLOB_CHUNK));
    }
    if !offset.is_multiple_of(group) {
        return Err(format!("offset {offset} is not a multiple of {group}"));
    }
    if offset >= total && !(offset == 0 && total == 0) {
        return Err(format!("offset {offset} is past the end ({total} bytes)"));
    }
    let end = offset.saturating_add(len).min(total);
    if end < total && !end.is_multiple_of(group) {
        return Err(format!(
            "range end {end} is neither a multiple of {group} nor the blob's end ({total})"
        ));
    }
    if end == offset && total != 0 {
        return Err("the range is empty".into());
    }
    // The empty blob is one empty chunk.
    let last = if total == 0 { 1 } else { end.div_ceil(1024) };
    Ok(ChunkRanges::from(ChunkNum(offset / 1024)..ChunkNum(last)))
}

impl Store {
    /// The range `[offset, offset + len)` of a stored blob in the blob
    /// protocol's encoding (hash pairs and bytes in tree order), with the
    /// blob's size. The range must satisfy [`piece_chunks`]
    /// ([`StoreError::BadRange`] otherwise). Counts as an access for eviction.
    /// Reads the blob file (and computes its outboard if it has none yet):
    /// call from a blocking thread.
    pub fn encode_range(
        &self,
        id: &BlobId,
        offset: u64,
        len: u64,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        let total = self.blob_size(id).ok_or(StoreError::BlobNotFound(*id))?;
        let ranges = piece_chunks(offset, len, total).map_err(StoreError::BadRange)?;
        let path = self.blob_file(id);
        let data = open_blob(id, &path)?;
        let outboard = self.outboard(id, total, &path)?;
        let mut encoded = Vec::with_capacity(len as usize + 8 * 1024);
        encode_ranges(&data, &outboard, &ranges, &mut encoded)
            .map_err(|e| StoreError::io("encode blob range", &path)(io::Error::other(e)))?;
        self.touch(id)?;
        Ok((total, encoded))
    }

    /// Where the outboard of a blob lives.
    pub(super) fn outboard_file(&self, id: &BlobId) -> PathBuf {
        self.inner.outboard_dir.join(id.to_string())
    }

    /// The blob's outboard, computing and saving it first if it is missing or
    /// has the wrong length.
    fn outboard(
        &self,
        id: &BlobId,
        size: u64,
        blob_path: &Path,
    ) -> Result<PostOrderOutboard<File>, StoreError> {
        let tree = tree(size);
        let root = bao_tree::blake3::Hash::from_bytes(id.0);
        let path = self.outboard_file(id);
        if tree.outboard_size() == 0 {
            // Never read: a one-group tree has no parent hashes. Any open file will do.
            let data = open_blob(id, blob_path)?;
            return Ok(PostOrderOutboard { root, tree, data });
        }
        match File::open(&path) {
            Ok(f) if f.metadata().is_ok_and(|m| m.len() == tree.outboard_size()) => {
                return Ok(PostOrderOutboard {
                    root,
                    tree,
                    data: f,
                })
            }
            Ok(_) => tracing::warn!(blob = %id, "outboard has the wrong length; recomputing it"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("open outboard", &path)(e)),
        }
        self.compute_outboard(id, tree, blob_path)?;
        let data = File::open(&path).map_err(StoreError::io("open outboard", &path))?;
        Ok(PostOrderOutboard { root, tree, data })
    }

    /// Hash the blob's file into a new outboard: a temporary file, `fsync`ed,
    /// then renamed into place. Fails if the file no longer hashes to its id.
    fn compute_outboard(
        &self,
        id: &BlobId,
        tree: BaoTree,
        blob_path: &Path,
    ) -> Result<(), StoreError> {
        let data = BufReader::with_capacity(IO_CHUNK, open_blob(id, blob_path)?);
        let temp = self
            .inner
            .tmp_dir
            .join(format!("{:016x}.obao", rand::random::<u64>()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(StoreError::io("create temporary outboard", &temp))?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        let result = outboard_post_order(data, tree, &mut out)
            .map_err(StoreError::io("hash blob into its outboard", blob_path))
            .and_then(|root| {
                let file = out
                    .into_inner()
                    .map_err(|e| StoreError::io("write outboard", &temp)(e.into_error()))?;
                file.sync_all()
                    .map_err(StoreError::io("sync outboard", &temp))?;
                Ok(BlobId(*root.as_bytes()))
            })
            .and_then(|actual| {
                if actual == *id {
                    Ok(())
                } else {
                    Err(StoreError::HashMismatch {
                        expected: *id,
                        actual,
                    })
                }
            });
        match result {
            Ok(()) => {
                let path = self.outboard_file(id);
                fs::rename(&temp, &path).map_err(StoreError::io("move outboard into place", &path))
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Delete a blob's outboard (if it has one).
    pub(super) fn remove_outboard(&self, id: &BlobId) -> Result<(), StoreError> {
        let path = self.outboard_file(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("delete outboard", path)(e)),
        }
    }
}

/// Open a stored blob's file; a file that vanished (evicted a moment ago)
/// is [`StoreError::BlobNotFound`].
fn open_blob(id: &BlobId, path: &Path) -> Result<File, StoreError> {
    File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::BlobNotFound(*id)
        } else {
            StoreError::io("open blob file", path)(e)
        }
    })
}
