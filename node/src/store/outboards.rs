//! The BLAKE3 tree of each stored blob, for verified ranged reads: the tree's
//! geometry (chunk groups of [`limits::BLOB_CHUNK_GROUP`] bytes), which chunks a
//! blob-protocol range covers ([`piece_chunks`]), and the tree's hashes (a
//! bao-tree post-order outboard) under `outboards/<hex>`: computed when a blob
//! is written (the pass that finds its id), kept from the hashes that came
//! with it when it is fetched, recomputed when one is missing or damaged (the
//! first time a peer asks for a range of it), and deleted with the blob.
//!
//! An outboard depends only on the blob's bytes, so it is never stale; one
//! with the wrong length (a crash while it was written) is recomputed. Blobs
//! of one chunk group or less have an empty outboard and no file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::io::sync::{encode_ranges, outboard_post_order, ReadAt, Size, WriteAt};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use oda_protocol::codec::limits;
use oda_protocol::BlobId;

use super::blobs::{TempFile, IO_CHUNK};
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
        let file = open_blob(id, &path)?;
        let outboard = self.outboard(id, total, &path)?;
        let end = offset.saturating_add(len).min(total);
        let data = Region::read(&file, offset, (end - offset) as usize)
            .map_err(StoreError::io("read blob file", &path))?;
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

    /// Hash the blob's file into a new outboard and move it into place.
    /// Fails if the file no longer hashes to its id.
    fn compute_outboard(
        &self,
        id: &BlobId,
        tree: BaoTree,
        blob_path: &Path,
    ) -> Result<(), StoreError> {
        let (actual, outboard) = self.hash_file(blob_path, tree.size())?;
        if actual != *id {
            return Err(StoreError::HashMismatch {
                expected: *id,
                actual,
            });
        }
        match outboard {
            Some(mut outboard) => self.place_outboard(&mut outboard, id),
            None => Ok(()),
        }
    }

    /// Hash the `size` bytes of the file at `path`: their blob id and, for
    /// more than one chunk group, their outboard in a new temporary file
    /// (`fsync`ed; deleted when the guard drops unless placed).
    pub(super) fn hash_file(
        &self,
        path: &Path,
        size: u64,
    ) -> Result<(BlobId, Option<TempFile>), StoreError> {
        let tree = tree(size);
        let data = File::open(path).map_err(StoreError::io("open file to hash", path))?;
        if tree.outboard_size() == 0 {
            let mut bytes = Vec::with_capacity(size as usize);
            io::Read::read_to_end(&mut io::Read::take(data, size), &mut bytes)
                .map_err(StoreError::io("read file to hash", path))?;
            return Ok((BlobId(*blake3::hash(&bytes).as_bytes()), None));
        }
        let guard = TempFile::new(
            self.inner
                .tmp_dir
                .join(format!("{:016x}.obao", rand::random::<u64>())),
        );
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(guard.path())
            .map_err(StoreError::io("create temporary outboard", guard.path()))?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        let root = outboard_post_order(BufReader::with_capacity(IO_CHUNK, data), tree, &mut out)
            .map_err(StoreError::io("hash file into its outboard", path))?;
        let file = out
            .into_inner()
            .map_err(|e| StoreError::io("write outboard", guard.path())(e.into_error()))?;
        file.sync_all()
            .map_err(StoreError::io("sync outboard", guard.path()))?;
        Ok((BlobId(*root.as_bytes()), Some(guard)))
    }

    /// Move a finished temporary outboard into place as the outboard of `id`.
    pub(super) fn place_outboard(
        &self,
        outboard: &mut TempFile,
        id: &BlobId,
    ) -> Result<(), StoreError> {
        let path = self.outboard_file(id);
        fs::rename(outboard.path(), &path)
            .map_err(StoreError::io("move outboard into place", &path))?;
        outboard.disarm();
        Ok(())
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

/// Bytes `[start, start + len)` of a blob in memory, read and written at blob
/// offsets, so that encoding or decoding a piece touches the file once
/// instead of once per chunk group.
#[derive(Debug)]
pub(super) struct Region {
    start: u64,
    bytes: Vec<u8>,
}

impl Region {
    /// `len` zero bytes standing for the blob's bytes from `start`.
    pub(super) fn zeroed(start: u64, len: usize) -> Self {
        Region {
            start,
            bytes: vec![0; len],
        }
    }

    /// `len` bytes of `file` from `start`.
    pub(super) fn read(file: &File, start: u64, len: usize) -> io::Result<Self> {
        let mut bytes = vec![0; len];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, start)?;
        Ok(Region { start, bytes })
    }

    /// Write the bytes to `file` at their offset.
    pub(super) fn write_to(&self, file: &File) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(file, &self.bytes, self.start)
    }

    /// The bytes from `pos` on, or an error naming what lies outside.
    fn at(&self, pos: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        pos.checked_sub(self.start)
            .map(|i| i as usize)
            .filter(|&i| i <= self.bytes.len())
            .map(|i| i..(i + len).min(self.bytes.len()))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "byte {pos} is outside the piece at {} ({} bytes)",
                    self.start,
                    self.bytes.len()
                ))
            })
    }
}

impl ReadAt for Region {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let range = self.at(pos, buf.len())?;
        let n = range.len();
        buf[..n].copy_from_slice(&self.bytes[range]);
        Ok(n)
    }
}

impl Size for Region {
    fn size(&self) -> io::Result<Option<u64>> {
        Ok(Some(self.start + self.bytes.len() as u64))
    }
}

impl WriteAt for Region {
    fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<usize> {
        let range = self.at(pos, buf.len())?;
        let n = range.len();
        self.bytes[range].copy_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hash pairs a decoder saves, gathered to be written to the outboard file
/// in a few contiguous runs (a piece's subtree is contiguous in post order)
/// rather than 64 bytes at a time.
#[derive(Debug, Default)]
pub(super) struct HashWrites(Vec<(u64, Vec<u8>)>);

impl HashWrites {
    /// Write the gathered hashes to `file`, one write per contiguous run.
    pub(super) fn write_to(mut self, file: &File) -> io::Result<()> {
        self.0.sort_unstable_by_key(|(pos, _)| *pos);
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for (pos, bytes) in self.0 {
            match runs.last_mut() {
                Some((start, run)) if *start + run.len() as u64 == pos => run.extend(bytes),
                _ => runs.push((pos, bytes)),
            }
        }
        for (pos, run) in runs {
            std::os::unix::fs::FileExt::write_all_at(file, &run, pos)?;
        }
        Ok(())
    }
}

impl WriteAt for HashWrites {
    fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<usize> {
        self.0.push((pos, buf.to_vec()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ReadAt for HashWrites {
    /// Never called: decoding only saves hashes.
    fn read_at(&self, _pos: u64, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("gathered hash writes are not read back"))
    }
}
