//! Peer scoring: gossipsub's score parameters, and the node's own reputation
//! table for misbehaviour outside gossip (invalid DHT records, wrong blob bytes,
//! forged facts). A peer whose reputation falls to the ban threshold is
//! disconnected and blocked; above it, offences are forgiven over time, so an
//! honest worker that crashes now and then is not banned in the long run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::gossipsub::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};
use libp2p::PeerId;

/// Gossipsub peer-score parameters. Our topics are quiet, so mesh-delivery
/// penalties (P3) are off; many honest peers may share an address (NAT, tests),
/// so the IP-colocation penalty is off too. Invalid messages (P4) are set per
/// topic in [`topic_params`].
pub fn peer_score_params() -> PeerScoreParams {
    PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        // The application score mirrors [`Reputation`].
        app_specific_weight: 1.0,
        ..Default::default()
    }
}

/// Thresholds: below `graylist` a peer's messages are ignored entirely.
pub fn thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds::default()
}

/// Per-topic parameters: each invalid message costs `-10 × count²`, so a few
/// garbage messages graylist the sender; the count decays slowly.
pub fn topic_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        first_message_deliveries_weight: 0.5,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.99,
        ..Default::default()
    }
}

/// What a peer did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// Sent a DHT record or fact that failed validation.
    InvalidRecord,
    /// Sent bytes that do not hash to the requested blob id.
    WrongBlobBytes,
    /// Sent an undecodable or forged message on a request-response protocol.
    BadMessage,
    /// Took a job lease and never finished it.
    BrokenLease,
}

impl Offence {
    fn cost(self) -> f64 {
        match self {
            Offence::InvalidRecord | Offence::WrongBlobBytes => 40.0,
            Offence::BadMessage => 20.0,
            Offence::BrokenLease => 10.0,
        }
    }
}

/// Reputation at or below which a peer is blocked.
pub const BAN_THRESHOLD: f64 = -100.0;

/// A score recovers toward 0 with this half-life: about ten broken leases
/// within an hour ban a peer, one a day never does.
pub const HALF_LIFE: Duration = Duration::from_secs(3600);

/// Scores closer to 0 than this are forgotten.
const FORGOTTEN: f64 = 0.5;

/// Per-peer reputation from offences (starts at 0, goes down with each
/// offence, recovers toward 0 with [`HALF_LIFE`]).
#[derive(Debug, Default)]
pub struct Reputation {
    scores: HashMap<PeerId, (f64, Instant)>,
}

fn decayed((score, at): (f64, Instant), now: Instant) -> f64 {
    let halvings = now.saturating_duration_since(at).as_secs_f64() / HALF_LIFE.as_secs_f64();
    score * 0.5f64.powf(halvings)
}

impl Reputation {
    /// Record an offence; returns the new score and whether the peer is now banned.
    pub fn penalise(&mut self, peer: PeerId, offence: Offence) -> (f64, bool) {
        self.penalise_at(peer, offence, Instant::now())
    }

    fn penalise_at(&mut self, peer: PeerId, offence: Offence, now: Instant) -> (f64, bool) {
        let before = self.scores.get(&peer).map_or(0.0, |e| decayed(*e, now));
        let score = before - offence.cost();
        self.scores.insert(peer, (score, now));
        (score, score <= BAN_THRESHOLD)
    }

    /// The current score of a peer (0 if it never misbehaved, or long ago).
    pub fn score(&self, peer: &PeerId) -> f64 {
        self.score_at(peer, Instant::now())
    }

    fn score_at(&self, peer: &PeerId, now: Instant) -> f64 {
        self.scores.get(peer).map_or(0.0, |e| decayed(*e, now))
    }

    /// Every peer's current score, for refreshing gossipsub's copy; peers
    /// whose score has recovered to about 0 are forgotten (and reported once
    /// more with 0).
    pub fn refresh(&mut self) -> Vec<(PeerId, f64)> {
        self.refresh_at(Instant::now())
    }

    fn refresh_at(&mut self, now: Instant) -> Vec<(PeerId, f64)> {
        let current: Vec<(PeerId, f64)> = self
            .scores
            .iter()
            .map(|(p, e)| (*p, decayed(*e, now)))
            .map(|(p, s)| (p, if s > -FORGOTTEN { 0.0 } else { s }))
            .collect();
        self.scores.retain(|_, e| decayed(*e, now) <= -FORGOTTEN);
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_accepted_by_gossipsub() {
        peer_score_params().validate().unwrap();
        topic_params().validate().unwrap();
        thresholds().validate().unwrap();
    }

    #[test]
    fn repeat_offenders_are_banned() {
        let mut rep = Reputation::default();
        let p = PeerId::random();
        let now = Instant::now();
        assert_eq!(
            rep.penalise_at(p, Offence::WrongBlobBytes, now),
            (-40.0, false)
        );
        assert_eq!(
            rep.penalise_at(p, Offence::WrongBlobBytes, now),
            (-80.0, false)
        );
        assert_eq!(
            rep.penalise_at(p, Offence::InvalidRecord, now),
            (-120.0, true)
        );
        assert_eq!(rep.score(&PeerId::random()), 0.0);
    }

    #[test]
    fn offences_are_forgiven_over_time() {
        let mut rep = Reputation::default();
        let p = PeerId::random();
        let t0 = Instant::now();
        rep.penalise_at(p, Offence::WrongBlobBytes, t0);
        rep.penalise_at(p, Offence::WrongBlobBytes, t0);
        let later = t0 + HALF_LIFE;
        assert!((rep.score_at(&p, later) + 40.0).abs() < 1e-9);
        // A third offence an hour later no longer bans.
        let (score, banned) = rep.penalise_at(p, Offence::WrongBlobBytes, later);
        assert!((score + 80.0).abs() < 1e-9 && !banned);
        // One broken lease every half-life settles at -20, never near a ban.
        let q = PeerId::random();
        let mut worst = 0.0f64;
        for hour in 0..48u32 {
            worst = worst.min(
                rep.penalise_at(q, Offence::BrokenLease, t0 + HALF_LIFE * hour)
                    .0,
            );
        }
        assert!(worst > -21.0, "{worst}");
        // Long after, both are forgotten, reported once with 0.
        let much_later = t0 + HALF_LIFE * 100;
        let refreshed = rep.refresh_at(much_later);
        assert_eq!(refreshed.len(), 2);
        assert!(refreshed.iter().all(|(_, s)| *s == 0.0));
        assert!(rep.refresh_at(much_later).is_empty());
    }
}
