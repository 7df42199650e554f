//! Dataflow specs: the TOML files in `dataflows/` that say which events
//! become which notifications (DESIGN.md §4; format in the README, "Spec
//! reference").
//!
//! [`Spec::load`] parses and validates a spec into a compiled [`Spec`]. Every
//! problem is reported as `file:line: field: what is wrong; what to write
//! instead`, and a bad spec stops the job at start. The spec is read by every
//! other part of the program and depends on none of them.

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

/// A spec problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
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
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: file.clone(),
            line: 0,
            field: String::new(),
            message: format!("cannot read the spec: {e}"),
        })?;
        Spec::parse(&file, &text)
    }

    /// Parses and validates spec text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Spec, SpecError> {
        Compiler { file, text }.compile()
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
// Raw TOML shapes. Spans locate errors; `deny_unknown_fields` catches typos.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    dedup_horizon: Option<Spanned<String>>,
    allowed_lateness: Option<Spanned<String>>,
    holdout: Option<Spanned<f64>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    cap: Vec<Spanned<RawCap>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    on: Spanned<OneOrMany>,
    #[serde(rename = "where", default)]
    conditions: Vec<Spanned<RawCondition>>,
    template: Option<String>,
    purpose: Spanned<String>,
    priority: Option<Spanned<String>>,
    channels: Spanned<Vec<Spanned<String>>>,
    delay: Option<Spanned<String>>,
    at: Option<Spanned<RawAt>>,
    cancel_on: Option<Spanned<OneOrMany>>,
    dedup: Option<Spanned<RawDedup>>,
    fallback_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    field: String,
    op: String,
    value: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAt {
    field: String,
    #[serde(default)]
    before: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDedup {
    window: String,
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCap {
    purpose: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    max: Spanned<i64>,
    per: Spanned<String>,
}

struct Compiler<'a> {
    file: &'a str,
    text: &'a str,
}

impl Compiler<'_> {
    fn line_of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> SpecError {
        SpecError {
            file: self.file.to_string(),
            line: self.line_of(span),
            field: field.into(),
            message: message.into(),
        }
    }

    fn duration(&self, field: &str, v: &Spanned<String>) -> Result<i64, SpecError> {
        parse_duration(v.get_ref()).map_err(|m| self.err(&v.span(), field, m))
    }

    fn path(field: &str) -> Vec<String> {
        field.split('.').map(String::from).collect()
    }

    fn compile(&self) -> Result<Spec, SpecError> {
        let raw: RawSpec = toml::from_str(self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (field, message) = toml_errors::explain(self.text, &span, e.message().trim());
            self.err(&span, field, message)
        })?;

        let dedup_horizon = match &raw.dedup_horizon {
            Some(v) => self.duration("dedup_horizon", v)?,
            None => MS_PER_DAY,
        };
        let allowed_lateness = match &raw.allowed_lateness {
            Some(v) => self.duration("allowed_lateness", v)?,
            None => 0,
        };
        let holdout_bp = match &raw.holdout {
            Some(h) => {
                let v = *h.get_ref();
                if !(0.0..=1.0).contains(&v) {
                    return Err(self.err(&h.span(), "holdout", format!("{v} is not a fraction; write a number from 0.0 to 1.0, e.g. 0.05 for 5%")));
                }
                basis_points(v)
            }
            None => 0,
        };

        if raw.rule.len() > 64 {
            return Err(self.err(
                &raw.rule[64].span(),
                "rule",
                "a spec holds at most 64 rules; split it into several specs",
            ));
        }
        let mut rules = Vec::with_capacity(raw.rule.len());
        for r in raw.rule {
            let span = r.span();
            let rule = self.rule(r.into_inner())?;
            if rules.iter().any(|x: &Rule| x.name == rule.name) {
                return Err(self.err(
                    &span,
                    "rule.name",
                    format!(
                        "a second rule is named {:?}; rule names must be unique",
                        rule.name
                    ),
                ));
            }
            rules.push(rule);
        }

        let mut purpose_caps: [Vec<Cap>; 2] = Default::default();
        let mut channel_caps: [Vec<Cap>; 5] = Default::default();
        for c in raw.cap {
            let span = c.span();
            let c = c.into_inner();
            let per = self.duration("cap.per", &c.per)?;
            if per <= 0 {
                return Err(self.err(
                    &c.per.span(),
                    "cap.per",
                    "a cap window must be longer than zero, e.g. \"1h\"",
                ));
            }
            let max = *c.max.get_ref();
            if !(0..=u32::MAX as i64).contains(&max) {
                return Err(self.err(
                    &c.max.span(),
                    "cap.max",
                    format!("{max} is not a count; write a whole number ≥ 0"),
                ));
            }
            let cap = Cap {
                max: max as u32,
                per,
            };
            match (c.purpose, c.channel) {
                (Some(p), None) => {
                    let purpose = Purpose::parse(p.get_ref()).ok_or_else(|| {
                        self.err(
                            &p.span(),
                            "cap.purpose",
                            format!(
                                "unknown purpose {:?}; write \"marketing\" or \"transactional\"",
                                p.get_ref()
                            ),
                        )
                    })?;
                    purpose_caps[purpose as usize].push(cap);
                }
                (None, Some(ch)) => {
                    let channel = Channel::parse(ch.get_ref()).ok_or_else(|| {
                        self.err(
                            &ch.span(),
                            "cap.channel",
                            format!(
                                "unknown channel {:?}; channels are {}",
                                ch.get_ref(),
                                Channel::NAMES
                            ),
                        )
                    })?;
                    channel_caps[channel as usize].push(cap);
                }
                _ => {
                    return Err(self.err(
                        &span,
                        "cap",
                        "a cap needs exactly one of `purpose` or `channel`",
                    ));
                }
            }
        }
        Ok(Spec {
            dedup_horizon,
            allowed_lateness,
            holdout_bp,
            rules,
            purpose_caps,
            channel_caps,
        })
    }

    fn globs(&self, field: &str, v: Spanned<OneOrMany>) -> Result<Vec<Glob>, SpecError> {
        let span = v.span();
        let list = v.into_inner().into_vec();
        if list.is_empty() || list.iter().any(|s| s.is_empty()) {
            return Err(self.err(
                &span,
                field,
                "write one or more event types, e.g. \"cart.abandoned\" or [\"order.*\"]",
            ));
        }
        // Event types do not start or end with spaces: most likely a typo
        // that would match nothing.
        if let Some(s) = list.iter().find(|s| s.trim() != s.as_str()) {
            return Err(self.err(
                &span,
                field,
                format!("{s:?} starts or ends with a space; write {:?}", s.trim()),
            ));
        }
        Ok(list.iter().map(|s| Glob::new(s)).collect())
    }

    fn rule(&self, r: RawRule) -> Result<Rule, SpecError> {
        let name = r.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(self.err(&r.name.span(), "rule.name", "a rule needs a non-empty name"));
        }
        let f = |field: &str| format!("rule `{name}`: {field}");
        let on = self.globs(&f("on"), r.on)?;
        let purpose = Purpose::parse(r.purpose.get_ref()).ok_or_else(|| {
            self.err(
                &r.purpose.span(),
                f("purpose"),
                format!(
                    "unknown purpose {:?}; write \"marketing\" or \"transactional\"",
                    r.purpose.get_ref()
                ),
            )
        })?;
        let priority = match &r.priority {
            None => Priority::Normal,
            Some(p) => Priority::parse(p.get_ref()).ok_or_else(|| {
                self.err(
                    &p.span(),
                    f("priority"),
                    format!(
                        "unknown priority {:?}; write \"normal\", \"high\" or \"critical\"",
                        p.get_ref()
                    ),
                )
            })?,
        };
        let mut channels = Vec::new();
        for c in r.channels.get_ref() {
            let ch = Channel::parse(c.get_ref()).ok_or_else(|| {
                self.err(
                    &c.span(),
                    f("channels"),
                    format!(
                        "unknown channel {:?}; channels are {}",
                        c.get_ref(),
                        Channel::NAMES
                    ),
                )
            })?;
            if channels.contains(&ch) {
                return Err(self.err(
                    &c.span(),
                    f("channels"),
                    format!("{:?} is listed twice", c.get_ref()),
                ));
            }
            channels.push(ch);
        }
        if channels.is_empty() {
            return Err(self.err(
                &r.channels.span(),
                f("channels"),
                format!("list at least one channel ({})", Channel::NAMES),
            ));
        }
        let mut conditions = Vec::new();
        for c in r.conditions {
            let span = c.span();
            let c = c.into_inner();
            let op = Op::parse(&c.op).ok_or_else(|| {
                self.err(
                    &span,
                    f("where.op"),
                    format!("unknown operator {:?}; write one of {}", c.op, Op::NAMES),
                )
            })?;
            if !is_field_path(&c.field) {
                return Err(self.err(
                    &span,
                    f("where.field"),
                    format!(
                        "{:?} is not a field path; write a key of `data`, dots for nested keys",
                        c.field
                    ),
                ));
            }
            let value = match (op.takes_value(), c.value) {
                (true, None) => {
                    return Err(self.err(
                        &span,
                        f("where.value"),
                        format!("operator {:?} needs a `value`", c.op),
                    ));
                }
                (false, Some(_)) => {
                    return Err(self.err(
                        &span,
                        f("where.value"),
                        format!("operator {:?} takes no `value`; remove it", c.op),
                    ));
                }
                (false, None) => Value::Null,
                (true, Some(v)) => {
                    json_like(&v).map_err(|m| self.err(&span, f("where.value"), m))?;
                    serde_json::to_value(&v)
                        .map_err(|e| self.err(&span, f("where.value"), e.to_string()))?
                }
            };
            if op == Op::In && !value.as_array().is_some_and(|l| !l.is_empty()) {
                return Err(self.err(
                    &span,
                    f("where.value"),
                    "`in` needs a list of one or more values, e.g. value = [\"gold\", \"silver\"]",
                ));
            }
            if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge)
                && !(value.is_number() || value.is_string())
            {
                return Err(self.err(
                    &span,
                    f("where.value"),
                    format!(
                        "{:?} compares only numbers with numbers and strings with strings; write a number or a string",
                        c.op
                    ),
                ));
            }
            conditions.push(Condition {
                path: Self::path(&c.field),
                op,
                value,
            });
        }
        let timing = match (&r.delay, &r.at) {
            (Some(d), Some(_)) => {
                return Err(self.err(
                    &d.span(),
                    f("delay"),
                    "a rule has either `delay` or `at`, not both; remove one",
                ));
            }
            (Some(d), None) => Timing::Delay(self.duration(&f("delay"), d)?),
            (None, Some(at)) => {
                let span = at.span();
                let at = at.get_ref();
                if !is_field_path(&at.field) {
                    return Err(self.err(
                        &span,
                        f("at.field"),
                        "write the `data` field holding the time, e.g. field = \"starts_at\"",
                    ));
                }
                let before = match &at.before {
                    Some(b) => parse_duration(b).map_err(|m| self.err(&span, f("at.before"), m))?,
                    None => 0,
                };
                Timing::At {
                    path: Self::path(&at.field),
                    before,
                }
            }
            (None, None) => Timing::Delay(0),
        };
        let cancel_on = match r.cancel_on {
            Some(c) => self.globs(&f("cancel_on"), c)?,
            None => Vec::new(),
        };
        let dedup = match r.dedup {
            None => None,
            Some(d) => {
                let span = d.span();
                let d = d.into_inner();
                let window =
                    parse_duration(&d.window).map_err(|m| self.err(&span, f("dedup.window"), m))?;
                if window <= 0 {
                    return Err(self.err(
                        &span,
                        f("dedup.window"),
                        "a dedup window must be longer than zero, e.g. \"24h\"",
                    ));
                }
                if let Some(key) = &d.key
                    && !is_field_path(key)
                {
                    return Err(self.err(
                        &span,
                        f("dedup.key"),
                        format!(
                            "{key:?} is not a field path; write a key of `data`, dots for nested keys, e.g. key = \"order_id\""
                        ),
                    ));
                }
                Some(Dedup {
                    window,
                    key: d.key.as_deref().map(Self::path),
                })
            }
        };
        if let Some(fb) = &r.fallback_after {
            return Err(self.err(&fb.span(), f("fallback_after"), "channel fallback needs delivery receipts and is not supported yet; remove `fallback_after`"));
        }
        Ok(Rule {
            template: r.template.unwrap_or_else(|| name.clone()),
            name,
            on,
            conditions,
            purpose,
            priority,
            channels,
            timing,
            cancel_on,
            dedup,
        })
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
        for name in ["core", "ecommerce", "fintech", "healthcare", "saas"] {
            let path = format!("{}/dataflows/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            Spec::load(Path::new(&path)).unwrap();
        }
    }

    #[test]
    fn errors_name_file_line_field_and_fix() {
        let e = parse(
            "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketting\"\nchannels = [\"push\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 4);
        assert!(
            e.to_string()
                .starts_with("test.toml:4: rule `a`: purpose: unknown purpose"),
            "{e}"
        );
        assert!(e.message.contains("write \"marketing\""));

        let e = parse("[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\", \"fax\"]\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "rule `a`: channels"));

        let e = parse("dedup_horizon = \"1 day\"\n").unwrap_err();
        assert!(e.message.contains("not a duration"), "{e}");

        let e = parse("[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\nchanels = []\n").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        assert_eq!(e.line, 6);

        let e = parse("[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\ndelay = \"1h\"\nat = { field = \"t\" }\n").unwrap_err();
        assert!(e.message.contains("either `delay` or `at`"), "{e}");

        let e = parse("[[cap]]\nmax = 3\nper = \"1h\"\n").unwrap_err();
        assert!(e.message.contains("exactly one of"), "{e}");

        // Cap errors point at the key's line, not the table's header.
        let e = parse("[[cap]]\npurpose = \"marketing\"\nmax = 3\nper = \"1 hour\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "cap.per"), "{e}");
        let e = parse("[[cap]]\nchannel = \"fax\"\nmax = 3\nper = \"1h\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "cap.channel"), "{e}");
        let e = parse("[[cap]]\npurpose = \"marketing\"\nmax = -1\nper = \"1h\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "cap.max"), "{e}");

        let e = parse("holdout = 1.5\n").unwrap_err();
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
            let e = parse(&format!("{rule}where = [{cond}]\n")).unwrap_err();
            assert!(e.message.contains(says), "{cond}: {e}");
        }

        let e = parse("[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\ndedup = { window = \"1h\", key = \"a..b\" }\n").unwrap_err();
        assert_eq!(e.field, "rule `a`: dedup.key", "{e}");

        let e = parse(
            "[[rule]]\nname = \"a\"\non = \" x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("write \"x\""), "{e}");

        let e = parse("[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\nwhere = [{ field = \"v\", op = \"~\", value = 1 }]\n").unwrap_err();
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
}
