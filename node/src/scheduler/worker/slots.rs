//! The worker's slots: how many runs may be offered for or in progress at
//! once, and which expressions hold them (one slot per expression: a second
//! advert for an expression already here is joined or ignored, never run
//! twice). Owned by the actor; a slot is taken when an offer is sent and
//! given back when the offer is declined or the run is over.

use std::collections::HashSet;

use oda_protocol::ExprId;

/// What [`Slots::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// A slot is now held for the expression.
    Taken,
    /// Every slot is held.
    Full,
    /// The expression already holds a slot.
    Busy,
}

/// Free slots and the expressions holding the others.
#[derive(Debug)]
pub(super) struct Slots {
    free: u32,
    busy: HashSet<ExprId>,
}

impl Slots {
    pub(super) fn new(slots: u32) -> Self {
        Self {
            free: slots,
            busy: HashSet::new(),
        }
    }

    /// Free slots now.
    pub(super) fn free(&self) -> u32 {
        self.free
    }

    /// Whether `expr` holds a slot.
    pub(super) fn is_busy(&self, expr: &ExprId) -> bool {
        self.busy.contains(expr)
    }

    /// Hold a slot for `expr`.
    pub(super) fn take(&mut self, expr: ExprId) -> Take {
        if self.busy.contains(&expr) {
            return Take::Busy;
        }
        if self.free == 0 {
            return Take::Full;
        }
        self.free -= 1;
        self.busy.insert(expr);
        Take::Taken
    }

    /// Give back the slot `expr` holds (nothing if it holds none).
    pub(super) fn release(&mut self, expr: &ExprId) {
        if self.busy.remove(expr) {
            self.free += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(n: u8) -> ExprId {
        ExprId([n; 32])
    }

    #[test]
    fn slots_are_held_once_per_expression_and_given_back_once() {
        let mut slots = Slots::new(2);
        assert_eq!(slots.take(expr(1)), Take::Taken);
        assert_eq!(slots.take(expr(1)), Take::Busy);
        assert_eq!(slots.take(expr(2)), Take::Taken);
        assert_eq!(slots.take(expr(3)), Take::Full);
        assert_eq!(slots.free(), 0);
        slots.release(&expr(1));
        slots.release(&expr(1));
        assert_eq!(slots.free(), 1, "a second release gives back nothing");
        assert!(!slots.is_busy(&expr(1)) && slots.is_busy(&expr(2)));
        assert_eq!(slots.take(expr(3)), Take::Taken);
    }
}
