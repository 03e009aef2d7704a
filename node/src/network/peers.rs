//! Keeping a node's connections near a target. Kademlia queries dial many
//! peers (a bootstrap walk reaches most of a small mesh), and without a
//! target every node ended connected to every other: in a 100-node mesh
//! each held 98 connections, and the idle process burned two cores on
//! their heartbeats and gossip. The event loop notes when each peer last
//! exchanged a request with it ([`Activity`]); every maintenance tick it
//! closes the connections [`to_trim`] picks: beyond the target, the longest
//! idle first, never a configured peer (bootstrap), a peer in this node's
//! gossip mesh, or a peer active within the last [`MIN_IDLE`]. The routing
//! table keeps trimmed peers' addresses, so a later query or request dials
//! them again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// A connection busy this recently is never trimmed.
pub(super) const MIN_IDLE: Duration = Duration::from_secs(10);

/// When each connected peer last exchanged a request or response with this
/// node (or connected).
#[derive(Debug, Default)]
pub(super) struct Activity(HashMap<PeerId, Instant>);

impl Activity {
    /// `peer` did something now.
    pub(super) fn touch(&mut self, peer: PeerId) {
        self.0.insert(peer, Instant::now());
    }

    /// `peer` is gone.
    pub(super) fn forget(&mut self, peer: &PeerId) {
        self.0.remove(peer);
    }

    /// How long `peer` has been idle at `now` (unknown peers: forever).
    pub(super) fn idle(&self, peer: &PeerId, now: Instant) -> Duration {
        self.0
            .get(peer)
            .map_or(Duration::MAX, |t| now.saturating_duration_since(*t))
    }
}

/// A connected peer as [`to_trim`] sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Connected {
    pub peer: PeerId,
    /// A configured peer or a gossip-mesh peer: kept.
    pub protected: bool,
    pub idle: Duration,
}

/// Which peers to disconnect so that at most `target` stay connected, as
/// far as idle, unprotected peers allow; the longest idle go first.
pub(super) fn to_trim(mut connected: Vec<Connected>, target: usize) -> Vec<PeerId> {
    let excess = connected.len().saturating_sub(target);
    if excess == 0 {
        return Vec::new();
    }
    connected.retain(|c| !c.protected && c.idle >= MIN_IDLE);
    connected.sort_by_key(|c| std::cmp::Reverse(c.idle));
    connected.into_iter().take(excess).map(|c| c.peer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(idle_s: u64, protected: bool) -> Connected {
        Connected {
            peer: PeerId::random(),
            protected,
            idle: Duration::from_secs(idle_s),
        }
    }

    #[test]
    fn nothing_is_trimmed_at_or_below_the_target() {
        let peers: Vec<_> = (0..4).map(|_| peer(600, false)).collect();
        assert!(to_trim(peers.clone(), 4).is_empty());
        assert!(to_trim(peers, 10).is_empty());
    }

    #[test]
    fn the_longest_idle_unprotected_peers_go_first_and_only_the_excess() {
        let (old, older, oldest) = (peer(20, false), peer(40, false), peer(60, false));
        let peers = vec![old, peer(900, true), oldest, peer(1, false), older];
        assert_eq!(to_trim(peers, 3), vec![oldest.peer, older.peer]);
    }

    #[test]
    fn protected_and_recently_busy_peers_stay_even_above_the_target() {
        let peers = vec![peer(900, true), peer(2, false), peer(900, true)];
        assert!(to_trim(peers, 1).is_empty());
    }
}
