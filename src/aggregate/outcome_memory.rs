//! The outcomes already counted, remembered in bounded memory so that redeliveries count once.

use crate::ids::{Partition, RunKey};
use rustc_hash::FxHashSet;
use std::collections::VecDeque;

/// One counted outcome: the run and the instant it finished, in unix nanoseconds ([`NOT_FINISHED`]
/// when the update had no `finishedAt`). A replay that finishes the run again has a new
/// `finishedAt`, so a new key. The run key is kept as two `u64`s so that the key is 24 bytes with
/// 8-byte alignment (a `u128` would pad it to 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutcomeKey {
    run: [u64; 2],
    finished_nanos: i64,
}

impl OutcomeKey {
    pub fn new(run: RunKey, finished_nanos: i64) -> OutcomeKey {
        OutcomeKey {
            run: [(run.0 >> 64) as u64, run.0 as u64],
            finished_nanos,
        }
    }
}

/// `finished_nanos` of an outcome without `finishedAt`.
pub const NOT_FINISHED: i64 = i64::MIN;

/// Limits of the outcome memory (`[outcomes]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct OutcomeMemoryLimits {
    /// At most this many outcomes are remembered; at the cap the oldest is forgotten first.
    pub max_entries: usize,
    /// An outcome is forgotten this many nanoseconds after it was counted.
    pub max_age_nanos: i64,
}

/// First-one-wins memory of counted outcomes, oldest forgotten first.
///
/// A redelivery of an outcome that was already forgotten (older than `max_age`, or pushed out at
/// `max_entries`) counts again; `forgotten_at_cap` makes the second case visible, since it means
/// the cap is too small for the traffic.
/// Bytes of one remembered outcome in the set, and in the order of forgetting, for
/// the memory estimate (`sizing`).
pub const SET_ENTRY_BYTES: usize = std::mem::size_of::<OutcomeKey>();
pub const ORDER_ENTRY_BYTES: usize = std::mem::size_of::<Remembered>();

/// One outcome in the order of forgetting: when it was counted, and the partition it came from
/// (to forget it with the partition).
#[derive(Debug, Clone, Copy)]
struct Remembered {
    at: i64,
    key: OutcomeKey,
    partition: Partition,
}

#[derive(Debug)]
pub struct OutcomeMemory {
    limits: OutcomeMemoryLimits,
    seen: FxHashSet<OutcomeKey>,
    order: VecDeque<Remembered>,
    pub forgotten_at_cap: u64,
    pub forgotten_by_age: u64,
}

impl OutcomeMemory {
    pub fn new(limits: OutcomeMemoryLimits) -> OutcomeMemory {
        OutcomeMemory {
            limits,
            seen: FxHashSet::default(),
            order: VecDeque::new(),
            forgotten_at_cap: 0,
            forgotten_by_age: 0,
        }
    }

    /// Remembers `key`, an outcome from `partition`, at time `now` (unix nanoseconds); `false`
    /// when it was already remembered.
    pub fn remember(&mut self, key: OutcomeKey, partition: Partition, now: i64) -> bool {
        let horizon = now.saturating_sub(self.limits.max_age_nanos);
        while let Some(&Remembered { at, key: old, .. }) = self.order.front() {
            if at >= horizon {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
            self.forgotten_by_age += 1;
        }
        if self.seen.contains(&key) {
            return false;
        }
        if self.seen.len() >= self.limits.max_entries {
            if let Some(Remembered { key: old, .. }) = self.order.pop_front() {
                self.seen.remove(&old);
                self.forgotten_at_cap += 1;
            }
        }
        self.seen.insert(key);
        // Never earlier than the newest: the order of forgetting stays the order of `at`.
        let at = self.order.back().map_or(now, |newest| newest.at.max(now));
        self.order.push_back(Remembered { at, key, partition });
        true
    }

    /// Forgets the outcomes that came from `partition`; returns how many.
    pub fn drop_partition(&mut self, partition: Partition) -> usize {
        let before = self.order.len();
        let seen = &mut self.seen;
        self.order.retain(|r| {
            let keep = r.partition != partition;
            if !keep {
                seen.remove(&r.key);
            }
            keep
        });
        before - self.order.len()
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;
    const P0: Partition = Partition(0);

    fn key(run: u128, finished: i64) -> OutcomeKey {
        OutcomeKey::new(RunKey(run), finished)
    }

    #[test]
    fn first_one_wins_and_new_finish_is_new() {
        let mut memory = OutcomeMemory::new(OutcomeMemoryLimits {
            max_entries: 10,
            max_age_nanos: 60 * SECOND,
        });
        assert!(memory.remember(key(1, 100), P0, 0));
        assert!(!memory.remember(key(1, 100), P0, SECOND));
        assert!(memory.remember(key(1, 200), P0, 2 * SECOND));
        assert!(
            !memory.remember(key(1, 100), P0, 3 * SECOND),
            "a stale copy of the first finish"
        );
        let unfinished = OutcomeKey::new(RunKey(1), NOT_FINISHED);
        assert!(memory.remember(unfinished, P0, 4 * SECOND));
        assert!(!memory.remember(unfinished, P0, 5 * SECOND));
        assert_eq!(memory.len(), 3);
    }

    #[test]
    fn the_cap_forgets_the_oldest() {
        let mut memory = OutcomeMemory::new(OutcomeMemoryLimits {
            max_entries: 3,
            max_age_nanos: i64::MAX,
        });
        for run in 0..5 {
            assert!(memory.remember(key(run, 1), P0, run as i64));
        }
        assert_eq!(memory.len(), 3);
        assert_eq!(memory.forgotten_at_cap, 2);
        assert!(memory.remember(key(0, 1), P0, 10), "forgotten, so it counts again");
        assert!(!memory.remember(key(4, 1), P0, 11), "still remembered");
    }

    #[test]
    fn age_forgets() {
        let mut memory = OutcomeMemory::new(OutcomeMemoryLimits {
            max_entries: 100,
            max_age_nanos: 10 * SECOND,
        });
        assert!(memory.remember(key(1, 1), P0, 0));
        assert!(memory.remember(key(2, 1), P0, 5 * SECOND));
        assert!(
            !memory.remember(key(1, 1), P0, 10 * SECOND),
            "exactly max_age old is still remembered"
        );
        assert!(memory.remember(key(1, 1), P0, 10 * SECOND + 1));
        assert_eq!(memory.forgotten_by_age, 1);
        assert_eq!(memory.len(), 2);
    }

    #[test]
    fn a_partition_leaves_with_its_outcomes() {
        let mut memory = OutcomeMemory::new(OutcomeMemoryLimits {
            max_entries: 100,
            max_age_nanos: i64::MAX,
        });
        let (p1, p2) = (Partition(1), Partition(2));
        assert!(memory.remember(key(1, 1), p1, 0));
        assert!(memory.remember(key(2, 1), p2, 1));
        assert!(memory.remember(key(3, 1), p1, 2));
        assert_eq!(memory.drop_partition(p1), 2);
        assert_eq!(memory.len(), 1);
        assert!(memory.remember(key(1, 1), p2, 3), "forgotten with its partition");
        assert!(!memory.remember(key(2, 1), p2, 4), "the other partition's is kept");
        assert_eq!(memory.drop_partition(Partition(9)), 0);
    }
}
