//! Dead-letter reasons for the lines serde_json rejects.
//!
//! serde_json says what is wrong in Rust's terms and at a line and column
//! ("invalid type: integer `42`, expected a string at line 1 column 28"),
//! without naming the field. A record is one line, so the line number says
//! nothing, and the field is what a user needs. Here the rejected line is
//! read again as JSON, its members checked in order against the stream's
//! fields ([`Field`] tables mirroring the `Raw*` structs of `mod.rs`), and
//! the first problem is named by its field path, in the order serde_json
//! met it: a member of the wrong type or given twice, then a missing
//! required field:
//!
//! - `subject: expected a string, found the number 42`
//! - `channels[1]: expected a string, found null`
//! - `quiet_hours.start: expected a string, found the number 2200`
//! - `missing field: subject`, `missing field: quiet_hours.end`
//! - `duplicate field: user`
//! - `not valid JSON: expected `,` or `}` at column 48`
//! - `not a JSON object: found a list`
//!
//! Only the error path comes here; a line that parses costs nothing more.

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

/// The JSON type a field must have; null is absent for optional fields.
#[derive(Clone, Copy)]
pub(super) enum Want {
    Str,
    Bool,
    /// A list of strings.
    Strs,
    /// An object with these fields.
    Object(&'static [Field]),
    /// Any value (`data`).
    Any,
}

/// A field of an input record, as serde_json reads it into a `Raw*` struct.
pub(super) struct Field {
    pub name: &'static str,
    pub want: Want,
    pub required: bool,
}

const fn req(name: &'static str, want: Want) -> Field {
    Field {
        name,
        want,
        required: true,
    }
}

const fn opt(name: &'static str, want: Want) -> Field {
    Field {
        name,
        want,
        required: false,
    }
}

/// `RawEvent`.
pub(super) const EVENT: &[Field] = &[
    req("id", Want::Str),
    req("source", Want::Str),
    req("type", Want::Str),
    req("subject", Want::Str),
    req("time", Want::Str),
    opt("data", Want::Any),
];

/// `RawQuiet`.
const QUIET: &[Field] = &[
    req("start", Want::Str),
    req("end", Want::Str),
    opt("tz", Want::Str),
];

/// `RawPrefs`.
pub(super) const PREFS: &[Field] = &[
    req("user", Want::Str),
    req("time", Want::Str),
    opt("deleted", Want::Bool),
    opt("channels", Want::Strs),
    opt("quiet_hours", Want::Object(QUIET)),
    opt("muted_rules", Want::Strs),
    opt("locale", Want::Str),
];

/// `RawConsent`.
pub(super) const CONSENT: &[Field] = &[
    req("user", Want::Str),
    req("channel", Want::Str),
    req("purpose", Want::Str),
    req("granted", Want::Bool),
    req("time", Want::Str),
];

/// `RawErasure`.
pub(super) const ERASURE: &[Field] = &[req("user", Want::Str), req("time", Want::Str)];

/// `RawReceipt`.
pub(super) const RECEIPT: &[Field] = &[
    req("dispatch_id", Want::Str),
    req("status", Want::Str),
    req("time", Want::Str),
];

/// The reason for `line`, which serde_json rejected with `e` when reading
/// it into the struct that `fields` describes.
pub(super) fn explain(line: &str, fields: &[Field], e: serde_json::Error) -> String {
    if e.is_syntax() || e.is_eof() {
        return not_json(&e);
    }
    let value: &RawValue = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return not_json(&e),
    };
    if !value.get().starts_with('{') {
        return not_object(line);
    }
    check_object(value, "", fields)
        // Not met for the tables above; kept so that a reason is never empty.
        .unwrap_or_else(|| without_position(&e))
}

/// The reason for a line that does not hold a JSON object.
pub(super) fn not_object(line: &str) -> String {
    match serde_json::from_str::<&RawValue>(line) {
        Ok(value) => format!("not a JSON object: found {}", describe(value)),
        Err(e) => not_json(&e),
    }
}

/// The reason for a `data` value that skipping over it accepted but a full
/// parse (`Checked`) rejects with `e`; `data` is a slice of `line`.
pub(super) fn bad_data(line: &str, data: &str, e: &serde_json::Error) -> String {
    let message = without_position(e);
    // `data` is borrowed from `line`: its column in the line is its offset
    // plus the column within it.
    let offset = (data.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    if e.line() == 1 && offset < line.len() {
        format!("data: {message} at column {}", offset + e.column())
    } else {
        format!("data: {message}")
    }
}

/// `not valid JSON: …`, with the column (and the line only if the record
/// spans several, as a Kafka message may).
fn not_json(e: &serde_json::Error) -> String {
    let message = without_position(e);
    let at = match e.line() {
        0 => String::new(),
        1 => format!(" at column {}", e.column()),
        line => format!(" at line {line} column {}", e.column()),
    };
    if e.is_eof() {
        format!("not valid JSON: the line ends early ({message}{at})")
    } else {
        format!("not valid JSON: {message}{at}")
    }
}

/// serde_json's message without its " at line L column C", the few that
/// speak of its parser rather than of the text put in plain words.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let message = match text.rfind(" at line ") {
        Some(i) if e.line() != 0 => &text[..i],
        _ => &text,
    };
    match message {
        // A bare word where a value should be (`true`, `false` and `null`
        // are the only ones).
        "expected ident" => "a word without quotes (strings need double quotes)".to_string(),
        // Half of a UTF-16 surrogate pair (`\ud800` alone) is no character.
        "unexpected end of hex escape"
        | "lone leading surrogate in hex escape"
        | "invalid unicode code point" => {
            "a \\u escape that is half of a surrogate pair, not a character".to_string()
        }
        _ => message.to_string(),
    }
}

/// The first problem of the object `value` (at `path`, empty for the
/// record), in the order serde_json meets them.
fn check_object(value: &RawValue, path: &str, fields: &[Field]) -> Option<String> {
    let members = match serde_json::from_str::<Members>(value.get()) {
        Ok(m) => m.0,
        Err(e) if e.is_syntax() || e.is_eof() => return Some(not_json(&e)),
        Err(_) => return None,
    };
    let name = |field: &str| {
        if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    let mut seen = vec![false; fields.len()];
    for (key, member) in &members {
        let Some(i) = fields.iter().position(|f| f.name == key) else {
            continue; // unknown members are ignored
        };
        let field = &fields[i];
        if std::mem::replace(&mut seen[i], true) {
            return Some(format!("duplicate field: {}", name(field.name)));
        }
        if member.get() == "null" && !field.required {
            continue;
        }
        if let Some(reason) = check_value(member, &name(field.name), field.want) {
            return Some(reason);
        }
    }
    fields
        .iter()
        .zip(&seen)
        .find(|(f, seen)| f.required && !**seen)
        .map(|(f, _)| format!("missing field: {}", name(f.name)))
}

fn check_value(value: &RawValue, path: &str, want: Want) -> Option<String> {
    let text = value.get();
    let wrong = |expected: &str| {
        Some(format!(
            "{path}: expected {expected}, found {}",
            describe(value)
        ))
    };
    match want {
        Want::Any => None,
        Want::Str if text.starts_with('"') => serde_json::from_str::<String>(text)
            .err()
            .map(|e| format!("{path}: not a valid JSON string ({})", without_position(&e))),
        Want::Str => wrong("a string"),
        Want::Bool if text == "true" || text == "false" => None,
        Want::Bool => wrong("true or false"),
        Want::Strs if text.starts_with('[') => {
            let items: Vec<&RawValue> = match serde_json::from_str(text) {
                Ok(items) => items,
                Err(e) => return Some(not_json(&e)),
            };
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| check_value(item, &format!("{path}[{i}]"), Want::Str))
        }
        Want::Strs => wrong("a list of strings"),
        Want::Object(fields) if text.starts_with('{') => check_object(value, path, fields),
        Want::Object(_) => wrong("an object"),
    }
}

/// A JSON value as a reason shows it: `the number 42`, `the string "x"`,
/// `true`, `null`, `a list`, `an object`.
fn describe(value: &RawValue) -> String {
    let text = value.get();
    match text.as_bytes().first() {
        Some(b'{') => "an object".to_string(),
        Some(b'[') => "a list".to_string(),
        Some(b'"') => format!("the string {}", shorten(text)),
        Some(b't' | b'f' | b'n') => text.to_string(),
        _ => format!("the number {}", shorten(text)),
    }
}

/// `text`, cut after 40 characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// An object's members in order, duplicates kept, values unread.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{StreamKind, parse_line};
    use super::*;

    /// A valid line of each stream, every field present, and its table.
    const VALID: [(StreamKind, &str, &[Field]); 5] = [
        (
            StreamKind::Events,
            r#"{"specversion":"1.0","id":"e-1","source":"app","type":"t","time":"2026-03-01T10:15:00Z","subject":"u-1","data":{"v":1}}"#,
            EVENT,
        ),
        (
            StreamKind::Preferences,
            r#"{"user":"u-1","time":"2026-03-01T00:00:00Z","deleted":false,"channels":["push"],"quiet_hours":{"start":"22:00","end":"07:00","tz":"Europe/Berlin"},"muted_rules":["r"],"locale":"de-DE"}"#,
            PREFS,
        ),
        (
            StreamKind::Consent,
            r#"{"user":"u-1","channel":"sms","purpose":"marketing","granted":true,"time":"2026-03-01T00:00:00Z"}"#,
            CONSENT,
        ),
        (
            StreamKind::Erasures,
            r#"{"user":"u-1","time":"2026-03-01T00:00:00Z"}"#,
            ERASURE,
        ),
        (
            StreamKind::Receipts,
            r#"{"dispatch_id":"d-1","status":"delivered","time":"2026-03-01T00:00:00Z"}"#,
            RECEIPT,
        ),
    ];

    fn reason(stream: StreamKind, line: &str) -> String {
        let reason = parse_line(stream, line).expect_err(line);
        assert!(!reason.contains(" at line "), "{line}\n=> {reason}");
        reason
    }

    /// `line` with the member `path` (`a` or `a.b`) replaced by `value`,
    /// or removed when `value` is `None`.
    fn edit(line: &str, path: &[&str], value: Option<serde_json::Value>) -> String {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut object = v.as_object_mut().unwrap();
        for key in &path[..path.len() - 1] {
            object = object[*key].as_object_mut().unwrap();
        }
        let last = path[path.len() - 1];
        match value {
            Some(value) => object[last] = value,
            None => drop(object.remove(last)),
        }
        v.to_string()
    }

    /// The tables match the structs serde_json reads: for every field of
    /// every stream (nested ones included), a value of the wrong type is
    /// named by the field's path, a missing required field is named, and a
    /// missing optional one is no error.
    #[test]
    fn every_field_of_every_stream_is_named() {
        fn walk(stream: StreamKind, line: &str, path: &mut Vec<&'static str>, fields: &[Field]) {
            for f in fields {
                path.push(f.name);
                let dotted = path.join(".");
                if !matches!(f.want, Want::Any) {
                    let wrong = edit(line, path, Some(serde_json::json!(42)));
                    assert_eq!(
                        reason(stream, &wrong),
                        match f.want {
                            Want::Str =>
                                format!("{dotted}: expected a string, found the number 42"),
                            Want::Bool =>
                                format!("{dotted}: expected true or false, found the number 42"),
                            Want::Strs =>
                                format!("{dotted}: expected a list of strings, found the number 42"),
                            _ => format!("{dotted}: expected an object, found the number 42"),
                        }
                    );
                }
                let without = edit(line, path, None);
                if f.required {
                    assert_eq!(reason(stream, &without), format!("missing field: {dotted}"));
                } else {
                    assert!(parse_line(stream, &without).is_ok(), "{without}");
                }
                if let Want::Object(inner) = f.want {
                    walk(stream, line, path, inner);
                }
                path.pop();
            }
        }
        for (stream, line, fields) in VALID {
            assert!(parse_line(stream, line).is_ok(), "{line}");
            walk(stream, line, &mut Vec::new(), fields);
        }
    }

    #[test]
    fn wrong_types_say_what_was_found() {
        let e = StreamKind::Events;
        let event = |subject: &str| {
            format!(
                r#"{{"id":"e-1","source":"app","type":"t","time":"2026-03-01T10:15:00Z","subject":{subject}}}"#
            )
        };
        let cases = [
            ("42", "subject: expected a string, found the number 42"),
            (
                "-1.5e3",
                "subject: expected a string, found the number -1.5e3",
            ),
            ("null", "subject: expected a string, found null"),
            ("true", "subject: expected a string, found true"),
            ("[\"u\"]", "subject: expected a string, found a list"),
            (
                "{\"id\":\"u\"}",
                "subject: expected a string, found an object",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(reason(e, &event(value)), expected);
        }
        let p = StreamKind::Preferences;
        assert_eq!(
            reason(
                p,
                r#"{"user":"u","time":"2026-03-01T00:00:00Z","channels":["push",3]}"#
            ),
            "channels[1]: expected a string, found the number 3"
        );
        assert_eq!(
            reason(
                p,
                r#"{"user":"u","time":"2026-03-01T00:00:00Z","channels":"push"}"#
            ),
            "channels: expected a list of strings, found the string \"push\""
        );
        assert_eq!(
            reason(
                p,
                r#"{"user":"u","time":"2026-03-01T00:00:00Z","quiet_hours":{"start":2200,"end":"07:00"}}"#
            ),
            "quiet_hours.start: expected a string, found the number 2200"
        );
        assert_eq!(
            reason(
                p,
                r#"{"user":"u","time":"2026-03-01T00:00:00Z","muted_rules":[null]}"#
            ),
            "muted_rules[0]: expected a string, found null"
        );
        assert_eq!(
            reason(
                p,
                r#"{"user":"u","time":"2026-03-01T00:00:00Z","deleted":"yes"}"#
            ),
            "deleted: expected true or false, found the string \"yes\""
        );
        // Null is absent for optional fields, not for required ones.
        assert!(
            parse_line(
                p,
                r#"{"user":"u","time":"2026-03-01T00:00:00Z","locale":null,"quiet_hours":null}"#
            )
            .is_ok()
        );
        assert_eq!(
            reason(
                StreamKind::Consent,
                r#"{"user":"u","channel":"sms","purpose":"marketing","granted":"yes","time":"2026-03-01T00:00:00Z"}"#
            ),
            "granted: expected true or false, found the string \"yes\""
        );
        assert_eq!(
            reason(
                StreamKind::Receipts,
                r#"{"dispatch_id":7,"status":"delivered","time":"2026-03-01T00:00:00Z"}"#
            ),
            "dispatch_id: expected a string, found the number 7"
        );
        assert_eq!(
            reason(StreamKind::Erasures, r#"{"user":"u","time":1772323200000}"#),
            "time: expected a string, found the number 1772323200000"
        );
        // Long values are cut.
        let long = format!(
            r#"{{"user":"u","time":"2026-03-01T00:00:00Z","locale":{}}}"#,
            "1".repeat(60)
        );
        assert_eq!(
            reason(p, &long),
            format!(
                "locale: expected a string, found the number {}…",
                "1".repeat(40)
            )
        );
        // Unknown members are ignored, whatever their type.
        assert!(
            parse_line(
                StreamKind::Erasures,
                r#"{"user":"u","extra":[1,{"a":null}],"time":"2026-03-01T00:00:00Z"}"#
            )
            .is_ok()
        );
    }

    /// serde_json stops at the first problem in the line; so does the
    /// reason, and a missing field comes last.
    #[test]
    fn the_first_problem_in_the_line_is_named() {
        assert_eq!(
            reason(StreamKind::Receipts, r#"{"status":1,"dispatch_id":2}"#),
            "status: expected a string, found the number 1"
        );
        assert_eq!(
            reason(
                StreamKind::Receipts,
                r#"{"status":"failed","dispatch_id":2}"#
            ),
            "dispatch_id: expected a string, found the number 2"
        );
        assert_eq!(
            reason(StreamKind::Receipts, r#"{"status":"failed"}"#),
            "missing field: dispatch_id"
        );
    }

    #[test]
    fn duplicate_fields_are_named() {
        assert_eq!(
            reason(
                StreamKind::Preferences,
                r#"{"user":"u-3","time":"2026-04-01T09:00:00Z","user":"u-4"}"#
            ),
            "duplicate field: user"
        );
        // A null still counts as given.
        assert_eq!(
            reason(
                StreamKind::Preferences,
                r#"{"user":"u","time":"2026-04-01T09:00:00Z","locale":null,"locale":"it"}"#
            ),
            "duplicate field: locale"
        );
        assert_eq!(
            reason(
                StreamKind::Preferences,
                r#"{"user":"u","time":"2026-04-01T09:00:00Z","quiet_hours":{"start":"22:00","end":"07:00","tz":"UTC","tz":"UTC"}}"#
            ),
            "duplicate field: quiet_hours.tz"
        );
        assert_eq!(
            reason(
                StreamKind::Events,
                r#"{"id":"1","source":"s","type":"t","time":"2026-03-01T10:15:00Z","subject":"u","id":"2"}"#
            ),
            "duplicate field: id"
        );
        assert_eq!(
            reason(
                StreamKind::Consent,
                r#"{"user":"u","channel":"sms","purpose":"marketing","granted":true,"granted":false,"time":"2026-03-01T00:00:00Z"}"#
            ),
            "duplicate field: granted"
        );
        // Unknown members may repeat.
        assert!(
            parse_line(
                StreamKind::Erasures,
                r#"{"user":"u","x":1,"x":2,"time":"2026-03-01T00:00:00Z"}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn lines_that_are_not_json_objects_say_so() {
        let e = StreamKind::Events;
        assert_eq!(
            reason(e, "not json"),
            "not valid JSON: a word without quotes (strings need double quotes) at column 2"
        );
        assert_eq!(
            reason(e, r#"{"id":"e-2","source":"app" "type":"t"}"#),
            "not valid JSON: expected `,` or `}` at column 28"
        );
        assert_eq!(
            reason(e, r#"{"id":"e-9","source":"app","subj"#),
            "not valid JSON: the line ends early (EOF while parsing a string at column 32)"
        );
        assert_eq!(
            reason(
                StreamKind::Erasures,
                r#"{"user":"u","time":"2026-03-01T00:00:00Z"} x"#
            ),
            "not valid JSON: trailing characters at column 44"
        );
        // A wrong type early, bad JSON later: the line is not JSON.
        assert_eq!(
            reason(
                StreamKind::Erasures,
                r#"{"user":1,"time":"2026-03-01T00:00:00Z",}"#
            ),
            "not valid JSON: key must be a string at column 41"
        );
        assert_eq!(
            reason(e, r#"["e-1","app"]"#),
            "not a JSON object: found a list"
        );
        // Nor are quiet hours.
        assert_eq!(
            reason(
                StreamKind::Preferences,
                r#"{"user":"u","time":"2026-03-01T00:00:00Z","quiet_hours":["22:00","07:00","UTC"]}"#
            ),
            "quiet_hours: expected an object, found a list"
        );
        // A list whose items would do as the fields in order is no record
        // either (serde's derived structs read one).
        for (stream, line, fields) in VALID {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let items: Vec<_> = fields.iter().map(|f| v[f.name].clone()).collect();
            let list = serde_json::Value::from(items).to_string();
            assert_eq!(
                reason(stream, &list),
                "not a JSON object: found a list",
                "{list}"
            );
        }
        assert_eq!(reason(e, "42"), "not a JSON object: found the number 42");
        assert_eq!(
            reason(StreamKind::Receipts, r#""delivered""#),
            "not a JSON object: found the string \"delivered\""
        );
        // A message spanning lines (as a Kafka message may) keeps its line.
        assert_eq!(
            parse_line(StreamKind::Erasures, "{\"user\":\"u\",\n\"time\" 1}").unwrap_err(),
            "not valid JSON: expected `:` at line 2 column 8"
        );
    }

    /// Cut anywhere, a line is not JSON, and the reason says so without a
    /// line number.
    #[test]
    fn every_truncation_is_not_json() {
        for (stream, line, _) in VALID {
            for (cut, _) in line.char_indices().skip(1) {
                let r = reason(stream, &line[..cut]);
                assert!(
                    r.starts_with("not valid JSON: "),
                    "{}\n=> {r}",
                    &line[..cut]
                );
            }
        }
    }

    #[test]
    fn values_are_named_by_their_field() {
        let p = StreamKind::Preferences;
        let prefs = |rest: &str| format!(r#"{{"user":"u","time":"2026-03-01T00:00:00Z",{rest}}}"#);
        assert_eq!(
            reason(p, &prefs(r#""quiet_hours":{"start":"22:00","end":"7:00"}"#)),
            "quiet_hours.end: \"7:00\" is not a time of day; write \"HH:MM\" (00:00 to 23:59)"
        );
        assert_eq!(
            reason(
                p,
                &prefs(r#""quiet_hours":{"start":"24:00","end":"07:00"}"#)
            ),
            "quiet_hours.start: \"24:00\" is not a time of day; write \"HH:MM\" (00:00 to 23:59)"
        );
        assert_eq!(
            reason(
                p,
                &prefs(r#""quiet_hours":{"start":"22:00","end":"07:00","tz":"Mars/Olympus"}"#)
            ),
            "quiet_hours.tz: unknown time zone \"Mars/Olympus\"; use an IANA name such as \"Europe/Berlin\""
        );
        assert_eq!(
            reason(p, &prefs(r#""channels":["email","fax"]"#)),
            "channels: unknown channel \"fax\"; channels are push, email, sms, in_app, webhook"
        );
        let consent = |channel: &str, purpose: &str| {
            format!(
                r#"{{"user":"u","channel":"{channel}","purpose":"{purpose}","granted":true,"time":"2026-03-01T00:00:00Z"}}"#
            )
        };
        assert_eq!(
            reason(StreamKind::Consent, &consent("fax", "marketing")),
            "channel: unknown channel \"fax\"; channels are push, email, sms, in_app, webhook"
        );
        assert_eq!(
            reason(StreamKind::Consent, &consent("sms", "spam")),
            "purpose: unknown purpose \"spam\"; write \"marketing\" or \"transactional\""
        );
        assert_eq!(
            reason(
                StreamKind::Receipts,
                r#"{"dispatch_id":"d","status":"read","time":"2026-03-01T00:00:00Z"}"#
            ),
            "status: unknown status \"read\"; write one of delivered, failed, bounced, opened, clicked, complained"
        );
        let time = "time: \"2026-13-01T00:00:00Z\" is not an RFC 3339 time; write e.g. \"2026-03-01T10:15:00Z\" or \"2026-03-01T11:15:00.250+01:00\"";
        for (stream, line, _) in VALID {
            let bad = edit(
                line,
                &["time"],
                Some(serde_json::json!("2026-13-01T00:00:00Z")),
            );
            assert_eq!(reason(stream, &bad), time, "{stream:?}");
        }
    }

    /// `data` beyond what skipping checks: named, at its column in the line.
    #[test]
    fn bad_data_is_named_at_its_column() {
        let line = r#"{"id":"1","source":"s","type":"t","time":"2026-03-01T10:15:00Z","subject":"u","data":{"v":1e400}}"#;
        let column = line.find("1e400").unwrap() + "1e400".len();
        assert_eq!(
            reason(StreamKind::Events, line),
            format!("data: number out of range at column {column}")
        );
        for escape in [r"\ud800", r"\ud800\u0041", r"\udc00"] {
            let line = format!(
                r#"{{"id":"1","source":"s","type":"t","time":"2026-03-01T10:15:00Z","subject":"u","data":{{"s":"{escape}"}}}}"#
            );
            let r = reason(StreamKind::Events, &line);
            assert!(
                r.starts_with(r"data: a \u escape that is half of a surrogate pair, not a character at column "),
                "{line}\n=> {r}"
            );
        }
    }
}
