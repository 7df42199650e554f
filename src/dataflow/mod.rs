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

pub mod caps;
pub mod consent;
pub mod cut;
pub mod decide;
pub mod history;
pub mod holdout;
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

use crate::record::output::Decision;
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
) -> Stream<'s, Time, Vec<Decision>> {
    let profile = profile::arrange_profiles(profile);
    decide::decide(arrivals, profile, spec, stats)
}

/// Assembles the decision graph with checkpoints (`run`): cuts in front of
/// `decide` and the profile arrangement, so that `decide` can snapshot both
/// at each requested time (`requests`, seen by every worker), starting
/// from `restore`. Returns the decisions and the snapshots.
pub fn build_checkpointed<'s>(
    (arrivals, profile): route::Streams<'s>,
    requests: Stream<'s, Time, Vec<cut::Request>>,
    restore: crate::checkpoint::state::WorkerState,
    spec: Arc<Spec>,
    stats: Rc<RefCell<DecideStats>>,
) -> (
    Stream<'s, Time, Vec<Decision>>,
    Stream<'s, Time, Vec<decide::Snapshot>>,
) {
    use timely::dataflow::channels::pact::{Exchange, Pipeline};
    let taken = cut::Taken::default();
    let by_user = Exchange::new(|a: &route::Arrival| a.hash());
    let arrivals = cut::cut(
        arrivals,
        by_user,
        requests.clone(),
        taken.clone(),
        "ArrivalsCut",
    );
    let by_user = Exchange::new(|u: &profile::ProfileUpsert| u.0.user);
    let profile = cut::cut(
        profile,
        by_user,
        requests.clone(),
        taken.clone(),
        "ProfilesCut",
    );
    let pending = Rc::new(RefCell::new(restore.profile));
    let profiles = profile::arrange_profiles_with(profile, Pipeline, pending.clone());
    let checkpoints = decide::Checkpoints {
        requests,
        taken,
        pending_profiles: pending,
        restore: Some(restore.decide),
    };
    decide::decide_with(arrivals, Pipeline, profiles, spec, stats, Some(checkpoints))
}
