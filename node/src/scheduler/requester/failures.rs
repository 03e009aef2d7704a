//! Failure records: what this requester knows of workers that ran an
//! expression and failed without a result (signed [`Failure`] records
//! gossiped by trusted workers, and its own failed attempts), so that an
//! expression that fails everywhere is not retried by every requester. The
//! book is owned by the requester's actor; [`failed_on`] is the decision,
//! a pure function.

use std::collections::{BTreeMap, HashMap};

use libp2p::PeerId;
use oda_protocol::{ExprId, ResolvedInput, SignedFailure};

use crate::identity::peer_id_of;

/// How long a failure record counts, ms.
pub(super) const FAILURE_TTL_MS: u64 = 60 * 60 * 1000;
/// Most expressions with records kept.
const MAX_EXPRS: usize = 10_000;
/// Most records kept per expression (one per worker).
const MAX_PER_EXPR: usize = 16;

/// Failure records of trusted workers, by expression.
#[derive(Debug, Default)]
pub(super) struct Failures {
    by_expr: HashMap<ExprId, Vec<SignedFailure>>,
}

impl Failures {
    /// Keep `record` (its signature checked, its signer trusted), replacing
    /// an older one by the same worker on the same inputs. Records older
    /// than the TTL, and records beyond the limits, are not kept.
    pub(super) fn add(&mut self, record: SignedFailure, now_ms: u64) {
        if record.body.at.saturating_add(FAILURE_TTL_MS) < now_ms {
            return;
        }
        if !self.by_expr.contains_key(&record.body.expr) && self.by_expr.len() >= MAX_EXPRS {
            self.prune(now_ms);
            if self.by_expr.len() >= MAX_EXPRS {
                return;
            }
        }
        let kept = self.by_expr.entry(record.body.expr).or_default();
        let same = |r: &SignedFailure| {
            r.body.worker == record.body.worker && r.body.inputs == record.body.inputs
        };
        match kept.iter().position(same) {
            Some(i) if kept[i].body.at < record.body.at => kept[i] = record,
            Some(_) => {}
            None if kept.len() < MAX_PER_EXPR => kept.push(record),
            None => {}
        }
    }

    /// The records kept for `expr`.
    pub(super) fn of(&self, expr: &ExprId) -> Vec<SignedFailure> {
        self.by_expr.get(expr).cloned().unwrap_or_default()
    }

    /// Forget records older than the TTL.
    pub(super) fn prune(&mut self, now_ms: u64) {
        self.by_expr.retain(|_, kept| {
            kept.retain(|r| r.body.at.saturating_add(FAILURE_TTL_MS) >= now_ms);
            !kept.is_empty()
        });
    }
}

/// The distinct workers known to have failed an expression on `inputs`,
/// with what happened: those of `records` (trusted workers' records, within
/// the TTL at `now_ms`, about exactly these inputs: a run on other input
/// facts says nothing of this one) and this requester's own failed
/// attempts (`own`).
pub(super) fn failed_on(
    records: &[SignedFailure],
    inputs: &[ResolvedInput],
    own: &[(PeerId, String)],
    now_ms: u64,
) -> BTreeMap<PeerId, String> {
    let mut failed: BTreeMap<PeerId, String> = own.iter().cloned().collect();
    for r in records {
        let fresh = r.body.at.saturating_add(FAILURE_TTL_MS) >= now_ms;
        if fresh && r.body.inputs == inputs {
            if let Some(peer) = peer_id_of(&r.body.worker) {
                failed.entry(peer).or_insert_with(|| r.body.reason.clone());
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use oda_protocol::{Failure, SecretKey, WorkflowId};

    fn record(worker: u8, expr: u8, inputs: Vec<ResolvedInput>, at: u64) -> SignedFailure {
        let key = SecretKey::from_seed([worker; 32]);
        key.sign(Failure {
            worker: key.public(),
            expr: ExprId([expr; 32]),
            workflow: WorkflowId([0; 32]),
            inputs,
            at,
            reason: format!("crash on {worker}"),
            log_tail: String::new(),
        })
        .expect("signs")
    }

    fn peer(worker: u8) -> PeerId {
        peer_id_of(&SecretKey::from_seed([worker; 32]).public()).expect("ed25519 key")
    }

    #[test]
    fn distinct_workers_on_the_same_inputs_within_the_ttl_count() {
        let now = FAILURE_TTL_MS * 2;
        let other_inputs = vec![ResolvedInput::from_fact(
            &crate::test_facts::fact(&SecretKey::from_seed([9; 32]), 5, &[]),
            "out",
        )
        .expect("has out")];
        let records = vec![
            record(1, 1, vec![], now - 10),
            record(1, 1, vec![], now - 5),
            record(2, 1, vec![], now - 1),
            // Too old, and on other inputs: not counted.
            record(3, 1, vec![], now - FAILURE_TTL_MS - 1),
            record(4, 1, other_inputs, now),
        ];
        let own = vec![
            (peer(2), "exited with status 1".to_string()),
            (peer(5), "timed out".into()),
        ];
        let failed = failed_on(&records, &[], &own, now);
        assert_eq!(
            failed
                .keys()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [peer(1), peer(2), peer(5)].into()
        );
        assert_eq!(
            failed[&peer(2)],
            "exited with status 1",
            "own attempts first"
        );
        assert_eq!(failed[&peer(1)], "crash on 1");
    }

    #[test]
    fn the_book_keeps_one_record_per_worker_and_inputs_and_forgets_old_ones() {
        let now = FAILURE_TTL_MS * 2;
        let mut book = Failures::default();
        book.add(record(1, 1, vec![], now - 100), now);
        book.add(record(1, 1, vec![], now - 50), now);
        book.add(record(2, 1, vec![], now - 10), now);
        book.add(record(3, 1, vec![], now - FAILURE_TTL_MS - 1), now);
        let kept = book.of(&ExprId([1; 32]));
        assert_eq!(kept.len(), 2);
        assert!(
            kept.iter().any(|r| r.body.at == now - 50),
            "the newer record replaces"
        );
        for w in 10..10 + MAX_PER_EXPR as u8 + 4 {
            book.add(record(w, 1, vec![], now), now);
        }
        assert_eq!(book.of(&ExprId([1; 32])).len(), MAX_PER_EXPR);
        book.prune(now + FAILURE_TTL_MS - 20);
        assert_eq!(
            book.of(&ExprId([1; 32])).len(),
            MAX_PER_EXPR - 1,
            "the oldest expired"
        );
        book.prune(now + FAILURE_TTL_MS + 1);
        assert!(book.of(&ExprId([1; 32])).is_empty());
    }
}
