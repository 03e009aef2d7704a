//! Upgrades of the on-disk format: each step takes a store written in one
//! format version to the next, inside [`super::Store::open`] before the
//! store's check and counts.
//!
//! | from | to | change |
//! | --- | --- | --- |
//! | 1 | 2 | Facts name the input fact behind each input (protocol v2): v1 facts can neither be decoded nor trusted under the new rules, so they are dropped with everything that points at them (fact index, held facts, endorsements of facts). Expressions, workflows, blobs and job records stay; results are looked up or computed again. |
//! | 2 | 3 | Job records end with the job's quorum (a varint `u32`): each record gets the encoding of 1 appended (a field added at the end of a bincode struct is exactly that), so old jobs keep their meaning. |

use super::error::StoreError;
use super::records::{trees, FORMAT_KEY, FORMAT_VERSION};

/// Bring a database in format `found` up to [`FORMAT_VERSION`]; returns how
/// many facts were dropped on the way. The version is written last, so a
/// crash part-way runs the step again at the next open.
pub(super) fn upgrade(db: &sled::Db, found: u32) -> Result<u64, StoreError> {
    let mut dropped = 0;
    if found < 2 {
        dropped += drop_facts(db)?;
    }
    if found < 3 {
        add_job_quorum(db)?;
    }
    let meta = db
        .open_tree(trees::STORE_META)
        .map_err(StoreError::db("open tree"))?;
    meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_le_bytes())
        .map_err(StoreError::db("write format version"))?;
    db.flush().map_err(StoreError::db("flush"))?;
    tracing::warn!(
        from = found,
        to = FORMAT_VERSION,
        facts_dropped = dropped,
        "store upgraded: facts of the older protocol were dropped (they are looked up or computed again)"
    );
    Ok(dropped)
}

/// 1 → 2: drop every fact and what points at one.
fn drop_facts(db: &sled::Db) -> Result<u64, StoreError> {
    let open = |name: &str| db.open_tree(name).map_err(StoreError::db("open tree"));
    let facts = open(trees::FACTS)?;
    let dropped = facts.len() as u64;
    for name in [
        trees::FACTS,
        trees::FACTS_BY_EXPR,
        trees::HELD,
        trees::HELD_BY_BLOB,
    ] {
        open(name)?.clear().map_err(StoreError::db("clear tree"))?;
    }
    // Endorsements are keyed by subject tag: 1 is a fact.
    let endorsements = open(trees::ENDORSEMENTS)?;
    for item in endorsements.scan_prefix([1u8]) {
        let (key, _) = item.map_err(StoreError::db("scan endorsements"))?;
        endorsements
            .remove(key)
            .map_err(StoreError::db("remove endorsement"))?;
    }
    Ok(dropped)
}

/// 2 → 3: append a quorum of 1 (varint: the byte 1) to every job record.
/// A crash part-way leaves some records upgraded and the version at 2: the
/// step runs again and must not append twice, so a record is upgraded only
/// while it is one byte short of decoding.
fn add_job_quorum(db: &sled::Db) -> Result<(), StoreError> {
    use crate::scheduler::jobs::JobRecord;
    use oda_protocol::Wire;
    let jobs = db
        .open_tree(trees::JOBS)
        .map_err(StoreError::db("open tree"))?;
    for item in jobs.iter() {
        let (key, old) = item.map_err(StoreError::db("scan jobs"))?;
        if JobRecord::decode(&old).is_ok() {
            continue;
        }
        let mut new = old.to_vec();
        new.push(1);
        if JobRecord::decode(&new).is_ok() {
            jobs.insert(key, new)
                .map_err(StoreError::db("upgrade job record"))?;
        }
    }
    Ok(())
}
