//! Profile: each user's preferences and consent as one Differential
//! collection keyed by `(user, slot)` and replaced by key (an upsert
//! arrangement, `history::arrange_upserts`), read as of a candidate's time.
//!
//! - input: profile upserts `(ProfileKey, Option<ProfileVal>, t)` from
//!   `route`: a preference record upserts the user's `Prefs` slot, a consent
//!   record its `(channel or "*", purpose)` slot, and an erasure upserts
//!   "absent" in all thirteen slots of its user.
//! - output: an arrangement whose trace `decide` reads at exact millisecond
//!   times (the update times are the records' own times, finer than the
//!   timely capabilities that carry them).
//!
//! Keys hash by user only, so a user's profile lives on the worker that
//! decides for the user. The collection is arranged by the user's 64-bit
//! hash ([`ProfileEntry`] holds a tag of the user id, the slot and the
//! value), so a user's slots are adjacent in the trace and `decide` finds
//! all of them with one seek ([`UserProfile::load`]) that compares integers
//! in a dense key array: seeks into string-keyed batches missed the cache
//! at every step.
//!
//! **User tags.** Users whose 64-bit routing hashes collide share a trace
//! key; [`user_tag`], a second and independent 64-bit hash of the user id,
//! tells them apart. A user is thus known by 128 bits of hash, as an event
//! key is by its 128-bit fingerprint (`seen.rs`): two users are confused
//! only if both hashes collide, a chance below 10⁻²⁷ for a million users.
//! The tag keeps entries at 48 bytes and their comparisons integer ones
//! (the user id took 24 bytes and a string comparison in every merge).
//!
//! Preferences and consent are separate collections in spirit (separate
//! slots, separate histories); sharing one arrangement halves the seeks,
//! the upsert batchers and the trace merges.

use std::ops::Range;

use differential_dataflow::operators::arrange::Arranged;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::UserKey;
use super::consent::{ConsentVal, consent_as_of, granted};
use super::history::{
    History, PendingUpserts, Reader, TraceSnapshot, Upsert, UpsertTrace, arrange_upserts,
};
use super::preferences::{PrefsVal, prefs_as_of};
use crate::record::Prefs;
use crate::spec::{Channel, Purpose};
use crate::time::Time;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract};

/// Which part of a user's profile a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Slot {
    Prefs,
    /// Consent for a channel (`None` is `"*"`) and purpose.
    Consent(Option<Channel>, Purpose),
}

impl Slot {
    /// Every slot: what an erasure clears.
    pub fn all() -> impl Iterator<Item = Slot> {
        let consent = std::iter::once(None)
            .chain(Channel::ALL.map(Some))
            .flat_map(|channel| {
                [Purpose::Marketing, Purpose::Transactional]
                    .map(|purpose| Slot::Consent(channel, purpose))
            });
        std::iter::once(Slot::Prefs).chain(consent)
    }
}

/// A profile slot of a user, known by the user's two hashes (its routing
/// hash and its [`user_tag`]): no user id string is kept, so a key is 24
/// bytes and a checkpoint can rebuild every key from the trace alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProfileKey {
    /// The user's routing hash (`record::user_hash`).
    pub user: u64,
    /// The user's [`user_tag`].
    pub tag: u64,
    pub slot: Slot,
}

impl ProfileKey {
    pub fn new(user: &UserKey, slot: Slot) -> ProfileKey {
        ProfileKey {
            user: user.hash,
            tag: user_tag(&user.user),
            slot,
        }
    }
}

/// A slot's value; a key's values are always of its slot's kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProfileVal {
    Prefs(PrefsVal),
    Consent(ConsentVal),
}

/// A slot's value as arranged, under the user's hash: users whose hashes
/// collide share a trace key and are told apart by their [`user_tag`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProfileEntry {
    pub user: u64,
    pub slot: Slot,
    pub value: ProfileVal,
}

/// A second 64-bit hash of a user id, independent of the routing hash
/// (`record::user_hash`, foldhash): XXH3-64.
pub fn user_tag(user: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(user.as_bytes())
}

pub type ProfileUpsert = Upsert<ProfileKey, ProfileVal>;
/// The profile upserts whose time is not yet complete, shared by the
/// arrangement's batcher with a checkpoint.
pub type PendingProfiles = PendingUpserts<ProfileKey, ProfileVal>;
pub type ProfileTrace = UpsertTrace<u64, ProfileEntry>;

/// The identity of a profile key in the upsert batcher: the user's routing
/// hash above its tag, the tag mixed with the slot (distinct slots of a
/// user always differ; two users' slots meet only if both of their 64-bit
/// hashes collide).
pub fn key_identity(key: &ProfileKey) -> u128 {
    let slot: u64 = match key.slot {
        Slot::Prefs => 0,
        Slot::Consent(None, purpose) => 1 << 8 | purpose as u64,
        Slot::Consent(Some(channel), purpose) => (2 + channel as u64) << 8 | purpose as u64,
    };
    (key.user as u128) << 64 | (key.tag ^ slot.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as u128
}

/// Arranges the profile upserts, exchanging each to the worker of its user.
pub fn arrange_profiles<'s>(
    upserts: Stream<'s, Time, Vec<ProfileUpsert>>,
) -> Arranged<'s, ProfileTrace> {
    let exchange = Exchange::new(|u: &ProfileUpsert| u.0.user);
    arrange_profiles_with(upserts, exchange, Default::default())
}

/// Arranges profile upserts routed by `pact`, the batcher holding its
/// pending upserts in `pending` (see [`PendingProfiles`]).
pub fn arrange_profiles_with<'s, P>(
    upserts: Stream<'s, Time, Vec<ProfileUpsert>>,
    pact: P,
    pending: PendingProfiles,
) -> Arranged<'s, ProfileTrace>
where
    P: ParallelizationContract<Time, Vec<ProfileUpsert>>,
{
    arrange_upserts(
        upserts,
        pact,
        pending,
        "Profiles",
        key_identity,
        |key: &ProfileKey, value| {
            let entry = ProfileEntry {
                user: key.tag,
                slot: key.slot,
                value,
            };
            (key.user, entry)
        },
    )
}

/// The profile as upserts, for a checkpoint at `t` (the trace holding
/// every update before `t` and none after): each slot's value in force,
/// upserted at `t − 1`, then the `pending` upserts (times `t` and later).
/// Arranged anew, they give the same profile at every time from `t` on.
pub fn profile_upserts(
    trace: &mut ProfileTrace,
    pending: &PendingProfiles,
    t: Time,
) -> Vec<ProfileUpsert> {
    let mut upserts = Vec::new();
    let mut snapshot = TraceSnapshot::new(trace);
    snapshot.reader().for_each_present(|&user, entry| {
        let key = ProfileKey {
            user,
            tag: entry.user,
            slot: entry.slot,
        };
        upserts.push((key, Some(entry.value.clone()), t - 1));
    });
    upserts.extend(pending.borrow().iter().cloned());
    upserts
}

/// The number of consent slots: `"*"` and each channel, for each purpose.
const CONSENT_SLOTS: usize = 2 * (1 + Channel::ALL.len());

fn consent_slot(channel: Option<Channel>, purpose: Purpose) -> usize {
    channel.map_or(0, |c| 1 + c as usize) * 2 + purpose as usize
}

/// One user's preference and consent histories, loaded from the trace:
/// all of the user's updates in one vector, and each slot's range of them.
pub struct UserProfile<'a> {
    history: History<'a, ProfileEntry>,
    prefs: Range<usize>,
    consent: [Range<usize>; CONSENT_SLOTS],
}

impl<'a> UserProfile<'a> {
    pub fn load(reader: &mut Reader<'a, u64, ProfileEntry>, user: &UserKey) -> Self {
        let history = reader.get(&user.hash);
        let tag = user_tag(&user.user);
        let (mut prefs, mut consent) = (0..0, <[Range<usize>; CONSENT_SLOTS]>::default());
        let slots = history.runs(|a, b| a.user == b.user && a.slot == b.slot);
        for (entry, range) in slots.filter(|(e, _)| e.user == tag) {
            match entry.slot {
                Slot::Prefs => prefs = range,
                Slot::Consent(channel, purpose) => consent[consent_slot(channel, purpose)] = range,
            }
        }
        UserProfile {
            history,
            prefs,
            consent,
        }
    }

    /// The user's preferences in force at `t`, if any.
    pub fn prefs(&self, t: Time) -> Option<&'a Prefs> {
        prefs_as_of(self.history.part(self.prefs.clone()), t)
    }

    /// The user's consent for `channel` and `purpose` as of `t`
    /// (docs/semantics.md, step 5).
    pub fn granted(&self, channel: Channel, purpose: Purpose, t: Time) -> bool {
        let value = |channel| {
            let range = self.consent[consent_slot(channel, purpose)].clone();
            consent_as_of(self.history.part(range), t)
        };
        granted(value(Some(channel)), value(None), purpose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::history::TraceSnapshot;
    use timely::dataflow::operators::{Input, Probe};

    fn consent(time: Time, granted: bool) -> ProfileVal {
        ProfileVal::Consent(ConsentVal {
            time,
            seq: time as u64,
            granted,
        })
    }

    /// Two users whose hashes collide share a trace key; each still reads
    /// only its own slots, as of each time.
    #[test]
    fn users_sharing_a_hash_keep_their_own_profiles() {
        timely::execute_directly(|worker| {
            let (mut input, probe, mut trace) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, upserts) = scope.new_input::<Vec<ProfileUpsert>>();
                let arranged = arrange_profiles(upserts);
                let (probe, _) = arranged.stream.probe();
                (input, probe, arranged.trace)
            });
            let (a, b) = (
                UserKey {
                    hash: 7,
                    user: "u-a".into(),
                },
                UserKey {
                    hash: 7,
                    user: "u-b".into(),
                },
            );
            let slot = Slot::Consent(None, Purpose::Marketing);
            let key = |user: &UserKey| ProfileKey::new(user, slot);
            input.send((key(&a), Some(consent(10, true)), 10));
            input.send((key(&b), Some(consent(20, true)), 20));
            input.send((key(&a), Some(consent(30, false)), 30));
            input.send((key(&b), None, 40));
            input.advance_to(100);
            while probe.less_than(&100) {
                worker.step();
            }
            let mut snapshot = TraceSnapshot::new(&mut trace);
            // One reader, as in `decide`: both users share the trace key.
            let mut reader = snapshot.reader();
            let marketing = |profile: &UserProfile<'_>, t| {
                profile.granted(Channel::Push, Purpose::Marketing, t)
            };
            let pa = UserProfile::load(&mut reader, &a);
            let pb = UserProfile::load(&mut reader, &b);
            let again = UserProfile::load(&mut reader, &a);
            for (t, granted) in [(9, false), (25, true), (30, false)] {
                assert_eq!(marketing(&pa, t), granted, "u-a at {t}");
                assert_eq!(marketing(&again, t), granted, "u-a again at {t}");
            }
            // b: its own grant from 20 until its record is deleted at 40;
            // never a's grant (from 10) nor a's revocation (at 30).
            for (t, granted) in [(15, false), (25, true), (35, true), (45, false)] {
                assert_eq!(marketing(&pb, t), granted, "u-b at {t}");
            }
        });
    }

    /// Distinct keys have distinct identities, short user ids and long
    /// ones alike, and a key always has the same one.
    #[test]
    fn key_identities_tell_every_slot_of_every_user_apart() {
        let long = "u-".repeat(40);
        let mut seen = std::collections::HashSet::new();
        for user in ["u-a", "u-b", "u-ab", long.as_str(), &long[1..]] {
            for slot in Slot::all() {
                let key = ProfileKey::new(&UserKey::new(user), slot);
                assert_eq!(key_identity(&key), key_identity(&key.clone()));
                assert!(seen.insert(key_identity(&key)), "{user} {slot:?}");
            }
        }
        assert_eq!(seen.len(), 5 * Slot::all().count());
    }

    #[test]
    fn an_erasure_clears_prefs_and_every_consent_slot() {
        let slots: Vec<Slot> = Slot::all().collect();
        assert_eq!(slots.len(), 1 + 2 * (1 + Channel::ALL.len()));
        assert_eq!(slots[0], Slot::Prefs);
        let mut distinct = slots.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), slots.len());
    }
}
