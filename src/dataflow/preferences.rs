//! Preferences: reading a user's preferences, as of a candidate's time,
//! from the `Prefs` slot of the user's profile (`profile`).
//!
//! A `deleted` record is a present value holding no preferences (so that at
//! equal times the record later in the stream wins, deletions included); an
//! erasure is an absent value (which loses to any record at the same time,
//! as erasures rank first).

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::history::History;
use super::profile::{ProfileEntry, ProfileVal};
use crate::record::Prefs;
use crate::time::Time;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PrefsVal {
    pub seq: u64,
    /// `None`: deleted.
    /// Shared: trace merges copy a pointer, not the preferences.
    pub prefs: Option<Arc<Prefs>>,
}

/// One user's preference history, loaded from the trace.
#[derive(Default)]
pub struct UserPrefs<'a> {
    history: History<'a, ProfileEntry>,
}

impl<'a> UserPrefs<'a> {
    pub fn new(history: History<'a, ProfileEntry>) -> Self {
        UserPrefs { history }
    }

    /// The user's preferences in force at `t`, if any.
    pub fn as_of(&self, t: Time) -> Option<&'a Prefs> {
        match &self.history.as_of(t)?.value {
            ProfileVal::Prefs(v) => v.prefs.as_deref(),
            ProfileVal::Consent(_) => unreachable!("the prefs slot holds preferences"),
        }
    }
}
