//! Aggregates: retention, churn state and delivery counts (DESIGN.md §5),
//! kept incrementally as a Differential collection of [`Fact`]s and read by
//! the query API and the report (§8).
//!
//! - input: the facts `decide` derives from each user's activity,
//!   dispatches, receipts, churn signals and erasures (`activity.rs`,
//!   `delivery.rs`), each with its exact event time and a multiplicity: a
//!   user joining a cohort or active in a later bucket, a user's activity
//!   summary (the previous one retracted), an attempt made, delivered or
//!   failed, a notification made or succeeded, a user at risk. An erasure
//!   at t retracts every fact the user contributed before t, so that the
//!   aggregates after it are as if the user had never existed.
//!   The largest record time the sources admitted, for the default as-of
//!   time of a replay.
//! - output: each process's [`AnalyticsView`], the consolidated facts
//!   (counts per aggregate key, each user's summary) the HTTP server and
//!   `replay --out` answer from (`analytics::answers`).
//! - key: aggregate facts by what they count (cohort, segment, group and
//!   offset; channel or rule and outcome); summaries by user. Every fact is
//!   copied to the first worker of each process, so any process answers
//!   every query.
//! - time: a fact's time is the exact instant it became true (Differential
//!   update times, finer than the timely timestamps they travel at, never
//!   before them). The view applies a fact once its frontier has passed its
//!   time and the time is before the view's limit (`--as-of`), and answers
//!   as of that frontier: exactly the records before it count.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use compact_str::CompactString;
use differential_dataflow::VecCollection;
use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::{Concat, Map};
use timely::dataflow::operators::generic::Operator;

use crate::analytics::bgnbd::Summary;
use crate::spec::{Bucket, Channel, Spec};
use crate::time::{MS_PER_DAY, Time};

/// One fact of the aggregates; its multiplicity says how many times it
/// holds (one per user or attempt, negative when retracted).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Fact {
    /// A user of this cohort (bucket index of the first activity), segment
    /// and group active in bucket cohort + k (k = 0: the cohort's member).
    Retained {
        bucket: Bucket,
        cohort: i64,
        segment: Option<CompactString>,
        holdout: bool,
        k: u32,
    },
    /// A user's activity summary (the BG/NBD inputs).
    Summary {
        user: CompactString,
        first_day: i64,
        last_day: i64,
        active_days: u32,
    },
    /// An attempt of `rule` on `channel`: made, delivered or failed.
    Delivery {
        rule: u16,
        channel: Channel,
        outcome: Outcome,
    },
    /// A notification (the attempts of one candidate) made, or succeeded.
    Notification { succeeded: bool },
    /// A user whose churn signal came and who has not been active since.
    AtRisk,
}

/// What became of an attempt, for the delivery counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Dispatched,
    Delivered,
    Failed,
}

/// A fact update: the fact, its exact time, its change in multiplicity.
pub type Update = (Fact, Time, isize);

/// The consolidated aggregates as of a time.
#[derive(Default)]
pub struct Aggregates {
    /// The view counts exactly the facts before this time; `Time::MIN`
    /// before the first frontier.
    pub as_of: Time,
    /// Multiplicities of every fact but summaries and at-risk changes.
    pub counts: HashMap<Fact, i64, FixedState>,
    /// Each active user's summary.
    pub users: HashMap<CompactString, Summary, FixedState>,
    /// Changes of the number of users at risk, by UTC day.
    pub at_risk: BTreeMap<i64, i64>,
    /// At-risk answers computed for an as-of time, kept until it moves.
    pub cache: RwLock<Option<(Time, Arc<Vec<AtRiskUser>>)>>,
}

/// A user at risk, as the at-risk list orders them.
#[derive(Clone, Debug, PartialEq)]
pub struct AtRiskUser {
    pub user: CompactString,
    pub p_alive: f64,
    pub last_day: i64,
}

impl Aggregates {
    fn apply(&mut self, fact: Fact, time: Time, diff: isize) {
        match fact {
            Fact::Summary {
                user,
                first_day,
                last_day,
                active_days,
            } => {
                let summary = Summary {
                    first_day,
                    last_day,
                    active_days,
                };
                // A change comes as the old summary retracted and the new
                // one added, in either order.
                if diff > 0 {
                    self.users.insert(user, summary);
                } else if self.users.get(&user) == Some(&summary) {
                    self.users.remove(&user);
                }
            }
            Fact::AtRisk => {
                *self.at_risk.entry(time.div_euclid(MS_PER_DAY)).or_default() += diff as i64;
                *self.counts.entry(Fact::AtRisk).or_default() += diff as i64;
            }
            fact => match self.counts.entry(fact) {
                Entry::Occupied(mut o) => {
                    *o.get_mut() += diff as i64;
                    // Keys of erased users leave no trace.
                    if *o.get() == 0 {
                        o.remove();
                    }
                }
                Entry::Vacant(v) => {
                    v.insert(diff as i64);
                }
            },
        }
    }
}

/// What a view answers to, up to which time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// As of the frontier (`run`).
    Frontier,
    /// As of this time at most (`replay --as-of`).
    Until(Time),
    /// As of 1 ms after the largest record time the sources admitted
    /// (`replay`'s default); the epoch without any record.
    AfterLatestRecord,
}

/// A process's view of the aggregates; clones share it.
#[derive(Clone)]
pub struct AnalyticsView {
    state: Arc<RwLock<Aggregates>>,
    pub spec: Arc<Spec>,
    /// What the report page is titled: the spec and input.
    pub title: String,
}

impl AnalyticsView {
    pub fn new(spec: Arc<Spec>, title: String) -> AnalyticsView {
        AnalyticsView {
            state: Arc::new(RwLock::new(Aggregates {
                as_of: Time::MIN,
                ..Aggregates::default()
            })),
            spec,
            title,
        }
    }

    /// The aggregates, to read (answers hold it for their whole reading,
    /// so that each is consistent as of one time).
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Aggregates> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Aggregates> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the view's operator receives: fact updates, and the largest
/// record time a source admitted.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Input {
    Update(Update),
    Latest(Time),
}

/// Keeps the analytics view of every process: each fact update goes to the
/// worker of each process in `leaders`, which applies it to `view` (that
/// worker's process's view; `None` on the other workers) once the frontier
/// has passed its time and the time is below the `limit`. `latest` carries
/// the largest record time each source admitted.
pub fn view<'s>(
    facts: VecCollection<'s, Time, Fact, isize>,
    latest: Stream<'s, Time, Vec<Time>>,
    leaders: Vec<u32>,
    view: Option<AnalyticsView>,
    limit: Limit,
) {
    // Each input to every leader: copies for all but the last, which
    // takes the input itself (one process: no copy).
    let copies = move |input: Input| {
        let copies = leaders[..leaders.len() - 1]
            .iter()
            .map(|&to| (to, input.clone()))
            .collect::<Vec<_>>();
        copies
            .into_iter()
            .chain([(leaders[leaders.len() - 1], input)])
    };
    let copy = copies.clone();
    let updates = facts.inner.flat_map(move |u| copy(Input::Update(u)));
    let latest = latest.flat_map(move |t| copies(Input::Latest(t)));
    let copies: Stream<'s, Time, Vec<(u32, Input)>> = updates.concat(latest);
    let by_leader = Exchange::new(|(to, _): &(u32, Input)| *to as u64);
    let mut stash: Vec<Update> = Vec::new();
    let mut newest = Time::MIN;
    copies.sink(by_leader, "AnalyticsView", move |(input, frontier)| {
        input.for_each(|_cap, data| {
            for (_, input) in data.drain(..) {
                match input {
                    Input::Update(u) => stash.push(u),
                    Input::Latest(t) => newest = newest.max(t),
                }
            }
        });
        let Some(view) = view.as_ref() else {
            stash.clear();
            return;
        };
        let now = frontier.frontier().first().copied().unwrap_or(Time::MAX);
        // Every answer from now on counts the facts before `as_of`.
        let as_of = match limit {
            Limit::Frontier => now,
            Limit::Until(t) => now.min(t),
            // With no record at all, as of the epoch.
            Limit::AfterLatestRecord if newest == Time::MIN => now.min(0),
            Limit::AfterLatestRecord => now.min(newest.saturating_add(1)),
        };
        // In any order: a summary's change applies in either.
        let mut state = view.write();
        for (fact, time, diff) in stash.extract_if(.., |u| u.1 < as_of) {
            state.apply(fact, time, diff);
        }
        if now == Time::MAX {
            // Facts at or after the final as-of time never count.
            stash.clear();
        }
        if as_of > state.as_of {
            state.as_of = as_of;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_change_applies_in_either_order() {
        let mut a = Aggregates::default();
        let s = |last| Fact::Summary {
            user: "u".into(),
            first_day: 1,
            last_day: last,
            active_days: 1,
        };
        a.apply(s(1), 0, 1);
        a.apply(s(2), 5, 1);
        a.apply(s(1), 5, -1);
        assert_eq!(a.users["u"].last_day, 2);
        a.apply(s(3), 9, -1);
        assert_eq!(
            a.users["u"].last_day, 2,
            "a stale retraction changes nothing"
        );
        a.apply(s(2), 9, -1);
        assert!(a.users.is_empty());
    }

    #[test]
    fn counts_that_reach_zero_leave() {
        let mut a = Aggregates::default();
        let f = Fact::Notification { succeeded: false };
        a.apply(f.clone(), 0, 1);
        a.apply(f.clone(), 1, -1);
        assert!(a.counts.is_empty());
        a.apply(Fact::AtRisk, MS_PER_DAY, 1);
        a.apply(Fact::AtRisk, 3 * MS_PER_DAY, -1);
        assert_eq!(a.at_risk, BTreeMap::from([(1, 1), (3, -1)]));
    }
}
