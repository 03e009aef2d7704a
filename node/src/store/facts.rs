//! Facts (tree `facts`), their index by expression (`facts_by_expr`), and the
//! *held* facts whose output bytes this node keeps (`held_facts`, with the reverse
//! index `held_by_blob` used to demote them when an output is evicted).

use std::ops::Bound;

use sled::transaction::TransactionResult;
use sled::Transactional;

use oda_protocol::{BlobId, ExprId, FactId, Outcome, PublicKey, SignedFact};

use super::counts;
use super::error::StoreError;
use super::records::{decode, encode, id_at, key_id, pair_key, trees, tx_error, HeldRecord};
use super::Store;

/// Check a fact's signature and times; returns its id.
fn verify_fact(f: &SignedFact) -> Result<FactId, StoreError> {
    let id = f.id();
    f.verify_for(&f.body.expr)
        .map_err(|source| StoreError::BadFact { fact: id, source })?;
    Ok(id)
}

impl Store {
    /// Store a fact from anyone, after checking its signature. Returns `true` if it
    /// was not stored before. Indexed by its expression; never held.
    pub fn put_fact(&self, f: &SignedFact) -> Result<bool, StoreError> {
        let id = verify_fact(f)?;
        let bytes = encode(trees::FACTS, f)?;
        let index_key = pair_key(f.body.expr.as_bytes(), id.as_bytes());
        let t = &self.inner.t;
        let result: TransactionResult<bool, StoreError> =
            (&t.facts, &t.facts_by_expr).transaction(|(facts, index)| {
                let new = facts.get(id.as_bytes())?.is_none();
                if new {
                    facts.insert(&id.as_bytes()[..], bytes.as_slice())?;
                }
                index.insert(&index_key[..], &[][..])?;
                Ok(new)
            });
        let new = result.map_err(tx_error("store fact"))?;
        counts::added(&self.inner.counts.facts, new);
        Ok(new)
    }

    /// Store a fact whose output bytes this node holds (typically one it computed),
    /// and mark it held so it is re-provided at startup. Every output blob must be
    /// in the store, or nothing is written and [`StoreError::MissingOutput`] names
    /// the first missing one. Returns `true` if the fact was not stored before.
    pub fn put_own_fact(&self, f: &SignedFact) -> Result<bool, StoreError> {
        let id = verify_fact(f)?;
        let bytes = encode(trees::FACTS, f)?;
        let index_key = pair_key(f.body.expr.as_bytes(), id.as_bytes());
        let mut outputs = f.body.output_blobs();
        outputs.sort_unstable();
        outputs.dedup();
        let held = encode(
            trees::HELD,
            &HeldRecord {
                outputs: outputs.clone(),
            },
        )?;
        // Holding the blob lock keeps eviction out between the check and the write.
        let _state = self.lock_blobs();
        if let Outcome::Success { outputs: named } = &f.body.outcome {
            for (name, out) in named {
                match self.blob_record(&out.blob)? {
                    None => {
                        return Err(StoreError::MissingOutput {
                            fact: id,
                            output: name.clone(),
                            blob: out.blob,
                        })
                    }
                    Some(rec) if rec.size != out.size => tracing::warn!(
                        fact = %id, output = %name, blob = %out.blob, stored = rec.size, claimed = out.size,
                        "fact claims another size than the stored blob has"
                    ),
                    Some(_) => {}
                }
            }
        }
        let t = &self.inner.t;
        let result: TransactionResult<(bool, bool), StoreError> =
            (&t.facts, &t.facts_by_expr, &t.held, &t.held_by_blob).transaction(
                |(facts, index, held_tree, by_blob)| {
                    let new = facts.get(id.as_bytes())?.is_none();
                    if new {
                        facts.insert(&id.as_bytes()[..], bytes.as_slice())?;
                    }
                    index.insert(&index_key[..], &[][..])?;
                    let newly_held = held_tree
                        .insert(&id.as_bytes()[..], held.as_slice())?
                        .is_none();
                    for blob in &outputs {
                        by_blob.insert(&pair_key(blob.as_bytes(), id.as_bytes())[..], &[][..])?;
                    }
                    Ok((new, newly_held))
                },
            );
        let (new, newly_held) = result.map_err(tx_error("store own fact"))?;
        counts::added(&self.inner.counts.facts, new);
        counts::added(&self.inner.counts.held, newly_held);
        Ok(new)
    }

    /// The fact with this id.
    pub fn fact(&self, id: &FactId) -> Result<Option<SignedFact>, StoreError> {
        let key = id.as_bytes();
        let Some(v) = self
            .inner
            .t
            .facts
            .get(key)
            .map_err(StoreError::db("read fact"))?
        else {
            return Ok(None);
        };
        let f: SignedFact = decode(trees::FACTS, key, &v)?;
        if f.id() != *id {
            return Err(StoreError::corrupt(
                trees::FACTS,
                key,
                format!("the stored fact has id {}", f.id()),
            ));
        }
        Ok(Some(f))
    }

    /// Every fact about `expr`.
    pub fn facts_for(&self, expr: &ExprId) -> Result<Vec<SignedFact>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.t.facts_by_expr.scan_prefix(expr.as_bytes()) {
            let (k, _) = item.map_err(StoreError::db("scan fact index"))?;
            let id = FactId(id_at(trees::FACTS_BY_EXPR, &k, 32)?);
            out.push(self.indexed_fact(trees::FACTS_BY_EXPR, &k, &id)?);
        }
        Ok(out)
    }

    /// Up to `limit` held facts (their outputs are in the store), in id
    /// order, starting after the fact `after` (from the first if `None`):
    /// a store holding many is read a page at a time, for re-providing them.
    pub fn held_facts_after(
        &self,
        after: Option<&FactId>,
        limit: usize,
    ) -> Result<Vec<SignedFact>, StoreError> {
        let start = match after {
            Some(id) => Bound::Excluded(id.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self
            .inner
            .t
            .held
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (k, _) = item.map_err(StoreError::db("scan held facts"))?;
            let id = FactId(key_id(trees::HELD, &k)?);
            out.push(self.indexed_fact(trees::HELD, &k, &id)?);
        }
        Ok(out)
    }

    /// Whether the fact is held (its output bytes are in the store).
    pub fn is_held(&self, id: &FactId) -> Result<bool, StoreError> {
        self.inner
            .t
            .held
            .contains_key(id.as_bytes())
            .map_err(StoreError::db("read held facts"))
    }

    /// How many stored facts `worker` signed, and how many of those are held
    /// (a scan of every fact: for an occasional question, not a hot path).
    pub fn facts_signed_by(&self, worker: &PublicKey) -> Result<(u64, u64), StoreError> {
        let (mut signed, mut held) = (0, 0);
        for item in self.inner.t.facts.iter() {
            let (k, v) = item.map_err(StoreError::db("scan facts"))?;
            let f: SignedFact = decode(trees::FACTS, &k, &v)?;
            if f.body.worker == *worker {
                signed += 1;
                held += u64::from(self.is_held(&f.id())?);
            }
        }
        Ok((signed, held))
    }

    /// Number of facts stored.
    pub fn fact_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .counts
            .facts
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    // ---- internals ----

    /// A fact an index entry points at; a dangling entry is corruption.
    fn indexed_fact(
        &self,
        tree: &'static str,
        key: &[u8],
        id: &FactId,
    ) -> Result<SignedFact, StoreError> {
        self.fact(id)?.ok_or_else(|| {
            StoreError::corrupt(tree, key, format!("fact {id} is not in tree `facts`"))
        })
    }

    /// Demote every held fact that has `blob` among its outputs. Caller holds the
    /// blob lock.
    pub(super) fn demote_holders_locked(&self, blob: &BlobId) -> Result<Vec<FactId>, StoreError> {
        let mut facts = Vec::new();
        for item in self.inner.t.held_by_blob.scan_prefix(blob.as_bytes()) {
            let (k, _) = item.map_err(StoreError::db("scan held facts by blob"))?;
            facts.push(FactId(id_at(trees::HELD_BY_BLOB, &k, 32)?));
        }
        for fact in &facts {
            self.demote_locked(fact, &[*blob])?;
        }
        if !facts.is_empty() {
            tracing::info!(blob = %blob, facts = facts.len(), "demoted held facts whose output is gone");
        }
        Ok(facts)
    }

    /// Remove `fact` from the held facts, with its reverse-index entries (those
    /// listed in its held record, plus `also`, in case the record is unreadable).
    pub(super) fn demote_locked(&self, fact: &FactId, also: &[BlobId]) -> Result<(), StoreError> {
        let t = &self.inner.t;
        let key = fact.as_bytes();
        let mut outputs = also.to_vec();
        if let Some(v) = t.held.get(key).map_err(StoreError::db("read held fact"))? {
            match decode::<HeldRecord>(trees::HELD, key, &v) {
                Ok(rec) => outputs.extend(rec.outputs),
                Err(e) => tracing::warn!(error = %e, "removing an unreadable held-fact record"),
            }
        }
        let result: TransactionResult<bool, StoreError> =
            (&t.held, &t.held_by_blob).transaction(|(held, by_blob)| {
                let was_held = held.remove(&key[..])?.is_some();
                for blob in &outputs {
                    by_blob.remove(&pair_key(blob.as_bytes(), key)[..])?;
                }
                Ok(was_held)
            });
        let was_held = result.map_err(tx_error("demote held fact"))?;
        counts::removed(&self.inner.counts.held, was_held);
        Ok(())
    }
}
