//! `nudgeflow explain`: why did this user get (or not get) a notification?
//!
//! Replays a fixture through a spec (the same run as `replay`, in memory)
//! and prints one user's timeline in readable form: every record of the
//! user in the order the engine applies them (docs/semantics.md, "Order"),
//! for each event which rules matched and which did not (the failing
//! `where` condition, the missing `at` field), each candidate with its due
//! time, and how each ended — dispatched, or suppressed with its reason and
//! `detail` — including deferrals by quiet hours, and channel fallback:
//! the receipts for the user's dispatches and the further attempts (or
//! `undeliverable`) they led to.
//!
//! Decisions come from the engine's own outputs (the dispatch and
//! suppression lines a replay writes); the explanation of rule matching
//! re-evaluates the spec's rules on the user's events with the same
//! conditions the engine uses. Records are read a second time from the
//! fixture files, sequentially, for this user only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::record::output::{Position, format_duration};
use crate::record::{Record, StreamKind, parse_line};
use crate::replay::{ReplayOptions, run};
use crate::spec::condition::lookup;
use crate::spec::{Condition, Op, Rule, Spec, Timing};
use crate::time::{Time, format_rfc3339, parse_rfc3339};

/// The timeline of `user` in the replay `opts` describes, as text.
pub fn explain(opts: &ReplayOptions, user: &str) -> anyhow::Result<String> {
    let out = run(opts)?;
    // Lines that may be the user's name it as a JSON string.
    let needle = quoted(user);
    let mut decisions = Vec::new();
    for lines in out.dispatches.iter().chain(&out.suppressions) {
        for (_, line) in lines.iter() {
            let line = std::str::from_utf8(line).context("an output line is not UTF-8")?;
            if !line.contains(needle.as_str()) {
                continue;
            }
            let v: Value = serde_json::from_str(line).context("an output line is not JSON")?;
            if v["user"].as_str() == Some(user) {
                decisions.push(v);
            }
        }
    }
    // Dead letters: by position, and those that name the user anywhere.
    let rejected: HashMap<(String, u64), String> = out
        .dead_letters
        .iter()
        .filter_map(|d| match &d.at {
            Position::File { file, line } => Some(((file.clone(), *line), d.reason.clone())),
            Position::Kafka { .. } => None,
        })
        .collect();
    let unparsed: Vec<String> = out
        .dead_letters
        .iter()
        .filter(|d| d.record.text().contains(needle.as_str()))
        .filter(|d| parse_line(d.stream, &d.record.text()).is_err())
        .filter_map(|d| match &d.at {
            Position::File { file, line } => Some(format!("{file}:{line}: {}", d.reason)),
            Position::Kafka { .. } => None,
        })
        .collect();
    let mut records = read_user_records(&opts.fixture, user)?;
    let ids: Vec<String> = decisions
        .iter()
        .filter_map(|d| d["dispatch_id"].as_str().map(str::to_string))
        .collect();
    records.extend(read_receipts(&opts.fixture, &ids)?);
    records.extend(churn_events(&out.churn_signals, user)?);
    Ok(render(
        &opts.spec, user, records, decisions, &rejected, &unparsed,
    ))
}

/// A JSON string literal of `s`, to find lines that may name it.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// One of the user's input records and where it was read.
struct Located {
    file: String,
    line: u64,
    record: Record,
}

/// The user's records in every input file of the fixture, parsed as the
/// engine parses them, in file order.
fn read_user_records(fixture: &Path, user: &str) -> anyhow::Result<Vec<Located>> {
    let mut found = Vec::new();
    let needle = quoted(user);
    for stream in StreamKind::ALL {
        let path = fixture.join(stream.file_name());
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            // Cheap filter first: a record of the user names it.
            if !line.contains(needle.as_str()) {
                continue;
            }
            if let Ok(record) = parse_line(stream, line)
                && record.user() == Some(user)
            {
                found.push(Located {
                    file: stream.file_name().to_string(),
                    line: i as u64 + 1,
                    record,
                });
            }
        }
    }
    Ok(found)
}

/// The receipts of the fixture for any of the dispatch `ids`, in file
/// order.
fn read_receipts(fixture: &Path, ids: &[String]) -> anyhow::Result<Vec<Located>> {
    let path = fixture.join(StreamKind::Receipts.file_name());
    if ids.is_empty() || !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut found = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if !ids.iter().any(|id| line.contains(id.as_str())) {
            continue;
        }
        if let Ok(record @ Record::Receipt(_)) = parse_line(StreamKind::Receipts, line)
            && let Record::Receipt(r) = &record
            && ids.contains(&r.dispatch_id)
        {
            found.push(Located {
                file: StreamKind::Receipts.file_name().to_string(),
                line: i as u64 + 1,
                record,
            });
        }
    }
    Ok(found)
}

/// The user's churn signals (`churn_signals.jsonl` of the replay), as the
/// events the engine applies at their instants.
fn churn_events(signals: &[crate::sink::files::Lines], user: &str) -> anyhow::Result<Vec<Located>> {
    let mut found = Vec::new();
    for lines in signals {
        for (_, line) in lines.iter() {
            let line = std::str::from_utf8(line).context("an output line is not UTF-8")?;
            let v: Value = serde_json::from_str(line).context("an output line is not JSON")?;
            if v["user"].as_str() != Some(user) {
                continue;
            }
            let time = time_of(&v["time"]);
            let id = crate::dataflow::activity::signal_id(user, time);
            found.push(Located {
                file: "churn_signals.jsonl".into(),
                line: found.len() as u64 + 1,
                record: Record::Event(crate::record::Event {
                    user: user.to_string(),
                    key: format!("nudgeflow/{id}"),
                    kind: crate::spec::analytics::CHURN_EVENT.to_string(),
                    time,
                    data: Some(format!("{{\"p_alive\":{}}}", v["p_alive"]).into()),
                }),
            });
        }
    }
    Ok(found)
}

/// A candidate the explanation expects a decision for.
struct Expected {
    event_time: Time,
    due: Time,
}

/// What the timeline shows at one instant, in application order: records
/// first (by stream rank, events by key, then position), then decisions
/// (by event time, event key and rule order, as the engine decides them).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct At {
    time: Time,
    /// 0..=4 for records (stream rank), 5 for decisions.
    rank: u8,
    /// The record's time, or the decided candidate's event time.
    event_time: Time,
    /// The event key ("" for other records).
    key: String,
    /// Position in the input, or the decided rule's index.
    seq: u64,
    /// Unique per entry.
    n: usize,
}

fn render(
    spec: &Spec,
    user: &str,
    mut records: Vec<Located>,
    decisions: Vec<Value>,
    rejected: &HashMap<(String, u64), String>,
    unparsed: &[String],
) -> String {
    records.sort_by_key(|r| {
        let key = match &r.record {
            Record::Event(e) => e.key.clone(),
            _ => String::new(),
        };
        // A churn signal's event comes after the user's records at its
        // instant.
        let churn = r.file == "churn_signals.jsonl";
        (r.record.time(), rank(&r.record), churn, key, r.line)
    });
    // The engine's late events: (event key, time).
    let late: Vec<(String, Time)> = decisions
        .iter()
        .filter(|d| d["reason"] == "late")
        .map(|d| (str_of(&d["event_key"]), time_of(&d["time"])))
        .collect();

    // The user's dispatches by id: (rule, attempt, channel).
    let dispatches: HashMap<String, (String, u64, String)> = decisions
        .iter()
        .filter_map(|d| {
            let id = d["dispatch_id"].as_str()?;
            let attempt = d["attempt"].as_u64().unwrap_or(1);
            Some((
                id.to_string(),
                (str_of(&d["rule"]), attempt, str_of(&d["channel"])),
            ))
        })
        .collect();
    let mut timeline: BTreeMap<At, String> = BTreeMap::new();
    let mut expected: HashMap<(String, String), VecDeque<Expected>> = HashMap::new();
    let mut last_seen: HashMap<String, Time> = HashMap::new();
    let mut candidates = 0;
    for (seq, r) in records.iter().enumerate() {
        let time = r.record.time();
        let at = At {
            time,
            rank: rank(&r.record),
            event_time: time,
            key: match &r.record {
                Record::Event(e) => e.key.clone(),
                _ => String::new(),
            },
            seq: seq as u64,
            n: seq,
        };
        let place = format!("{}:{}", r.file, r.line);
        let mut text = String::new();
        if let Some(reason) = rejected.get(&(r.file.clone(), r.line)) {
            let _ = writeln!(text, "{place} dead letter: {reason}");
            timeline.insert(at, text);
            continue;
        }
        match &r.record {
            Record::Erasure(_) => {
                let _ = writeln!(
                    text,
                    "{place} erasure: pending candidates end as erased; preferences, consent, caps, dedup and event keys are forgotten"
                );
                last_seen.clear();
            }
            Record::Consent(c) => {
                let channel = c.channel.map_or("*", |c| c.as_str());
                let verdict = if c.granted { "granted" } else { "denied" };
                let _ = writeln!(
                    text,
                    "{place} consent: {channel} for {} {verdict}",
                    c.purpose.as_str()
                );
            }
            Record::Prefs(p) => {
                let _ = writeln!(text, "{place} preferences: {}", describe_prefs(p));
            }
            Record::Receipt(receipt) => {
                let (rule, attempt, channel) = &dispatches[&receipt.dispatch_id];
                let _ = writeln!(
                    text,
                    "{place} receipt {} for attempt {attempt} of rule {rule} on {channel}",
                    receipt_status(receipt.status)
                );
            }
            Record::Event(e) => {
                if r.file == "churn_signals.jsonl" {
                    let p = e.data.as_deref().unwrap_or_default();
                    let _ = writeln!(
                        text,
                        "churn signal {p}: P(alive) fell below the churn threshold; it takes part as the event {} ({})",
                        e.kind, e.key
                    );
                } else {
                    let _ = writeln!(text, "{place} event {} ({})", e.kind, e.key);
                }
                if late.contains(&(e.key.clone(), e.time)) {
                    let _ = writeln!(
                        text,
                        "    late: older than its file's watermark; decided nothing"
                    );
                    timeline.insert(at, text);
                    continue;
                }
                let previous = last_seen.insert(e.key.clone(), e.time);
                if let Some(prev) = previous
                    && prev > e.time.saturating_sub(spec.dedup_horizon)
                {
                    let _ = writeln!(
                        text,
                        "    duplicate of the event with this key at {} (within dedup_horizon {}): dropped",
                        format_rfc3339(prev),
                        format_duration(spec.dedup_horizon)
                    );
                    timeline.insert(at, text);
                    continue;
                }
                let data: Value = e
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or(Value::Null);
                let mut listened = false;
                for rule in &spec.rules {
                    if rule.cancelled_by(&e.kind) {
                        listened = true;
                        let _ = writeln!(
                            text,
                            "    rule {}: this type cancels its pending candidates from earlier events",
                            rule.name
                        );
                    }
                    if !rule.triggers_on(&e.kind) {
                        continue;
                    }
                    listened = true;
                    match match_rule(rule, e.time, &data) {
                        Ok((due, how)) => {
                            candidates += 1;
                            let _ = writeln!(
                                text,
                                "    rule {}: matches; candidate due {} ({how})",
                                rule.name,
                                format_rfc3339(due)
                            );
                            expected
                                .entry((e.key.clone(), rule.name.clone()))
                                .or_default()
                                .push_back(Expected {
                                    event_time: e.time,
                                    due,
                                });
                        }
                        Err(why) => {
                            let _ = writeln!(text, "    rule {}: does not match: {why}", rule.name);
                        }
                    }
                }
                if !listened {
                    let _ = writeln!(text, "    no rule listens to type {}", e.kind);
                }
            }
        }
        timeline.insert(at, text);
    }

    let (mut dispatched, mut suppressed) = (0, 0);
    let rule_index = |name: &str| spec.rules.iter().position(|r| r.name == name);
    for (n, d) in decisions.iter().enumerate() {
        let key = str_of(&d["event_key"]);
        let rule = d["rule"].as_str().unwrap_or("").to_string();
        let seq = rule_index(&rule).unwrap_or(usize::MAX) as u64;
        let n = records.len() + 2 * n;
        let is_dispatch = d.get("dispatch_id").is_some();
        let time = if is_dispatch {
            time_of(&d["decision_time"])
        } else {
            time_of(&d["time"])
        };
        if d["reason"] == "late" {
            continue;
        }
        // Channel fallback: a further attempt, or none left.
        let attempt = d["attempt"].as_u64().unwrap_or(1);
        if attempt > 1 || d["reason"] == "undeliverable" {
            let text = if is_dispatch {
                dispatched += 1;
                format!(
                    "fallback: rule {rule} for event {key}: attempt {} failed or was not confirmed within fallback_after; attempt {attempt} dispatched on {}, dispatch_id {}\n",
                    attempt - 1,
                    str_of(&d["channel"]),
                    str_of(&d["dispatch_id"])
                )
            } else {
                suppressed += 1;
                format!(
                    "fallback: rule {rule} for event {key}: the last attempt failed or was not confirmed within fallback_after, and no channel with consent is left: suppressed, undeliverable\n"
                )
            };
            let at = At {
                time,
                rank: 5,
                event_time: time,
                key,
                seq,
                n,
            };
            timeline.insert(at, text);
            continue;
        }
        let candidate = expected
            .get_mut(&(key.clone(), rule.clone()))
            .and_then(VecDeque::pop_front);
        let due = candidate.as_ref().map(|c| c.due);
        let event_time = candidate.map_or(time, |c| c.event_time);
        let mut text = format!("decision: rule {rule} for event {key}");
        // Only quiet hours decide a candidate after its due time.
        if let Some(due) = due
            && due < time
        {
            let _ = write!(text, " (due {}, deferred)", format_rfc3339(due));
            timeline.insert(
                At {
                    time: due,
                    rank: 5,
                    event_time,
                    key: key.clone(),
                    seq,
                    n: n + 1,
                },
                format!(
                    "deferred: rule {rule} for event {key}: in the user's quiet hours; decided again at {}\n",
                    format_rfc3339(time)
                ),
            );
        }
        if is_dispatch {
            dispatched += 1;
            let _ = writeln!(
                text,
                ": dispatched on {} (attempt {}), dispatch_id {}",
                str_of(&d["channel"]),
                d["attempt"],
                str_of(&d["dispatch_id"])
            );
        } else {
            suppressed += 1;
            let reason = str_of(&d["reason"]);
            let _ = writeln!(
                text,
                ": suppressed, {reason}{}",
                describe_detail(&d["detail"])
            );
        }
        timeline.insert(
            At {
                time,
                rank: 5,
                event_time,
                key,
                seq,
                n,
            },
            text,
        );
    }

    let mut out = format!(
        "user {user}: {}, {}: {dispatched} dispatched, {suppressed} suppressed\n",
        count(records.len(), "record"),
        count(candidates, "candidate"),
    );
    if records.is_empty() && unparsed.is_empty() {
        let _ = writeln!(out, "no record of the fixture names this user");
    }
    for line in unparsed {
        let _ = writeln!(out, "rejected record naming the user: {line}");
    }
    let mut last = None;
    for (at, text) in timeline {
        if last != Some(at.time) {
            let _ = writeln!(out, "{}", format_rfc3339(at.time));
            last = Some(at.time);
        }
        for line in text.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

fn receipt_status(status: crate::record::ReceiptStatus) -> &'static str {
    use crate::record::ReceiptStatus::*;
    match status {
        Delivered => "delivered",
        Failed => "failed",
        Bounced => "bounced",
        Opened => "opened",
        Clicked => "clicked",
        Complained => "complained",
    }
}

/// `n thing` or `n things`.
fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Where a record goes among the records of one instant.
fn rank(r: &Record) -> u8 {
    let stream = match r {
        Record::Erasure(_) => StreamKind::Erasures,
        Record::Consent(_) => StreamKind::Consent,
        Record::Prefs(_) => StreamKind::Preferences,
        Record::Receipt(_) => StreamKind::Receipts,
        Record::Event(_) => StreamKind::Events,
    };
    stream as u8
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn time_of(v: &Value) -> Time {
    v.as_str()
        .and_then(|s| parse_rfc3339(s).ok())
        .unwrap_or_default()
}

/// Why `rule` (whose `on` matches) does or does not match an event: its
/// due time and how it was found, or the first failing condition.
fn match_rule(rule: &Rule, time: Time, data: &Value) -> Result<(Time, String), String> {
    if let Some(c) = rule.conditions.iter().find(|c| !c.holds(data)) {
        let found = match lookup(data, &c.path) {
            Some(v) => format!("{} is {v}", c.path.join(".")),
            None => format!("{} is missing", c.path.join(".")),
        };
        return Err(format!("where {} fails ({found})", describe_condition(c)));
    }
    match &rule.timing {
        Timing::Delay(d) => {
            let how = if *d == 0 {
                "no delay".to_string()
            } else {
                format!("delay {}", format_duration(*d))
            };
            rule.decision_time(time, data)
                .map(|due| (due, how))
                .ok_or_else(|| "no decision time".to_string())
        }
        Timing::At { path, before } => {
            let field = path.join(".");
            let Some(v) = lookup(data, path) else {
                return Err(format!("at field {field} is missing"));
            };
            let Some(at) = v.as_str().and_then(|s| parse_rfc3339(s).ok()) else {
                return Err(format!("at field {field} is not an RFC 3339 time: {v}"));
            };
            let due = rule
                .decision_time(time, data)
                .ok_or_else(|| "no decision time".to_string())?;
            let wanted = at.saturating_sub(*before);
            let before = format_duration(*before);
            let how = if wanted < time {
                format!("{field} − {before} is before the event: decided at the event time")
            } else {
                format!("{field} − {before}")
            };
            Ok((due, how))
        }
    }
}

fn describe_condition(c: &Condition) -> String {
    let op = match c.op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::In => "in",
        Op::Exists => return format!("{} exists", c.path.join(".")),
        Op::NotExists => return format!("{} not_exists", c.path.join(".")),
    };
    format!("{} {op} {}", c.path.join("."), c.value)
}

fn describe_prefs(p: &crate::record::PrefsRecord) -> String {
    let Some(prefs) = &p.prefs else {
        return "deleted".into();
    };
    let mut parts = Vec::new();
    if let Some(channels) = &prefs.channels {
        let names: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        parts.push(format!("channels [{}]", names.join(", ")));
    }
    if let Some(q) = &prefs.quiet_hours {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        parts.push(format!(
            "quiet hours {}–{} {}",
            hm(q.start_min),
            hm(q.end_min),
            q.tz.name()
        ));
    }
    if !prefs.muted_rules.is_empty() {
        parts.push(format!("muted [{}]", prefs.muted_rules.join(", ")));
    }
    if let Some(locale) = &prefs.locale {
        parts.push(format!("locale {locale}"));
    }
    if parts.is_empty() {
        "none set".into()
    } else {
        parts.join(", ")
    }
}

/// What a suppression's `detail` says, in words (shared with `diff`).
pub(crate) enum DetailWords {
    /// The cancelling event's key.
    CancelledBy(String),
    /// The earlier dispatch a duplicate is of.
    DuplicateOf(String),
    /// Each channel and why it was ruled out.
    Channels(String),
    /// The full purpose cap.
    PurposeCap(String),
}

/// A suppression's `detail` in words; `None` when it says nothing more
/// than the reason.
pub(crate) fn detail_words(detail: &Value) -> Option<DetailWords> {
    let cap = |c: &Value| format!("cap {} per {} is full", c["max"], str_of(&c["per"]));
    if let Some(key) = detail["cancelled_by"].as_str() {
        return Some(DetailWords::CancelledBy(key.into()));
    }
    if let Some(id) = detail["dispatch_id"].as_str() {
        return Some(DetailWords::DuplicateOf(id.into()));
    }
    if let Some(channels) = detail["channels"].as_array() {
        let each: Vec<String> = channels
            .iter()
            .map(|c| {
                let why = match c["ruled_out"].as_str() {
                    Some("not_in_preferences") => "not in preferences".to_string(),
                    Some("no_consent") => "no consent".to_string(),
                    Some("cap") => cap(&c["cap"]),
                    other => other.unwrap_or("?").to_string(),
                };
                format!("{}: {why}", str_of(&c["channel"]))
            })
            .collect();
        return Some(DetailWords::Channels(each.join("; ")));
    }
    if detail["cap"].is_object() {
        let purpose = str_of(&detail["cap"]["purpose"]);
        return Some(DetailWords::PurposeCap(format!(
            "{purpose} {}",
            cap(&detail["cap"])
        )));
    }
    None
}

/// A suppression's `detail` in words, with a leading separator.
fn describe_detail(detail: &Value) -> String {
    match detail_words(detail) {
        Some(DetailWords::CancelledBy(key)) => format!(": cancelled by event {key}"),
        Some(DetailWords::DuplicateOf(id)) => {
            format!(": within the rule's dedup window of dispatch {id}")
        }
        Some(DetailWords::Channels(words) | DetailWords::PurposeCap(words)) => format!(": {words}"),
        None => String::new(),
    }
}
