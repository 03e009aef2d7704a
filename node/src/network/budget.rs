//! Per-author budget for job adverts: a token bucket per publishing peer,
//! owned by the event loop. An advert over its author's budget is neither
//! delivered to the scheduler nor forwarded (gossipsub `Ignore`), so one
//! peer publishing thousands of valid adverts a second cannot fill every
//! worker's backlog or multiply through the mesh; honest requesters stay
//! far below it (a requester keeps at most `max_open_adverts` adverts of a
//! workflow open and re-publishes them less and less often).

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

/// Adverts a peer may publish at once.
pub const ADVERT_BURST: f64 = 1_000.0;
/// Adverts per second a peer's budget refills by.
pub const ADVERTS_PER_S: f64 = 200.0;
/// Peers tracked at most; beyond, peers with a full bucket are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Token buckets by author.
#[derive(Debug, Default)]
pub struct AdvertBudget {
    buckets: HashMap<PeerId, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * ADVERTS_PER_S).min(ADVERT_BURST)
    }
}

impl AdvertBudget {
    /// Whether `author` may publish one more advert at `now` (taking it
    /// from its budget if so).
    pub fn admit(&mut self, author: PeerId, now: Instant) -> bool {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&author) {
            self.buckets.retain(|_, b| b.refilled(now) < ADVERT_BURST);
        }
        let bucket = self.buckets.entry(author).or_insert(Bucket {
            tokens: ADVERT_BURST,
            at: now,
        });
        let tokens = bucket.refilled(now);
        let admitted = tokens >= 1.0;
        *bucket = Bucket {
            tokens: if admitted { tokens - 1.0 } else { tokens },
            at: now,
        };
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_is_held_per_author() {
        let mut budget = AdvertBudget::default();
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let burst = ADVERT_BURST as usize;
        assert!(
            (0..burst).all(|_| budget.admit(flooder, t0)),
            "the burst passes"
        );
        assert!(!budget.admit(flooder, t0), "then the budget is spent");
        assert!(budget.admit(honest, t0), "other authors are not charged");
        // One second later, about the rate is admitted again.
        let t1 = t0 + Duration::from_secs(1);
        let again = (0..burst).filter(|_| budget.admit(flooder, t1)).count();
        assert_eq!(again, ADVERTS_PER_S as usize);
        // Idle long enough, the full burst is back (and no more).
        let t2 = t1 + Duration::from_secs(60);
        let back = (0..2 * burst).filter(|_| budget.admit(flooder, t2)).count();
        assert_eq!(back, burst);
    }

    #[test]
    fn tracking_is_bounded_by_forgetting_idle_authors() {
        let mut budget = AdvertBudget::default();
        let t0 = Instant::now();
        for _ in 0..MAX_TRACKED {
            assert!(budget.admit(PeerId::random(), t0));
        }
        // Much later every bucket is full again: a new author makes room.
        let later = t0 + Duration::from_secs(60);
        assert!(budget.admit(PeerId::random(), later));
        assert!(budget.buckets.len() <= 1, "{}", budget.buckets.len());
    }
}
