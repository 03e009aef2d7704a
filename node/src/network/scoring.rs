//! Peer scoring: gossipsub's score parameters, and the node's own reputation
//! table for misbehaviour outside gossip (invalid DHT records, wrong blob bytes,
//! forged facts). A peer whose reputation falls to the ban threshold is
//! disconnected and blocked.

use std::collections::HashMap;

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

/// Per-peer reputation from offences (starts at 0, only goes down).
#[derive(Debug, Default)]
pub struct Reputation {
    scores: HashMap<PeerId, f64>,
}

impl Reputation {
    /// Record an offence; returns the new score and whether the peer is now banned.
    pub fn penalise(&mut self, peer: PeerId, offence: Offence) -> (f64, bool) {
        let score = self.scores.entry(peer).or_default();
        *score -= offence.cost();
        (*score, *score <= BAN_THRESHOLD)
    }

    /// The current score of a peer (0 if it never misbehaved).
    pub fn score(&self, peer: &PeerId) -> f64 {
        self.scores.get(peer).copied().unwrap_or(0.0)
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
        assert_eq!(rep.penalise(p, Offence::WrongBlobBytes), (-40.0, false));
        assert_eq!(rep.penalise(p, Offence::WrongBlobBytes), (-80.0, false));
        assert_eq!(rep.penalise(p, Offence::InvalidRecord), (-120.0, true));
        assert_eq!(rep.score(&PeerId::random()), 0.0);
    }
}
