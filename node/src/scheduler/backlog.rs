//! The worker's backlog: job adverts it would take but heard while every slot
//! was busy. When a slot frees, the worker offers for the next one instead of
//! waiting for the requester to re-publish it.
//!
//! Fair between requesters: each requester has its own queue, and the next
//! advert comes from each requester with waiting adverts in turn, so a peer
//! that floods adverts (at any priority) gets one turn like everybody else;
//! a requester the worker is waiting on (an offer it has not answered yet)
//! is passed over and keeps its turn.
//! `priority` orders only one requester's own adverts (then the older
//! first; among the oldest few of the same priority the next one is picked
//! at random, so that workers which heard the same adverts in the same order
//! do not all offer for the same job at once).
//!
//! Bounded: when full, the newest lowest-priority advert of the requester
//! holding the most is dropped. One entry per requester and expression (a
//! re-published advert refreshes it and keeps its place); entries expire at
//! the advert's `deadline`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};

use oda_protocol::messages::JobAdvert;
use oda_protocol::{ExprId, PublicKey};
use rand::Rng;

/// How many of the first entries the next one is picked from.
const SPREAD: usize = 8;

/// Ordering key in one requester's queue: priority (high first), then arrival.
type Place = (Reverse<u8>, u64, ExprId);

/// Waiting adverts, in the order they should be offered for.
#[derive(Debug)]
pub struct Backlog {
    cap: usize,
    next_seq: u64,
    /// Each waiting advert by requester and expression, with its place.
    entries: HashMap<(PublicKey, ExprId), (Place, JobAdvert)>,
    /// Each requester's places, in order.
    queues: HashMap<PublicKey, BTreeSet<Place>>,
    /// Requesters with waiting adverts; the next advert is the first one's.
    turns: VecDeque<PublicKey>,
    /// Who advertised each expression that waits.
    by_expr: HashMap<ExprId, Vec<PublicKey>>,
}

impl Backlog {
    /// An empty backlog holding at most `cap` adverts.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            next_seq: 0,
            entries: HashMap::new(),
            queues: HashMap::new(),
            turns: VecDeque::new(),
            by_expr: HashMap::new(),
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

    /// Remember `advert` (or refresh its requester's advert for the same
    /// expression). When full, the newest lowest-priority advert of the
    /// requester holding the most is dropped, which may be this one.
    /// Returns whether `advert` is held.
    pub fn push(&mut self, advert: JobAdvert) -> bool {
        let (requester, expr) = (advert.requester, advert.expr.id());
        if let Some((_, held)) = self.entries.get_mut(&(requester, expr)) {
            *held = advert;
            return true;
        }
        let place = (Reverse(advert.priority), self.next_seq, expr);
        self.next_seq += 1;
        let queue = self.queues.entry(requester).or_insert_with(|| {
            self.turns.push_back(requester);
            BTreeSet::new()
        });
        queue.insert(place);
        self.entries.insert((requester, expr), (place, advert));
        self.by_expr.entry(expr).or_default().push(requester);
        if self.entries.len() > self.cap {
            let largest = self
                .queues
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(r, q)| (*r, q.last().copied()));
            if let Some((r, Some(last))) = largest {
                self.forget(r, last.2);
                return (r, last.2) != (requester, expr);
            }
        }
        true
    }

    /// Drop `requester`'s advert of `expr`, if it waits.
    fn forget(&mut self, requester: PublicKey, expr: ExprId) {
        let Some((place, _)) = self.entries.remove(&(requester, expr)) else {
            return;
        };
        if let Some(queue) = self.queues.get_mut(&requester) {
            queue.remove(&place);
            if queue.is_empty() {
                self.queues.remove(&requester);
                self.turns.retain(|r| *r != requester);
            }
        }
        if let Some(who) = self.by_expr.get_mut(&expr) {
            who.retain(|r| *r != requester);
            if who.is_empty() {
                self.by_expr.remove(&expr);
            }
        }
    }

    /// Forget every advert for `expr` (its job was taken or its fact exists).
    pub fn remove(&mut self, expr: &ExprId) {
        for requester in self.by_expr.remove(expr).unwrap_or_default() {
            self.forget(requester, *expr);
        }
    }

    /// Forget every advert by `requester` (it cannot be reached, or does not
    /// answer offers); returns how many.
    pub fn remove_requester(&mut self, requester: &PublicKey) -> usize {
        let places = self.queues.remove(requester).unwrap_or_default();
        self.turns.retain(|r| r != requester);
        for place in &places {
            self.entries.remove(&(*requester, place.2));
            if let Some(who) = self.by_expr.get_mut(&place.2) {
                who.retain(|r| r != requester);
                if who.is_empty() {
                    self.by_expr.remove(&place.2);
                }
            }
        }
        places.len()
    }

    /// The next advert to offer for: the best of the next requester in
    /// turn that is `eligible`, dropping those whose deadline (Unix ms) is
    /// before `now_ms`.
    pub fn pop(&mut self, now_ms: u64, eligible: impl Fn(&PublicKey) -> bool) -> Option<JobAdvert> {
        loop {
            let requester = *self.turns.iter().find(|r| eligible(r))?;
            let queue = self.queues.get(&requester)?;
            let first = *queue.first()?;
            let candidates: Vec<Place> = queue
                .iter()
                .take(SPREAD)
                .take_while(|p| p.0 == first.0)
                .copied()
                .collect();
            let place = candidates[rand::rng().random_range(0..candidates.len())];
            let advert = self
                .entries
                .get(&(requester, place.2))
                .map(|(_, a)| a.clone());
            self.forget(requester, place.2);
            // The requester's turn is over: to the back, if it has more.
            if let Some(at) = self.turns.iter().position(|r| *r == requester) {
                self.turns.remove(at);
                self.turns.push_back(requester);
            }
            match advert {
                Some(advert) if advert.deadline >= now_ms => return Some(advert),
                _ => continue,
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
        assert_eq!(b.pop(0, |_| true).as_ref().map(n_of), Some(99));
        let next = n_of(&b.pop(0, |_| true).unwrap());
        assert!((0..SPREAD as i64).contains(&next), "picked {next}");
        assert_eq!(b.len(), 19);
    }

    #[test]
    fn refresh_keeps_the_place_and_takes_the_new_deadline() {
        let mut b = Backlog::new(100);
        b.push(advert(1, 0, 10));
        b.push(advert(1, 0, 50));
        assert_eq!(b.len(), 1);
        assert_eq!(b.pop(20, |_| true).map(|a| a.deadline), Some(50));
        assert!(b.is_empty());
    }

    #[test]
    fn expired_adverts_are_skipped() {
        let mut b = Backlog::new(100);
        b.push(advert(1, 0, 10));
        b.push(advert(2, 0, 10));
        assert!(b.pop(11, |_| true).is_none());
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
        let mut left: Vec<i64> = std::iter::from_fn(|| b.pop(0, |_| true))
            .map(|a| n_of(&a))
            .collect();
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
        assert_eq!(b.pop(0, |_| true).map(|a| n_of(&a)), Some(2));
        assert!(b.is_empty());
    }

    fn by(requester: u8, n: i64, priority: u8) -> JobAdvert {
        JobAdvert {
            requester: PublicKey([requester; 32]),
            ..advert(n, priority, u64::MAX)
        }
    }

    #[test]
    fn requesters_take_turns_whatever_priority_they_claim() {
        let mut b = Backlog::new(1000);
        for n in 0..100 {
            b.push(by(6, n, 255));
        }
        b.push(by(7, 1000, 0));
        b.push(by(7, 1001, 0));
        let order: Vec<(u8, i64)> = std::iter::from_fn(|| b.pop(0, |_| true))
            .take(4)
            .map(|a| (a.requester.0[0], n_of(&a)))
            .collect();
        let turns: Vec<u8> = order.iter().map(|(r, _)| *r).collect();
        assert_eq!(turns, vec![6, 7, 6, 7], "{order:?}");
        assert!(matches!(order[1].1, 1000 | 1001), "{order:?}");
        // The flooder's other adverts still wait; nothing else does.
        assert_eq!(b.len(), 98);
        assert!(std::iter::from_fn(|| b.pop(0, |_| true)).all(|a| a.requester.0[0] == 6));
    }

    #[test]
    fn a_full_backlog_drops_from_the_requester_holding_the_most() {
        let mut b = Backlog::new(10);
        for n in 0..10 {
            assert!(b.push(by(6, n, 255)));
        }
        assert!(b.push(by(7, 100, 0)), "the honest advert is held");
        assert_eq!(b.len(), 10);
        assert!(!b.push(by(6, 11, 255)), "the flooder's newest goes");
        let honest = std::iter::from_fn(|| b.pop(0, |_| true)).filter(|a| a.requester.0[0] == 7);
        assert_eq!(honest.count(), 1);
    }

    #[test]
    fn the_same_expression_from_two_requesters_waits_twice_and_goes_once_taken() {
        let mut b = Backlog::new(10);
        b.push(by(6, 1, 0));
        b.push(by(7, 1, 0));
        b.push(by(7, 2, 0));
        assert_eq!(b.len(), 3);
        b.remove(&by(6, 1, 0).expr.id());
        assert_eq!(b.len(), 1);
        assert_eq!(b.pop(0, |_| true).map(|a| n_of(&a)), Some(2));
        assert!(b.is_empty());
        assert!(b.turns.is_empty() && b.queues.is_empty() && b.by_expr.is_empty());
    }

    #[test]
    fn removed_adverts_are_not_offered() {
        let mut b = Backlog::new(10);
        let a = advert(1, 0, u64::MAX);
        let expr = a.expr.id();
        b.push(a);
        b.remove(&expr);
        assert!(b.pop(0, |_| true).is_none());
    }

    #[test]
    fn a_requester_waited_on_is_passed_over_and_keeps_its_turn() {
        let mut b = Backlog::new(100);
        let (slow, other) = (PublicKey([6; 32]), PublicKey([7; 32]));
        for n in 0..3 {
            b.push(JobAdvert {
                requester: slow,
                ..advert(n, 0, 100)
            });
        }
        b.push(JobAdvert {
            requester: other,
            ..advert(10, 0, 100)
        });
        let next = b.pop(0, |r| *r != slow).expect("the other requester's");
        assert_eq!(next.requester, other);
        assert!(
            b.pop(0, |r| *r != slow).is_none(),
            "only the slow one's wait"
        );
        assert_eq!(b.len(), 3);
        assert_eq!(b.pop(0, |_| true).map(|a| a.requester), Some(slow));
    }
}
