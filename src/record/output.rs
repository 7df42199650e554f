//! Output records (docs/semantics.md (output records)) and their JSON lines.
//!
//! Decisions travel through the dataflow as compact typed values (rule
//! indices, not names); [`Decision::to_json_line`] renders them with the spec
//! at the sink. Field order follows docs/semantics.md (output records).

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::num::NonZeroU128;
use uuid::Uuid;

use crate::record::StreamKind;
use crate::spec::{Cap, Channel, Purpose, Spec};
use crate::time::{Time, rfc3339_bytes};

/// Why a candidate ended without a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    Muted,
    Holdout,
    Duplicate,
    Cancelled,
    NoChannel,
    RateLimited,
    Erased,
    Undeliverable,
    Late,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Muted => "muted",
            Reason::Holdout => "holdout",
            Reason::Duplicate => "duplicate",
            Reason::Cancelled => "cancelled",
            Reason::NoChannel => "no_channel",
            Reason::RateLimited => "rate_limited",
            Reason::Erased => "erased",
            Reason::Undeliverable => "undeliverable",
            Reason::Late => "late",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dispatch {
    pub user: CompactString,
    pub rule: u16,
    pub channel: Channel,
    pub attempt: u32,
    pub event_key: CompactString,
    pub event_time: Time,
    pub decision_time: Time,
    pub locale: Option<CompactString>,
    /// Raw JSON of the triggering event's `data` (`None` renders as null).
    pub vars: Option<Box<str>>,
    /// The [`dispatch_id`], when `decide` already computed it (a UUID v5 is
    /// never zero); `None`: computed from the fields when needed.
    pub id: Option<NonZeroU128>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Suppression {
    pub user: CompactString,
    /// `None` for `late` (no rule was evaluated).
    pub rule: Option<u16>,
    pub event_key: CompactString,
    pub time: Time,
    pub reason: Reason,
    pub detail: Detail,
}

/// What explains a suppression beyond its reason: the `detail` object of
/// its line (docs/semantics.md, "Suppressions"). Caps are named by their
/// index among the spec's caps on their purpose or channel, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Detail {
    /// Nothing to add to the reason (`muted`, `holdout`, `erased`, `late`).
    #[default]
    None,
    /// `cancelled`: the event key of the cancelling event.
    CancelledBy(CompactString),
    /// `duplicate`: the event key of the most recent first-attempt dispatch
    /// of the same user, rule and dedup key (its id is derived from it).
    DuplicateOf(CompactString),
    /// `no_channel`, or `rate_limited` at channel selection: each of the
    /// rule's channels, in the rule's order, with why it was ruled out.
    Channels(Vec<(Channel, RuledOut)>),
    /// `rate_limited` by a purpose cap: the first full one.
    PurposeCap(Purpose, u16),
}

/// Why channel selection ruled a channel out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuledOut {
    /// The user's `channels` preference does not list it.
    NotInPreferences,
    /// No consent for the channel and the rule's purpose as of the decision.
    NoConsent,
    /// This channel cap (index among the channel's caps) was full.
    Cap(u16),
}

impl RuledOut {
    pub fn as_str(self) -> &'static str {
        match self {
            RuledOut::NotInPreferences => "not_in_preferences",
            RuledOut::NoConsent => "no_consent",
            RuledOut::Cap(_) => "cap",
        }
    }
}

/// What the decision dataflow emits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Decision {
    Dispatch(Dispatch),
    Suppression(Suppression),
    Churn(ChurnSignal),
}

/// A churn signal (DESIGN.md §3, §5): the user's P(alive) fell below the
/// spec's threshold at `time`, a UTC midnight.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChurnSignal {
    pub user: CompactString,
    pub time: Time,
    /// P(alive)'s bits, so that a decision compares and hashes whole.
    p_alive: u64,
}

impl ChurnSignal {
    pub fn new(user: CompactString, time: Time, p_alive: f64) -> ChurnSignal {
        ChurnSignal {
            user,
            time,
            p_alive: p_alive.to_bits(),
        }
    }

    pub fn p_alive(&self) -> f64 {
        f64::from_bits(self.p_alive)
    }

    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(120);
        self.write_json(&mut out);
        finish(out)
    }

    /// `{"user","time","p_alive","signal":"churn.risk_high"}`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"user\":");
        push_json_str(out, &self.user);
        out.extend_from_slice(b",\"time\":");
        push_time(out, self.time);
        out.extend_from_slice(b",\"p_alive\":");
        out.extend_from_slice(
            serde_json::Value::from(self.p_alive())
                .to_string()
                .as_bytes(),
        );
        out.extend_from_slice(b",\"signal\":\"churn.risk_high\"}");
    }
}

/// A bad input record, kept whole with where it came from and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadLetter {
    pub stream: StreamKind,
    pub at: Position,
    pub reason: String,
    pub record: Payload,
}

impl DeadLetter {
    /// Cuts the record to its first `limit` bytes (at a character boundary
    /// for text) when it is longer, saying so in the reason: a dead letter
    /// must fit in one message however large the bad record was.
    pub fn cut(&mut self, limit: usize) {
        let len = match &self.record {
            Payload::Text(t) => t.len(),
            Payload::Binary(b) => b.len(),
        };
        if len <= limit {
            return;
        }
        let kept = match &mut self.record {
            Payload::Text(t) => {
                let mut end = limit;
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                t.truncate(end);
                end
            }
            Payload::Binary(b) => {
                b.truncate(limit);
                limit
            }
        };
        self.reason.push_str(&format!(
            " (the record, {len} bytes, is cut to its first {kept})"
        ));
    }
}

/// Where a record was read: a fixture file's line, or a Kafka message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Position {
    /// 1-based line number in `file`.
    File { file: String, line: u64 },
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// A dead record as read: text, or the raw bytes of a Kafka value that is
/// not UTF-8 (written as `record_base64`). A fixture line that is not
/// UTF-8 is kept as text, decoded lossily.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

impl Payload {
    /// Text when `bytes` are UTF-8, else the bytes.
    pub fn from_bytes(bytes: &[u8]) -> Payload {
        match std::str::from_utf8(bytes) {
            Ok(text) => Payload::Text(text.to_owned()),
            Err(_) => Payload::Binary(bytes.to_vec()),
        }
    }

    /// The record as text (lossily for bytes that are not UTF-8).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Payload::Text(t) => t.as_str().into(),
            Payload::Binary(b) => String::from_utf8_lossy(b),
        }
    }
}

pub fn dispatch_id(user: &str, event_key: &str, rule: &str, attempt: u32) -> Uuid {
    // UUID v5 (RFC 9562 §5.5) by hand over a hardware-accelerated SHA-1:
    // the hash of the namespace and the name, version and variant set.
    // `Uuid::new_v5` (software SHA-1, over a formatted name) gives the same
    // ids at 360-530 ns each against 130-160 ns here (release build,
    // `examples/dispatch_id_bench.rs`): 35-55 ms more on the 140k
    // dispatches of scripts/bench.sh's 1M events, 1.5-2.5% of the replay's
    // CPU time.
    let mut sha = Sha1::new();
    sha.update(Uuid::NAMESPACE_URL.as_bytes());
    for part in ["nudgeflow:dispatch:", user, ":", event_key, ":", rule, ":"] {
        sha.update(part.as_bytes());
    }
    let mut digits = [0u8; 10];
    sha.update(decimal(attempt as u64, &mut digits));
    let digest = sha.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// Appends `s` as a JSON string literal, escaped as serde_json escapes
/// (it is called for strings that need it: quotes, backslashes and control
/// characters, the only bytes serde_json escapes, are rare in ids).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// The decimal digits of `v`, written at the end of `buf`.
fn decimal(mut v: u64, buf: &mut [u8]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[at..];
        }
    }
}

fn push_key(out: &mut Vec<u8>, key: &str) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn push_time(out: &mut Vec<u8>, t: Time) {
    out.push(b'"');
    out.extend_from_slice(&rfc3339_bytes(t));
    out.push(b'"');
}

fn push_int(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(decimal(v, &mut [0u8; 20]));
}

fn finish(out: Vec<u8>) -> String {
    // Every piece written is UTF-8: literals, serde_json strings, raw JSON
    // taken from a `&str`.
    String::from_utf8(out).expect("JSON lines are UTF-8")
}

impl Decision {
    /// The instant the decision was made, for ordering outputs.
    pub fn time(&self) -> Time {
        match self {
            Decision::Dispatch(d) => d.decision_time,
            Decision::Suppression(s) => s.time,
            Decision::Churn(c) => c.time,
        }
    }

    pub fn to_json_line(&self, spec: &Spec) -> String {
        let mut out = Vec::with_capacity(400);
        self.write_json(spec, &mut out);
        finish(out)
    }

    /// Appends the JSON line (without its newline) to `out`.
    pub fn write_json(&self, spec: &Spec, out: &mut Vec<u8>) {
        match self {
            Decision::Dispatch(d) => d.write_json(spec, out),
            Decision::Suppression(s) => s.write_json(spec, out),
            Decision::Churn(c) => c.write_json(out),
        }
    }
}

impl Dispatch {
    pub fn to_json_line(&self, spec: &Spec) -> String {
        let mut out = Vec::with_capacity(400);
        self.write_json(spec, &mut out);
        finish(out)
    }

    /// The dispatch's id (its idempotency key).
    pub fn id(&self, spec: &Spec) -> Uuid {
        match self.id {
            Some(id) => Uuid::from_u128(id.get()),
            None => {
                let rule = &spec.rules[self.rule as usize];
                dispatch_id(&self.user, &self.event_key, &rule.name, self.attempt)
            }
        }
    }

    /// Appends the JSON line (without its newline) to `out`.
    pub fn write_json(&self, spec: &Spec, out: &mut Vec<u8>) {
        let rule = &spec.rules[self.rule as usize];
        out.push(b'{');
        push_key(out, "dispatch_id");
        push_uuid(out, self.id(spec));
        push_key(out, "user");
        push_json_str(out, &self.user);
        push_key(out, "rule");
        push_json_str(out, &rule.name);
        push_key(out, "template");
        push_json_str(out, &rule.template);
        push_key(out, "channel");
        push_json_str(out, self.channel.as_str());
        push_key(out, "purpose");
        push_json_str(out, rule.purpose.as_str());
        push_key(out, "priority");
        push_json_str(out, rule.priority.as_str());
        push_key(out, "attempt");
        push_int(out, self.attempt as u64);
        push_key(out, "event_key");
        push_json_str(out, &self.event_key);
        push_key(out, "event_time");
        push_time(out, self.event_time);
        push_key(out, "decision_time");
        push_time(out, self.decision_time);
        push_key(out, "locale");
        match &self.locale {
            Some(l) => push_json_str(out, l),
            None => out.extend_from_slice(b"null"),
        }
        push_key(out, "vars");
        out.extend_from_slice(self.vars.as_deref().unwrap_or("null").as_bytes());
        out.push(b'}');
    }
}

impl Suppression {
    pub fn to_json_line(&self, spec: &Spec) -> String {
        let mut out = Vec::with_capacity(160);
        self.write_json(spec, &mut out);
        finish(out)
    }

    /// Appends the JSON line (without its newline) to `out`.
    pub fn write_json(&self, spec: &Spec, out: &mut Vec<u8>) {
        out.push(b'{');
        push_key(out, "user");
        push_json_str(out, &self.user);
        push_key(out, "rule");
        match self.rule {
            Some(r) => push_json_str(out, &spec.rules[r as usize].name),
            None => out.extend_from_slice(b"null"),
        }
        push_key(out, "event_key");
        push_json_str(out, &self.event_key);
        push_key(out, "time");
        push_time(out, self.time);
        push_key(out, "reason");
        push_json_str(out, self.reason.as_str());
        push_key(out, "detail");
        self.write_detail(spec, out);
        out.push(b'}');
    }

    /// Appends the `detail` object.
    fn write_detail(&self, spec: &Spec, out: &mut Vec<u8>) {
        out.push(b'{');
        match &self.detail {
            Detail::None => {}
            Detail::CancelledBy(key) => {
                push_key(out, "cancelled_by");
                push_json_str(out, key);
            }
            Detail::DuplicateOf(key) => {
                let rule = self
                    .rule
                    .map_or("", |r| spec.rules[r as usize].name.as_str());
                push_key(out, "dispatch_id");
                push_uuid(out, dispatch_id(&self.user, key, rule, 1));
            }
            Detail::Channels(channels) => {
                push_key(out, "channels");
                out.push(b'[');
                for (i, (channel, why)) in channels.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'{');
                    push_key(out, "channel");
                    push_json_str(out, channel.as_str());
                    push_key(out, "ruled_out");
                    push_json_str(out, why.as_str());
                    if let RuledOut::Cap(index) = why {
                        push_key(out, "cap");
                        let cap = &spec.channel_caps[*channel as usize][*index as usize];
                        push_cap(out, "channel", channel.as_str(), cap);
                    }
                    out.push(b'}');
                }
                out.push(b']');
            }
            Detail::PurposeCap(purpose, index) => {
                push_key(out, "cap");
                let cap = &spec.purpose_caps[*purpose as usize][*index as usize];
                push_cap(out, "purpose", purpose.as_str(), cap);
            }
        }
        out.push(b'}');
    }
}

/// Appends a cap as `{"<kind>":"<name>","max":M,"per":"<duration>"}`.
fn push_cap(out: &mut Vec<u8>, kind: &str, name: &str, cap: &Cap) {
    out.push(b'{');
    push_key(out, kind);
    push_json_str(out, name);
    push_key(out, "max");
    push_int(out, cap.max as u64);
    push_key(out, "per");
    out.push(b'"');
    out.extend_from_slice(format_duration(cap.per).as_bytes());
    out.push(b'"');
    out.push(b'}');
}

/// A duration in milliseconds as the spec would write it, units from the
/// largest down and none repeated: `1h30m`, `1d`, `250ms`, `0s`.
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut left = ms.unsigned_abs();
    let mut text = String::new();
    if ms < 0 {
        text.push('-');
    }
    for (unit, size) in [
        ("d", 86_400_000u64),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if left >= size {
            text += &format!("{}{unit}", left / size);
            left %= size;
        }
    }
    text
}

/// Appends a UUID as a quoted, hyphenated lower-case string.
fn push_uuid(out: &mut Vec<u8>, id: Uuid) {
    out.push(b'"');
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.push(b'"');
}

impl DeadLetter {
    /// The dead-letter line of a fixture replay, or the value of a message
    /// on the dead-letter topic: `{"stream","file","line","reason","record"}`
    /// or `{"stream","topic","partition","offset","reason","record"}`, with
    /// `record_base64` in place of `record` for bytes that are not UTF-8.
    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(
            128 + match &self.record {
                Payload::Text(t) => t.len(),
                Payload::Binary(b) => b.len() * 4 / 3,
            },
        );
        out.push(b'{');
        push_key(&mut out, "stream");
        push_json_str(&mut out, self.stream.name());
        match &self.at {
            Position::File { file, line } => {
                push_key(&mut out, "file");
                push_json_str(&mut out, file);
                push_key(&mut out, "line");
                push_int(&mut out, *line);
            }
            Position::Kafka {
                topic,
                partition,
                offset,
            } => {
                push_key(&mut out, "topic");
                push_json_str(&mut out, topic);
                push_key(&mut out, "partition");
                out.extend_from_slice(partition.to_string().as_bytes());
                push_key(&mut out, "offset");
                out.extend_from_slice(offset.to_string().as_bytes());
            }
        }
        push_key(&mut out, "reason");
        push_json_str(&mut out, &self.reason);
        match &self.record {
            Payload::Text(text) => {
                push_key(&mut out, "record");
                push_json_str(&mut out, text);
            }
            Payload::Binary(bytes) => {
                use base64::Engine;
                push_key(&mut out, "record_base64");
                push_json_str(
                    &mut out,
                    &base64::engine::general_purpose::STANDARD.encode(bytes),
                );
            }
        }
        out.push(b'}');
        finish(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_cuts_a_long_record_and_says_so() {
        let letter = |record| DeadLetter {
            stream: StreamKind::Events,
            at: Position::File {
                file: "events.jsonl".into(),
                line: 1,
            },
            reason: "bad".into(),
            record,
        };
        let mut d = letter(Payload::Text("aé".repeat(3)));
        d.cut(4);
        // "aéa" is 4 bytes; the cut keeps whole characters.
        assert!(matches!(&d.record, Payload::Text(t) if t == "aéa"));
        assert_eq!(d.reason, "bad (the record, 9 bytes, is cut to its first 4)");
        let mut d = letter(Payload::Text("aé".into()));
        d.cut(2);
        assert!(matches!(&d.record, Payload::Text(t) if t == "a"));
        let mut d = letter(Payload::Binary(vec![0xff; 10]));
        d.cut(10);
        assert_eq!(d.reason, "bad");
        d.cut(3);
        assert!(matches!(&d.record, Payload::Binary(b) if b.len() == 3));
    }

    #[test]
    fn dispatch_id_is_uuid_v5_in_url_namespace() {
        // Cross-checked with Python: uuid.uuid5(uuid.NAMESPACE_URL, "nudgeflow:dispatch:u-42:shop-web/e-1001:cart-recovery:1")
        let id = dispatch_id("u-42", "shop-web/e-1001", "cart-recovery", 1);
        assert_eq!(id.get_version_num(), 5);
        assert_eq!(
            Uuid::NAMESPACE_URL.to_string(),
            "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
        );
        assert_eq!(id.to_string(), PYTHON_UUID5);
        let name = "nudgeflow:dispatch:u-42:shop-web/e-1001:cart-recovery:1";
        assert_eq!(id, Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()));
        let name = "nudgeflow:dispatch:ü:s/é:r:12";
        assert_eq!(
            dispatch_id("ü", "s/é", "r", 12),
            Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
        );
    }
    const PYTHON_UUID5: &str = "93f3df14-b335-574f-bcce-151b557f6817";

    #[test]
    fn lines_are_valid_json_in_design_order() {
        let spec = Spec::parse("t.toml", "[[rule]]\nname = \"r\\\"1\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"sms\"]\n").unwrap();
        let d = Dispatch {
            user: "u\n1".into(),
            rule: 0,
            channel: Channel::Sms,
            attempt: 1,
            event_key: "s/e".into(),
            event_time: 0,
            decision_time: 1_500,
            locale: None,
            vars: Some(r#"{"a":[1,2.50]}"#.into()),
            id: None,
        };
        let line = d.to_json_line(&spec);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(v["user"], "u\n1");
        assert_eq!(v["rule"], "r\"1");
        assert_eq!(v["decision_time"], "1970-01-01T00:00:01.500Z");
        assert_eq!(v["locale"], serde_json::Value::Null);
        assert_eq!(keys.len(), 13);
        assert!(line.starts_with("{\"dispatch_id\":"));
        let s = Suppression {
            user: "u".into(),
            rule: None,
            event_key: "k".into(),
            time: 0,
            reason: Reason::Late,
            detail: Detail::None,
        };
        let v: serde_json::Value = serde_json::from_str(&s.to_json_line(&spec)).unwrap();
        assert_eq!(v["rule"], serde_json::Value::Null);
        assert_eq!(v["reason"], "late");
    }

    #[test]
    fn durations_are_written_as_a_spec_writes_them() {
        for (ms, text) in [
            (0, "0s"),
            (250, "250ms"),
            (1_000, "1s"),
            (3_600_000, "1h"),
            (5_400_000, "1h30m"),
            (86_400_000, "1d"),
            (90_061_001, "1d1h1m1s1ms"),
        ] {
            assert_eq!(format_duration(ms), text);
        }
    }

    /// Each kind of `detail` renders as docs/semantics.md shows it.
    #[test]
    fn suppression_details_render_as_documented() {
        let spec = Spec::parse(
            "t.toml",
            "[[rule]]\nname = \"promo\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\", \"email\", \"sms\"]\n\
             [[cap]]\nchannel = \"sms\"\nmax = 9\nper = \"1h\"\n[[cap]]\nchannel = \"sms\"\nmax = 3\nper = \"1d\"\n\
             [[cap]]\npurpose = \"marketing\"\nmax = 2\nper = \"90m\"\n",
        )
        .unwrap();
        let line = |reason, detail| {
            let s = Suppression {
                user: "u-1".into(),
                rule: Some(0),
                event_key: "web/e-2".into(),
                time: 0,
                reason,
                detail,
            };
            let line = s.to_json_line(&spec);
            serde_json::from_str::<serde_json::Value>(&line).expect("valid JSON");
            let (_, detail) = line.split_once(",\"detail\":").expect("detail comes last");
            detail.strip_suffix('}').unwrap().to_string()
        };
        assert_eq!(line(Reason::Muted, Detail::None), "{}");
        assert_eq!(
            line(Reason::Cancelled, Detail::CancelledBy("web/e-3".into())),
            r#"{"cancelled_by":"web/e-3"}"#
        );
        assert_eq!(
            line(Reason::Duplicate, Detail::DuplicateOf("web/e-1".into())),
            format!(
                r#"{{"dispatch_id":"{}"}}"#,
                dispatch_id("u-1", "web/e-1", "promo", 1)
            )
        );
        let channels = Detail::Channels(vec![
            (Channel::Push, RuledOut::NotInPreferences),
            (Channel::Email, RuledOut::NoConsent),
            (Channel::Sms, RuledOut::Cap(1)),
        ]);
        assert_eq!(
            line(Reason::RateLimited, channels),
            r#"{"channels":[{"channel":"push","ruled_out":"not_in_preferences"},{"channel":"email","ruled_out":"no_consent"},{"channel":"sms","ruled_out":"cap","cap":{"channel":"sms","max":3,"per":"1d"}}]}"#
        );
        assert_eq!(
            line(
                Reason::RateLimited,
                Detail::PurposeCap(Purpose::Marketing, 0)
            ),
            r#"{"cap":{"purpose":"marketing","max":2,"per":"1h30m"}}"#
        );
    }

    /// Strings are escaped exactly as serde_json escapes them, on the fast
    /// path (nothing to escape) and off it; numbers as `Display` writes them.
    #[test]
    fn strings_and_numbers_render_as_serde_json_does() {
        for text in [
            "",
            "u-1",
            "shop/é-ü",
            "q\"uote",
            "back\\slash",
            "tab\t",
            "\u{1}",
            "\u{7f}del",
            "emoji 🎉",
            "</script>",
        ] {
            let mut out = Vec::new();
            push_json_str(&mut out, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        for v in [0u64, 7, 10, 99, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            push_int(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        assert_eq!(decimal(u32::MAX as u64, &mut [0u8; 10]), b"4294967295");
    }
}
