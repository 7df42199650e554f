//! The spec's `[analytics]` table (DESIGN.md §5): which events count as a
//! user being active, the retention segment and bucket, and the BG/NBD
//! churn model of `[analytics.churn]`.
//!
//! ```toml
//! [analytics]
//! activity = ["order.placed"]   # required: event types (globs, as `on`)
//! segment = "segment"           # optional: a `data` field path; absent: every segment is null
//! bucket = "week"               # optional: "day", "week" (default) or "month"
//!
//! [analytics.churn]             # optional: without it no churn risk is computed
//! r = 0.243                     # required, all four: positive finite numbers
//! alpha = 4.414                 #   (alpha is in `unit`s)
//! a = 0.793
//! b = 2.426
//! unit = "week"                 # optional: "day" or "week" (default)
//! threshold = 0.3               # required: P(alive) below it is a churn risk, in (0, 1)
//! ```
//!
//! Without `[analytics]` nothing of §5 is computed; with it and without
//! `[analytics.churn]`, retention is and churn risk is not. The model's
//! parameters have no default: they are fit to a business's own history
//! (Fader, Hardie & Lee 2005 fit r, α, a, b on CDNOW purchases in weeks),
//! and α is a time scale in `unit`s, so the same numbers mean another
//! model in days than in weeks.

use std::ops::Range;

use toml::de::DeTable;

use super::{Compiler, Glob, Item, field, is_field_path, toml_errors};

/// The `[analytics]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Analytics {
    /// Event types (globs) that count as the user being active.
    pub activity: Vec<Glob>,
    /// The `data` field of a user's first activity event that names their
    /// retention segment; `None` (no `segment` key): every segment is null.
    pub segment: Option<Vec<String>>,
    /// Retention cohorts and periods; default [`Bucket::Week`].
    pub bucket: Bucket,
    /// `[analytics.churn]`; `None`: no churn risk is computed.
    pub churn: Option<Churn>,
}

impl Analytics {
    /// Does an event of this type count as the user being active?
    pub fn is_activity(&self, kind: &str) -> bool {
        self.activity.iter().any(|g| g.matches(kind))
    }
}

/// Retention buckets, in UTC: a day, an ISO week starting Monday, a
/// calendar month.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Bucket {
    Day,
    Week,
    Month,
}

impl Bucket {
    pub const ALL: [Bucket; 3] = [Bucket::Day, Bucket::Week, Bucket::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Day => "day",
            Bucket::Week => "week",
            Bucket::Month => "month",
        }
    }
}

/// `[analytics.churn]`: the BG/NBD model and when a user is at risk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    pub model: BgNbd,
    /// The unit of `t_x`, `T` and α; default [`Unit::Week`].
    pub unit: Unit,
    /// A `churn.risk_high` signal is due when P(alive) is below this; in (0, 1).
    pub threshold: f64,
}

/// BG/NBD parameters (Fader, Hardie & Lee 2005), all positive and finite:
/// r and α shape the gamma distribution of activity rates across users (α
/// in the churn `unit`), a and b the beta distribution of the probability
/// of dropping out after an active day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// The time unit of the churn model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    Day,
    Week,
}

impl Unit {
    pub const ALL: [Unit; 2] = [Unit::Day, Unit::Week];

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Day => "day",
            Unit::Week => "week",
        }
    }

    /// Days in one unit: u of §5.
    pub fn days(self) -> f64 {
        match self {
            Unit::Day => 1.0,
            Unit::Week => 7.0,
        }
    }
}

/// The type of the events nudgeflow emits for users at churn risk.
pub const CHURN_EVENT: &str = "churn.risk_high";

const ANALYTICS_KEYS: &[&str] = &["activity", "segment", "bucket", "churn"];
const CHURN_KEYS: &[&str] = &["r", "alpha", "a", "b", "unit", "threshold"];

impl Compiler<'_> {
    /// The `[analytics]` table.
    pub(super) fn analytics(&mut self, v: &Item<'_>) -> Option<Analytics> {
        let prefix = "analytics";
        let f = |key: &str| field(prefix, key);
        let t = self.table(v, prefix, prefix)?;
        self.unknown_keys(t, ANALYTICS_KEYS, prefix, "[analytics]");
        let activity = match t.get("activity") {
            None => {
                self.missing(t, ANALYTICS_KEYS, &v.span(), prefix, "activity");
                None
            }
            Some(a) => self.globs(a, &f("activity"), "activity"),
        };
        let segment = match t.get("segment") {
            None => Some(None),
            Some(s) => match self.string(s, &f("segment"), "segment") {
                Some(p) if is_field_path(p) => Some(Some(Self::path(p))),
                Some(p) => {
                    self.report(
                        &s.span(),
                        f("segment"),
                        format!(
                            "{p:?} is not a field path; write a key of `data`, dots for nested keys, e.g. segment = \"customer.tier\""
                        ),
                    );
                    None
                }
                None => None,
            },
        };
        let bucket = match t.get("bucket") {
            None => Some(Bucket::Week),
            Some(b) => self.word(
                b,
                &f("bucket"),
                "bucket",
                &Bucket::ALL,
                |b| b.as_str(),
                "write \"day\", \"week\" or \"month\"",
            ),
        };
        let churn = match t.get("churn") {
            None => Some(None),
            Some(c) => self.churn(c).map(Some),
        };
        // Checked with any churn table, valid or not, so that its problems
        // and this one are reported together.
        if let (Some(activity), Some(_), Some(a)) =
            (activity.as_ref(), t.get("churn"), t.get("activity"))
            && let Some(g) = activity.iter().find(|g| g.matches(CHURN_EVENT))
        {
            // Its own signal would make an at-risk user active again.
            self.report(
                &a.span(),
                f("activity"),
                format!(
                    "{:?} matches {CHURN_EVENT:?}, the event nudgeflow emits for a user at churn risk, which would count as the user being active again; list the event types of the user's own activity, e.g. activity = [\"order.placed\", \"page.*\"]",
                    g.as_str()
                ),
            );
            return None;
        }
        Some(Analytics {
            activity: activity?,
            segment: segment?,
            bucket: bucket?,
            churn: churn?,
        })
    }

    /// `[analytics.churn]`.
    fn churn(&mut self, v: &Item<'_>) -> Option<Churn> {
        let prefix = "analytics.churn";
        let f = |key: &str| field(prefix, key);
        let t = self.table(v, prefix, "churn")?;
        self.unknown_keys(t, CHURN_KEYS, prefix, "[analytics.churn]");
        let span = v.span();
        let mut parameter = |key: &str| self.parameter(t, &span, key);
        let (r, alpha, a, b) = (
            parameter("r"),
            parameter("alpha"),
            parameter("a"),
            parameter("b"),
        );
        let unit = match t.get("unit") {
            None => Some(Unit::Week),
            Some(u) => self.word(
                u,
                &f("unit"),
                "unit",
                &Unit::ALL,
                |u| u.as_str(),
                "write \"day\" or \"week\"",
            ),
        };
        let threshold = match t.get("threshold") {
            None => {
                self.missing(t, CHURN_KEYS, &span, prefix, "threshold");
                None
            }
            Some(th) => self
                .number(th, &f("threshold"), "threshold")
                .and_then(|p| {
                    if p > 0.0 && p < 1.0 {
                        return Some(p);
                    }
                    self.report(
                        &th.span(),
                        f("threshold"),
                        format!(
                            "{p} is not a probability between 0 and 1 (both excluded); write e.g. threshold = 0.3"
                        ),
                    );
                    None
                }),
        };
        Some(Churn {
            model: BgNbd {
                r: r?,
                alpha: alpha?,
                a: a?,
                b: b?,
            },
            unit: unit?,
            threshold: threshold?,
        })
    }

    /// A required model parameter of `[analytics.churn]`: a positive
    /// finite number.
    fn parameter(&mut self, t: &DeTable<'_>, at: &Range<usize>, key: &str) -> Option<f64> {
        let prefix = "analytics.churn";
        let Some(v) = t.get(key) else {
            self.missing(t, CHURN_KEYS, at, prefix, key);
            return None;
        };
        let n = self.number(v, &field(prefix, key), key)?;
        if n > 0.0 && n.is_finite() {
            return Some(n);
        }
        let not = if n.is_finite() {
            "above 0"
        } else {
            "a finite number"
        };
        let write = toml_errors::example(key).unwrap_or("a positive number");
        self.report(
            &v.span(),
            field(prefix, key),
            format!("{n} is not {not}; write {write}"),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Spec, SpecError};

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse("test.toml", text)
    }

    /// Every problem of a spec, as `line: field: message` lines.
    fn problems(text: &str) -> Vec<String> {
        let e = parse(text).unwrap_err();
        e.problems
            .iter()
            .map(|p| format!("{}: {}: {}", p.line, p.field, p.message))
            .collect()
    }

    const CHURN: &str =
        "[analytics.churn]\nr = 0.243\nalpha = 4.414\na = 0.793\nb = 2.426\nthreshold = 0.3\n";

    #[test]
    fn defaults_and_a_full_table() {
        assert_eq!(parse("holdout = 0.1\n").unwrap().analytics, None);

        let minimal = parse("[analytics]\nactivity = \"order.placed\"\n").unwrap();
        assert_eq!(
            minimal.analytics,
            Some(Analytics {
                activity: vec![Glob::new("order.placed")],
                segment: None,
                bucket: Bucket::Week,
                churn: None,
            })
        );

        let full = parse(&format!(
            "[analytics]\nactivity = [\"order.*\", \"page.viewed\"]\nsegment = \"customer.tier\"\nbucket = \"month\"\n\n{CHURN}unit = \"day\"\n"
        ))
        .unwrap()
        .analytics
        .unwrap();
        assert!(full.is_activity("order.placed") && full.is_activity("page.viewed"));
        assert!(!full.is_activity("cart.abandoned"));
        assert_eq!(
            full.segment,
            Some(vec!["customer".to_string(), "tier".to_string()])
        );
        assert_eq!(full.bucket, Bucket::Month);
        assert_eq!(
            full.churn,
            Some(Churn {
                model: BgNbd {
                    r: 0.243,
                    alpha: 4.414,
                    a: 0.793,
                    b: 2.426
                },
                unit: Unit::Day,
                threshold: 0.3,
            })
        );

        // Without `unit`, weeks; whole numbers are numbers; an inline table
        // is the same table.
        let inline = parse(
            "analytics = { activity = \"x\", churn = { r = 1, alpha = 2, a = 3, b = 4, threshold = 0.5 } }\n",
        )
        .unwrap()
        .analytics
        .unwrap();
        let churn = inline.churn.unwrap();
        assert_eq!(churn.unit, Unit::Week);
        assert_eq!(churn.unit.days(), 7.0);
        assert_eq!(
            (
                churn.model.r,
                churn.model.alpha,
                churn.model.a,
                churn.model.b
            ),
            (1.0, 2.0, 3.0, 4.0)
        );
    }

    #[test]
    fn shipped_specs_configure_analytics() {
        let load = |name: &str| {
            let path = format!("{}/dataflows/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            Spec::load(std::path::Path::new(&path))
                .unwrap()
                .analytics
                .unwrap()
        };
        let ecommerce = load("ecommerce");
        let churn = ecommerce.churn.unwrap();
        // Fader, Hardie & Lee (2005), CDNOW, in weeks.
        assert_eq!(
            churn.model,
            BgNbd {
                r: 0.243,
                alpha: 4.414,
                a: 0.793,
                b: 2.426
            }
        );
        assert_eq!(churn.unit, Unit::Week);
        assert!(ecommerce.is_activity("order.placed"));
        assert!(!ecommerce.is_activity(CHURN_EVENT));
        let saas = load("saas");
        assert_eq!(saas.churn.unwrap().unit, Unit::Day);
        assert!(!saas.is_activity(CHURN_EVENT));
    }

    /// Every problem of the table is reported at once, on its own line,
    /// with the field and what to write.
    #[test]
    fn every_problem_is_located() {
        let text = r#"holdout = 0.1

[analytics]
activity = []
segment = "a..b"
bucket = 7

[analytics.churn]
r = 0
alpha = inf
a = "0.8"
b = -2.4
unit = "month"
threshold = 1
"#;
        assert_eq!(
            problems(text),
            [
                "4: analytics: activity: write one or more event types, e.g. \"cart.abandoned\" or [\"order.*\"]",
                "5: analytics: segment: \"a..b\" is not a field path; write a key of `data`, dots for nested keys, e.g. segment = \"customer.tier\"",
                "6: analytics: bucket: is integer `7`; write bucket = \"day\", \"week\" or \"month\"",
                "9: analytics.churn: r: 0 is not above 0; write a positive number, e.g. r = 0.243",
                "10: analytics.churn: alpha: inf is not a finite number; write a positive number (in `unit`s), e.g. alpha = 4.414",
                "11: analytics.churn: a: is string \"0.8\"; write a positive number, e.g. a = 0.793",
                "12: analytics.churn: b: -2.4 is not above 0; write a positive number, e.g. b = 2.426",
                "13: analytics.churn: unit: unknown unit \"month\"; write \"day\" or \"week\"",
                "14: analytics.churn: threshold: 1 is not a probability between 0 and 1 (both excluded); write e.g. threshold = 0.3",
            ]
        );
    }

    #[test]
    fn missing_keys_are_named_where_the_table_starts() {
        assert_eq!(
            problems("holdout = 0.1\n\n[analytics]\nbucket = \"day\"\n"),
            [
                "3: analytics: activity: missing; write an event type or a list of them (`*` matches any run of characters), e.g. activity = [\"order.placed\", \"page.*\"]"
            ]
        );
        assert_eq!(
            problems(
                "[analytics]\nactivity = \"x\"\n\n[analytics.churn]\nalpha = 4.414\nunit = \"week\"\n"
            ),
            [
                "4: analytics.churn: r: missing; write a positive number, e.g. r = 0.243",
                "4: analytics.churn: a: missing; write a positive number, e.g. a = 0.793",
                "4: analytics.churn: b: missing; write a positive number, e.g. b = 2.426",
                "4: analytics.churn: threshold: missing; write a probability between 0 and 1, e.g. threshold = 0.3",
            ]
        );
        // A churn table alone still needs the activity that feeds it.
        let found = problems(&format!("holdout = 0.1\n\n{CHURN}"));
        assert_eq!(
            found,
            [
                "3: analytics: activity: missing; write an event type or a list of them (`*` matches any run of characters), e.g. activity = [\"order.placed\", \"page.*\"]"
            ]
        );
    }

    /// A misspelt key, table or word gets what was most likely meant, and
    /// a misspelt required key is not also reported missing.
    #[test]
    fn misspellings_get_a_suggestion() {
        let analytics = "[analytics]\nactivity = \"x\"\n";
        for (text, says) in [
            (
                "[analytic]\nactivity = \"x\"\n".to_string(),
                "1: : unknown key `analytic`; did you mean `analytics`?",
            ),
            (
                "[analytics]\nactivty = \"x\"\n".to_string(),
                "2: analytics: unknown key `activty`; did you mean `activity`?",
            ),
            (
                format!("{analytics}segmnet = \"plan\"\n"),
                "3: analytics: unknown key `segmnet`; did you mean `segment`?",
            ),
            (
                format!("{analytics}bucket = \"weeks\"\n"),
                "3: analytics: bucket: unknown bucket \"weeks\"; did you mean \"week\"?",
            ),
            (
                format!("{analytics}bucket = \"quarter\"\n"),
                "3: analytics: bucket: unknown bucket \"quarter\"; write \"day\", \"week\" or \"month\"",
            ),
            (
                format!("{analytics}[analytics.chrun]\nr = 1\n"),
                "3: analytics: unknown key `chrun`; did you mean `churn`?",
            ),
            (
                format!("{analytics}{}", CHURN.replace("alpha", "alpah")),
                "5: analytics.churn: unknown key `alpah`; did you mean `alpha`?",
            ),
            (
                format!("{analytics}{}", CHURN.replace("threshold", "treshold")),
                "8: analytics.churn: unknown key `treshold`; did you mean `threshold`?",
            ),
            (
                format!("{analytics}{}", CHURN.replace("r =", "R =")),
                "4: analytics.churn: unknown key `R`; did you mean `r`?",
            ),
            (
                format!("{analytics}{CHURN}unit = \"days\"\n"),
                "9: analytics.churn: unit: unknown unit \"days\"; did you mean \"day\"?",
            ),
            (
                format!("{analytics}{CHURN}beta = 1\n"),
                "9: analytics.churn: unknown key `beta`; [analytics.churn] takes r, alpha, a, b, unit, threshold",
            ),
            (
                format!("{analytics}window = \"7d\"\n"),
                "3: analytics: unknown key `window`; [analytics] takes activity, segment, bucket, churn",
            ),
            (
                format!("{analytics}holdout = 0.1\n"),
                "3: analytics: `holdout` is a top-level key: put it above the first [[rule]], [[cap]] or [analytics] table",
            ),
            (
                format!("{analytics}churn = 0.3\n"),
                "3: analytics.churn: is float `0.3`; write an [analytics.churn] table, e.g. [analytics.churn] with r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, threshold = 0.3",
            ),
            (
                "[[analytics]]\nactivity = \"x\"\n".to_string(),
                "1: analytics: is a list; write an [analytics] table (one bracket), e.g. [analytics] with activity = [\"order.placed\"]",
            ),
        ] {
            assert_eq!(problems(&text), [says], "{text}");
        }
    }

    /// Thresholds are probabilities with both ends excluded: P(alive) is
    /// never below 0, and is 1 for every user active on one day only.
    #[test]
    fn threshold_excludes_zero_and_one() {
        let spec = |th: &str| {
            parse(&format!(
                "[analytics]\nactivity = \"x\"\n{}",
                CHURN.replace("0.3", th)
            ))
        };
        for good in ["1e-9", "0.5", "0.999"] {
            assert!(spec(good).is_ok(), "{good}");
        }
        for bad in ["0", "0.0", "1", "1.0", "-0.1", "1.5", "nan"] {
            let e = spec(bad).unwrap_err();
            assert_eq!(e.problems.len(), 1, "{e}");
            assert_eq!(e.problems[0].field, "analytics.churn: threshold", "{e}");
        }
    }

    /// The engine's own `churn.risk_high` events cannot count as activity
    /// when churn is on: being at risk would make a user active again.
    #[test]
    fn activity_may_not_match_the_churn_event() {
        for glob in ["*", "churn.*", "churn.risk_high", "*.risk_*"] {
            let text = format!("[analytics]\nactivity = [\"order.placed\", \"{glob}\"]\n{CHURN}");
            let found = problems(&text);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(
                found[0].starts_with(&format!(
                    "2: analytics: activity: \"{glob}\" matches \"churn.risk_high\""
                )),
                "{found:?}"
            );
            // Without churn there is no such event: retention may count
            // every event.
            let retention_only =
                format!("[analytics]\nactivity = [\"order.placed\", \"{glob}\"]\n");
            assert!(parse(&retention_only).is_ok(), "{glob}");
        }
        // Reported with the churn table's own problems.
        let found = problems(&format!(
            "[analytics]\nactivity = \"*\"\n{}",
            CHURN.replace("0.793", "-1")
        ));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("2: analytics: activity: \"*\" matches"));
        assert!(found[1].starts_with("6: analytics.churn: a: -1 is not above 0"));
    }

    /// TOML syntax errors inside the tables name the table and key.
    #[test]
    fn syntax_errors_name_the_table_and_key() {
        let e = parse("[analytics]\nactivity = \"x\"\n[analytics.churn]\nr = 0.2\nr = 0.3\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("test.toml:5: analytics.churn: r: `r` is set twice"),
            "{e}"
        );
        let e = parse("[analytics]\nactivity = \"x\"\nbucket = \"week\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("test.toml:3: analytics: bucket: invalid basic string"),
            "{e}"
        );
        assert!(
            e.ends_with("write bucket = \"day\", \"week\" or \"month\""),
            "{e}"
        );
    }
}
