//! `nudgeflow diff`: what would a change of spec have decided differently?
//!
//! Replays one fixture under two specs, A (the one in force) and B (the
//! one proposed), in memory and on the same number of workers, the same
//! run as `replay` (nothing is written), and compares the decisions the
//! two runs wrote, line by line.
//!
//! A decision is known by its identity: the user, the event key, the rule
//! (none for a `late` event) and the attempt. The attempt is the
//! dispatch's own `attempt`; 1 for a suppression that ends a candidate
//! before its first dispatch; and k + 1 for the `undeliverable` that ends
//! a candidate after attempt k (it stands where attempt k + 1 would have
//! been). One identity can be decided more than once (an event re-sent
//! after the dedup horizon is decided again): its decisions are paired in
//! order of time. A pair is unchanged when both are dispatches on the same
//! channel at the same time, or both suppressions for the same reason at
//! the same time, and changed otherwise; a decision without a partner is
//! only in A or only in B. Templates, locales and a suppression's `detail`
//! are not compared (the detail is shown).
//!
//! Dead letters are compared by file, line and reason (a change of
//! `allowed_lateness` can make a record late, or not).
//!
//! Everything is ordered by the decisions' own fields, so the report is the
//! same for any number of workers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::record::output::Position;
use crate::replay::{Cluster, ReplayOptions, run};
use crate::sink::files::Summary;
use crate::source::fixture::{DEFAULT_STRIPE_BYTES, DEFAULT_STRIPES_PER_STEP};
use crate::spec::Spec;
use crate::time::{Time, format_rfc3339};

/// How many changed decisions a report shows unless told otherwise.
pub const DEFAULT_SAMPLE: usize = 20;

/// The suppression reasons in the order of the contract's table
/// (docs/semantics.md, "Suppressions"), the order a report lists them in.
const REASONS: [&str; 9] = [
    "muted",
    "holdout",
    "duplicate",
    "no_channel",
    "rate_limited",
    "cancelled",
    "erased",
    "late",
    "undeliverable",
];

pub struct DiffOptions {
    /// Spec A (in force) and spec B (proposed), each with the name the
    /// report gives it (its file, as given).
    pub a: (String, Arc<Spec>),
    pub b: (String, Arc<Spec>),
    pub fixture: PathBuf,
    /// Worker threads of each replay.
    pub workers: usize,
    /// How many changed decisions the report shows.
    pub sample: usize,
}

/// What changes from A to B: the JSON document of `nudgeflow diff --json`,
/// and what the text report shows.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Spec A's and spec B's names, and the fixture.
    pub a: String,
    pub b: String,
    pub fixture: String,
    /// Whether anything differs: a decision or a dead letter.
    pub differs: bool,
    pub decisions: Matches,
    /// Users with a decision in A or in B.
    pub users: u64,
    /// Users with a decision that is not unchanged.
    pub users_affected: u64,
    pub totals: Totals,
    /// Per rule, in spec A's order, then rules only in B in spec B's
    /// order, then `late` events (no rule); rules without decisions in
    /// either are left out.
    pub rules: Vec<RuleDiff>,
    /// The first changed decisions by user, event key, rule, attempt and
    /// occurrence (at most `--sample`).
    pub sample: Vec<Change>,
    pub dead_letters: DeadLetterDiff,
}

/// How the decisions of A and B matched.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Matches {
    pub unchanged: u64,
    pub changed: u64,
    pub only_in_a: u64,
    pub only_in_b: u64,
}

impl Matches {
    /// Decisions that are not unchanged.
    pub fn different(&self) -> u64 {
        self.changed + self.only_in_a + self.only_in_b
    }
}

/// A count in A and in B.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Pair {
    pub a: u64,
    pub b: u64,
}

/// The two runs' summaries side by side.
#[derive(Debug, Serialize)]
pub struct Totals {
    pub records: Pair,
    pub events: Pair,
    pub duplicates_dropped: Pair,
    pub late_events: Pair,
    pub candidates: Pair,
    pub deferrals: Pair,
    pub dispatches: Pair,
    pub suppressions: Pair,
    pub dead_letters: Pair,
    pub by_channel: BTreeMap<String, Pair>,
    pub by_reason: BTreeMap<String, Pair>,
}

/// One rule's decisions in A and in B.
#[derive(Debug, Default, Serialize)]
pub struct RuleDiff {
    /// The rule's name; null for `late` events, which no rule decided.
    pub rule: Option<String>,
    /// Dispatches, every attempt counted.
    pub dispatched: Pair,
    /// Suppressions by reason (reasons with none in either left out).
    pub suppressed: BTreeMap<String, Pair>,
    /// Decisions of the rule that are not unchanged.
    pub changed: u64,
}

/// A decision that is not the same in A and B.
#[derive(Debug, Serialize)]
pub struct Change {
    /// `changed`, `only_in_a` or `only_in_b`.
    pub kind: &'static str,
    pub user: String,
    pub event_key: String,
    pub rule: Option<String>,
    pub attempt: u32,
    /// 1, or n for the n-th decision of this identity (a re-sent event).
    pub occurrence: u32,
    pub a: Option<Outcome>,
    pub b: Option<Outcome>,
}

/// How a decision ended.
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Dispatched {
        channel: String,
        time: String,
        dispatch_id: String,
    },
    Suppressed {
        reason: String,
        time: String,
        detail: Box<RawValue>,
    },
}

/// Dead letters of one run that the other does not have.
#[derive(Debug, Default, Serialize)]
pub struct DeadLetterDiff {
    pub only_in_a: u64,
    pub only_in_b: u64,
    /// The first of them (at most `--sample`), by file and line.
    pub sample: Vec<DeadLetterChange>,
}

#[derive(Debug, Serialize)]
pub struct DeadLetterChange {
    /// `only_in_a` or `only_in_b`.
    pub kind: &'static str,
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// Replays the fixture under both specs and compares what they decided.
pub fn diff(opts: &DiffOptions) -> anyhow::Result<Report> {
    let replay = |spec: &Arc<Spec>| ReplayOptions {
        spec: spec.clone(),
        fixture: opts.fixture.clone(),
        cluster: Cluster::single(opts.workers),
        stripe_bytes: DEFAULT_STRIPE_BYTES,
        stripes_per_step: DEFAULT_STRIPES_PER_STEP,
        progress: false,
        as_of: None,
    };
    let a = Run::replay(&replay(&opts.a.1)).with_context(|| format!("replaying {}", opts.a.0))?;
    let b = Run::replay(&replay(&opts.b.1)).with_context(|| format!("replaying {}", opts.b.0))?;
    Ok(compare(opts, &a, &b))
}

/// What one replay decided, as the diff needs it.
struct Run {
    /// Sorted by identity, occurrence, time and outcome.
    decisions: Vec<Decision>,
    /// `file:line` and reason of each dead letter, sorted.
    dead_letters: Vec<(String, u64, String)>,
    summary: Summary,
}

/// One dispatch or suppression line.
struct Decision {
    id: Identity,
    /// 0 for the first decision of the identity, 1 for the next, …
    occurrence: u32,
    time: Time,
    what: What,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Identity {
    user: String,
    event_key: String,
    rule: Option<String>,
    attempt: u32,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum What {
    Dispatched {
        channel: String,
        dispatch_id: String,
    },
    Suppressed {
        reason: String,
        detail: String,
    },
}

impl Decision {
    /// Whether `other` ends the same way: same kind, channel or reason,
    /// and time.
    fn same(&self, other: &Decision) -> bool {
        self.time == other.time
            && match (&self.what, &other.what) {
                (What::Dispatched { channel: a, .. }, What::Dispatched { channel: b, .. }) => {
                    a == b
                }
                (What::Suppressed { reason: a, .. }, What::Suppressed { reason: b, .. }) => a == b,
                _ => false,
            }
    }

    fn outcome(&self) -> Outcome {
        let time = format_rfc3339(self.time);
        match &self.what {
            What::Dispatched {
                channel,
                dispatch_id,
            } => Outcome::Dispatched {
                channel: channel.clone(),
                time,
                dispatch_id: dispatch_id.clone(),
            },
            What::Suppressed { reason, detail } => Outcome::Suppressed {
                reason: reason.clone(),
                time,
                detail: RawValue::from_string(detail.clone())
                    .expect("a detail read as JSON is JSON"),
            },
        }
    }
}

/// The fields of an output line the diff reads.
#[derive(Deserialize)]
struct Line<'a> {
    user: String,
    rule: Option<String>,
    event_key: String,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    dispatch_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, borrow)]
    detail: Option<&'a RawValue>,
}

impl Run {
    fn replay(opts: &ReplayOptions) -> anyhow::Result<Run> {
        let out = run(opts)?;
        let mut decisions = Vec::new();
        for lines in out.dispatches.iter().chain(&out.suppressions) {
            for (time, line) in lines.iter() {
                let line: Line = serde_json::from_slice(line).with_context(|| {
                    let line = String::from_utf8_lossy(line);
                    format!("an output line is not as expected: {line}")
                })?;
                let what = match (line.dispatch_id, line.channel, line.reason) {
                    (Some(dispatch_id), Some(channel), _) => What::Dispatched {
                        channel,
                        dispatch_id,
                    },
                    (None, _, Some(reason)) => What::Suppressed {
                        reason,
                        detail: line.detail.map_or("{}", |d| d.get()).to_string(),
                    },
                    _ => anyhow::bail!("an output line is neither a dispatch nor a suppression"),
                };
                decisions.push(Decision {
                    id: Identity {
                        user: line.user,
                        event_key: line.event_key,
                        rule: line.rule,
                        attempt: line.attempt.unwrap_or(1),
                    },
                    occurrence: 0,
                    time,
                    what,
                });
            }
        }
        number_attempts(&mut decisions);
        let mut dead_letters: Vec<(String, u64, String)> = out
            .dead_letters
            .iter()
            .map(|d| match &d.at {
                Position::File { file, line } => (file.clone(), *line, d.reason.clone()),
                Position::Kafka {
                    topic,
                    partition,
                    offset,
                } => (
                    format!("{topic}:{partition}"),
                    *offset as u64,
                    d.reason.clone(),
                ),
            })
            .collect();
        dead_letters.sort();
        Ok(Run {
            decisions,
            dead_letters,
            summary: out.summary,
        })
    }
}

/// Gives each `undeliverable` the attempt it stands for (one more than the
/// latest dispatch of its candidate before it), then sorts the decisions
/// by identity, time and outcome and numbers the occurrences of each
/// identity.
fn number_attempts(decisions: &mut [Decision]) {
    // By candidate and time; at one instant, dispatches by attempt before
    // the `undeliverable` that a failure at that instant led to.
    decisions.sort_by(|x, y| {
        let key = |d: &Decision| {
            let suppressed = matches!(d.what, What::Suppressed { .. });
            (d.time, suppressed, d.id.attempt)
        };
        (&x.id.user, &x.id.event_key, &x.id.rule)
            .cmp(&(&y.id.user, &y.id.event_key, &y.id.rule))
            .then_with(|| key(x).cmp(&key(y)))
    });
    let mut latest = 0;
    for i in 0..decisions.len() {
        let same_candidate = i > 0 && {
            let (p, d) = (&decisions[i - 1].id, &decisions[i].id);
            (&p.user, &p.event_key, &p.rule) == (&d.user, &d.event_key, &d.rule)
        };
        if !same_candidate {
            latest = 0;
        }
        let d = &mut decisions[i];
        match &d.what {
            What::Dispatched { .. } => latest = d.id.attempt,
            What::Suppressed { reason, .. } if reason == "undeliverable" => {
                d.id.attempt = latest + 1
            }
            What::Suppressed { .. } => {}
        }
    }
    decisions.sort_by(|x, y| (&x.id, x.time, &x.what).cmp(&(&y.id, y.time, &y.what)));
    for i in 1..decisions.len() {
        if decisions[i].id == decisions[i - 1].id {
            decisions[i].occurrence = decisions[i - 1].occurrence + 1;
        }
    }
}

/// One decision of A, of B, or of both, in the order of identity and
/// occurrence.
enum Pairing<'r> {
    Both(&'r Decision, &'r Decision),
    OnlyA(&'r Decision),
    OnlyB(&'r Decision),
}

fn pairings<'r>(a: &'r [Decision], b: &'r [Decision]) -> Vec<Pairing<'r>> {
    let key = |d: &'r Decision| (&d.id, d.occurrence);
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    loop {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => match key(x).cmp(&key(y)) {
                std::cmp::Ordering::Less => {
                    out.push(Pairing::OnlyA(x));
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(Pairing::OnlyB(y));
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    out.push(Pairing::Both(x, y));
                    i += 1;
                    j += 1;
                }
            },
            (Some(x), None) => {
                out.push(Pairing::OnlyA(x));
                i += 1;
            }
            (None, Some(y)) => {
                out.push(Pairing::OnlyB(y));
                j += 1;
            }
            (None, None) => return out,
        }
    }
}

fn pair(a: u64, b: u64) -> Pair {
    Pair { a, b }
}

/// Compares the runs of spec A and spec B.
fn compare(opts: &DiffOptions, a: &Run, b: &Run) -> Report {
    let sample = opts.sample;
    let mut matches = Matches::default();
    let mut users = BTreeSet::new();
    let mut affected = BTreeSet::new();
    let mut changed_by_rule: BTreeMap<Option<&str>, u64> = BTreeMap::new();
    let mut changes = Vec::new();
    for p in pairings(&a.decisions, &b.decisions) {
        let (kind, x, y) = match p {
            Pairing::Both(x, y) if x.same(y) => {
                matches.unchanged += 1;
                users.insert(x.id.user.as_str());
                continue;
            }
            Pairing::Both(x, y) => {
                matches.changed += 1;
                ("changed", Some(x), Some(y))
            }
            Pairing::OnlyA(x) => {
                matches.only_in_a += 1;
                ("only_in_a", Some(x), None)
            }
            Pairing::OnlyB(y) => {
                matches.only_in_b += 1;
                ("only_in_b", None, Some(y))
            }
        };
        let d = x.or(y).expect("a pairing has a decision");
        users.insert(d.id.user.as_str());
        affected.insert(d.id.user.as_str());
        *changed_by_rule.entry(d.id.rule.as_deref()).or_default() += 1;
        if changes.len() < sample {
            changes.push(Change {
                kind,
                user: d.id.user.clone(),
                event_key: d.id.event_key.clone(),
                rule: d.id.rule.clone(),
                attempt: d.id.attempt,
                occurrence: d.occurrence + 1,
                a: x.map(Decision::outcome),
                b: y.map(Decision::outcome),
            });
        }
    }

    let dead_letters = compare_dead_letters(&a.dead_letters, &b.dead_letters, sample);
    let (s, t) = (&a.summary, &b.summary);
    let union = |x: &BTreeMap<String, u64>, y: &BTreeMap<String, u64>| {
        x.keys()
            .chain(y.keys())
            .map(|k| {
                let n = |m: &BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0);
                (k.clone(), pair(n(x), n(y)))
            })
            .collect()
    };
    let totals = Totals {
        records: pair(s.records, t.records),
        events: pair(s.events, t.events),
        duplicates_dropped: pair(s.duplicates_dropped, t.duplicates_dropped),
        late_events: pair(s.late_events, t.late_events),
        candidates: pair(s.candidates, t.candidates),
        deferrals: pair(s.deferrals, t.deferrals),
        dispatches: pair(s.dispatches, t.dispatches),
        suppressions: pair(s.suppressions, t.suppressions),
        dead_letters: pair(s.dead_letters, t.dead_letters),
        by_channel: union(&s.by_channel, &t.by_channel),
        by_reason: union(&s.by_reason, &t.by_reason),
    };
    let rules = rule_diffs(a, b, [&opts.a.1, &opts.b.1], &changed_by_rule);
    Report {
        a: opts.a.0.clone(),
        b: opts.b.0.clone(),
        fixture: opts.fixture.display().to_string(),
        differs: matches.different() > 0
            || dead_letters.only_in_a > 0
            || dead_letters.only_in_b > 0,
        decisions: matches,
        users: users.len() as u64,
        users_affected: affected.len() as u64,
        totals,
        rules,
        sample: changes,
        dead_letters,
    }
}

fn compare_dead_letters(
    a: &[(String, u64, String)],
    b: &[(String, u64, String)],
    sample: usize,
) -> DeadLetterDiff {
    let mut diff = DeadLetterDiff::default();
    let (mut i, mut j) = (0, 0);
    let note = |diff: &mut DeadLetterDiff, kind, (file, line, reason): &(String, u64, String)| {
        if kind == "only_in_a" {
            diff.only_in_a += 1;
        } else {
            diff.only_in_b += 1;
        }
        if diff.sample.len() < sample {
            diff.sample.push(DeadLetterChange {
                kind,
                file: file.clone(),
                line: *line,
                reason: reason.clone(),
            });
        }
    };
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                note(&mut diff, "only_in_a", x);
                i += 1;
            }
            (Some(x), None) => {
                note(&mut diff, "only_in_a", x);
                i += 1;
            }
            (_, Some(y)) => {
                note(&mut diff, "only_in_b", y);
                j += 1;
            }
            (None, None) => unreachable!("the loop ends first"),
        }
    }
    diff
}

/// The per-rule counts of both runs, in the order of the specs' rules,
/// with the number of changed decisions of each rule.
fn rule_diffs(
    a: &Run,
    b: &Run,
    specs: [&Spec; 2],
    changed: &BTreeMap<Option<&str>, u64>,
) -> Vec<RuleDiff> {
    let mut order: Vec<Option<String>> = Vec::new();
    for spec in specs {
        for rule in &spec.rules {
            if !order.contains(&Some(rule.name.clone())) {
                order.push(Some(rule.name.clone()));
            }
        }
    }
    let mut rules: BTreeMap<Option<String>, RuleDiff> = BTreeMap::new();
    for (side, run) in [(0, a), (1, b)] {
        for d in &run.decisions {
            let r = rules.entry(d.id.rule.clone()).or_default();
            let count = match &d.what {
                What::Dispatched { .. } => &mut r.dispatched,
                What::Suppressed { reason, .. } => r.suppressed.entry(reason.clone()).or_default(),
            };
            if side == 0 {
                count.a += 1;
            } else {
                count.b += 1;
            }
        }
    }
    for (rule, n) in changed {
        rules.entry(rule.map(str::to_string)).or_default().changed = *n;
    }
    // Any other name (none, unless a line names a rule neither spec has)
    // goes after the specs' rules, then the rule-less `late` events.
    for name in rules.keys() {
        if name.is_some() && !order.contains(name) {
            order.push(name.clone());
        }
    }
    order.push(None);
    order
        .into_iter()
        .filter_map(|name| {
            let mut r = rules.remove(&name)?;
            r.rule = name;
            Some(r)
        })
        .collect()
}

impl Report {
    /// The report as one JSON document (pretty-printed, ending in a
    /// newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises") + "\n"
    }

    /// The report as text: tables of the counts in A and B, then the
    /// sample of changed decisions.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let m = &self.decisions;
        let t = &self.totals;
        let _ = writeln!(out, "A  {}", self.a);
        let _ = writeln!(out, "B  {}", self.b);
        let _ = writeln!(
            out,
            "replayed {} ({})",
            self.fixture,
            count(t.records.a, "record")
        );
        out.push('\n');
        let in_a = m.unchanged + m.changed + m.only_in_a;
        let in_b = m.unchanged + m.changed + m.only_in_b;
        if !self.differs {
            let _ = writeln!(
                out,
                "no change: the {} and {} are the same under A and B",
                count(in_a, "decision"),
                count(t.dead_letters.a, "dead letter"),
            );
        } else {
            let _ = writeln!(
                out,
                "decisions: {in_a} in A, {in_b} in B: {} unchanged, {} changed, {} only in A, {} only in B",
                m.unchanged, m.changed, m.only_in_a, m.only_in_b
            );
            let _ = writeln!(
                out,
                "users affected: {} of {}",
                self.users_affected, self.users
            );
        }

        let mut rows = vec![Row::Head("totals")];
        rows.push(Row::count("dispatches", 0, t.dispatches));
        for (channel, n) in &t.by_channel {
            rows.push(Row::count(channel, 1, *n));
        }
        rows.push(Row::count("suppressions", 0, t.suppressions));
        for (reason, n) in by_reason_order(&t.by_reason) {
            rows.push(Row::count(reason, 1, n));
        }
        rows.push(Row::count("candidates", 0, t.candidates));
        rows.push(Row::count("deferrals", 0, t.deferrals));
        rows.push(Row::count("duplicates dropped", 0, t.duplicates_dropped));
        rows.push(Row::count("late events", 0, t.late_events));
        rows.push(Row::count("dead letters", 0, t.dead_letters));
        rows.push(Row::Blank);
        rows.push(Row::Head("by rule"));
        for r in &self.rules {
            let name = r.rule.as_deref().unwrap_or("(no rule: late events)");
            rows.push(Row::Group(name.to_string(), r.changed));
            if r.rule.is_some() {
                rows.push(Row::count("dispatched", 1, r.dispatched));
            }
            for (reason, n) in by_reason_order(&r.suppressed) {
                rows.push(Row::count(reason, 1, n));
            }
        }
        out.push('\n');
        out += &render_rows(&rows);

        if m.different() > 0 && !self.sample.is_empty() {
            out.push('\n');
            let shown = self.sample.len() as u64;
            let of = if shown < m.different() {
                format!("the first {shown} of {}", m.different())
            } else {
                format!("all {shown}")
            };
            let _ = writeln!(
                out,
                "changed decisions, {of} (by user, event key, rule and attempt):"
            );
            for c in &self.sample {
                let mut head = format!(
                    "{}  {}  {}",
                    c.user,
                    c.event_key,
                    c.rule.as_deref().unwrap_or("(no rule)")
                );
                if c.attempt > 1 {
                    let _ = write!(head, "  attempt {}", c.attempt);
                }
                if c.occurrence > 1 {
                    let _ = write!(head, "  (decision {} of this re-sent event)", c.occurrence);
                }
                let _ = writeln!(out, "  {head}");
                let _ = writeln!(out, "    A  {}", describe(c.a.as_ref()));
                let _ = writeln!(out, "    B  {}", describe(c.b.as_ref()));
            }
        }
        let dl = &self.dead_letters;
        if dl.only_in_a + dl.only_in_b > 0 {
            out.push('\n');
            let _ = writeln!(
                out,
                "dead letters: {} only in A, {} only in B",
                dl.only_in_a, dl.only_in_b
            );
            for d in &dl.sample {
                let side = if d.kind == "only_in_a" { "A" } else { "B" };
                let _ = writeln!(out, "    {side}  {}:{}: {}", d.file, d.line, d.reason);
            }
        }
        out
    }
}

/// A row of the counts table.
enum Row {
    /// A table's heading, over the columns A, B and Δ.
    Head(&'static str),
    /// A rule's name, and how many of its decisions changed.
    Group(String, u64),
    /// A count in A and B, its label indented by this many steps.
    Count(String, usize, Pair),
    Blank,
}

impl Row {
    fn count(label: &str, indent: usize, n: Pair) -> Row {
        Row::Count(label.to_string(), indent, n)
    }
}

/// The rows as a table: labels, then A, B and the change from A to B
/// (blank when none), right-aligned.
fn render_rows(rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|r| match r {
            Row::Head(label) => label.chars().count(),
            Row::Count(label, indent, _) => 2 * indent + label.chars().count(),
            Row::Group(..) | Row::Blank => 0,
        })
        .max()
        .unwrap_or(0)
        + 2;
    let numbers = rows
        .iter()
        .filter_map(|r| match r {
            Row::Count(_, _, n) => Some(n.a.max(n.b).to_string().len() + 2),
            _ => None,
        })
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = String::new();
    for r in rows {
        match r {
            Row::Head(label) => {
                let _ = writeln!(
                    out,
                    "{label:<width$}{:>numbers$}{:>numbers$}{:>numbers$}",
                    "A", "B", "Δ"
                );
            }
            Row::Group(label, 0) => {
                let _ = writeln!(out, "{label}");
            }
            Row::Group(label, 1) => {
                let _ = writeln!(out, "{label}  (1 decision changed)");
            }
            Row::Group(label, n) => {
                let _ = writeln!(out, "{label}  ({n} decisions changed)");
            }
            Row::Count(label, indent, n) => {
                let label = "  ".repeat(*indent) + label;
                let delta = match n.b as i128 - n.a as i128 {
                    0 => String::new(),
                    d => format!("{d:+}"),
                };
                let line = format!(
                    "{label:<width$}{:>numbers$}{:>numbers$}{delta:>numbers$}",
                    n.a, n.b
                );
                let _ = writeln!(out, "{}", line.trim_end());
            }
            Row::Blank => out.push('\n'),
        }
    }
    out
}

/// Reasons in the contract's order, then any other in name order.
fn by_reason_order(m: &BTreeMap<String, Pair>) -> Vec<(&str, Pair)> {
    let mut reasons: Vec<(&str, Pair)> = m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    reasons.sort_by_key(|(r, _)| {
        (
            REASONS.iter().position(|x| x == r).unwrap_or(REASONS.len()),
            *r,
        )
    });
    reasons
}

/// An outcome in words.
fn describe(o: Option<&Outcome>) -> String {
    match o {
        None => "no decision".into(),
        Some(Outcome::Dispatched { channel, time, .. }) => {
            format!("dispatched on {channel} at {time}")
        }
        Some(Outcome::Suppressed {
            reason,
            time,
            detail,
        }) => {
            let detail: Value = serde_json::from_str(detail.get()).unwrap_or(Value::Null);
            format!("suppressed {reason} at {time}{}", describe_detail(&detail))
        }
    }
}

/// A suppression's `detail` in a few words, in parentheses (empty when it
/// says nothing more than the reason).
fn describe_detail(detail: &Value) -> String {
    use crate::explain::{DetailWords, detail_words};
    match detail_words(detail) {
        Some(DetailWords::CancelledBy(key)) => format!(" (by event {key})"),
        Some(DetailWords::DuplicateOf(id)) => format!(" (of dispatch {id})"),
        Some(DetailWords::Channels(words) | DetailWords::PurposeCap(words)) => {
            format!(" ({words})")
        }
        None => String::new(),
    }
}

/// `n thing` or `n things`.
fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(time: Time, attempt: u32, what: &str) -> Decision {
        let what = match what.strip_prefix("on ") {
            Some(channel) => What::Dispatched {
                channel: channel.into(),
                dispatch_id: format!("id-{attempt}"),
            },
            None => What::Suppressed {
                reason: what.into(),
                detail: "{}".into(),
            },
        };
        Decision {
            id: Identity {
                user: "u".into(),
                event_key: "k".into(),
                rule: Some("r".into()),
                attempt,
            },
            occurrence: 0,
            time,
            what,
        }
    }

    /// An event decided twice (re-sent after the horizon), each time
    /// through fallback to `undeliverable`: each `undeliverable` stands for
    /// the attempt after its own candidate's last dispatch, and the two
    /// decisions of each identity are numbered in order of time. Attempt 2
    /// and the `undeliverable` at the same instant as the failure of
    /// attempt 1 keep that order.
    #[test]
    fn undeliverable_stands_for_the_next_attempt() {
        let mut decisions = vec![
            decision(500, 1, "undeliverable"),
            decision(100, 1, "on email"),
            decision(300, 1, "undeliverable"),
            decision(400, 1, "on email"),
            decision(200, 2, "on push"),
            decision(400, 2, "on push"),
        ];
        number_attempts(&mut decisions);
        let got: Vec<(u32, u32, Time)> = decisions
            .iter()
            .map(|d| (d.id.attempt, d.occurrence, d.time))
            .collect();
        assert_eq!(
            got,
            [
                (1, 0, 100),
                (1, 1, 400),
                (2, 0, 200),
                (2, 1, 400),
                (3, 0, 300),
                (3, 1, 500)
            ]
        );
    }

    /// Decisions are paired by identity and occurrence; the rest are only
    /// in one run.
    #[test]
    fn pairs_by_identity_and_occurrence() {
        let mut a = vec![decision(100, 1, "on email"), decision(400, 1, "on email")];
        let mut b = vec![decision(100, 1, "on push")];
        number_attempts(&mut a);
        number_attempts(&mut b);
        let kinds: Vec<&str> = pairings(&a, &b)
            .iter()
            .map(|p| match p {
                Pairing::Both(x, y) if x.same(y) => "unchanged",
                Pairing::Both(..) => "changed",
                Pairing::OnlyA(_) => "only in A",
                Pairing::OnlyB(_) => "only in B",
            })
            .collect();
        assert_eq!(kinds, ["changed", "only in A"]);
    }
}
