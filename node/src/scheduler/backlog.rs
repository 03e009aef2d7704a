//! The worker's backlog: job adverts it would take but heard while every slot
//! was busy. When a slot frees, the worker offers for the next one instead of
//! waiting for the requester to re-publish it.
//!
//! Bounded (the lowest-priority, newest entry is dropped when full); one entry
//! per expression (a re-published advert refreshes it and keeps its place);
//! entries expire at the advert's `deadline`. Higher `priority` comes first,
//! then older adverts; among the oldest few of the same priority the next one
//! is picked at random, so that workers which heard the same adverts in the
//! same order do not all offer for the same job at once.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use oda_protocol::messages::JobAdvert;
use oda_protocol::{ExprId, PublicKey};
use rand::Rng;

/// How many of the first entries the next one is picked from.
const SPREAD: usize = 8;

/// Ordering key: priority (high first), then arrival.
type Place = (Reverse<u8>, u64, ExprId);

/// Waiting adverts, in the order they should be offered for.
#[derive(Debug)]
pub struct Backlog {
    cap: usize,
    next_seq: u64,
    entries: HashMap<ExprId, (Place, JobAdvert)>,
    order: BTreeSet<Place>,
}

impl Backlog {
    /// An empty backlog holding at most `cap` adverts.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            next_seq: 0,
            entries: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// Adverts waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remember `advert` (or refresh the one for the same expression). When
    /// full, the lowest-priority newest advert is dropped, which may be this
    /// one. Returns whether `advert` is held.
    pub fn push(&mut self, advert: JobAdvert) -> bool {
        let expr = advert.expr.id();
        if let Some((_, held)) = self.entries.get_mut(&expr) {
            *held = advert;
            return true;
        }
        let place = (Reverse(advert.priority), self.next_seq, expr);
        self.next_seq += 1;
        self.order.insert(place);
        self.entries.insert(expr, (place, advert));
        if self.entries.len() > self.cap {
            if let Some(last) = self.order.pop_last() {
                self.entries.remove(&last.2);
                return last.2 != expr;
            }
        }
        true
    }

    /// Forget the advert for `expr` (its job was taken or its fact exists).
    pub fn remove(&mut self, expr: &ExprId) {
        if let Some((place, _)) = self.entries.remove(expr) {
            self.order.remove(&place);
        }
    }

    /// Forget every advert by `requester` (it cannot be reached); returns
    /// how many.
    pub fn remove_requester(&mut self, requester: &PublicKey) -> usize {
        let gone: Vec<ExprId> = self
            .entries
            .iter()
            .filter(|(_, (_, a))| a.requester == *requester)
            .map(|(e, _)| *e)
            .collect();
        for expr in &gone {
            self.remove(expr);
        }
        gone.len()
    }

    /// The next advert to offer for, dropping those whose deadline (Unix ms)
    /// is before `now_ms`.
    pub fn pop(&mut self, now_ms: u64) -> Option<JobAdvert> {
        loop {
            let first = *self.order.first()?;
            let candidates: Vec<Place> = self
                .order
                .iter()
                .take(SPREAD)
                .take_while(|p| p.0 == first.0)
                .copied()
                .collect();
            let place = candidates[rand::rng().random_range(0..candidates.len())];
            self.order.remove(&place);
            let (_, advert) = self.entries.remove(&place.2)?;
            if advert.deadline >= now_ms {
                return Some(advert);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oda_protocol::manifest::Resources;
    use oda_protocol::{BlobId, Expression, Value, WorkflowId};
    use std::collections::BTreeMap;

    fn advert(n: i64, priority: u8, deadline: u64) -> JobAdvert {
        JobAdvert {
            expr: Expression {
                workflow: WorkflowId([7; 32]),
                args: BTreeMap::from([("n".to_string(), Value::Int(n))]),
            },
            inputs: vec![],
            requester: PublicKey([1; 32]),
            requirements: Resources::default(),
            deadline,
            priority,
            token: None,
            bundle: BlobId([2; 32]),
            endorsements: vec![],
        }
    }

    fn n_of(a: &JobAdvert) -> i64 {
        match a.expr.args["n"] {
            Value::Int(n) => n,
            _ => unreachable!(),
        }
    }

    #[test]
    fn higher_priority_first_then_oldest_among_a_few() {
        let mut b = Backlog::new(100);
        for n in 0..20 {
            b.push(advert(n, 0, u64::MAX));
        }
        b.push(advert(99, 5, u64::MAX));
        assert_eq!(b.pop(0).as_ref().map(n_of), Some(99));
        let next = n_of(&b.pop(0).unwrap());
        assert!((0..SPREAD as i64).contains(&next), "picked {next}");
        assert_eq!(b.len(), 19);
    }

    #[test]
    fn refresh_keeps_the_place_and_takes_the_new_deadline() {
        let mut b = Backlog::new(100);
        b.push(advert(1, 0, 10));
        b.push(advert(1, 0, 50));
        assert_eq!(b.len(), 1);
        assert_eq!(b.pop(20).map(|a| a.deadline), Some(50));
        assert!(b.is_empty());
    }

    #[test]
    fn expired_adverts_are_skipped() {
        let mut b = Backlog::new(100);
        b.push(advert(1, 0, 10));
        b.push(advert(2, 0, 10));
        assert!(b.pop(11).is_none());
        assert!(b.is_empty());
    }

    #[test]
    fn full_backlog_drops_the_lowest_priority_newest() {
        let mut b = Backlog::new(2);
        assert!(b.push(advert(1, 0, u64::MAX)));
        assert!(b.push(advert(2, 0, u64::MAX)));
        assert!(
            !b.push(advert(3, 0, u64::MAX)),
            "the newest at equal priority goes"
        );
        assert!(
            b.push(advert(4, 9, u64::MAX)),
            "a higher priority displaces"
        );
        assert_eq!(b.len(), 2);
        let mut left: Vec<i64> = std::iter::from_fn(|| b.pop(0)).map(|a| n_of(&a)).collect();
        left.sort();
        assert_eq!(left, vec![1, 4]);
    }

    #[test]
    fn an_unreachable_requesters_adverts_go_together() {
        let mut b = Backlog::new(10);
        b.push(advert(1, 0, u64::MAX));
        let mut other = advert(2, 0, u64::MAX);
        other.requester = PublicKey([9; 32]);
        b.push(other);
        b.push(advert(3, 0, u64::MAX));
        assert_eq!(b.remove_requester(&PublicKey([1; 32])), 2);
        assert_eq!(b.pop(0).map(|a| n_of(&a)), Some(2));
        assert!(b.is_empty());
    }

    #[test]
    fn removed_adverts_are_not_offered() {
        let mut b = Backlog::new(10);
        let a = advert(1, 0, u64::MAX);
        let expr = a.expr.id();
        b.push(a);
        b.remove(&expr);
        assert!(b.pop(0).is_none());
    }
}
