//! Preferences: a Differential collection keyed by user, replaced by key
//! (`arrange_from_upsert`), read as of a candidate's time.
//!
//! - input: preference upserts `(user, Option<PrefsVal>, t)` from `route`;
//!   a `deleted` record is a present value holding no preferences (so that
//!   at equal times the record later in the stream wins, deletions included),
//!   an erasure is an absent value (which loses to any record at the same
//!   time, as erasures rank first).
//! - output: an arrangement read by `decide` at exact millisecond times.

use differential_dataflow::operators::arrange::Arranged;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::UserKey;
use super::history::{History, Reader, Upsert, UpsertTrace, arrange_upserts};
use std::sync::Arc;

use crate::record::Prefs;
use crate::time::Time;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PrefsVal {
    pub seq: u64,
    /// `None`: deleted.
    /// Shared: trace merges copy a pointer, not the preferences.
    pub prefs: Option<Arc<Prefs>>,
}

pub type PrefsUpsert = Upsert<UserKey, PrefsVal>;
pub type PrefsTrace = UpsertTrace<UserKey, PrefsVal>;

pub fn arrange_preferences<'s>(
    upserts: Stream<'s, Time, Vec<PrefsUpsert>>,
) -> Arranged<'s, PrefsTrace> {
    arrange_upserts(upserts, "Preferences")
}

/// One user's preference history, loaded from the trace.
#[derive(Default)]
pub struct UserPrefs<'a> {
    history: History<'a, PrefsVal>,
}

impl<'a> UserPrefs<'a> {
    pub fn load(reader: &mut Reader<'a, UserKey, PrefsVal>, user: &UserKey) -> UserPrefs<'a> {
        let mut history = History::default();
        reader.scan_from(user, |k| k == user, |_, h| history = h);
        UserPrefs { history }
    }

    /// The user's preferences in force at `t`, if any.
    pub fn as_of(&self, t: Time) -> Option<&'a Prefs> {
        self.history.as_of(t).and_then(|v| v.prefs.as_deref())
    }
}
