//! Consent: reading a user's consent, as of a candidate's time, from the
//! consent slots of the user's profile (`profile`).
//!
//! A consent value carries the record's time and stream position: at equal
//! times the upsert keeps the greatest value, which is the one later in the
//! stream, and the as-of read can tell a channel's record from a `"*"`
//! record by recency (docs/semantics.md step 5).

use serde::{Deserialize, Serialize};

use super::history::Part;
use super::profile::{ProfileEntry, ProfileVal};
use crate::spec::Purpose;
use crate::time::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsentVal {
    pub time: Time,
    pub seq: u64,
    pub granted: bool,
}

/// The consent value in force at `t` in the history of one consent slot.
pub fn consent_as_of(slot: Part<'_, '_, ProfileEntry>, t: Time) -> Option<ConsentVal> {
    match &slot.as_of(t)?.value {
        ProfileVal::Consent(v) => Some(*v),
        ProfileVal::Prefs(_) => unreachable!("consent slots hold consent"),
    }
}

/// Consent for a channel and `purpose`, from the channel's and `"*"`'s
/// values in force: the later of the two; with neither, transactional is
/// granted and marketing denied.
pub fn granted(specific: Option<ConsentVal>, any: Option<ConsentVal>, purpose: Purpose) -> bool {
    match specific.max(any) {
        Some(v) => v.granted,
        None => purpose == Purpose::Transactional,
    }
}
