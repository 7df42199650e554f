//! Consent: a Differential collection keyed by (user, channel, purpose),
//! replaced by key (`arrange_from_upsert`), read as of a candidate's time.
//!
//! - input: consent upserts `(ConsentKey, Option<ConsentVal>, t)` from
//!   `route`; erasures upsert "absent" for all twelve keys of their user.
//! - output: an arrangement whose trace `decide` reads at exact millisecond
//!   times (the update times are the records' own times, finer than the
//!   timely capabilities that carry them).
//!
//! Keys hash by user only, so a user's consent lives on the worker that
//! decides for the user. The value carries the record's time and stream
//! position: at equal times the upsert keeps the greatest value, which is the
//! one later in the stream, and the as-of read can tell a channel's record
//! from a `"*"` record by recency (DESIGN.md §4 step 5).

use std::hash::{Hash, Hasher};

use differential_dataflow::operators::arrange::Arranged;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use super::UserKey;
use super::history::{History, Reader, Upsert, UpsertTrace, arrange_upserts};
use crate::spec::{Channel, Purpose};
use crate::time::Time;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConsentKey {
    pub user: UserKey,
    /// `None` is `"*"`.
    pub channel: Option<Channel>,
    pub purpose: Purpose,
}

/// Routes with the user's records: hashes the user only.
impl Hash for ConsentKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.user.hash(state);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsentVal {
    pub time: Time,
    pub seq: u64,
    pub granted: bool,
}

pub type ConsentUpsert = Upsert<ConsentKey, ConsentVal>;
pub type ConsentTrace = UpsertTrace<ConsentKey, ConsentVal>;

pub fn arrange_consent<'s>(
    upserts: Stream<'s, Time, Vec<ConsentUpsert>>,
) -> Arranged<'s, ConsentTrace> {
    arrange_upserts(upserts, "Consent")
}

type KeyHistory<'a> = ((Option<Channel>, Purpose), History<'a, ConsentVal>);

/// One user's consent history, loaded from the trace.
#[derive(Default)]
pub struct UserConsent<'a> {
    /// ((channel or `"*"`, purpose), history) of the user's keys.
    keys: Vec<KeyHistory<'a>>,
}

impl<'a> UserConsent<'a> {
    pub fn load(
        reader: &mut Reader<'a, ConsentKey, ConsentVal>,
        user: &UserKey,
    ) -> UserConsent<'a> {
        let start = ConsentKey {
            user: user.clone(),
            channel: None,
            purpose: Purpose::Marketing,
        };
        let mut keys = Vec::new();
        reader.scan_from(
            &start,
            |k| k.user == *user,
            |k, h| keys.push(((k.channel, k.purpose), h)),
        );
        UserConsent { keys }
    }

    fn value(&self, channel: Option<Channel>, purpose: Purpose, t: Time) -> Option<ConsentVal> {
        let (_, h) = self.keys.iter().find(|(k, _)| *k == (channel, purpose))?;
        h.as_of(t).copied()
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
