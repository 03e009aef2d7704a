//! Which peers answered with facts about an expression, remembered by the
//! event loop so that the next lookup of the same expression asks them
//! directly (one request-response) while the DHT query runs, instead of
//! only walking the DHT again. Bounded: the most recently noted
//! [`MAX_EXPRESSIONS`] expressions, [`MAX_PER_EXPRESSION`] peers each (the
//! latest first). A peer noted here is only asked, never trusted: what it
//! answers is verified and judged like any other answer.

use libp2p::PeerId;
use oda_protocol::ExprId;

use crate::recent::Recent;

/// Expressions remembered.
pub const MAX_EXPRESSIONS: usize = 4096;
/// Peers remembered per expression.
pub const MAX_PER_EXPRESSION: usize = 4;

/// Peers known to hold facts, by expression.
#[derive(Debug)]
pub struct Holders {
    by_expr: Recent<ExprId, Vec<PeerId>>,
}

impl Default for Holders {
    fn default() -> Self {
        Self {
            by_expr: Recent::new(MAX_EXPRESSIONS),
        }
    }
}

impl Holders {
    /// `peer` answered with valid facts about `expr` (or signed one).
    pub fn note(&mut self, expr: ExprId, peer: PeerId) {
        let peers = self.by_expr.entry(expr);
        peers.retain(|p| *p != peer);
        peers.insert(0, peer);
        peers.truncate(MAX_PER_EXPRESSION);
    }

    /// The peers known to hold facts about `expr`, the latest first.
    pub fn of(&self, expr: &ExprId) -> Vec<PeerId> {
        self.by_expr.get(expr).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_peers_are_kept_per_expression_and_expressions_are_bounded() {
        let mut h = Holders::default();
        let e = ExprId([1; 32]);
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        for p in &peers {
            h.note(e, *p);
        }
        h.note(e, peers[3]);
        assert_eq!(
            h.of(&e),
            vec![peers[3], peers[5], peers[4], peers[2]],
            "latest first, each once, at most four"
        );
        assert!(h.of(&ExprId([2; 32])).is_empty());
        for i in 0..MAX_EXPRESSIONS as u32 {
            let mut id = [9u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            h.note(ExprId(id), peers[0]);
        }
        assert!(h.of(&e).is_empty(), "the oldest expression is forgotten");
        assert_eq!(h.by_expr.len(), MAX_EXPRESSIONS);
    }
}
