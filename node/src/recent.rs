//! [`Recent`]: a map that keeps the most recently added keys only, for the
//! bounded memories of actors (log lines per expression, expressions heard
//! of, peers that answered): when full, the key added longest ago goes.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// At most `cap` entries; adding a new key beyond that forgets the oldest.
#[derive(Debug)]
pub struct Recent<K, V> {
    cap: usize,
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Copy + Eq + Hash, V> Recent<K, V> {
    /// An empty map holding at most `cap` keys.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The value of `key`, added (as `V::default()`, forgetting the oldest
    /// key when full) if it is not there.
    pub fn entry(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        if !self.map.contains_key(&key) {
            self.insert_new(key, V::default());
        }
        self.map.entry(key).or_default()
    }

    /// Add `key` with `value` unless it is there (forgetting the oldest key
    /// when full); whether it was added.
    pub fn insert_new(&mut self, key: K, value: V) -> bool {
        if self.map.contains_key(&key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.cap {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key, value);
        true
    }

    /// The value of `key`, if it is remembered.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Whether `key` is remembered.
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_key_goes_when_full_and_a_known_key_keeps_its_place() {
        let mut r: Recent<u32, Vec<u32>> = Recent::new(2);
        r.entry(1).push(10);
        r.entry(2).push(20);
        r.entry(1).push(11);
        assert!(!r.insert_new(2, vec![]), "already there");
        assert!(r.insert_new(3, vec![30]));
        assert!(!r.contains(&1), "the first added goes first");
        assert_eq!(r.get(&2), Some(&vec![20]));
        assert_eq!(r.get(&3), Some(&vec![30]));
        assert_eq!(r.len(), 2);
    }
}
