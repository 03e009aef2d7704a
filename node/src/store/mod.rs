//! The node's persistent store: sled trees for small records and one file per blob.
//!
//! Layout of a data dir:
//!
//! ```text
//! <dir>/db/            sled database (trees listed in `records`)
//! <dir>/blobs/<hex>    blob bytes, file named by the BlobId in lowercase hex
//! <dir>/blobs/tmp/     blob files being written
//! <dir>/outboards/<hex> the blob's BLAKE3 tree hashes, for verified ranged reads
//! <dir>/partial/       blobs being fetched, resumable
//! ```
//!
//! Submodules: `error` ([`StoreError`]), `records` (tree layout and record
//! encoding), `blobs` (blob files, pins, LRU eviction), `facts` (facts, the index
//! by expression, "held" facts), `catalog` (workflows, expressions, endorsements),
//! `group_commit` (flushes shared by concurrent callers),
//! `outboards` (each blob's BLAKE3 tree and verified ranges of it), `partial`
//! (blobs being fetched, checked piece by piece), `repair` (the consistency
//! check run by [`Store::open`]).
//!
//! # Consistency and durability
//!
//! The invariant is: **no held fact points at bytes that are not there.** A fact
//! is *held* when this node stored it with [`Store::put_own_fact`], which checks
//! that every output blob is present; facts from peers are never held (their
//! outputs are fetched lazily). Writes happen in this order:
//!
//! 1. blob bytes go to a temporary file under `blobs/tmp/` (or, fetched, to
//!    `partial/`, proven piece by piece), are `fsync`ed and hashed with their
//!    BLAKE3 tree, whose outboard is `fsync`ed and renamed to `outboards/<id>`;
//!    then the bytes are renamed to `blobs/<id>` and the `blobs/` directory is
//!    `fsync`ed, so a blob file is either complete or absent (an outboard
//!    without its blob is deleted at open; one that is missing is recomputed);
//! 2. then the blob's metadata is written to sled;
//! 3. then the fact (with its index entry and held marker, in one sled transaction).
//!
//! Eviction runs the other way: demote the held facts that use the blob, remove
//! its metadata, delete the file. Every check-then-write on blob metadata and held
//! facts happens under one lock, so eviction cannot slip between `put_own_fact`'s
//! check and its write.
//!
//! Durability: blob files are durable when a write returns. sled records are
//! durable after [`Store::flush`] or sled's background flush (every 500 ms by
//! default), so a crash may lose the records written just before it; multi-tree
//! updates (a fact with its index entry and held marker) are sled transactions and
//! are kept or lost together. Whatever a crash leaves behind, [`Store::open`]
//! repairs and reports in an [`OpenReport`]: temporary files are removed, metadata
//! without a file is removed, files without metadata are re-hashed and adopted if
//! their name matches their content (else deleted), and held facts whose outputs
//! are missing are demoted (kept, but no longer held).
//!
//! Nothing read from disk is trusted to be well formed: a record that does not
//! decode, or whose key is not the hash of its content, is reported as
//! [`StoreError::Corrupt`] naming the tree and key; the store never panics on it.
//!
//! All methods block on disk I/O: call them from `tokio::task::spawn_blocking` (or
//! accept short blocking for small records).

mod blobs;
mod catalog;
mod counts;
mod error;
mod facts;
mod group_commit;
mod migrate;
mod outboards;
mod partial;
#[cfg(test)]
mod partial_tests;
mod records;
mod repair;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oda_protocol::FactId;

pub use blobs::{BlobInUse, BlobMeta, BlobWriter, GcReport, MAX_RANGE_READ};
pub use error::StoreError;
pub use outboards::piece_chunks;
pub use partial::{PartialBlob, STALE_PARTIAL};

use records::{trees, FORMAT_KEY, FORMAT_VERSION};

/// The tree of job records (the scheduler's `JobStore`), named here for the
/// store's format upgrades.
pub const JOBS_TREE: &str = trees::JOBS;

/// Where the store lives, how much blob data it may keep and how much
/// memory its database may use as a cache.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data dir; created if missing.
    pub dir: PathBuf,
    /// Size cap for blob bytes, in bytes. Least-recently-used unpinned blobs are
    /// evicted when a write pushes the total above it.
    pub blob_cap_bytes: u64,
    /// Bytes of records the database keeps in memory (sled's page cache);
    /// reads beyond it go to the file (and the OS page cache).
    pub cache_bytes: u64,
}

impl StoreConfig {
    /// The database cache unless configured: sled's own default (1 GiB)
    /// suits a database server, not a daemon beside other work; a node
    /// holding 100,000 facts and 10,000 job records stays under 100 MiB
    /// resident with this (docs/benchmarks.md, "loaded node").
    pub const DEFAULT_CACHE_BYTES: u64 = 32 << 20;

    /// A store in `dir` with a blob cap and the default database cache.
    pub fn new(dir: PathBuf, blob_cap_bytes: u64) -> Self {
        Self {
            dir,
            blob_cap_bytes,
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
        }
    }
}

/// What [`Store::open`] found and repaired.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Temporary files of interrupted blob writes, deleted.
    pub temp_files_removed: usize,
    /// Blob files without metadata whose content matches their name, adopted.
    pub orphan_files_adopted: usize,
    /// Files in `blobs/` without metadata whose content does not match their
    /// name (or whose name is not a blob id), deleted.
    pub orphan_files_removed: usize,
    /// Metadata records whose blob file was missing, removed.
    pub metas_without_file: usize,
    /// Blob files whose size differs from their metadata, deleted with the metadata.
    pub wrong_size_files_removed: usize,
    /// Undecodable metadata records, removed (their files are then treated as orphans).
    pub corrupt_metas_removed: usize,
    /// Held facts whose output bytes were missing, demoted (the facts are kept).
    /// Facts demoted by the eviction at the end of the check are listed in
    /// [`OpenReport::gc`] instead.
    pub facts_demoted: Vec<FactId>,
    /// Eviction run at the end of the check, if the blobs exceeded the cap (for
    /// example after the cap was lowered).
    pub gc: Option<GcReport>,
    /// Outboards whose blob is gone (a crash between moving a fetched blob's
    /// hashes and its bytes into place, or during an eviction), deleted.
    pub orphan_outboards_removed: usize,
    /// Files of fetches abandoned more than [`STALE_PARTIAL`] ago, deleted.
    pub stale_partials_removed: usize,
    /// Facts of an older format, dropped when the store was upgraded
    /// ([`migrate`]; logged there, not a repair).
    pub facts_dropped_by_upgrade: u64,
}

impl OpenReport {
    /// Whether the check found nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.temp_files_removed == 0
            && self.orphan_files_adopted == 0
            && self.orphan_files_removed == 0
            && self.metas_without_file == 0
            && self.wrong_size_files_removed == 0
            && self.corrupt_metas_removed == 0
            && self.orphan_outboards_removed == 0
            && self.facts_demoted.is_empty()
    }
}

/// Counts and sizes, for `oda cache` and metrics (the API serves it as is).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Number of blobs.
    pub blobs: u64,
    /// Total size of all blobs, bytes.
    pub blob_bytes: u64,
    /// Number of pinned blobs.
    pub pinned_blobs: u64,
    /// Total size of pinned blobs, bytes.
    pub pinned_bytes: u64,
    /// The blob size cap, bytes.
    pub cap_bytes: u64,
    /// Number of facts.
    pub facts: u64,
    /// Number of held facts (output bytes held here).
    pub held_facts: u64,
    /// Number of workflows.
    pub workflows: u64,
    /// Number of expressions.
    pub exprs: u64,
    /// Number of endorsements.
    pub endorsements: u64,
}

/// The node's store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("blob_cap_bytes", &self.inner.cap)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    blob_dir: PathBuf,
    tmp_dir: PathBuf,
    outboard_dir: PathBuf,
    partial_dir: PathBuf,
    cap: u64,
    db: sled::Db,
    t: Trees,
    /// Serialises every change to blob metadata and held facts, and guards the
    /// running total of blob bytes.
    blob_state: Mutex<BlobState>,
    /// Records of each kind (see [`counts`]).
    counts: counts::Counts,
    /// One lock per blob being fetched (see [`Store::fetch_lock`]).
    fetch_locks: partial::FetchLocks,
    /// Concurrent [`Store::flush`] calls share database flushes.
    group_commit: group_commit::GroupCommit,
}

struct Trees {
    exprs: sled::Tree,
    workflows: sled::Tree,
    facts: sled::Tree,
    facts_by_expr: sled::Tree,
    held: sled::Tree,
    held_by_blob: sled::Tree,
    endorsements: sled::Tree,
    disputes: sled::Tree,
    blob_meta: sled::Tree,
}

struct BlobState {
    /// Sum of the sizes in `blob_meta`.
    total_bytes: u64,
    /// Blobs whose files running jobs read, with how many [`BlobInUse`]
    /// guards each has: never evicted while listed.
    in_use: std::collections::HashMap<oda_protocol::BlobId, usize>,
}

impl Store {
    /// Open (or create) the store in `cfg.dir`, check it and repair what a crash
    /// left behind. Fails if another process has the database open.
    pub fn open(cfg: StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        let dir = cfg.dir;
        let blob_dir = dir.join("blobs");
        let tmp_dir = blob_dir.join("tmp");
        let outboard_dir = dir.join("outboards");
        let partial_dir = dir.join("partial");
        for d in [&dir, &blob_dir, &tmp_dir, &outboard_dir, &partial_dir] {
            std::fs::create_dir_all(d).map_err(StoreError::io("create directory", d))?;
        }
        let db_path = dir.join("db");
        let db = open_db(&db_path, cfg.cache_bytes).map_err(|source| StoreError::OpenDb {
            path: db_path.clone(),
            source,
        })?;
        let facts_dropped_by_upgrade = match check_format(&db, &dir)? {
            FORMAT_VERSION => 0,
            older => migrate::upgrade(&db, older)?,
        };
        let open = |name: &'static str| db.open_tree(name).map_err(StoreError::db("open tree"));
        let t = Trees {
            exprs: open(trees::EXPRS)?,
            workflows: open(trees::WORKFLOWS)?,
            facts: open(trees::FACTS)?,
            facts_by_expr: open(trees::FACTS_BY_EXPR)?,
            held: open(trees::HELD)?,
            held_by_blob: open(trees::HELD_BY_BLOB)?,
            endorsements: open(trees::ENDORSEMENTS)?,
            disputes: open(trees::DISPUTES)?,
            blob_meta: open(trees::BLOB_META)?,
        };
        let store = Store {
            inner: Arc::new(Inner {
                dir,
                blob_dir,
                tmp_dir,
                outboard_dir,
                partial_dir,
                cap: cfg.blob_cap_bytes,
                db,
                t,
                blob_state: Mutex::new(BlobState {
                    total_bytes: 0,
                    in_use: Default::default(),
                }),
                counts: counts::Counts::default(),
                fetch_locks: Default::default(),
                group_commit: Default::default(),
            }),
        };
        let mut report = store.check_and_repair()?;
        report.facts_dropped_by_upgrade = facts_dropped_by_upgrade;
        store.recount()?;
        if report.is_clean() {
            tracing::debug!(dir = %store.inner.dir.display(), "store opened");
        } else {
            tracing::warn!(dir = %store.inner.dir.display(), ?report, "store repaired after an unclean shutdown");
        }
        Ok((store, report))
    }

    /// Make every record written so far durable (blob files already are).
    /// Concurrent calls share flushes (group commit): each returns once a
    /// flush that began after it was called has finished.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner
            .group_commit
            .flush(|| self.inner.db.flush().map(|_| ()))
            .map_err(StoreError::db("flush"))
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A named sled tree for another module (job records, worker journal). The
    /// store's own tree names are refused.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        if trees::ALL.contains(&name) || name.starts_with("__sled") {
            return Err(StoreError::ReservedTree(name.to_string()));
        }
        self.inner
            .db
            .open_tree(name)
            .map_err(StoreError::db("open tree"))
    }

    /// Counts and sizes of everything stored.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let c = &self.inner.counts;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Ok(StoreStats {
            cap_bytes: self.inner.cap,
            facts: n(&c.facts),
            held_facts: n(&c.held),
            workflows: n(&c.workflows),
            exprs: n(&c.exprs),
            endorsements: n(&c.endorsements),
            blobs: n(&c.blobs),
            blob_bytes: self.lock_blobs().total_bytes,
            pinned_blobs: n(&c.pinned_blobs),
            pinned_bytes: n(&c.pinned_bytes),
        })
    }

    /// Count every kind of record with one scan (at open, after repair).
    fn recount(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let (t, c) = (&self.inner.t, &self.inner.counts);
        c.facts.store(t.facts.len() as u64, Relaxed);
        c.held.store(t.held.len() as u64, Relaxed);
        c.workflows.store(t.workflows.len() as u64, Relaxed);
        c.exprs.store(t.exprs.len() as u64, Relaxed);
        c.endorsements.store(t.endorsements.len() as u64, Relaxed);
        let (mut blobs, mut pinned, mut pinned_bytes) = (0, 0, 0);
        for meta in self.list_blobs()? {
            blobs += 1;
            if meta.pinned {
                pinned += 1;
                pinned_bytes += meta.size;
            }
        }
        c.blobs.store(blobs, Relaxed);
        c.pinned_blobs.store(pinned, Relaxed);
        c.pinned_bytes.store(pinned_bytes, Relaxed);
        Ok(())
    }

    /// Lock the blob state. A panic while it was held cannot leave the counter
    /// unusable, so a poisoned lock is taken over.
    fn lock_blobs(&self) -> MutexGuard<'_, BlobState> {
        self.inner
            .blob_state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How long an open waits for another handle on the database to let go of
/// its lock. sled releases the lock only when its last background I/O job
/// has finished, a few milliseconds after the `Db` is dropped, so a store
/// reopened in the same process (a node restarted in place) may find it
/// still held; a second process holding it fails after this long.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The format version on disk (written, in a new database). A version newer
/// than this build's, or older than any it can upgrade, is refused.
fn check_format(db: &sled::Db, dir: &Path) -> Result<u32, StoreError> {
    let meta = db
        .open_tree(trees::STORE_META)
        .map_err(StoreError::db("open tree"))?;
    match meta
        .get(FORMAT_KEY)
        .map_err(StoreError::db("read format version"))?
    {
        None => {
            meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_le_bytes())
                .map_err(StoreError::db("write format version"))?;
            Ok(FORMAT_VERSION)
        }
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_le_bytes)
                .map_err(|_| {
                    StoreError::corrupt(
                        trees::STORE_META,
                        FORMAT_KEY,
                        "format version is not 4 bytes",
                    )
                })?;
            if found == 0 || found > FORMAT_VERSION {
                return Err(StoreError::UnsupportedFormat {
                    path: dir.to_path_buf(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Ok(found)
        }
    }
}

/// Wall-clock time in Unix milliseconds (0 if the clock is before 1970).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
