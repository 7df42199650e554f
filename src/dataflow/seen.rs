//! Seen: event-key duplicates (docs/semantics.md "Duplicates"), for all the
//! users of one worker in one table.
//!
//! - input: each event arrival (the user's routing hash, the fingerprint of
//!   user and event key, `t`) and each erasure, applied by `decide` in
//!   arrival order for all the users of one routing hash at a time, before
//!   any decision state is touched.
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
//!
//! **Fingerprints.** An entry holds the 128-bit XXH3 fingerprint of
//! `(user, event key)`, not the strings: 32 bytes per remembered key
//! whatever the key's length, and probes compare integers. Two different
//! pairs are confused only if their fingerprints are equal: for a table of
//! a billion keys that chance is below 10⁻²⁰. Erasures find a user's keys
//! by the user's 64-bit routing hash, so erasing a user also forgets the
//! keys of any other user of the same hash on the worker (a chance below
//! 10⁻⁹ for a million users), which can only let a re-sent event through
//! once; it never drops an event.

use foldhash::fast::FixedState;
use hashbrown::hash_table::HashTable;
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::UserKey;
use crate::time::Time;

struct Seen {
    /// XXH3-128 of the user id and the event key ([`fingerprint`]).
    fingerprint: u128,
    /// The user's routing hash, for erasures.
    user: u64,
    time: Time,
}

/// A remembered key as a checkpoint keeps it: (fingerprint, user hash,
/// time last seen).
pub type SeenEntry = (u128, u64, Time);

pub struct SeenKeys {
    horizon: Time,
    table: HashTable<Seen>,
    /// Users (by routing hash) erased since the last sweep, with their
    /// latest erasure time.
    erased: hashbrown::HashMap<u64, Time, FixedState>,
    next_sweep: Time,
}

/// The fingerprint of `key` for `user`: XXH3-128 of the user id's length
/// (so that no two `(user, key)` pairs give the same bytes), the user id and
/// the key. Also the identity of profile keys (`profile::key_identity`,
/// whose "key" is the slot).
pub fn fingerprint(user: &str, key: &[u8]) -> u128 {
    fingerprint_parts(user, &[key])
}

/// [`fingerprint`] of the key that is the concatenation of `parts` (an
/// event key `source + "/" + id` without assembling it).
pub fn fingerprint_parts(user: &str, parts: &[&[u8]]) -> u128 {
    let len = (user.len() as u64).to_le_bytes();
    let mut buf = [0u8; 128];
    let n = 8 + user.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    if n <= buf.len() {
        buf[..8].copy_from_slice(&len);
        buf[8..8 + user.len()].copy_from_slice(user.as_bytes());
        let mut at = 8 + user.len();
        for part in parts {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        xxh3_128(&buf[..n])
    } else {
        let mut h = Xxh3::new();
        h.update(&len);
        h.update(user.as_bytes());
        for part in parts {
            h.update(part);
        }
        h.digest128()
    }
}

/// The table's hash of an entry: the fingerprint's low bits (XXH3 mixes
/// every bit).
fn table_hash(fingerprint: u128) -> u64 {
    fingerprint as u64
}

impl SeenKeys {
    pub fn new(horizon: Time) -> SeenKeys {
        SeenKeys {
            horizon,
            table: HashTable::new(),
            erased: Default::default(),
            next_sweep: Time::MIN,
        }
    }

    /// Records an arrival at `t` of the key whose [`fingerprint`] (with its
    /// user) is `fp`, for the user of routing hash `user`; true if it is a
    /// duplicate.
    pub fn observe(&mut self, user: u64, fp: u128, t: Time) -> bool {
        if self.horizon <= 0 {
            return false;
        }
        match self.table.find_mut(table_hash(fp), |s| s.fingerprint == fp) {
            Some(seen) => {
                let forgotten = !self.erased.is_empty()
                    && self.erased.get(&user).is_some_and(|at| seen.time < *at);
                let previous = std::mem::replace(&mut seen.time, t);
                !forgotten && previous > t.saturating_sub(self.horizon)
            }
            None => {
                self.table.insert_unique(
                    table_hash(fp),
                    Seen {
                        fingerprint: fp,
                        user,
                        time: t,
                    },
                    |s| table_hash(s.fingerprint),
                );
                false
            }
        }
    }

    /// Forgets `user`'s keys seen before `t` (an erasure at `t`).
    pub fn erase(&mut self, user: &UserKey, t: Time) {
        let at = self.erased.entry(user.hash).or_insert(t);
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

    /// Every remembered key as `(fingerprint, user hash, time)`, and the
    /// users erased since the last sweep with their latest erasure time:
    /// what a checkpoint keeps.
    pub fn entries(&self) -> (Vec<SeenEntry>, Vec<(u64, Time)>) {
        let keys = self
            .table
            .iter()
            .map(|s| (s.fingerprint, s.user, s.time))
            .collect();
        let erased = self.erased.iter().map(|(u, t)| (*u, *t)).collect();
        (keys, erased)
    }

    /// Puts back what [`SeenKeys::entries`] gave (of this worker's users).
    pub fn restore(&mut self, keys: Vec<SeenEntry>, erased: Vec<(u64, Time)>) {
        for (fingerprint, user, time) in keys {
            self.table.insert_unique(
                table_hash(fingerprint),
                Seen {
                    fingerprint,
                    user,
                    time,
                },
                |s| table_hash(s.fingerprint),
            );
        }
        for (user, t) in erased {
            let at = self.erased.entry(user).or_insert(t);
            *at = (*at).max(t);
        }
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

    impl SeenKeys {
        fn see(&mut self, user: &UserKey, key: &str, t: Time) -> bool {
            let fp = fingerprint(&user.user, key.as_bytes());
            self.observe(user.hash, fp, t)
        }
    }

    const H: Time = 24 * 3_600_000;

    #[test]
    fn duplicates_within_the_horizon_per_user() {
        let (a, b) = (UserKey::new("u-a"), UserKey::new("u-b"));
        let mut seen = SeenKeys::new(H);
        assert!(!seen.see(&a, "s/1", 1_000));
        assert!(seen.see(&a, "s/1", 1_000), "same instant");
        assert!(!seen.see(&b, "s/1", 1_000), "another user's key");
        assert!(seen.see(&a, "s/1", 1_000 + H - 1));
        // Last seen moved to 1_000 + H − 1, so this is still a duplicate.
        assert!(seen.see(&a, "s/1", 1_000 + 2 * H - 2));
        // Exactly one horizon after the last sighting: not a duplicate.
        assert!(!seen.see(&a, "s/1", 1_000 + 3 * H - 2));
    }

    #[test]
    fn erasure_forgets_earlier_keys_at_once() {
        let a = UserKey::new("u-a");
        let mut seen = SeenKeys::new(H);
        assert!(!seen.see(&a, "s/1", 10));
        assert!(!seen.see(&a, "s/2", 10));
        seen.erase(&a, 20);
        assert!(!seen.see(&a, "s/1", 20), "forgotten by the erasure");
        assert!(seen.see(&a, "s/1", 30), "seen again after it");
        assert!(!seen.see(&a, "s/2", 35), "still forgotten");
        seen.erase(&a, 40);
        seen.end_step(50);
        assert!(seen.is_empty(), "the sweep removes erased keys");
        assert!(!seen.see(&a, "s/1", 60));
    }

    #[test]
    fn sweep_drops_only_what_no_later_arrival_can_match() {
        let a = UserKey::new("u-a");
        let mut seen = SeenKeys::new(H);
        seen.see(&a, "s/1", 0);
        seen.see(&a, "s/2", 5);
        seen.end_step(H); // first step sweeps: keeps times > 0
        assert_eq!(seen.len(), 1);
        assert!(seen.see(&a, "s/2", H + 4));
    }

    #[test]
    fn fingerprints_separate_user_and_key() {
        let ab = fingerprint("u-a", b"b/1");
        assert_ne!(ab, fingerprint("u-ab", b"/1"));
        assert_ne!(ab, fingerprint("u-a", b"b/2"));
        assert_eq!(ab, fingerprint("u-a", b"b/1"));
        // Keys longer than the inline buffer fingerprint whole, and the
        // same bytes give the same fingerprint either way.
        let long = "k".repeat(300);
        assert_ne!(
            fingerprint("u-a", long.as_bytes()),
            fingerprint("u-a", &long.as_bytes()[1..])
        );
        let mut bytes = 3u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"u-a");
        bytes.extend_from_slice(long.as_bytes());
        assert_eq!(fingerprint("u-a", long.as_bytes()), xxh3_128(&bytes));
        assert_eq!(ab, xxh3_128(b"\x03\0\0\0\0\0\0\0u-ab/1"));
        assert_eq!(ab, fingerprint_parts("u-a", &[b"b", b"/", b"1"]));
        let parts: [&[u8]; 3] = [long.as_bytes(), b"/", b"1"];
        assert_eq!(
            fingerprint_parts("u-a", &parts),
            fingerprint("u-a", format!("{long}/1").as_bytes())
        );
    }

    #[test]
    fn zero_horizon_keeps_nothing() {
        let a = UserKey::new("u-a");
        let mut seen = SeenKeys::new(0);
        assert!(!seen.see(&a, "s/1", 0));
        assert!(!seen.see(&a, "s/1", 0));
        assert_eq!(seen.len(), 0);
    }
}
