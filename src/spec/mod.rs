//! Dataflow specs: the TOML files in `dataflows/` that say which events
//! become which notifications (docs/semantics.md; format in the README, "Spec
//! reference").
//!
//! [`Spec::load`] parses and validates a spec into a compiled [`Spec`]. Every
//! problem is reported, in file order, as `file:line: field: what is wrong;
//! what to write instead` (the first [`MAX_PROBLEMS`], then how many more),
//! and a bad spec stops the job at start. The spec is read by every other
//! part of the program and depends on none of them.
//!
//! The TOML is read into a spanned tree first and then walked key by key,
//! rather than deserialised into structs, so that one bad key or value does
//! not hide the next: a misspelt key, a bad value in one rule and a bad cap
//! are all reported at once.

pub mod analytics;
pub mod condition;
pub mod glob;
mod toml_errors;
pub mod vocab;

use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use analytics::{Analytics, BgNbd, Bucket, Churn, Unit};
pub use condition::{Condition, Op};
pub use glob::Glob;
pub use vocab::{Channel, Priority, Purpose};

use crate::time::{MAX_TIME, MS_PER_DAY, Time, parse_duration, parse_rfc3339};

/// A compiled, validated spec.
#[derive(Clone, Debug)]
pub struct Spec {
    pub dedup_horizon: i64,
    pub allowed_lateness: i64,
    /// Holdout size in basis points: floor(holdout × 10000 + 0.5).
    pub holdout_bp: u64,
    pub rules: Vec<Rule>,
    /// Caps by purpose (indexed by `Purpose as usize`).
    pub purpose_caps: [Vec<Cap>; 2],
    /// Caps by channel (indexed by `Channel as usize`).
    pub channel_caps: [Vec<Cap>; 5],
    /// The `[analytics]` table; `None`: no churn risk and no retention
    /// are computed.
    pub analytics: Option<Analytics>,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub on: Vec<Glob>,
    pub conditions: Vec<Condition>,
    pub template: String,
    pub purpose: Purpose,
    pub priority: Priority,
    pub channels: Vec<Channel>,
    pub timing: Timing,
    pub cancel_on: Vec<Glob>,
    pub dedup: Option<Dedup>,
    /// Channel fallback (§4): how long an attempt waits for a success
    /// receipt before the next channel is tried.
    pub fallback_after: Option<i64>,
}

/// When a candidate is decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Timing {
    /// Event time + delay (0 for none).
    Delay(i64),
    /// max(event time, `data.<path>` − before).
    At { path: Vec<String>, before: i64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dedup {
    pub window: i64,
    pub key: Option<Vec<String>>,
}

/// At most `max` first-attempt dispatches with decision time in `(t − per, t]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub max: u32,
    pub per: i64,
}

/// A spec lists at most this many problems; the rest are counted.
pub const MAX_PROBLEMS: usize = 50;

/// One spec problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    pub file: String,
    /// 1-based; 0 when the problem is the whole file (it cannot be read).
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else if self.field.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.field, self.message
            )
        }
    }
}

/// Every problem of a spec, in file order: the first [`MAX_PROBLEMS`] of
/// them, and how many more there are. Displayed one problem a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Never empty.
    pub problems: Vec<SpecProblem>,
    /// Problems found beyond [`MAX_PROBLEMS`].
    pub more: usize,
}

impl SpecError {
    fn whole_file(file: &str, message: String) -> SpecError {
        SpecError {
            problems: vec![SpecProblem {
                file: file.to_string(),
                line: 0,
                field: String::new(),
                message,
            }],
            more: 0,
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        if self.more > 0 {
            let file = self.problems.first().map_or("", |p| p.file.as_str());
            let s = if self.more == 1 { "" } else { "s" };
            write!(f, "\n{file}: … and {} more problem{s}", self.more)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

impl Rule {
    /// Does the event type match `on`?
    pub fn triggers_on(&self, kind: &str) -> bool {
        self.on.iter().any(|g| g.matches(kind))
    }

    /// Does the event type match `cancel_on`?
    pub fn cancelled_by(&self, kind: &str) -> bool {
        self.cancel_on.iter().any(|g| g.matches(kind))
    }

    /// Whether evaluating the rule needs the event's `data` parsed.
    pub fn reads_data(&self) -> bool {
        !self.conditions.is_empty()
            || matches!(self.timing, Timing::At { .. })
            || self.dedup.as_ref().is_some_and(|d| d.key.is_some())
    }

    /// For an event of a matching type: the decision time if the rule
    /// matches (`where` holds and, for `at`, the field is a time), else None.
    pub fn decision_time(&self, event_time: Time, data: &Value) -> Option<Time> {
        if !self.conditions.iter().all(|c| c.holds(data)) {
            return None;
        }
        match &self.timing {
            Timing::Delay(d) => Some(event_time.saturating_add(*d).min(MAX_TIME)),
            Timing::At { path, before } => {
                let at = condition::lookup(data, path)?.as_str()?;
                let at = parse_rfc3339(at).ok()?;
                Some(at.saturating_sub(*before).max(event_time))
            }
        }
    }

    /// The per-rule dedup key of an event (see [`condition::canonical_key`]).
    pub fn dedup_key(&self, data: &Value) -> Option<String> {
        let dedup = self.dedup.as_ref()?;
        Some(match &dedup.key {
            None => String::new(),
            Some(path) => condition::canonical_key(condition::lookup(data, path)),
        })
    }
}

impl Spec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError::whole_file(&file, format!("cannot read the spec: {e}")))?;
        Spec::parse(&file, &text)
    }

    /// Parses and validates spec text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Spec, SpecError> {
        Compiler {
            file,
            text,
            problems: Vec::new(),
        }
        .compile()
    }

    /// The longest window any cap or dedup looks back over.
    pub fn longest_window(&self) -> i64 {
        let caps = self
            .purpose_caps
            .iter()
            .chain(self.channel_caps.iter())
            .flatten()
            .map(|c| c.per);
        let dedups = self
            .rules
            .iter()
            .filter_map(|r| r.dedup.as_ref().map(|d| d.window));
        caps.chain(dedups).max().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------
// Reading the TOML tree. Spans locate problems; every key of every table is
// checked against the keys it may hold.

/// A TOML value with its byte span.
type Item<'i> = Spanned<DeValue<'i>>;

const TOP_KEYS: &[&str] = &[
    "dedup_horizon",
    "allowed_lateness",
    "holdout",
    "rule",
    "cap",
    "analytics",
];
const RULE_KEYS: &[&str] = &[
    "name",
    "on",
    "where",
    "template",
    "purpose",
    "priority",
    "channels",
    "delay",
    "at",
    "cancel_on",
    "dedup",
    "fallback_after",
];
const CONDITION_KEYS: &[&str] = &["field", "op", "value"];
const AT_KEYS: &[&str] = &["field", "before"];
const DEDUP_KEYS: &[&str] = &["window", "key"];
const CAP_KEYS: &[&str] = &["purpose", "channel", "max", "per"];

/// What a cap limits.
enum CapOn {
    Purpose(Purpose),
    Channel(Channel),
}

struct Compiler<'a> {
    file: &'a str,
    text: &'a str,
    /// (byte offset, field, message), in the order found.
    problems: Vec<(usize, String, String)>,
}

/// `prefix: key`, or `key` at the top level.
fn field(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}: {key}")
    }
}

/// A value as a problem names it: `integer \`30\``, `string "x"`, `a list`.
fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("string {s:?}"),
        DeValue::Integer(i) => format!("integer `{i}`"),
        DeValue::Float(f) => format!("float `{f}`"),
        DeValue::Boolean(b) => format!("boolean `{b}`"),
        DeValue::Datetime(d) => format!("date-time `{d}`"),
        DeValue::Array(_) => "a list".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// The candidate `word` is most likely a misspelling of: the closest by
/// Damerau–Levenshtein distance (case ignored), at most a third of the
/// candidate's length away (one edit for short ones) and not wholly
/// different (fewer edits than the candidate has characters).
pub(crate) fn suggest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&word, c), c))
        .filter(|&(d, c)| {
            let len = c.chars().count();
            d <= (len / 3).max(1) && d < len
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Whether an unknown key of `table` (one not in `known`) is most likely
/// a misspelling of `key`: it is reported as such, so a missing `key` need
/// not be.
fn misspelt(table: &DeTable<'_>, known: &[&str], key: &str) -> bool {
    table.iter().any(|(k, _)| {
        let k = k.get_ref().as_ref();
        !known.contains(&k) && suggest(k, known.iter().copied()) == Some(key)
    })
}

impl Compiler<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn report(
        &mut self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems
            .push((span.start, field.into(), message.into()));
    }

    /// The problems found, in file order, at most [`MAX_PROBLEMS`].
    fn finish(mut self) -> SpecError {
        self.problems.sort_by_key(|p| p.0);
        let more = self.problems.len().saturating_sub(MAX_PROBLEMS);
        let problems = self.problems[..self.problems.len() - more]
            .iter()
            .map(|(offset, field, message)| SpecProblem {
                file: self.file.to_string(),
                line: self.line_of(*offset),
                field: field.clone(),
                message: message.clone(),
            })
            .collect();
        SpecError { problems, more }
    }

    /// Reports `v` as not what `key` takes, and what to write instead.
    fn wrong(&mut self, v: &Item<'_>, field: &str, key: &str) {
        let write = toml_errors::example(key).map_or(String::new(), |e| format!("; write {e}"));
        self.report(
            &v.span(),
            field,
            format!("is {}{write}", describe(v.get_ref())),
        );
    }

    /// Reports `key` (a dotted path for a key of a nested table) missing
    /// from `table`, whose header or inline table is at `at` — unless an
    /// unknown key of the table was reported as a misspelling of it.
    fn missing(
        &mut self,
        table: &DeTable<'_>,
        known: &[&str],
        at: &Range<usize>,
        prefix: &str,
        key: &str,
    ) {
        let last = key.rsplit('.').next().unwrap_or(key);
        if misspelt(table, known, last) {
            return;
        }
        let write = toml_errors::example(last).map_or(String::new(), |e| format!("; write {e}"));
        self.report(at, field(prefix, key), format!("missing{write}"));
    }

    /// Reports every key of `table` that is not in `known`, with the known
    /// key it most likely misspells. `what` names
    /// the table in the list of its keys ("a [[rule]]").
    fn unknown_keys(&mut self, table: &DeTable<'_>, known: &[&str], prefix: &str, what: &str) {
        for (key, _) in table.iter() {
            let k = key.get_ref().as_ref();
            if known.contains(&k) {
                continue;
            }
            let top = if prefix.is_empty() {
                None
            } else {
                suggest(k, TOP_KEYS[..3].iter().copied())
            };
            let message = match (suggest(k, known.iter().copied()), top) {
                (Some(s), _) => format!("unknown key `{k}`; did you mean `{s}`?"),
                (None, Some(t)) if t == k => format!(
                    "`{k}` is a top-level key: put it above the first [[rule]], [[cap]] or [analytics] table"
                ),
                (None, Some(t)) => format!(
                    "unknown key `{k}`; did you mean `{t}`? It is a top-level key: put it above the first [[rule]], [[cap]] or [analytics] table"
                ),
                (None, None) => format!("unknown key `{k}`; {what} takes {}", known.join(", ")),
            };
            self.report(&key.span(), prefix, message);
        }
    }

    fn string<'v>(&mut self, v: &'v Item<'_>, field: &str, key: &str) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.wrong(v, field, key);
                None
            }
        }
    }

    fn table<'v, 'i>(
        &mut self,
        v: &'v Item<'i>,
        field: &str,
        key: &str,
    ) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong(v, field, key);
                None
            }
        }
    }

    fn list<'v, 'i>(&mut self, v: &'v Item<'i>, field: &str, key: &str) -> Option<&'v [Item<'i>]> {
        match v.get_ref() {
            DeValue::Array(a) => Some(a),
            _ => {
                self.wrong(v, field, key);
                None
            }
        }
    }

    fn integer(&mut self, v: &Item<'_>, field: &str, key: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => {
                let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
                if n.is_none() {
                    self.report(&v.span(), field, format!("{i} is too large a number"));
                }
                n
            }
            _ => {
                self.wrong(v, field, key);
                None
            }
        }
    }

    /// A float, or an integer read as one.
    fn number(&mut self, v: &Item<'_>, field: &str, key: &str) -> Option<f64> {
        if !matches!(v.get_ref(), DeValue::Integer(_) | DeValue::Float(_)) {
            self.wrong(v, field, key);
            return None;
        }
        f64::deserialize(ValueDeserializer::from(v.clone()))
            .map_err(|e| self.report(&v.span(), field, e.message().trim().to_string()))
            .ok()
    }

    fn duration(&mut self, v: &Item<'_>, field: &str, key: &str) -> Option<i64> {
        let s = self.string(v, field, key)?;
        parse_duration(s)
            .map_err(|m| self.report(&v.span(), field, m))
            .ok()
    }

    /// A duration longer than zero.
    fn window(&mut self, v: &Item<'_>, field: &str, key: &str, example: &str) -> Option<i64> {
        let d = self.duration(v, field, key)?;
        if d <= 0 {
            self.report(
                &v.span(),
                field,
                format!("a window must be longer than zero, e.g. {example:?}"),
            );
            return None;
        }
        Some(d)
    }

    /// A word of a closed vocabulary (`what` is e.g. "channel", and names
    /// the example of a value of the wrong type), with the word meant if it
    /// looks misspelt, else `write`.
    fn word<T>(
        &mut self,
        v: &Item<'_>,
        field: &str,
        what: &str,
        all: &[T],
        name: fn(&T) -> &'static str,
        write: &str,
    ) -> Option<T>
    where
        T: Copy,
    {
        let s = self.string(v, field, what)?;
        if let Some(t) = all.iter().find(|t| name(t) == s) {
            return Some(*t);
        }
        let message = match suggest(s, all.iter().map(name)) {
            Some(meant) => format!("unknown {what} {s:?}; did you mean {meant:?}?"),
            None => format!("unknown {what} {s:?}; {write}"),
        };
        self.report(&v.span(), field, message);
        None
    }

    fn purpose(&mut self, v: &Item<'_>, field: &str) -> Option<Purpose> {
        self.word(
            v,
            field,
            "purpose",
            &Purpose::ALL,
            |p| p.as_str(),
            "write \"marketing\" or \"transactional\"",
        )
    }

    fn channel(&mut self, v: &Item<'_>, field: &str) -> Option<Channel> {
        self.word(
            v,
            field,
            "channel",
            &Channel::ALL,
            |c| c.as_str(),
            &format!("channels are {}", Channel::NAMES),
        )
    }

    fn compile(mut self) -> Result<Spec, SpecError> {
        let (doc, errors) = DeTable::parse_recoverable(self.text);
        if !errors.is_empty() {
            // What follows a TOML syntax error is read by guesswork: report
            // the syntax errors only.
            for e in errors {
                let span = e.span().unwrap_or(0..0);
                let (field, message) = toml_errors::explain(self.text, &span, e.message().trim());
                self.report(&span, field, message);
            }
            return Err(self.finish());
        }
        let doc = doc.into_inner();
        self.unknown_keys(&doc, TOP_KEYS, "", "the top level");

        let dedup_horizon = doc
            .get("dedup_horizon")
            .and_then(|v| self.duration(v, "dedup_horizon", "dedup_horizon"))
            .unwrap_or(MS_PER_DAY);
        let allowed_lateness = doc
            .get("allowed_lateness")
            .and_then(|v| self.duration(v, "allowed_lateness", "allowed_lateness"))
            .unwrap_or(0);
        let mut holdout_bp = 0;
        if let Some(h) = doc.get("holdout")
            && let Some(v) = self.number(h, "holdout", "holdout")
        {
            if (0.0..=1.0).contains(&v) {
                holdout_bp = basis_points(v);
            } else {
                self.report(
                    &h.span(),
                    "holdout",
                    format!(
                        "{v} is not a fraction; write a number from 0.0 to 1.0, e.g. 0.05 for 5%"
                    ),
                );
            }
        }

        let rule_tables = self.tables(doc.get("rule"), "rule");
        if let Some((span, _)) = rule_tables.get(64) {
            self.report(
                span,
                "rule",
                "a spec holds at most 64 rules; split it into several specs",
            );
        }
        let mut rules = Vec::with_capacity(rule_tables.len());
        let mut names: Vec<&str> = Vec::new();
        for (span, t) in &rule_tables {
            if let Some(name) = t.get("name")
                && let DeValue::String(n) = name.get_ref()
            {
                let n = n.trim();
                if names.contains(&n) {
                    self.report(
                        &name.span(),
                        format!("rule `{n}`: name"),
                        format!("a second rule is named {n:?}; rule names must be unique"),
                    );
                }
                names.push(n);
            }
            if let Some(rule) = self.rule(span, t) {
                rules.push(rule);
            }
        }

        let mut purpose_caps: [Vec<Cap>; 2] = Default::default();
        let mut channel_caps: [Vec<Cap>; 5] = Default::default();
        for (span, t) in &self.tables(doc.get("cap"), "cap") {
            match self.cap(span, t) {
                Some((CapOn::Purpose(p), cap)) => purpose_caps[p as usize].push(cap),
                Some((CapOn::Channel(c), cap)) => channel_caps[c as usize].push(cap),
                None => {}
            }
        }

        let analytics = doc.get("analytics").and_then(|v| self.analytics(v));

        if !self.problems.is_empty() {
            return Err(self.finish());
        }
        Ok(Spec {
            dedup_horizon,
            allowed_lateness,
            holdout_bp,
            rules,
            purpose_caps,
            channel_caps,
            analytics,
        })
    }

    /// The tables of a `[[rule]]` or `[[cap]]` list, each with its span
    /// (its header's, for a `[[…]]` table).
    fn tables<'v, 'i>(
        &mut self,
        v: Option<&'v Item<'i>>,
        key: &str,
    ) -> Vec<(Range<usize>, &'v DeTable<'i>)> {
        let Some(list) = v.and_then(|v| self.list(v, key, key)) else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|t| Some((t.span(), self.table(t, key, key)?)))
            .collect()
    }

    /// Event types (`on`, `cancel_on`): a string or a list of strings.
    fn globs(&mut self, v: &Item<'_>, field: &str, key: &str) -> Option<Vec<Glob>> {
        let items: Vec<&Item<'_>> = match v.get_ref() {
            DeValue::String(_) => vec![v],
            DeValue::Array(a) => a.iter().collect(),
            _ => {
                self.wrong(v, field, key);
                return None;
            }
        };
        let mut globs = Some(Vec::with_capacity(items.len()));
        if items.is_empty() {
            self.report(
                &v.span(),
                field,
                "write one or more event types, e.g. \"cart.abandoned\" or [\"order.*\"]",
            );
            globs = None;
        }
        for item in items {
            let Some(s) = self.string(item, field, key) else {
                globs = None;
                continue;
            };
            if s.is_empty() {
                self.report(
                    &item.span(),
                    field,
                    "write one or more event types, e.g. \"cart.abandoned\" or [\"order.*\"]",
                );
                globs = None;
            } else if s.trim() != s {
                // Event types do not start or end with spaces: most likely
                // a typo that would match nothing.
                self.report(
                    &item.span(),
                    field,
                    format!("{s:?} starts or ends with a space; write {:?}", s.trim()),
                );
                globs = None;
            } else if let Some(g) = globs.as_mut() {
                g.push(Glob::new(s));
            }
        }
        globs
    }

    fn rule(&mut self, header: &Range<usize>, t: &DeTable<'_>) -> Option<Rule> {
        let name = match t.get("name") {
            None => {
                self.missing(t, RULE_KEYS, header, "rule", "name");
                None
            }
            Some(v) => match self.string(v, "rule: name", "name").map(str::trim) {
                Some("") => {
                    self.report(&v.span(), "rule: name", "a rule needs a non-empty name");
                    None
                }
                n => n.map(str::to_string),
            },
        };
        let prefix = name
            .as_ref()
            .map_or_else(|| "rule".to_string(), |n| format!("rule `{n}`"));
        let f = |key: &str| field(&prefix, key);
        self.unknown_keys(t, RULE_KEYS, &prefix, "a [[rule]]");

        let on = match t.get("on") {
            None => {
                self.missing(t, RULE_KEYS, header, &prefix, "on");
                None
            }
            Some(v) => self.globs(v, &f("on"), "on"),
        };
        let conditions = match t.get("where") {
            None => Some(Vec::new()),
            Some(v) => self.conditions(v, &prefix),
        };
        let template = match t.get("template") {
            None => Some(None),
            Some(v) => self.string(v, &f("template"), "template").map(Some),
        };
        let purpose = match t.get("purpose") {
            None => {
                self.missing(t, RULE_KEYS, header, &prefix, "purpose");
                None
            }
            Some(v) => self.purpose(v, &f("purpose")),
        };
        let priority = match t.get("priority") {
            None => Some(Priority::Normal),
            Some(v) => self.word(
                v,
                &f("priority"),
                "priority",
                &Priority::ALL,
                |p| p.as_str(),
                "write \"normal\", \"high\" or \"critical\"",
            ),
        };
        let channels = match t.get("channels") {
            None => {
                self.missing(t, RULE_KEYS, header, &prefix, "channels");
                None
            }
            Some(v) => self.channels(v, &f("channels")),
        };
        let delay = match t.get("delay") {
            None => Some(None),
            Some(v) => self.duration(v, &f("delay"), "delay").map(Some),
        };
        let at = match t.get("at") {
            None => Some(None),
            Some(v) => self.at(v, &prefix).map(Some),
        };
        let timing = if let (Some(d), Some(_)) = (t.get("delay"), t.get("at")) {
            self.report(
                &d.span(),
                f("delay"),
                "a rule has either `delay` or `at`, not both; remove one",
            );
            None
        } else {
            match (delay, at) {
                (Some(Some(d)), _) => Some(Timing::Delay(d)),
                (_, Some(Some(at))) => Some(at),
                (Some(None), Some(None)) => Some(Timing::Delay(0)),
                // A bad `delay` or `at`, already reported.
                _ => None,
            }
        };
        let cancel_on = match t.get("cancel_on") {
            None => Some(Vec::new()),
            Some(v) => self.globs(v, &f("cancel_on"), "cancel_on"),
        };
        let dedup = match t.get("dedup") {
            None => Some(None),
            Some(v) => self.dedup(v, &prefix).map(Some),
        };
        let fallback_after = match t.get("fallback_after") {
            None => Some(None),
            Some(v) => self
                .window(v, &f("fallback_after"), "fallback_after", "15m")
                .map(Some),
        };
        let name = name?;
        Some(Rule {
            template: template?.map_or_else(|| name.clone(), str::to_string),
            name,
            on: on?,
            conditions: conditions?,
            purpose: purpose?,
            priority: priority?,
            channels: channels?,
            timing: timing?,
            cancel_on: cancel_on?,
            dedup: dedup?,
            fallback_after: fallback_after?,
        })
    }

    fn channels(&mut self, v: &Item<'_>, field: &str) -> Option<Vec<Channel>> {
        let list = self.list(v, field, "channels")?;
        if list.is_empty() {
            self.report(
                &v.span(),
                field,
                format!("list at least one channel ({})", Channel::NAMES),
            );
            return None;
        }
        let mut channels = Some(Vec::with_capacity(list.len()));
        let mut seen = Vec::new();
        for c in list {
            let Some(ch) = self.channel(c, field) else {
                channels = None;
                continue;
            };
            if seen.contains(&ch) {
                self.report(
                    &c.span(),
                    field,
                    format!("{:?} is listed twice", ch.as_str()),
                );
                channels = None;
            }
            seen.push(ch);
            if let Some(list) = channels.as_mut() {
                list.push(ch);
            }
        }
        channels
    }

    /// `where`: a list of `{ field, op, value }` tables.
    fn conditions(&mut self, v: &Item<'_>, prefix: &str) -> Option<Vec<Condition>> {
        let f = |key: &str| field(prefix, key);
        let list = self.list(v, &f("where"), "where")?;
        let mut conditions = Some(Vec::with_capacity(list.len()));
        for c in list {
            let condition = self.condition(c, prefix);
            match (condition, conditions.as_mut()) {
                (Some(c), Some(list)) => list.push(c),
                _ => conditions = None,
            }
        }
        conditions
    }

    fn condition(&mut self, c: &Item<'_>, prefix: &str) -> Option<Condition> {
        let f = |key: &str| field(prefix, key);
        let t = self.table(c, &f("where"), "where")?;
        self.unknown_keys(t, CONDITION_KEYS, &f("where"), "a condition");
        let span = c.span();
        let path = match t.get("field") {
            None => {
                self.missing(t, CONDITION_KEYS, &span, prefix, "where.field");
                None
            }
            Some(v) => match self.string(v, &f("where.field"), "field") {
                Some(p) if is_field_path(p) => Some(Self::path(p)),
                Some(p) => {
                    self.report(
                        &v.span(),
                        f("where.field"),
                        format!(
                            "{p:?} is not a field path; write a key of `data`, dots for nested keys"
                        ),
                    );
                    None
                }
                None => None,
            },
        };
        let op = match t.get("op") {
            None => {
                self.missing(t, CONDITION_KEYS, &span, prefix, "where.op");
                None
            }
            Some(v) => self.string(v, &f("where.op"), "op").and_then(|s| {
                let op = Op::parse(s);
                if op.is_none() {
                    let names = Op::NAMES.split(", ");
                    let write = match suggest(s, names) {
                        Some(meant) => format!("did you mean {meant:?}?"),
                        None => format!("write one of {}", Op::NAMES),
                    };
                    self.report(
                        &v.span(),
                        f("where.op"),
                        format!("unknown operator {s:?}; {write}"),
                    );
                }
                op.map(|op| (op, s))
            }),
        };
        let (op, op_name) = op?;
        let value = match (op.takes_value(), t.get("value")) {
            (true, None) => {
                self.report(
                    &span,
                    f("where.value"),
                    format!("operator {op_name:?} needs a `value`"),
                );
                return None;
            }
            (false, Some(v)) => {
                self.report(
                    &v.span(),
                    f("where.value"),
                    format!("operator {op_name:?} takes no `value`; remove it"),
                );
                return None;
            }
            (false, None) => Value::Null,
            (true, Some(v)) => self.condition_value(v, &f("where.value"))?,
        };
        if op == Op::In && value.as_array().is_none_or(|l| l.is_empty()) {
            self.report(
                &span,
                f("where.value"),
                "`in` needs a list of one or more values, e.g. value = [\"gold\", \"silver\"]",
            );
            return None;
        }
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge)
            && !(value.is_number() || value.is_string())
        {
            self.report(
                &span,
                f("where.value"),
                format!(
                    "{op_name:?} compares only numbers with numbers and strings with strings; write a number or a string"
                ),
            );
            return None;
        }
        Some(Condition {
            path: path?,
            op,
            value,
        })
    }

    /// A `where` value as JSON.
    fn condition_value(&mut self, v: &Item<'_>, field: &str) -> Option<Value> {
        let value = toml::Value::deserialize(ValueDeserializer::from(v.clone()))
            .map_err(|e| self.report(&v.span(), field, e.message().trim().to_string()))
            .ok()?;
        if let Err(m) = json_like(&value) {
            self.report(&v.span(), field, m);
            return None;
        }
        serde_json::to_value(&value)
            .map_err(|e| self.report(&v.span(), field, e.to_string()))
            .ok()
    }

    /// `at = { field = "starts_at", before = "24h" }`.
    fn at(&mut self, v: &Item<'_>, prefix: &str) -> Option<Timing> {
        let f = |key: &str| field(prefix, key);
        let t = self.table(v, &f("at"), "at")?;
        self.unknown_keys(t, AT_KEYS, &f("at"), "`at`");
        let path = match t.get("field") {
            None => {
                self.missing(t, AT_KEYS, &v.span(), prefix, "at.field");
                None
            }
            Some(p) => match self.string(p, &f("at.field"), "field") {
                Some(s) if is_field_path(s) => Some(Self::path(s)),
                Some(_) => {
                    self.report(
                        &p.span(),
                        f("at.field"),
                        "write the `data` field holding the time, e.g. field = \"starts_at\"",
                    );
                    None
                }
                None => None,
            },
        };
        let before = match t.get("before") {
            None => Some(0),
            Some(b) => self.duration(b, &f("at.before"), "before"),
        };
        Some(Timing::At {
            path: path?,
            before: before?,
        })
    }

    /// `dedup = { window = "24h", key = "order_id" }`.
    fn dedup(&mut self, v: &Item<'_>, prefix: &str) -> Option<Dedup> {
        let f = |key: &str| field(prefix, key);
        let t = self.table(v, &f("dedup"), "dedup")?;
        self.unknown_keys(t, DEDUP_KEYS, &f("dedup"), "`dedup`");
        let window = match t.get("window") {
            None => {
                self.missing(t, DEDUP_KEYS, &v.span(), prefix, "dedup.window");
                None
            }
            Some(w) => self.window(w, &f("dedup.window"), "window", "24h"),
        };
        let key = match t.get("key") {
            None => Some(None),
            Some(k) => match self.string(k, &f("dedup.key"), "key") {
                Some(s) if is_field_path(s) => Some(Some(Self::path(s))),
                Some(s) => {
                    self.report(
                        &k.span(),
                        f("dedup.key"),
                        format!(
                            "{s:?} is not a field path; write a key of `data`, dots for nested keys, e.g. key = \"order_id\""
                        ),
                    );
                    None
                }
                None => None,
            },
        };
        Some(Dedup {
            window: window?,
            key: key?,
        })
    }

    fn cap(&mut self, header: &Range<usize>, t: &DeTable<'_>) -> Option<(CapOn, Cap)> {
        self.unknown_keys(t, CAP_KEYS, "cap", "a [[cap]]");
        let on = match (t.get("purpose"), t.get("channel")) {
            (Some(p), None) => self.purpose(p, "cap: purpose").map(CapOn::Purpose),
            (None, Some(c)) => self.channel(c, "cap: channel").map(CapOn::Channel),
            (Some(_), Some(_)) => {
                self.report(
                    header,
                    "cap",
                    "a cap needs exactly one of `purpose` or `channel`; remove one",
                );
                None
            }
            (None, None) => {
                if !misspelt(t, CAP_KEYS, "purpose") && !misspelt(t, CAP_KEYS, "channel") {
                    self.report(
                        header,
                        "cap",
                        "a cap needs exactly one of `purpose` or `channel`",
                    );
                }
                None
            }
        };
        let max = match t.get("max") {
            None => {
                self.missing(t, CAP_KEYS, header, "cap", "max");
                None
            }
            Some(m) => self
                .integer(m, "cap: max", "max")
                .and_then(|n| match u32::try_from(n) {
                    Ok(max) => Some(max),
                    Err(_) => {
                        self.report(
                            &m.span(),
                            "cap: max",
                            format!("{n} is not a count; write a whole number ≥ 0"),
                        );
                        None
                    }
                }),
        };
        let per = match t.get("per") {
            None => {
                self.missing(t, CAP_KEYS, header, "cap", "per");
                None
            }
            Some(p) => self.window(p, "cap: per", "per", "1h"),
        };
        Some((
            on?,
            Cap {
                max: max?,
                per: per?,
            },
        ))
    }

    fn path(field: &str) -> Vec<String> {
        field.split('.').map(String::from).collect()
    }
}

/// A path into an event's `data`: keys joined by dots, none empty.
fn is_field_path(path: &str) -> bool {
    !path.split('.').any(str::is_empty)
}

/// A `where` value must mean what it would in JSON: TOML's date-times have
/// no JSON form (event times are strings in `data`), and nan and inf equal
/// nothing.
fn json_like(v: &toml::Value) -> Result<(), String> {
    match v {
        toml::Value::Datetime(d) => Err(format!(
            "{d} is a TOML date-time; `data` holds times as strings: quote it, value = \"{d}\""
        )),
        toml::Value::Float(f) if !f.is_finite() => Err(format!(
            "{f} equals no number in `data`; write a finite number"
        )),
        toml::Value::Array(items) => items.iter().try_for_each(json_like),
        toml::Value::Table(t) => t.values().try_for_each(json_like),
        _ => Ok(()),
    }
}

/// floor(`v` × 10000 + 0.5) for a fraction `v` in [0, 1], computed on the
/// decimal the spec wrote (the shortest decimal that reads back as `v`)
/// rather than in binary floating point, where 0.00015 × 10000 + 0.5 is
/// 1.9999999999999998 and would round half a basis point down.
fn basis_points(v: f64) -> u64 {
    let text = format!("{v}");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digit = |i: usize| {
        fraction
            .as_bytes()
            .get(i)
            .map_or(0, |d| u64::from(d - b'0'))
    };
    let whole: u64 = whole.parse().unwrap_or(0);
    whole * 10_000 + (0..4).fold(0, |bp, i| bp * 10 + digit(i)) + u64::from(digit(4) >= 5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse("test.toml", text)
    }

    /// The one problem of a spec that has exactly one.
    fn problem(text: &str) -> SpecProblem {
        let e = parse(text).unwrap_err();
        assert_eq!((e.problems.len(), e.more), (1, 0), "{e}");
        e.problems.into_iter().next().unwrap()
    }

    /// Every problem of a spec, as `line: field: message` lines.
    fn problems(text: &str) -> Vec<String> {
        let e = parse(text).unwrap_err();
        assert_eq!(e.more, 0, "{e}");
        e.problems
            .iter()
            .map(|p| format!("{}: {}: {}", p.line, p.field, p.message))
            .collect()
    }

    /// Half a basis point rounds up on the decimal as written, where
    /// binary floating point would round 0.00015 and 0.00145 down.
    #[test]
    fn holdout_basis_points_round_the_written_decimal() {
        for (h, bp) in [
            (0.0, 0),
            (1.0, 10_000),
            (0.05, 500),
            (0.00015, 2),
            (0.00145, 15),
            (0.01045, 105),
            (0.00014999, 1),
            (0.123456, 1235),
            (1e-7, 0),
            (0.99995, 10_000),
        ] {
            assert_eq!(basis_points(h), bp, "holdout {h}");
        }
        let spec = parse("holdout = 0.00015\n").unwrap();
        assert_eq!(spec.holdout_bp, 2);
    }

    #[test]
    fn core_spec_compiles_to_its_documented_meaning() {
        let spec = Spec::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dataflows/core.toml"
        )))
        .unwrap();
        let names: Vec<_> = spec.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["cart-recovery", "payment-failed", "security-alert"]);
        assert_eq!(spec.dedup_horizon, 24 * 3_600_000);
        assert_eq!(spec.allowed_lateness, 0);
        assert_eq!(spec.holdout_bp, 0);
        assert_eq!(
            spec.purpose_caps[Purpose::Marketing as usize],
            vec![Cap {
                max: 3,
                per: 3_600_000
            }]
        );
        assert!(spec.channel_caps.iter().all(Vec::is_empty));
        assert_eq!(spec.rules[2].priority, Priority::Critical);
        assert_eq!(
            spec.rules[1].channels,
            vec![Channel::Email, Channel::Sms, Channel::Push]
        );
        assert_eq!(spec.rules[0].template, "cart-recovery");
    }

    #[test]
    fn readme_example_and_shipped_specs_are_valid() {
        let readme = include_str!("../../README.md");
        let at = readme
            .find("A complete example")
            .expect("the README has its spec example");
        let start = readme[at..].find("```toml\n").unwrap() + at + 8;
        let end = readme[start..].find("```").unwrap() + start;
        let spec = parse(&readme[start..end]).unwrap();
        assert_eq!(spec.rules.len(), 3);
        assert!(spec.analytics.is_some_and(|a| a.churn.is_some()));
        for name in ["core", "ecommerce", "fintech", "healthcare", "saas"] {
            let path = format!("{}/dataflows/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            Spec::load(Path::new(&path)).unwrap();
        }
    }

    #[test]
    fn errors_name_file_line_field_and_fix() {
        let e = problem(
            "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketting\"\nchannels = [\"push\"]\n",
        );
        assert_eq!(e.line, 4);
        assert!(
            e.to_string()
                .starts_with("test.toml:4: rule `a`: purpose: unknown purpose"),
            "{e}"
        );
        assert!(e.message.contains("did you mean \"marketing\"?"), "{e}");

        let e = problem(
            "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\", \"fax\"]\n",
        );
        assert_eq!((e.line, e.field.as_str()), (5, "rule `a`: channels"));

        let e = problem("dedup_horizon = \"1 day\"\n");
        assert!(e.message.contains("not a duration"), "{e}");

        let e = problem(
            "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\nchanels = []\n",
        );
        assert!(e.message.contains("unknown key `chanels`"), "{e}");
        assert_eq!(e.line, 6);

        let e = problem(
            "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\ndelay = \"1h\"\nat = { field = \"t\" }\n",
        );
        assert!(e.message.contains("either `delay` or `at`"), "{e}");

        let e = problem("[[cap]]\nmax = 3\nper = \"1h\"\n");
        assert!(e.message.contains("exactly one of"), "{e}");

        // Cap errors point at the key's line, not the table's header.
        let e = problem("[[cap]]\npurpose = \"marketing\"\nmax = 3\nper = \"1 hour\"\n");
        assert_eq!((e.line, e.field.as_str()), (4, "cap: per"), "{e}");
        let e = problem("[[cap]]\nchannel = \"fax\"\nmax = 3\nper = \"1h\"\n");
        assert_eq!((e.line, e.field.as_str()), (2, "cap: channel"), "{e}");
        let e = problem("[[cap]]\npurpose = \"marketing\"\nmax = -1\nper = \"1h\"\n");
        assert_eq!((e.line, e.field.as_str()), (3, "cap: max"), "{e}");

        let e = problem("holdout = 1.5\n");
        assert_eq!(e.field, "holdout");

        let rule =
            "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\n";
        for (cond, says) in [
            (
                "{ field = \"d\", op = \"=\", value = 2026-03-01T00:00:00Z }",
                "quote it",
            ),
            (
                "{ field = \"d\", op = \"in\", value = [07:30:00] }",
                "quote it",
            ),
            (
                "{ field = \"v\", op = \"!=\", value = nan }",
                "finite number",
            ),
            (
                "{ field = \"v\", op = \">\", value = true }",
                "write a number or a string",
            ),
            (
                "{ field = \"v\", op = \"in\", value = [] }",
                "one or more values",
            ),
        ] {
            let e = problem(&format!("{rule}where = [{cond}]\n"));
            assert!(e.message.contains(says), "{cond}: {e}");
        }

        let e = problem(
            "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\ndedup = { window = \"1h\", key = \"a..b\" }\n",
        );
        assert_eq!(e.field, "rule `a`: dedup.key", "{e}");

        let e = problem(
            "[[rule]]\nname = \"a\"\non = \" x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\n",
        );
        assert!(e.message.contains("write \"x\""), "{e}");

        let e = problem(
            "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\nwhere = [{ field = \"v\", op = \"~\", value = 1 }]\n",
        );
        assert!(e.message.contains("unknown operator"), "{e}");
    }

    #[test]
    fn timing_where_and_dedup_keys() {
        let spec = parse(
            r#"
[[rule]]
name = "reminder"
on = "appointment.*"
where = [{ field = "kind", op = "in", value = ["dental", "gp"] }]
purpose = "transactional"
channels = ["sms"]
at = { field = "starts_at", before = "24h" }
dedup = { window = "1h", key = "appointment_id" }
"#,
        )
        .unwrap();
        let r = &spec.rules[0];
        assert!(r.triggers_on("appointment.booked"));
        let t0 = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        let d =
            json!({"kind": "gp", "starts_at": "2026-03-03T09:00:00+01:00", "appointment_id": 7});
        assert_eq!(
            r.decision_time(t0, &d),
            Some(parse_rfc3339("2026-03-02T08:00:00Z").unwrap())
        );
        let soon = json!({"kind": "gp", "starts_at": "2026-03-01T09:00:00Z"});
        assert_eq!(
            r.decision_time(t0, &soon),
            Some(t0),
            "never before the event"
        );
        assert_eq!(
            r.decision_time(t0, &json!({"kind": "gp", "starts_at": "tomorrow"})),
            None
        );
        assert_eq!(
            r.decision_time(
                t0,
                &json!({"kind": "x", "starts_at": "2026-03-03T09:00:00Z"})
            ),
            None
        );
        assert_eq!(
            r.dedup_key(&d),
            r.dedup_key(&json!({"appointment_id": 7.0}))
        );
    }

    /// One bad key or value hides no other: every problem of every rule
    /// and cap is reported, in file order, with its line.
    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = r#"holdout = 2
dedup_horizon = "30m 1h 1h"

[[rule]]
name = "first"
on = "x"
purpose = "marketing"
channels = ["push", "fax"]
delay = "1m1h"

[[cap]]
purpose = "marketing"
max = 2.5
per = "1h"

[[rule]]
name = "second"
on = ["y", 3]
purpose = "transactional"
channels = ["sms"]
dedup = { window = "0s" }
holdot = 0.5

[[cap]]
channel = "fax"
max = 1
per = "1 hour"

[[rule]]
name = "first"
on = "z"
channels = ["email"]
"#;
        assert_eq!(
            problems(text),
            [
                "1: holdout: 2 is not a fraction; write a number from 0.0 to 1.0, e.g. 0.05 for 5%",
                "2: dedup_horizon: \"30m 1h 1h\" names hours (h) after minutes (m); write each unit once, largest first (d, h, m, s, ms): \"2h30m\"",
                "8: rule `first`: channels: unknown channel \"fax\"; channels are push, email, sms, in_app, webhook",
                "9: rule `first`: delay: \"1m1h\" names hours (h) after minutes (m); write each unit once, largest first (d, h, m, s, ms): \"1h1m\"",
                "13: cap: max: is float `2.5`; write a whole number, e.g. max = 3",
                "18: rule `second`: on: is integer `3`; write an event type or a list of them (`*` matches any run of characters), e.g. on = \"cart.*\" or on = [\"order.placed\", \"order.paid\"]",
                "21: rule `second`: dedup.window: a window must be longer than zero, e.g. \"24h\"",
                "22: rule `second`: unknown key `holdot`; did you mean `holdout`? It is a top-level key: put it above the first [[rule]], [[cap]] or [analytics] table",
                "25: cap: channel: unknown channel \"fax\"; channels are push, email, sms, in_app, webhook",
                "27: cap: per: \"1 hour\" is not a duration; write a number and a unit (ms, s, m, h, d), e.g. \"30m\" or \"1h30m\"",
                "29: rule `first`: purpose: missing; write purpose = \"marketing\" or purpose = \"transactional\"",
                "30: rule `first`: name: a second rule is named \"first\"; rule names must be unique",
            ]
        );
        // Displayed one problem a line, each with its file and line.
        let shown = parse(text).unwrap_err().to_string();
        assert_eq!(shown.lines().count(), 12, "{shown}");
        assert!(
            shown.lines().all(|l| l.starts_with("test.toml:")),
            "{shown}"
        );
    }

    /// A misspelt key, channel, purpose, priority or operator is answered
    /// with what was most likely meant; a word like none of them with the
    /// list to choose from.
    #[test]
    fn misspellings_get_a_suggestion() {
        let rule = |extra: &str| {
            format!("[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\n{extra}\n")
        };
        for (text, says) in [
            (
                rule("chanels = [\"push\"]"),
                "5: rule `a`: unknown key `chanels`; did you mean `channels`?",
            ),
            (
                rule("channels = [\"emial\"]"),
                "5: rule `a`: channels: unknown channel \"emial\"; did you mean \"email\"?",
            ),
            (
                rule("channels = [\"Push\"]"),
                "5: rule `a`: channels: unknown channel \"Push\"; did you mean \"push\"?",
            ),
            (
                rule("channels = [\"push\"]\npriority = \"hgh\""),
                "6: rule `a`: priority: unknown priority \"hgh\"; did you mean \"high\"?",
            ),
            (
                "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketng\"\nchannels = [\"sms\"]\n"
                    .to_string(),
                "4: rule `a`: purpose: unknown purpose \"marketng\"; did you mean \"marketing\"?",
            ),
            (
                rule("channels = [\"push\"]\nwhere = [{ field = \"v\", op = \"exist\" }]"),
                "6: rule `a`: where.op: unknown operator \"exist\"; did you mean \"exists\"?",
            ),
            (
                rule("channels = [\"push\"]\ndedup = { windw = \"1h\" }"),
                "6: rule `a`: dedup: unknown key `windw`; did you mean `window`?",
            ),
            (
                "[[cap]]\nchanel = \"sms\"\nmax = 1\nper = \"1h\"\n".to_string(),
                "2: cap: unknown key `chanel`; did you mean `channel`?",
            ),
            (
                "[[cap]]\npurpose = \"marketing\"\nmax = 1\npr = \"1h\"\n".to_string(),
                "4: cap: unknown key `pr`; did you mean `per`?",
            ),
            (
                "dedup_horizn = \"1h\"\n".to_string(),
                "1: : unknown key `dedup_horizn`; did you mean `dedup_horizon`?",
            ),
            (
                rule("channels = [\"fax\"]"),
                "5: rule `a`: channels: unknown channel \"fax\"; channels are push, email, sms, in_app, webhook",
            ),
            (
                rule("channels = [\"push\"]\npriority = \"urgent\""),
                "6: rule `a`: priority: unknown priority \"urgent\"; write \"normal\", \"high\" or \"critical\"",
            ),
            (
                rule("channels = [\"push\"]\ncolour = \"red\""),
                "6: rule `a`: unknown key `colour`; a [[rule]] takes name, on, where, template, purpose, priority, channels, delay, at, cancel_on, dedup, fallback_after",
            ),
        ] {
            // A misspelt required key is reported once, as a misspelling,
            // not also as missing.
            assert_eq!(problems(&text), [says], "{text}");
        }
    }

    /// `fallback_after` is a window longer than zero; a misspelling of it
    /// is offered the right key.
    #[test]
    fn fallback_after_is_a_positive_window() {
        let rule =
            "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\n";
        let spec = Spec::parse("t.toml", &format!("{rule}fallback_after = \"15m\"\n")).unwrap();
        assert_eq!(spec.rules[0].fallback_after, Some(15 * 60_000));
        let e = problem(&format!("{rule}fallback_after = \"0s\"\n"));
        assert_eq!(e.field, "rule `a`: fallback_after");
        assert!(e.message.contains("longer than zero"), "{e}");
        let e = problem(&format!("{rule}fallback_afer = \"1h\"\n"));
        assert!(e.message.contains("did you mean `fallback_after`?"), "{e}");
    }

    /// At most MAX_PROBLEMS problems are listed, then how many more.
    #[test]
    fn problems_beyond_the_limit_are_counted() {
        let text: String = (0..MAX_PROBLEMS + 7)
            .map(|i| format!("[[cap]]\npurpose = \"marketing\"\nmax = {i}\nper = \"{i}\"\n"))
            .collect();
        let e = parse(&text).unwrap_err();
        assert_eq!((e.problems.len(), e.more), (MAX_PROBLEMS, 7));
        // The first ones, in file order.
        let lines: Vec<usize> = e.problems.iter().map(|p| p.line).collect();
        assert_eq!(
            lines,
            (0..MAX_PROBLEMS).map(|i| 4 * i + 4).collect::<Vec<_>>()
        );
        let shown = e.to_string();
        assert_eq!(shown.lines().count(), MAX_PROBLEMS + 1);
        assert_eq!(
            shown.lines().last(),
            Some("test.toml: … and 7 more problems")
        );
        let one_more: String = (0..=MAX_PROBLEMS)
            .map(|i| format!("[[cap]]\npurpose = \"marketing\"\nmax = 1\nper = \"{i}\"\n"))
            .collect();
        let shown = parse(&one_more).unwrap_err().to_string();
        assert_eq!(
            shown.lines().last(),
            Some("test.toml: … and 1 more problem")
        );
    }

    /// Spec durations are strict: each unit once, largest first; parts may
    /// be separated by spaces.
    #[test]
    fn spec_durations_are_strict() {
        let spec = parse("dedup_horizon = \"1h 30m\"\nallowed_lateness = \"90s\"\n").unwrap();
        assert_eq!(
            (spec.dedup_horizon, spec.allowed_lateness),
            (90 * 60_000, 90_000)
        );
        let e = problem("allowed_lateness = \"1m1h\"\n");
        assert_eq!((e.line, e.field.as_str()), (1, "allowed_lateness"));
        assert!(
            e.message
                .ends_with("write each unit once, largest first (d, h, m, s, ms): \"1h1m\""),
            "{e}"
        );
    }

    /// Every TOML syntax error is reported, and nothing read by guesswork
    /// after one.
    #[test]
    fn syntax_errors_are_all_reported() {
        let found = problems(
            "holdout = 0.1\nholdout = 0.2\n[[rule]]\nname = \"a\"\non = \"x\nchannels = [\"push\"]\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("2: holdout: `holdout` is set twice"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("5: rule `a`: on: invalid basic string"),
            "{found:?}"
        );
    }
}
