//! Preferences: reading a user's preferences, as of a candidate's time,
//! from the `Prefs` slot of the user's profile (`profile`).
//!
//! A `deleted` record is a present value holding no preferences (so that at
//! equal times the record later in the stream wins, deletions included); an
//! erasure is an absent value (which loses to any record at the same time,
//! as erasures rank first).

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::history::Part;
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

/// The preferences in force at `t` in the history of a user's `Prefs`
/// slot, if any.
pub fn prefs_as_of<'a>(slot: Part<'_, 'a, ProfileEntry>, t: Time) -> Option<&'a Prefs> {
    match &slot.as_of(t)?.value {
        ProfileVal::Prefs(v) => v.prefs.as_deref(),
        ProfileVal::Consent(_) => unreachable!("the prefs slot holds preferences"),
    }
}
