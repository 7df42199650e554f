//! The notification decision dataflow (docs/semantics.md, "decide").
//!
//! ```text
//!  source (parse + route) ─┬─ arrivals ──────────────────(exchange by user)─┐
//!                          └─ consent and preference upserts                ├─> decide ──> decisions
//!                               ──(exchange by user)──> profile arrangement ─┘
//! ```
//!
//! Every stage is keyed by user (`record::user_hash`), so all decisions for
//! one user happen on one worker. Timely timestamps are coarse (one per
//! source stripe); every record carries its exact millisecond time, and the
//! per-user stages order by it once the frontier has passed it.

pub mod activity;
pub mod aggregates;
pub mod caps;
pub mod consent;
pub mod cut;
pub mod decide;
pub mod delivery;
pub mod fallback;
pub mod history;
pub mod holdout;
pub mod inbox;
pub mod preferences;
pub mod profile;
pub mod quiet_hours;
pub mod route;
pub mod seen;

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use timely::dataflow::Stream;

use crate::spec::Spec;
use crate::time::Time;

pub use decide::DecideStats;

/// A user id with its routing hash (`record::user_hash`). Ordered by hash
/// first, so that sorting arrivals and navigating the consent and preference
/// traces compare integers, not strings; it hashes as the bare user id, so
/// every stage routes a user's records to the same worker.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserKey {
    pub hash: u64,
    /// Inline up to 24 bytes: copying a key (trace merges, exchange) does
    /// not allocate for typical user ids.
    pub user: CompactString,
}

impl UserKey {
    pub fn new(user: &str) -> UserKey {
        UserKey {
            hash: crate::record::user_hash(user),
            user: CompactString::from(user),
        }
    }
}

impl Hash for UserKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.user.as_str().hash(state);
    }
}

/// Assembles the decision graph over a source's routed streams.
pub fn build<'s>(
    (arrivals, profile): route::Streams<'s>,
    spec: Arc<Spec>,
    stats: Rc<RefCell<DecideStats>>,
) -> decide::Decided<'s> {
    let profile = profile::arrange_profiles(profile);
    decide::decide(arrivals, profile, spec, stats)
}

/// Assembles the decision graph with checkpoints (`run`): cuts in front of
/// `decide` and the profile arrangement, so that `decide` can snapshot both
/// at each requested time (`requests`, seen by every worker), starting
/// from `restore`, with in-app inboxes when `inbox_ttl` is set. Returns
/// the decisions, the snapshots and the inbox changes.
pub fn build_checkpointed<'s>(
    (arrivals, profile): route::Streams<'s>,
    requests: Stream<'s, Time, Vec<cut::Request>>,
    restore: crate::checkpoint::state::WorkerState,
    spec: Arc<Spec>,
    stats: Rc<RefCell<DecideStats>>,
    inbox_ttl: Option<Time>,
) -> decide::Decided<'s> {
    use timely::dataflow::channels::pact::{Exchange, Pipeline};
    let taken = cut::Taken::default();
    let by_user = Exchange::new(|a: &route::Arrival| a.hash());
    let arrivals = cut::cut(
        arrivals,
        by_user,
        requests.clone(),
        taken.clone(),
        None,
        "ArrivalsCut",
    );
    // The restored profile goes into the arrangement as records (the
    // batcher extracts only what a capability stands for), at the least
    // time among them: the values in force at T are upserts at T − 1.
    let restored = restore
        .profile
        .iter()
        .map(|u| u.2)
        .min()
        .map(|t| (t, restore.profile));
    let by_user = Exchange::new(|u: &profile::ProfileUpsert| u.0.user);
    let profile = cut::cut(
        profile,
        by_user,
        requests.clone(),
        taken.clone(),
        restored,
        "ProfilesCut",
    );
    let pending = profile::PendingProfiles::default();
    let profiles = profile::arrange_profiles_with(profile, Pipeline, pending.clone());
    let checkpoints = decide::Checkpoints {
        requests,
        taken,
        pending_profiles: pending,
        restore: Some(restore.decide),
    };
    decide::decide_with(
        arrivals,
        Pipeline,
        profiles,
        spec,
        stats,
        Some(checkpoints),
        inbox_ttl,
    )
}

#[cfg(test)]
mod tests {
    use super::consent::ConsentVal;
    use super::profile::{ProfileKey, ProfileUpsert, ProfileVal, Slot};
    use super::route::{Arrival, EventArrival, Fire, RuleHit};
    use super::*;
    use crate::checkpoint::state::WorkerState;
    use crate::record::output::Decision;
    use crate::spec::{Channel, Purpose};
    use timely::dataflow::operators::Input;

    /// One marketing rule on `x`, by email.
    fn promo_spec() -> Arc<Spec> {
        let text = "[[rule]]\nname = \"promo\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"email\"]\n";
        Arc::new(Spec::parse("t.toml", text).unwrap())
    }

    /// What the decision graph with checkpoints decides for one marketing
    /// event at 150, after a start from `restore` as of 100.
    fn decide_after(restore: WorkerState) -> Vec<Decision> {
        let spec = promo_spec();
        let user = UserKey::new("u-1");
        let event = Arrival::Event(Box::new(EventArrival {
            user: user.clone(),
            key: "s/1".into(),
            fingerprint: 1,
            time: 150,
            seq: 0,
            hit: RuleHit {
                fires: vec![Fire {
                    rule: 0,
                    decision: 150,
                    dedup_key: None,
                }],
                cancels: 0,
                data: None,
                activity: None,
            },
        }));
        timely::execute_directly(move |worker| {
            let decisions = Rc::new(RefCell::new(Vec::new()));
            let stats = Rc::new(RefCell::new(DecideStats::default()));
            let (mut events, mut profile, mut requests, probe) =
                worker.dataflow::<Time, _, _>(|scope| {
                    let (events, arrivals) = scope.new_input::<Vec<Arrival>>();
                    let (profile, upserts) = scope.new_input::<Vec<ProfileUpsert>>();
                    let (requests, stream) = scope.new_input::<Vec<cut::Request>>();
                    let out =
                        build_checkpointed((arrivals, upserts), stream, restore, spec, stats, None)
                            .decisions;
                    (
                        events,
                        profile,
                        requests,
                        crate::sink::collect(out, decisions.clone()),
                    )
                });
            profile.advance_to(100);
            requests.advance_to(100);
            events.advance_to(100);
            events.send(event);
            events.close();
            profile.close();
            requests.close();
            while !probe.done() {
                worker.step();
            }
            decisions.take().into_iter().flatten().collect()
        })
    }

    /// Consent restored from a checkpoint is in force from its time on,
    /// though no profile record arrives after the start.
    #[test]
    fn a_restored_profile_is_read_after_the_start() {
        let user = UserKey::new("u-1");
        let slot = Slot::Consent(Some(Channel::Email), Purpose::Marketing);
        let granted = ConsentVal {
            time: 5,
            seq: 0,
            granted: true,
        };
        let mut restore = WorkerState::default();
        restore.profile.push((
            ProfileKey::new(&user, slot),
            Some(ProfileVal::Consent(granted)),
            99,
        ));
        let decided = decide_after(restore);
        assert!(
            matches!(decided.as_slice(), [Decision::Dispatch(d)] if d.channel == Channel::Email),
            "{decided:?}"
        );
        // Without it: no consent, no channel.
        let decided = decide_after(WorkerState::default());
        assert!(
            matches!(decided.as_slice(), [Decision::Suppression(_)]),
            "{decided:?}"
        );
    }

    /// A snapshot at 100 holds the consent given at 5 (as the value in
    /// force, at 99) and the one given at 150 and already read.
    #[test]
    fn a_snapshot_holds_the_profile_in_force_and_what_is_already_read() {
        let spec = promo_spec();
        let user = UserKey::new("u-1");
        let slot = Slot::Consent(Some(Channel::Email), Purpose::Marketing);
        let consent = |time, granted| {
            (
                ProfileKey::new(&user, slot),
                Some(ProfileVal::Consent(ConsentVal {
                    time,
                    seq: 0,
                    granted,
                })),
                time,
            )
        };
        let (early, late) = (consent(5, true), consent(150, false));
        let sent = (early.clone(), late.clone());
        let bytes = timely::execute_directly(move |worker| {
            let snapshots = Rc::new(RefCell::new(Vec::new()));
            let stats = Rc::new(RefCell::new(DecideStats::default()));
            let (mut events, mut profile, mut requests, probe) =
                worker.dataflow::<Time, _, _>(|scope| {
                    let (events, arrivals) = scope.new_input::<Vec<Arrival>>();
                    let (profile, upserts) = scope.new_input::<Vec<ProfileUpsert>>();
                    let (requests, stream) = scope.new_input::<Vec<cut::Request>>();
                    let snaps = build_checkpointed(
                        (arrivals, upserts),
                        stream,
                        WorkerState::default(),
                        spec,
                        stats,
                        None,
                    )
                    .snapshots;
                    let seen = snapshots.clone();
                    use timely::dataflow::operators::Inspect;
                    let (probe, _) = timely::dataflow::operators::Probe::probe(snaps.inspect(
                        move |s: &decide::Snapshot| seen.borrow_mut().push(s.bytes.clone()),
                    ));
                    (events, profile, requests, probe)
                });
            // Both read before the checkpoint's time.
            profile.send(sent.0);
            profile.send(sent.1);
            profile.advance_to(100);
            requests.advance_to(100);
            requests.send(cut::Request {
                id: 1,
                time: 100,
                last: false,
            });
            events.advance_to(100);
            events.close();
            profile.close();
            requests.close();
            while !probe.done() {
                worker.step();
            }
            snapshots.take()
        });
        assert_eq!(bytes.len(), 1);
        let state = crate::checkpoint::state::decode(&bytes[0]).unwrap();
        let in_force = (early.0, early.1, 99);
        assert_eq!(state.profile, vec![in_force, late]);
    }
}
