//! Whether to advertise a job while its mesh lookup still runs.
//!
//! A cache miss costs a DHT walk (both the record and the provider query
//! run to their end) before anything else happens; on a parameter sweep
//! nearly every lookup misses. A requester whose recent lookups mostly
//! missed therefore publishes the advert while the lookup runs and assigns
//! a worker only once the lookup has missed: nothing is computed that the
//! mesh already holds, and the advert and the offers overlap the walk. On a
//! hit the auction closes and every offer is declined: that costs the mesh
//! one advert, so a requester whose lookups mostly hit waits for the lookup
//! first, as before. [`LookupHistory`] (owned by the actor) keeps the
//! recent outcomes; [`LookupHistory::speculate`] is the decision.

use std::collections::VecDeque;

/// How many recent mesh lookups the decision looks at.
pub(super) const HISTORY: usize = 32;

/// The outcomes (hit or miss) of the last [`HISTORY`] mesh lookups of jobs.
#[derive(Debug, Default)]
pub(super) struct LookupHistory {
    recent: VecDeque<bool>,
}

impl LookupHistory {
    /// A lookup ended: `hit` if it found a trusted fact.
    pub(super) fn record(&mut self, hit: bool) {
        if self.recent.len() == HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(hit);
    }

    /// Advertise during the lookup unless more than half of the recent
    /// lookups hit. With no history yet the requester speculates: the first
    /// job of a node is more often new work than a cached result, and a
    /// wrong guess costs one advert.
    pub(super) fn speculate(&self) -> bool {
        let hits = self.recent.iter().filter(|h| **h).count();
        hits * 2 <= self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speculates_while_lookups_mostly_miss() {
        let mut h = LookupHistory::default();
        assert!(h.speculate(), "no history: speculate");
        for _ in 0..HISTORY {
            h.record(false);
        }
        assert!(h.speculate());
        // Hits take over the window one by one; at half it still speculates.
        for _ in 0..HISTORY / 2 {
            h.record(true);
        }
        assert!(h.speculate(), "exactly half hit");
        h.record(true);
        assert!(!h.speculate(), "most of the last {HISTORY} hit");
        // Only the last HISTORY count: misses bring it back.
        for _ in 0..HISTORY {
            h.record(false);
        }
        assert!(h.speculate());
        assert_eq!(h.recent.len(), HISTORY, "the history stays bounded");
    }
}
