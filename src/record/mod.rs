//! Typed input records (docs/semantics.md (input records)) and their parsing from one JSON line.
//!
//! Parsing never panics and never guesses: a line that is not valid JSON,
//! misses a required field, has a field of the wrong type, an unparsable time,
//! an unknown channel, purpose, status or time zone yields an error string
//! that names the field and the problem (`subject: expected a string, found
//! the number 42`, `missing field: time`; `reason.rs` rewords serde_json's
//! errors so). The source turns it into a dead letter (see
//! [`output::DeadLetter`]).

pub mod output;
mod reason;
pub mod scan;

use std::borrow::Cow;

use compact_str::CompactString;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::spec::vocab::{Channel, Priority, Purpose};
use crate::time::{Time, parse_rfc3339};

/// The input streams, in their per-instant application order (docs/semantics.md
/// "Order": erasures 0 < consent 1 < preferences 2 < receipts 3 < events 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StreamKind {
    Erasures = 0,
    Consent = 1,
    Preferences = 2,
    Receipts = 3,
    Events = 4,
}

impl StreamKind {
    pub const ALL: [StreamKind; 5] = [
        StreamKind::Erasures,
        StreamKind::Consent,
        StreamKind::Preferences,
        StreamKind::Receipts,
        StreamKind::Events,
    ];
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Erasures => "erasures",
            StreamKind::Consent => "consent",
            StreamKind::Preferences => "preferences",
            StreamKind::Receipts => "receipts",
            StreamKind::Events => "events",
        }
    }
    pub fn file_name(self) -> &'static str {
        match self {
            StreamKind::Erasures => "erasures.jsonl",
            StreamKind::Consent => "consent.jsonl",
            StreamKind::Preferences => "preferences.jsonl",
            StreamKind::Receipts => "receipts.jsonl",
            StreamKind::Events => "events.jsonl",
        }
    }
}

/// A CloudEvents 1.0 event, as the dataflow needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub user: String,
    /// `source + "/" + id`.
    pub key: String,
    pub kind: String,
    pub time: Time,
    /// The raw JSON text of `data`, if present and not null.
    pub data: Option<Box<str>>,
}

/// Quiet hours: `[start, end)` in minutes after local midnight in `tz`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuietHours {
    pub start_min: u16,
    pub end_min: u16,
    /// UTC when the record names none.
    pub tz: Zone,
}

/// A time zone of the bundled tz database, found by its exact IANA name
/// once, when a record is parsed. Every `Zone` has that name (both
/// constructors ensure it): zones compare, order, hash and serialize by it,
/// which jiff's `TimeZone` does not do (it has no order, hash or serde),
/// and a worker that receives a zone looks it up again by name. Cloning is
/// cheap: the zone's data is shared.
#[derive(Clone, Debug)]
pub struct Zone(TimeZone);

impl Zone {
    pub const UTC: Zone = Zone(TimeZone::UTC);

    /// The zone of the IANA name `name`, spelled exactly (jiff also accepts
    /// other letter cases; the IANA names do not).
    pub fn named(name: &str) -> Result<Zone, String> {
        TimeZone::get(name)
            .ok()
            .filter(|tz| tz.iana_name() == Some(name))
            .map(Zone)
            .ok_or_else(|| {
                format!("unknown time zone {name:?}; use an IANA name such as \"Europe/Berlin\"")
            })
    }

    pub fn name(&self) -> &str {
        self.0.iana_name().unwrap_or_default()
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.0
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Zone {}

impl PartialOrd for Zone {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Zone {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl std::hash::Hash for Zone {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Cow::<str>::deserialize(d)?;
        Zone::named(&name).map_err(serde::de::Error::custom)
    }
}

/// A user's preferences (one record replaces the previous one).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Prefs {
    /// `None`: the record had no `channels` (rule order applies).
    pub channels: Option<Vec<Channel>>,
    pub quiet_hours: Option<QuietHours>,
    pub muted_rules: Vec<String>,
    /// Inline up to 24 bytes: copied into every dispatch without allocating.
    pub locale: Option<CompactString>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PrefsRecord {
    pub user: CompactString,
    pub time: Time,
    /// `None` deletes the user's preferences.
    pub prefs: Option<Prefs>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConsentRecord {
    pub user: CompactString,
    /// `None` is `"*"`: every channel.
    pub channel: Option<Channel>,
    pub purpose: Purpose,
    pub granted: bool,
    pub time: Time,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ErasureRecord {
    pub user: CompactString,
    pub time: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptStatus {
    Delivered,
    Failed,
    Bounced,
    Opened,
    Clicked,
    Complained,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReceiptRecord {
    pub dispatch_id: String,
    pub status: ReceiptStatus,
    pub time: Time,
}

/// One parsed input line.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Event(Event),
    Prefs(PrefsRecord),
    Consent(ConsentRecord),
    Erasure(ErasureRecord),
    Receipt(ReceiptRecord),
}

impl Record {
    pub fn time(&self) -> Time {
        match self {
            Record::Event(r) => r.time,
            Record::Prefs(r) => r.time,
            Record::Consent(r) => r.time,
            Record::Erasure(r) => r.time,
            Record::Receipt(r) => r.time,
        }
    }
    /// The user the record belongs to (receipts are keyed by dispatch id).
    pub fn user(&self) -> Option<&str> {
        match self {
            Record::Event(r) => Some(&r.user),
            Record::Prefs(r) => Some(&r.user),
            Record::Consent(r) => Some(&r.user),
            Record::Erasure(r) => Some(&r.user),
            Record::Receipt(_) => None,
        }
    }
}

/// The hash that routes a user's records to its worker: every per-user
/// stage exchanges by it, so one worker sees all of a user's records.
pub fn user_hash(user: &str) -> u64 {
    differential_dataflow::Hashable::hashed(&user)
}

fn time_field(name: &str, s: &str) -> Result<Time, String> {
    parse_rfc3339(s).map_err(|e| format!("{name}: {e}"))
}

/// Reads `line` into `T` with serde_json; an error names the field
/// (`reason.rs`). The record must be an object: serde's derived structs
/// would also read a list, its items taken as the fields in order.
fn from_json<'a, T: Deserialize<'a>>(line: &'a str, fields: &[reason::Field]) -> Result<T, String> {
    if !line
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .starts_with('{')
    {
        return Err(reason::not_object(line));
    }
    serde_json::from_str(line).map_err(|e| reason::explain(line, fields, e))
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    subject: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Deserializing into `Checked` parses a JSON value fully, allocating
/// nothing: numbers must fit a double and strings must be Unicode (no lone
/// surrogates), which skipping over a value (`RawValue`) does not check.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Whether `data` could hold what skipping over it does not check: a
/// `\u` escape (maybe a lone surrogate), a number with an exponent (maybe
/// beyond a double) or a run of more than 300 digits. Most data has none,
/// and is spared the second parse.
fn needs_full_check(data: &[u8]) -> bool {
    // A `\u` escape is a backslash and a `u`; an exponent is an `e` or `E`
    // right after a digit. One pass over byte pairs with no early exit,
    // which the compiler vectorises (searching for `e` stopped at every
    // `e` in every string).
    let suspicious = data
        .iter()
        .zip(data.iter().skip(1))
        .fold(false, |found, (&a, &b)| {
            found | ((a == b'\\') & (b == b'u')) | (a.is_ascii_digit() & ((b | 0x20) == b'e'))
        });
    // A run of more than 300 digits needs more than 300 bytes.
    suspicious
        || (data.len() > 300
            && data
                .split(|b| !b.is_ascii_digit())
                .any(|run| run.len() > 300))
}

/// A validated event borrowing its line: what routing needs, nothing
/// copied.
pub struct EventRef<'a> {
    pub id: Cow<'a, str>,
    pub source: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub subject: Cow<'a, str>,
    pub time: Time,
    /// The raw JSON text of `data`; `None` when absent or null.
    pub data: Option<&'a str>,
}

impl EventRef<'_> {
    /// The event key (docs/semantics.md (input records)): `source + "/" + id`.
    pub fn key(&self) -> CompactString {
        let mut key = CompactString::with_capacity(self.source.len() + 1 + self.id.len());
        key.push_str(&self.source);
        key.push('/');
        key.push_str(&self.id);
        key
    }
}

/// Parses an event line: with the scanner when the line has its common
/// shape (`scan.rs`), else with serde_json, which also names what is wrong.
pub fn parse_event_ref(line: &str) -> Result<EventRef<'_>, String> {
    let (id, source, kind, subject, time, data) = match scan::scan_event(line) {
        Some(f) => (
            Cow::Borrowed(f.id),
            Cow::Borrowed(f.source),
            Cow::Borrowed(f.kind),
            Cow::Borrowed(f.subject),
            Cow::Borrowed(f.time),
            f.data,
        ),
        None => {
            let raw: RawEvent = from_json(line, reason::EVENT)?;
            let data = raw.data.map(RawValue::get).filter(|d| *d != "null");
            (raw.id, raw.source, raw.kind, raw.subject, raw.time, data)
        }
    };
    if let Some(data) = data.filter(|d| needs_full_check(d.as_bytes())) {
        serde_json::from_str::<Checked>(data).map_err(|e| reason::bad_data(line, data, &e))?;
    }
    Ok(EventRef {
        time: time_field("time", &time)?,
        id,
        source,
        kind,
        subject,
        data,
    })
}

pub fn parse_event(line: &str) -> Result<Event, String> {
    let e = parse_event_ref(line)?;
    let key = e.key().into();
    let data = e.data.map(Box::<str>::from);
    Ok(Event {
        user: e.subject.into_owned(),
        key,
        kind: e.kind.into_owned(),
        time: e.time,
        data,
    })
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct RawQuiet<'a> {
    #[serde(borrow)]
    start: Cow<'a, str>,
    #[serde(borrow)]
    end: Cow<'a, str>,
    #[serde(borrow, default)]
    tz: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct RawPrefs<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(borrow, default)]
    channels: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default, deserialize_with = "quiet_object")]
    quiet_hours: Option<RawQuiet<'a>>,
    #[serde(default)]
    muted_rules: Option<Vec<String>>,
    #[serde(default)]
    locale: Option<CompactString>,
}

/// `quiet_hours` as an object or null (absent); serde's derived struct
/// alone would also read a list, its items taken as the fields in order.
fn quiet_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RawQuiet<'de>>, D::Error> {
    use serde::de::{Error, Unexpected};
    match Option::<&'de RawValue>::deserialize(d)? {
        None => Ok(None),
        Some(raw) if raw.get().starts_with('{') => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(D::Error::custom),
        Some(_) => Err(D::Error::invalid_type(
            Unexpected::Other("a value that is not an object"),
            &"an object",
        )),
    }
}

fn parse_hhmm(field: &str, s: &str) -> Result<u16, String> {
    let bad = || format!("{field}: {s:?} is not a time of day; write \"HH:MM\" (00:00 to 23:59)");
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return Err(bad());
    }
    let h: u16 = s[..2].parse().map_err(|_| bad())?;
    let m: u16 = s[3..].parse().map_err(|_| bad())?;
    if h > 23 || m > 59 || !b[..2].iter().chain(&b[3..]).all(u8::is_ascii_digit) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_channel(field: &str, s: &str) -> Result<Channel, String> {
    Channel::parse(s).ok_or_else(|| {
        format!(
            "{field}: unknown channel {s:?}; channels are {}",
            Channel::NAMES
        )
    })
}

pub fn parse_prefs(line: &str) -> Result<PrefsRecord, String> {
    let raw: RawPrefs = match scan::scan_prefs(line) {
        Some(raw) => raw,
        None => from_json(line, reason::PREFS)?,
    };
    let time = time_field("time", &raw.time)?;
    let user = CompactString::from(&*raw.user);
    let channels = match raw.channels {
        None => None,
        Some(list) => {
            let mut out: Vec<Channel> = Vec::with_capacity(list.len());
            for c in &list {
                let c = parse_channel("channels", c)?;
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            Some(out)
        }
    };
    let quiet_hours = match raw.quiet_hours {
        None => None,
        Some(q) => {
            let tz = match q.tz {
                None => Zone::UTC,
                Some(name) => Zone::named(&name).map_err(|e| format!("quiet_hours.tz: {e}"))?,
            };
            Some(QuietHours {
                start_min: parse_hhmm("quiet_hours.start", &q.start)?,
                end_min: parse_hhmm("quiet_hours.end", &q.end)?,
                tz,
            })
        }
    };
    // A deletion is still validated whole: a bad field makes it bad input.
    if raw.deleted == Some(true) {
        return Ok(PrefsRecord {
            user,
            time,
            prefs: None,
        });
    }
    Ok(PrefsRecord {
        user,
        time,
        prefs: Some(Prefs {
            channels,
            quiet_hours,
            muted_rules: raw.muted_rules.unwrap_or_default(),
            locale: raw.locale,
        }),
    })
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct RawConsent<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    purpose: Cow<'a, str>,
    granted: bool,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

pub fn parse_consent(line: &str) -> Result<ConsentRecord, String> {
    let raw: RawConsent = match scan::scan_consent(line) {
        Some(raw) => raw,
        None => from_json(line, reason::CONSENT)?,
    };
    let time = time_field("time", &raw.time)?;
    let channel = if raw.channel == "*" {
        None
    } else {
        Some(parse_channel("channel", &raw.channel)?)
    };
    let purpose = Purpose::parse(&raw.purpose).ok_or_else(|| {
        format!(
            "purpose: unknown purpose {:?}; write \"marketing\" or \"transactional\"",
            raw.purpose
        )
    })?;
    Ok(ConsentRecord {
        user: CompactString::from(&*raw.user),
        channel,
        purpose,
        granted: raw.granted,
        time,
    })
}

#[derive(Deserialize)]
struct RawErasure<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

pub fn parse_erasure(line: &str) -> Result<ErasureRecord, String> {
    let raw: RawErasure = from_json(line, reason::ERASURE)?;
    Ok(ErasureRecord {
        time: time_field("time", &raw.time)?,
        user: CompactString::from(&*raw.user),
    })
}

#[derive(Deserialize)]
struct RawReceipt<'a> {
    #[serde(borrow)]
    dispatch_id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

pub fn parse_receipt(line: &str) -> Result<ReceiptRecord, String> {
    let raw: RawReceipt = from_json(line, reason::RECEIPT)?;
    let status = match &*raw.status {
        "delivered" => ReceiptStatus::Delivered,
        "failed" => ReceiptStatus::Failed,
        "bounced" => ReceiptStatus::Bounced,
        "opened" => ReceiptStatus::Opened,
        "clicked" => ReceiptStatus::Clicked,
        "complained" => ReceiptStatus::Complained,
        other => {
            return Err(format!(
                "status: unknown status {other:?}; write one of delivered, failed, bounced, opened, clicked, complained"
            ));
        }
    };
    Ok(ReceiptRecord {
        dispatch_id: raw.dispatch_id.into_owned(),
        status,
        time: time_field("time", &raw.time)?,
    })
}

/// Parses one line of `stream`.
pub fn parse_line(stream: StreamKind, line: &str) -> Result<Record, String> {
    match stream {
        StreamKind::Events => parse_event(line).map(Record::Event),
        StreamKind::Preferences => parse_prefs(line).map(Record::Prefs),
        StreamKind::Consent => parse_consent(line).map(Record::Consent),
        StreamKind::Erasures => parse_erasure(line).map(Record::Erasure),
        StreamKind::Receipts => parse_receipt(line).map(Record::Receipt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_parses_and_keys() {
        let e = parse_event(r#"{"specversion":"1.0","id":"e-1","source":"shop","type":"cart.abandoned","time":"2026-03-01T10:15:00Z","subject":"u-42","data":{"cart_value":59.9}}"#).unwrap();
        assert_eq!(e.key, "shop/e-1");
        assert_eq!(e.user, "u-42");
        assert_eq!(e.data.as_deref(), Some(r#"{"cart_value":59.9}"#));
        let e = parse_event(r#"{"id":"e\"1","source":"s","type":"t","time":"2026-03-01T10:15:00Z","subject":"u","data":null}"#).unwrap();
        assert_eq!(e.key, "s/e\"1");
        assert_eq!(e.data, None);
    }

    #[test]
    fn only_suspicious_data_gets_the_full_check() {
        assert!(!needs_full_check(
            br#"{"segment":"ecommerce","cart_value":446.64,"e":1}"#
        ));
        assert!(needs_full_check(br#"{"a":1e400}"#));
        assert!(needs_full_check(br#"{"a":[1.5E3]}"#));
        assert!(needs_full_check(br#"{"a":"\ud800"}"#));
        assert!(!needs_full_check(br#"{"a":"\n"}"#));
        assert!(needs_full_check(br#"{"a":[1,2e3]}"#));
        let long = format!(r#"{{"a":{}}}"#, "9".repeat(301));
        assert!(needs_full_check(long.as_bytes()));
        let ok = format!(r#"{{"a":{}}}"#, "9".repeat(300));
        assert!(!needs_full_check(ok.as_bytes()));
        assert!(parse_event(&format!(r#"{{"id":"1","source":"s","type":"t","time":"2026-03-01T10:15:00Z","subject":"u","data":{{"a":1{}}}}}"#, "0".repeat(400))).is_err());
        assert!(parse_event(r#"{"id":"1","source":"s","type":"t","time":"2026-03-01T10:15:00Z","subject":"u","data":{"a":"\udc00"}}"#).is_err());
    }

    #[test]
    fn bad_events_name_the_problem() {
        let missing =
            parse_event(r#"{"id":"1","source":"s","type":"t","time":"2026-03-01T10:15:00Z"}"#)
                .unwrap_err();
        assert_eq!(missing, "missing field: subject");
        let typed = parse_event(
            r#"{"id":1,"source":"s","type":"t","time":"2026-03-01T10:15:00Z","subject":"u"}"#,
        )
        .unwrap_err();
        assert_eq!(typed, "id: expected a string, found the number 1");
        let time = parse_event(r#"{"id":"1","source":"s","type":"t","time":"soon","subject":"u"}"#)
            .unwrap_err();
        assert!(
            time.starts_with("time: \"soon\" is not an RFC 3339 time"),
            "{time}"
        );
        let cut = parse_event(r#"{"id":"1","source":"s","type":"t","ti"#).unwrap_err();
        assert!(
            cut.starts_with("not valid JSON: the line ends early"),
            "{cut}"
        );
        assert_eq!(
            parse_event("not json").unwrap_err(),
            "not valid JSON: a word without quotes (strings need double quotes) at column 2"
        );
    }

    #[test]
    fn prefs_validate_channels_quiet_hours_and_zone() {
        let p = parse_prefs(r#"{"user":"u","time":"2026-03-01T00:00:00Z","channels":["email","push","email"],"quiet_hours":{"start":"22:00","end":"07:00","tz":"Europe/Berlin"},"locale":"de-DE"}"#).unwrap();
        let prefs = p.prefs.unwrap();
        assert_eq!(prefs.channels, Some(vec![Channel::Email, Channel::Push]));
        assert_eq!(prefs.quiet_hours.unwrap().start_min, 22 * 60);
        let del =
            parse_prefs(r#"{"user":"u","time":"2026-03-01T00:00:00Z","deleted":true}"#).unwrap();
        assert!(del.prefs.is_none());
        assert!(
            parse_prefs(
                r#"{"user":"u","time":"2026-03-01T00:00:00Z","deleted":true,"channels":["fax"]}"#
            )
            .is_err(),
            "a deletion is validated whole"
        );
        assert!(Zone::named("europe/berlin").is_err());
        assert!(Zone::named("Europe/Berlin").is_ok());
        assert!(
            parse_prefs(r#"{"user":"u","time":"2026-03-01T00:00:00Z","channels":["fax"]}"#)
                .unwrap_err()
                .contains("unknown channel")
        );
        assert!(parse_prefs(r#"{"user":"u","time":"2026-03-01T00:00:00Z","quiet_hours":{"start":"22:00","end":"07:00","tz":"Mars/Olympus"}}"#).unwrap_err().contains("time zone"));
        assert!(parse_prefs(r#"{"user":"u","time":"2026-03-01T00:00:00Z","quiet_hours":{"start":"24:00","end":"07:00"}}"#).unwrap_err().contains("HH:MM"));
    }

    /// Quiet hours hold the zone found when the record was parsed; zones
    /// compare, order, hash and travel between workers by IANA name.
    #[test]
    fn zones_are_parsed_once_and_known_by_name() {
        let quiet = |tz: &str| {
            let line = format!(
                r#"{{"user":"u","time":"2026-03-01T00:00:00Z","quiet_hours":{{"start":"22:00","end":"07:00"{tz}}}}}"#
            );
            parse_prefs(&line)
                .unwrap()
                .prefs
                .unwrap()
                .quiet_hours
                .unwrap()
        };
        let berlin = quiet(r#","tz":"Europe/Berlin""#);
        assert_eq!(berlin.tz.name(), "Europe/Berlin");
        let at = jiff::Timestamp::from_second(1_772_323_200).unwrap();
        assert_eq!(berlin.tz.time_zone().to_offset(at).seconds(), 3600);
        // No `tz` is UTC, the same as naming it.
        assert_eq!(quiet("").tz, Zone::UTC);
        assert_eq!(quiet(r#","tz":"UTC""#), quiet(""));
        assert_eq!(Zone::UTC.name(), "UTC");

        let zone = |name| Zone::named(name).unwrap();
        assert_eq!(zone("Asia/Tokyo"), zone("Asia/Tokyo"));
        assert!(zone("America/New_York") < zone("Europe/Berlin"));
        let hash = |z: &Zone| {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(z)
        };
        assert_eq!(hash(&zone("Asia/Tokyo")), hash(&zone("Asia/Tokyo")));
        assert_ne!(hash(&zone("Asia/Tokyo")), hash(&zone("Asia/Seoul")));

        let json = serde_json::to_string(&berlin).unwrap();
        assert_eq!(
            json,
            r#"{"start_min":1320,"end_min":420,"tz":"Europe/Berlin"}"#
        );
        let back: QuietHours = serde_json::from_str(&json).unwrap();
        assert_eq!(back, berlin);
        assert_eq!(back.tz.time_zone().to_offset(at).seconds(), 3600);
        let bad = serde_json::from_str::<Zone>(r#""europe/berlin""#).unwrap_err();
        assert!(bad.to_string().contains("unknown time zone"), "{bad}");
    }

    #[test]
    fn consent_star_and_purposes() {
        let c = parse_consent(r#"{"user":"u","channel":"*","purpose":"marketing","granted":true,"time":"2026-03-01T00:00:00Z"}"#).unwrap();
        assert_eq!(c.channel, None);
        assert!(parse_consent(r#"{"user":"u","channel":"sms","purpose":"spam","granted":true,"time":"2026-03-01T00:00:00Z"}"#).is_err());
        assert!(parse_consent(r#"{"user":"u","channel":"pager","purpose":"marketing","granted":true,"time":"2026-03-01T00:00:00Z"}"#).is_err());
        assert!(parse_consent(r#"{"user":"u","channel":"sms","purpose":"marketing","granted":"yes","time":"2026-03-01T00:00:00Z"}"#).is_err());
    }
}
