//! Seen: event-key duplicates (DESIGN.md §4 "Duplicates"), for all the
//! users of one worker in one table.
//!
//! - input: each event arrival `(user, event key, t)`, applied by `decide`
//!   in the user's arrival order; erasures of users.
//! - output: whether the arrival is a duplicate (its key was last seen for
//!   the same user at a time in `(t − dedup_horizon, t]`). Every arrival,
//!   dropped or not, updates "last seen".
//! - time: exact milliseconds. Entries no arrival at or after the input
//!   frontier can match (`time ≤ frontier − horizon`) are swept away.
//!
//! One worker-wide table rather than a map per user: most events trigger no
//! rule, and this way they are checked with one probe, without touching the
//! user's decision state at all. An erasure forgets the user's keys: keys
//! seen before the user's last erasure are treated as absent at once, and
//! removed by the next sweep (every half horizon of event time), which
//! walks the whole table anyway.

use compact_str::CompactString;
use foldhash::fast::FixedState;
use hashbrown::hash_table::HashTable;
use std::hash::BuildHasher;

use super::UserKey;
use crate::time::Time;

struct Seen {
    user: UserKey,
    key: CompactString,
    time: Time,
}

pub struct SeenKeys {
    horizon: Time,
    table: HashTable<Seen>,
    hasher: FixedState,
    /// Users erased since the last sweep, with their latest erasure time.
    erased: hashbrown::HashMap<UserKey, Time, FixedState>,
    next_sweep: Time,
}

impl SeenKeys {
    pub fn new(horizon: Time) -> SeenKeys {
        SeenKeys {
            horizon,
            table: HashTable::new(),
            hasher: FixedState::with_seed(0x5eed_5eed),
            erased: Default::default(),
            next_sweep: Time::MIN,
        }
    }

    fn hash(&self, user: &UserKey, key: &str) -> u64 {
        self.hasher.hash_one((user.hash, key))
    }

    /// Records an arrival of `key` for `user` at `t`; true if it is a
    /// duplicate.
    pub fn observe(&mut self, user: &UserKey, key: &str, t: Time) -> bool {
        if self.horizon <= 0 {
            return false;
        }
        let hash = self.hash(user, key);
        match self
            .table
            .find_mut(hash, |s| s.user == *user && s.key == key)
        {
            Some(seen) => {
                let forgotten = !self.erased.is_empty()
                    && self.erased.get(user).is_some_and(|at| seen.time < *at);
                let previous = std::mem::replace(&mut seen.time, t);
                !forgotten && previous > t - self.horizon
            }
            None => {
                let hasher = &self.hasher;
                self.table.insert_unique(
                    hash,
                    Seen {
                        user: user.clone(),
                        key: key.into(),
                        time: t,
                    },
                    |s| hasher.hash_one((s.user.hash, s.key.as_str())),
                );
                false
            }
        }
    }

    /// Forgets `user`'s keys seen before `t` (an erasure at `t`).
    pub fn erase(&mut self, user: &UserKey, t: Time) {
        let at = self.erased.entry(user.clone()).or_insert(t);
        *at = (*at).max(t);
    }

    /// Ends a step that applied every arrival before `frontier`; now and
    /// then, removes keys no later arrival can match and erased keys.
    pub fn end_step(&mut self, frontier: Time) {
        if frontier < self.next_sweep || frontier == Time::MAX {
            return;
        }
        let expired = frontier.saturating_sub(self.horizon);
        let erased = std::mem::take(&mut self.erased);
        self.table.retain(|s| {
            s.time > expired
                && (erased.is_empty() || erased.get(&s.user).is_none_or(|at| s.time >= *at))
        });
        self.next_sweep = frontier.saturating_add(self.horizon.max(2) / 2);
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Time = 24 * 3_600_000;

    #[test]
    fn duplicates_within_the_horizon_per_user() {
        let (a, b) = (UserKey::new("u-a"), UserKey::new("u-b"));
        let mut seen = SeenKeys::new(H);
        assert!(!seen.observe(&a, "s/1", 1_000));
        assert!(seen.observe(&a, "s/1", 1_000), "same instant");
        assert!(!seen.observe(&b, "s/1", 1_000), "another user's key");
        assert!(seen.observe(&a, "s/1", 1_000 + H - 1));
        // Last seen moved to 1_000 + H − 1, so this is still a duplicate.
        assert!(seen.observe(&a, "s/1", 1_000 + 2 * H - 2));
        // Exactly one horizon after the last sighting: not a duplicate.
        assert!(!seen.observe(&a, "s/1", 1_000 + 3 * H - 2));
    }

    #[test]
    fn erasure_forgets_earlier_keys_at_once() {
        let a = UserKey::new("u-a");
        let mut seen = SeenKeys::new(H);
        assert!(!seen.observe(&a, "s/1", 10));
        assert!(!seen.observe(&a, "s/2", 10));
        seen.erase(&a, 20);
        assert!(!seen.observe(&a, "s/1", 20), "forgotten by the erasure");
        assert!(seen.observe(&a, "s/1", 30), "seen again after it");
        assert!(!seen.observe(&a, "s/2", 35), "still forgotten");
        seen.erase(&a, 40);
        seen.end_step(50);
        assert!(seen.is_empty(), "the sweep removes erased keys");
        assert!(!seen.observe(&a, "s/1", 60));
    }

    #[test]
    fn sweep_drops_only_what_no_later_arrival_can_match() {
        let a = UserKey::new("u-a");
        let mut seen = SeenKeys::new(H);
        seen.observe(&a, "s/1", 0);
        seen.observe(&a, "s/2", 5);
        seen.end_step(H); // first step sweeps: keeps times > 0
        assert_eq!(seen.len(), 1);
        assert!(seen.observe(&a, "s/2", H + 4));
    }

    #[test]
    fn zero_horizon_keeps_nothing() {
        let a = UserKey::new("u-a");
        let mut seen = SeenKeys::new(0);
        assert!(!seen.observe(&a, "s/1", 0));
        assert!(!seen.observe(&a, "s/1", 0));
        assert_eq!(seen.len(), 0);
    }
}
