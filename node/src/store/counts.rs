//! Running counts of the store's records, so that [`super::Store::stats`]
//! (and with it `/metrics`) costs the same with 100,000 facts as with none:
//! sled's `Tree::len` and a listing of blob metadata are full scans. The
//! counts are taken by one scan when the store opens (after its repair) and
//! then kept by every write that adds or removes a record; each write
//! knows from sled whether the key was new.

use std::sync::atomic::{AtomicU64, Ordering};

use super::records::BlobRecord;

/// One counter per kind of record.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub facts: AtomicU64,
    pub held: AtomicU64,
    pub workflows: AtomicU64,
    pub exprs: AtomicU64,
    pub endorsements: AtomicU64,
    pub blobs: AtomicU64,
    pub pinned_blobs: AtomicU64,
    pub pinned_bytes: AtomicU64,
}

/// Add one to `counter` if `added`.
pub(super) fn added(counter: &AtomicU64, added: bool) {
    add(counter, u64::from(added));
}

/// Take one from `counter` if `removed`.
pub(super) fn removed(counter: &AtomicU64, removed: bool) {
    sub(counter, u64::from(removed));
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        Some(c.saturating_sub(n))
    });
}

impl Counts {
    /// A blob's metadata went from `old` to `new` (`None`: absent).
    pub(super) fn blob_changed(&self, old: Option<&BlobRecord>, new: Option<&BlobRecord>) {
        added(&self.blobs, old.is_none() && new.is_some());
        removed(&self.blobs, old.is_some() && new.is_none());
        let pinned = |r: Option<&BlobRecord>| r.filter(|r| r.pinned).map(|r| r.size);
        let (before, after) = (pinned(old), pinned(new));
        added(&self.pinned_blobs, before.is_none() && after.is_some());
        removed(&self.pinned_blobs, before.is_some() && after.is_none());
        sub(&self.pinned_bytes, before.unwrap_or(0));
        add(&self.pinned_bytes, after.unwrap_or(0));
    }
}
