//! Consent: reading a user's consent, as of a candidate's time, from the
//! consent slots of the user's profile (`profile`).
//!
//! A consent value carries the record's time and stream position: at equal
//! times the upsert keeps the greatest value, which is the one later in the
//! stream, and the as-of read can tell a channel's record from a `"*"`
//! record by recency (DESIGN.md §4 step 5).

use serde::{Deserialize, Serialize};

use super::history::History;
use super::profile::{ProfileEntry, ProfileVal};
use crate::spec::{Channel, Purpose};
use crate::time::Time;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsentVal {
    pub time: Time,
    pub seq: u64,
    pub granted: bool,
}

type KeyHistory<'a> = ((Option<Channel>, Purpose), History<'a, ProfileEntry>);

/// One user's consent history, loaded from the trace.
#[derive(Default)]
pub struct UserConsent<'a> {
    /// ((channel or `"*"`, purpose), history) of the user's keys.
    keys: Vec<KeyHistory<'a>>,
}

impl<'a> UserConsent<'a> {
    pub fn add(
        &mut self,
        channel: Option<Channel>,
        purpose: Purpose,
        history: History<'a, ProfileEntry>,
    ) {
        self.keys.push(((channel, purpose), history));
    }

    fn value(&self, channel: Option<Channel>, purpose: Purpose, t: Time) -> Option<ConsentVal> {
        let (_, h) = self.keys.iter().find(|(k, _)| *k == (channel, purpose))?;
        match &h.as_of(t)?.value {
            ProfileVal::Consent(v) => Some(*v),
            ProfileVal::Prefs(_) => unreachable!("consent slots hold consent"),
        }
    }

    /// Consent for `(channel, purpose)` as of `t`: the later of the channel's
    /// and `"*"`'s records in force; with neither, transactional is granted
    /// and marketing denied.
    pub fn granted(&self, channel: Channel, purpose: Purpose, t: Time) -> bool {
        let specific = self.value(Some(channel), purpose, t);
        let any = self.value(None, purpose, t);
        match specific.max(any) {
            Some(v) => v.granted,
            None => purpose == Purpose::Transactional,
        }
    }
}
