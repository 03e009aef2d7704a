//! Which announced facts a controller re-computes: adaptive sampling per
//! worker, as BOINC's adaptive replication does. A worker this controller
//! has no record of is checked every time; each agreement lowers the share
//! of its facts checked (1 in 2 after one, 1 in 4 after three, …) down to
//! `min_rate`; a dispute sets it back to every time. Whether one fact is
//! drawn depends on a secret salt and the fact id, so a worker cannot tell
//! which of its facts will be checked. Pure: the actor owns one.

use std::collections::HashMap;

use oda_protocol::{FactId, PublicKey};

/// Most workers with a record; beyond it new workers are sampled every
/// time and not recorded (the safe side).
pub const MAX_WORKERS: usize = 10_000;

/// What this controller found of one worker's facts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    /// Re-computations that agreed since the last dispute.
    pub agreements: u32,
    /// Disputes, ever.
    pub disputes: u32,
}

/// The sampling decisions and the records behind them.
#[derive(Debug)]
pub struct Sampler {
    min_rate: f64,
    salt: [u8; 32],
    records: HashMap<PublicKey, Record>,
}

impl Sampler {
    /// A sampler that never checks less than `min_rate` of a worker's
    /// facts, drawing with `salt` (secret to this controller).
    pub fn new(min_rate: f64, salt: [u8; 32]) -> Self {
        Self {
            min_rate: min_rate.clamp(0.0, 1.0),
            salt,
            records: HashMap::new(),
        }
    }

    /// The share of `worker`'s facts checked now.
    pub fn rate(&self, worker: &PublicKey) -> f64 {
        let agreements = self.records.get(worker).map_or(0, |r| r.agreements);
        (1.0 / (1.0 + f64::from(agreements))).max(self.min_rate)
    }

    /// Whether to re-compute `fact` by `worker`.
    pub fn sample(&self, worker: &PublicKey, fact: &FactId) -> bool {
        draw(&self.salt, fact) < self.rate(worker)
    }

    /// `worker`'s record.
    pub fn record(&self, worker: &PublicKey) -> Record {
        self.records.get(worker).copied().unwrap_or_default()
    }

    /// A re-computation agreed with `worker`'s fact.
    pub fn agreed(&mut self, worker: PublicKey) {
        if let Some(r) = self.entry(worker) {
            r.agreements = r.agreements.saturating_add(1);
        }
    }

    /// A re-computation disputed `worker`'s fact.
    pub fn disputed(&mut self, worker: PublicKey) {
        if let Some(r) = self.entry(worker) {
            r.agreements = 0;
            r.disputes = r.disputes.saturating_add(1);
        }
    }

    fn entry(&mut self, worker: PublicKey) -> Option<&mut Record> {
        if self.records.len() >= MAX_WORKERS && !self.records.contains_key(&worker) {
            return None;
        }
        Some(self.records.entry(worker).or_default())
    }
}

/// A number in [0, 1) from the salt and the fact id.
fn draw(salt: &[u8; 32], fact: &FactId) -> f64 {
    let hash = blake3::keyed_hash(salt, &fact.0);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    // The top 53 bits: exactly representable, uniform in [0, 1).
    (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(seed: u8) -> PublicKey {
        oda_protocol::SecretKey::from_seed([seed; 32]).public()
    }

    fn drawn(s: &Sampler, w: &PublicKey) -> usize {
        (0..4000u32)
            .filter(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                s.sample(w, &FactId(id))
            })
            .count()
    }

    #[test]
    fn the_rate_falls_with_agreement_to_its_floor_and_resets_on_a_dispute() {
        let mut s = Sampler::new(0.05, [7; 32]);
        let (w, other) = (worker(1), worker(2));
        assert_eq!(s.rate(&w), 1.0, "no record: every fact");
        assert_eq!(drawn(&s, &w), 4000);
        s.agreed(w);
        assert_eq!(s.rate(&w), 0.5);
        let half = drawn(&s, &w);
        assert!((1800..2200).contains(&half), "{half}");
        for _ in 0..2 {
            s.agreed(w);
        }
        assert_eq!(s.rate(&w), 0.25, "three agreements");
        for _ in 0..100 {
            s.agreed(w);
        }
        assert_eq!(s.rate(&w), 0.05, "never below the floor");
        let few = drawn(&s, &w);
        assert!((120..290).contains(&few), "{few}");
        assert_eq!(s.rate(&other), 1.0, "records are per worker");
        s.disputed(w);
        assert_eq!(s.rate(&w), 1.0);
        assert_eq!(
            s.record(&w),
            Record {
                agreements: 0,
                disputes: 1
            }
        );
    }

    #[test]
    fn another_salt_draws_other_facts() {
        let (mut a, mut b) = (Sampler::new(0.05, [1; 32]), Sampler::new(0.05, [2; 32]));
        let w = worker(1);
        a.agreed(w);
        b.agreed(w);
        let picks = |s: &Sampler| -> Vec<bool> {
            (0..64u8).map(|i| s.sample(&w, &FactId([i; 32]))).collect()
        };
        assert_ne!(picks(&a), picks(&b));
    }

    #[test]
    fn records_are_bounded() {
        let mut s = Sampler::new(0.05, [1; 32]);
        for i in 0..(MAX_WORKERS as u32 + 10) {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            s.agreed(oda_protocol::SecretKey::from_seed(seed).public());
        }
        assert_eq!(s.records.len(), MAX_WORKERS);
    }
}
