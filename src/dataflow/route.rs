//! Route: turns parsed input records into the two inputs of the decision
//! dataflow, evaluating rule matching where the data is, before any
//! exchange. Sources call it on every record they emit (it is a function,
//! not an operator, so that a record is parsed and routed in one pass).
//!
//! - input: one parsed record with its partition position (`seq`) and its
//!   lateness verdict.
//! - output [`Routed`]: arrivals for `decide` — events with the rules they
//!   trigger and cancel, "plain" events that trigger and cancel nothing
//!   (most events: only their key fingerprint travels), erasures, late
//!   events — and profile upserts `(ProfileKey, Option<ProfileVal>, t)` for
//!   consent and preference records.
//!
//! Receipts name a dispatch, not a user, and a dispatch's id cannot be
//! traced back to its user: each receipt travels to every worker (one copy
//! per worker, [`ReceiptArrival::to`]), and the worker that made the
//! dispatch applies it (`decide`, fallback). Receipts are few beside
//! events, so the copies cost little.
//!
//! An erasure at t also upserts "absent" in every profile slot of its user
//! (preferences and all consent keys): the upsert arrangement prefers a
//! present value at equal times, which is exactly "erasure ranks before
//! consent and preferences at the same instant" (docs/semantics.md "Order").
//!
//! Times are unchanged: every record keeps its exact millisecond time.

use std::collections::HashMap;
use std::sync::Arc;

use compact_str::CompactString;
use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use timely::dataflow::Stream;

use super::UserKey;
use super::consent::ConsentVal;
use super::preferences::PrefsVal;
use super::profile::{ProfileKey, ProfileUpsert, ProfileVal, Slot};
use super::seen;
use crate::record::{EventRef, ReceiptStatus, Record};
use crate::spec::Spec;
use crate::time::Time;

/// A rule an event triggered: the candidate it creates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fire {
    pub rule: u16,
    pub decision: Time,
    /// Per-rule dedup key (canonical text); `None` if the rule has no dedup.
    pub dedup_key: Option<String>,
}

/// An event that triggers or cancels some rule, with what `decide` needs to
/// act on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventArrival {
    pub user: UserKey,
    /// `source + "/" + id`.
    pub key: CompactString,
    /// [`seen::fingerprint`] of the user and the key.
    pub fingerprint: u128,
    pub time: Time,
    pub seq: u64,
    pub hit: RuleHit,
}

/// The rules an event triggers and cancels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    pub fires: Vec<Fire>,
    /// Bit `i` set: rule `i`'s `cancel_on` matches this event's type.
    pub cancels: u64,
    /// Raw `data`, kept only when some rule fired (it becomes `vars`).
    pub data: Option<Box<str>>,
    /// Set when the event's type counts as the user being active
    /// (`[analytics] activity`).
    pub activity: Option<ActivityHit>,
}

/// What an activity event tells the analytics (`activity.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityHit {
    /// The event's `segment` field (a string as it is, another value as
    /// JSON); `None` when absent or null.
    pub segment: Option<CompactString>,
}

/// An event that triggers and cancels nothing — most events. Only its key
/// matters (docs/semantics.md "Duplicates"), so it travels as the fingerprint of
/// user and key: 40 bytes, where user id and key strings took 88. (The
/// fingerprint is kept as two words, so that an [`Arrival`] is 48 bytes,
/// not the 64 a 16-byte-aligned `u128` would pad it to.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlainArrival {
    /// The user's routing hash.
    pub user: u64,
    /// [`seen::fingerprint`] of the user and the key, low word first.
    fingerprint: [u64; 2],
    pub time: Time,
    pub seq: u64,
}

impl PlainArrival {
    pub fn new(user: u64, fingerprint: u128, time: Time, seq: u64) -> PlainArrival {
        PlainArrival {
            user,
            fingerprint: [fingerprint as u64, (fingerprint >> 64) as u64],
            time,
            seq,
        }
    }

    pub fn fingerprint(&self) -> u128 {
        self.fingerprint[0] as u128 | (self.fingerprint[1] as u128) << 64
    }
}

/// A receipt for a dispatch (§2), as the worker [`ReceiptArrival::to`]
/// gets it. Only receipts whose `dispatch_id` is a dispatch id as nudgeflow
/// writes them (a lower-case hyphenated UUID) travel: no other can name a
/// dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptArrival {
    /// The worker this copy is for: its index is its routing hash.
    pub to: u32,
    pub status: ReceiptStatus,
    /// The dispatch id as a UUID's 128 bits, high word first (two words,
    /// so that an [`Arrival`] stays 48 bytes).
    id: [u64; 2],
    pub time: Time,
    pub seq: u64,
}

impl ReceiptArrival {
    pub fn new(to: u32, status: ReceiptStatus, id: u128, time: Time, seq: u64) -> ReceiptArrival {
        ReceiptArrival {
            to,
            status,
            id: [(id >> 64) as u64, id as u64],
            time,
            seq,
        }
    }

    /// The same receipt, as the copy for worker `to`.
    pub fn for_worker(self, to: u32) -> ReceiptArrival {
        ReceiptArrival { to, ..self }
    }

    pub fn id(&self) -> u128 {
        (self.id[0] as u128) << 64 | self.id[1] as u128
    }
}

/// The 128 bits of a dispatch id written as nudgeflow writes them (lower
/// case, hyphenated); `None` for any other string.
pub fn parse_dispatch_id(s: &str) -> Option<u128> {
    let id = uuid::Uuid::try_parse(s).ok()?;
    let mut buf = uuid::Uuid::encode_buffer();
    (id.hyphenated().encode_lower(&mut buf) == s).then(|| id.as_u128())
}

// Every stage moves arrivals several times (source buffers, exchange,
// waiting), so their size counts.
const _: () = assert!(std::mem::size_of::<Arrival>() == 48);

/// What `decide` consumes, keyed by user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arrival {
    Plain(PlainArrival),
    Event(Box<EventArrival>),
    Erasure {
        user: UserKey,
        time: Time,
    },
    /// An event older than its partition's watermark: reported, no effect.
    Late(Box<LateArrival>),
    /// One worker's copy of a receipt.
    Receipt(ReceiptArrival),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateArrival {
    pub user: UserKey,
    pub event_key: CompactString,
    pub time: Time,
}

impl Arrival {
    /// The user's routing hash (for a receipt, the index of the worker its
    /// copy is for).
    pub fn hash(&self) -> u64 {
        match self {
            Arrival::Receipt(r) => r.to as u64,
            Arrival::Plain(p) => p.user,
            Arrival::Event(e) => e.user.hash,
            Arrival::Erasure { user, .. } => user.hash,
            Arrival::Late(l) => l.user.hash,
        }
    }
    /// The user, for all but plain events (which only carry its hash).
    pub fn user(&self) -> Option<&UserKey> {
        match self {
            Arrival::Plain(_) | Arrival::Receipt(_) => None,
            Arrival::Event(e) => Some(&e.user),
            Arrival::Erasure { user, .. } => Some(user),
            Arrival::Late(l) => Some(&l.user),
        }
    }
    pub fn time(&self) -> Time {
        match self {
            Arrival::Plain(p) => p.time,
            Arrival::Event(e) => e.time,
            Arrival::Erasure { time, .. } => *time,
            Arrival::Late(l) => l.time,
            Arrival::Receipt(r) => r.time,
        }
    }
}

/// Routes events with a spec. Remembers which rules each event type
/// triggers and cancels (types are a small vocabulary), so that globs are
/// matched once per type, not once per event.
pub struct Router {
    spec: Arc<Spec>,
    /// Event type → (rules it triggers, rules it cancels, as bit sets;
    /// whether it counts as activity).
    kinds: HashMap<CompactString, (u64, u64, bool), FixedState>,
}

/// How many distinct event types a router remembers.
const KIND_CACHE: usize = 4096;

impl Router {
    pub fn new(spec: Arc<Spec>) -> Router {
        Router {
            spec,
            kinds: HashMap::default(),
        }
    }

    fn masks(&mut self, kind: &str) -> (u64, u64, bool) {
        if let Some(m) = self.kinds.get(kind) {
            return *m;
        }
        let mut masks = (0u64, 0u64, false);
        for (i, rule) in self.spec.rules.iter().enumerate() {
            masks.0 |= (rule.triggers_on(kind) as u64) << i;
            masks.1 |= (rule.cancelled_by(kind) as u64) << i;
        }
        masks.2 = self
            .spec
            .analytics
            .as_ref()
            .is_some_and(|a| a.is_activity(kind));
        if self.kinds.len() < KIND_CACHE {
            self.kinds.insert(kind.into(), masks);
        }
        masks
    }

    /// Rule evaluation for one event: which rules fire (with decision times
    /// and dedup keys) and which rules' pending candidates it cancels.
    pub fn evaluate(&mut self, kind: &str, time: Time, data: Option<&str>) -> (Vec<Fire>, u64) {
        let (triggers, cancels, _) = self.masks(kind);
        (self.fires(triggers, time, data), cancels)
    }

    /// The candidates of the rules in `triggers` (a bit set) for an event
    /// at `time` with `data`.
    fn fires(&self, triggers: u64, time: Time, data: Option<&str>) -> Vec<Fire> {
        let mut fires = Vec::new();
        if triggers == 0 {
            return fires;
        }
        let mut parsed: Option<Value> = None;
        for (i, rule) in self.spec.rules.iter().enumerate() {
            if triggers >> i & 1 == 0 {
                continue;
            }
            let data = if rule.reads_data() {
                parsed.get_or_insert_with(|| {
                    data.and_then(|d| serde_json::from_str(d).ok())
                        .unwrap_or(Value::Null)
                })
            } else {
                &Value::Null
            };
            if let Some(decision) = rule.decision_time(time, data) {
                fires.push(Fire {
                    rule: i as u16,
                    decision,
                    dedup_key: rule.dedup_key(data),
                });
            }
        }
        fires
    }

    /// What an activity event of `kind` tells the analytics: its segment.
    fn activity(&self, data: Option<&str>) -> Option<ActivityHit> {
        let analytics = self.spec.analytics.as_ref()?;
        let segment = analytics
            .segment
            .as_ref()
            .and_then(|path| segment(data?, path));
        Some(ActivityHit { segment })
    }

    /// Routes one parsed event: the arrival `decide` needs, holding only what
    /// it needs (`data` only when a rule fired).
    pub fn event(&mut self, e: &EventRef<'_>, seq: u64) -> Arrival {
        let data = e.data;
        let (triggers, cancels, active) = self.masks(&e.kind);
        let fires = self.fires(triggers, e.time, data);
        let activity = if active { self.activity(data) } else { None };
        let key_parts: [&[u8]; 3] = [e.source.as_bytes(), b"/", e.id.as_bytes()];
        let fingerprint = seen::fingerprint_parts(&e.subject, &key_parts);
        if fires.is_empty() && cancels == 0 && activity.is_none() {
            return Arrival::Plain(PlainArrival::new(
                crate::record::user_hash(&e.subject),
                fingerprint,
                e.time,
                seq,
            ));
        }
        Arrival::Event(Box::new(EventArrival {
            user: UserKey::new(&e.subject),
            key: e.key(),
            fingerprint,
            time: e.time,
            seq,
            hit: RuleHit {
                data: data.filter(|_| !fires.is_empty()).map(Box::from),
                fires,
                cancels,
                activity,
            },
        }))
    }
}

/// The `segment` of an activity event: the field at `path` in its `data`,
/// a string as it is, another value as its compact JSON text; `None` when
/// missing or null. Most activity events are not a user's first, whose
/// segment is all that counts: the field is found without building the
/// whole `data` as a tree.
fn segment(data: &str, path: &[String]) -> Option<CompactString> {
    let mut text = data;
    for key in path {
        text = match crate::record::scan::scan_field(text, key) {
            Some(found) => found?,
            None => field(text, key)?.get(),
        };
    }
    match text.as_bytes().first()? {
        b'n' => None,
        // A string without escapes is its text between the quotes.
        b'"' if !text.contains('\\') => Some(CompactString::from(&text[1..text.len() - 1])),
        b'"' => serde_json::from_str::<String>(text)
            .ok()
            .map(CompactString::from),
        _ => {
            let value: Value = serde_json::from_str(text).ok()?;
            Some(CompactString::from(value.to_string()))
        }
    }
}

/// The value of `key` in a JSON object (the last, when repeated, as a
/// parsed object would hold it); `None` when `json` is not an object or
/// lacks the key.
fn field<'a>(json: &'a str, key: &str) -> Option<&'a RawValue> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::borrow::Cow;

    struct Find<'k>(&'k str);

    /// A key, borrowed from the input unless it has escapes.
    struct Key<'de>(Cow<'de, str>);

    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Text;
            impl<'de> Visitor<'de> for Text {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(s)))
                }
                fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(s.to_owned())))
                }
            }
            d.deserialize_str(Text)
        }
    }

    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<&'de RawValue>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut found = None;
            while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                if k == self.0 {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(Find(key)).ok().flatten()
}

/// The two routed streams a source produces: arrivals and profile upserts.
pub type Streams<'s> = (
    Stream<'s, Time, Vec<Arrival>>,
    Stream<'s, Time, Vec<ProfileUpsert>>,
);

/// The outputs of routing, buffered until a source sends them.
#[derive(Default)]
pub struct Routed {
    pub arrivals: Vec<Arrival>,
    pub profile: Vec<ProfileUpsert>,
}

impl Routed {
    /// A routed event (`Router::event`).
    pub fn event(&mut self, arrival: Arrival) {
        self.arrivals.push(arrival);
    }

    /// A late event: reported, not decided.
    pub fn late(&mut self, e: &EventRef<'_>) {
        self.arrivals.push(Arrival::Late(Box::new(LateArrival {
            user: UserKey::new(&e.subject),
            event_key: e.key(),
            time: e.time,
        })));
    }

    /// Any other record (not late: late non-event records are dead letters);
    /// a receipt is copied for each of the `peers` workers.
    pub fn record(&mut self, record: Record, seq: u64, peers: usize) {
        match record {
            Record::Event(_) => unreachable!("events are routed by `Router::event`"),
            Record::Erasure(r) => {
                let user = UserKey::new(&r.user);
                for slot in Slot::all() {
                    self.profile
                        .push((ProfileKey::new(&user, slot), None, r.time));
                }
                self.arrivals.push(Arrival::Erasure { user, time: r.time });
            }
            Record::Consent(c) => {
                let slot = Slot::Consent(c.channel, c.purpose);
                let key = ProfileKey::new(&UserKey::new(&c.user), slot);
                let value = ProfileVal::Consent(ConsentVal {
                    time: c.time,
                    seq,
                    granted: c.granted,
                });
                self.profile.push((key, Some(value), c.time));
            }
            Record::Prefs(p) => {
                let key = ProfileKey::new(&UserKey::new(&p.user), Slot::Prefs);
                let value = ProfileVal::Prefs(PrefsVal {
                    seq,
                    prefs: p.prefs.map(Arc::new),
                });
                self.profile.push((key, Some(value), p.time));
            }
            Record::Receipt(r) => {
                if let Some(id) = parse_dispatch_id(&r.dispatch_id) {
                    self.arrivals.extend((0..peers as u32).map(|to| {
                        Arrival::Receipt(ReceiptArrival::new(to, r.status, id, r.time, seq))
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_masks_are_the_globs_and_are_remembered_per_type() {
        let spec = Spec::parse(
            "t.toml",
            r#"
[[rule]]
name = "cart"
on = "cart.*"
purpose = "marketing"
channels = ["push"]
cancel_on = ["order.placed"]

[[rule]]
name = "big-cart"
on = "cart.abandoned"
where = [{ field = "value", op = ">", value = 100 }]
purpose = "marketing"
channels = ["email"]
"#,
        )
        .unwrap();
        let mut router = Router::new(Arc::new(spec));
        for _ in 0..2 {
            let (fires, cancels) = router.evaluate("cart.abandoned", 5, Some(r#"{"value":150}"#));
            assert_eq!(fires.iter().map(|f| f.rule).collect::<Vec<_>>(), [0, 1]);
            assert_eq!(cancels, 0);
            let (fires, _) = router.evaluate("cart.abandoned", 5, Some(r#"{"value":50}"#));
            assert_eq!(fires.iter().map(|f| f.rule).collect::<Vec<_>>(), [0]);
            let (fires, cancels) = router.evaluate("order.placed", 5, None);
            assert!(fires.is_empty());
            assert_eq!(cancels, 0b01);
            assert!(router.evaluate("cart", 5, None).0.is_empty());
        }
        assert_eq!(router.kinds.len(), 3);
    }

    #[test]
    fn a_segment_is_found_as_a_parsed_object_holds_it() {
        let path = |p: &str| p.split('.').map(String::from).collect::<Vec<_>>();
        let seg = |data: &str, p: &str| segment(data, &path(p)).map(|s| s.to_string());
        let data = r#"{"a":{"b":"x","n":null},"s":5,"f":5.0,"t":true,"o":{"k":[1, 2]}}"#;
        assert_eq!(seg(data, "a.b").as_deref(), Some("x"));
        assert_eq!(seg(data, "s").as_deref(), Some("5"));
        assert_eq!(seg(data, "f").as_deref(), Some("5.0"));
        assert_eq!(seg(data, "t").as_deref(), Some("true"));
        assert_eq!(seg(data, "o").as_deref(), Some(r#"{"k":[1,2]}"#));
        assert_eq!(seg(data, "a.n"), None);
        assert_eq!(seg(data, "a.missing"), None);
        assert_eq!(seg(data, "s.deeper"), None);
        // Escapes (left to serde_json) and a repeated key: the last.
        assert_eq!(seg(r#"{"s\u0065g":"y\n"}"#, "seg").as_deref(), Some("y\n"));
        assert_eq!(seg(r#"{"s":"1","s":"2"}"#, "s").as_deref(), Some("2"));
        assert_eq!(seg(r#"[1]"#, "s"), None);
    }
}
