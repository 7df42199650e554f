//! Activity: each user's activity summary, retention buckets and churn
//! risk (DESIGN.md §5), kept by `decide` in the user's state.
//!
//! - input (through `decide`, in the user's event-time order): events whose
//!   type is one of the spec's `[analytics] activity` types; erasures.
//! - state: per user, an [`Activity`]: first and last active UTC day and
//!   the number of active days (the BG/NBD summary), the retention cohort
//!   (the bucket of the first activity) and segment (that event's
//!   `segment` field), the buckets the user was active in since, and the
//!   instant the churn signal is due.
//! - output: the instant of the `churn.risk_high` signal — the first UTC
//!   midnight after the last activity at which P(alive) is below the
//!   threshold, found from the closed form whenever activity changes
//!   (`analytics::bgnbd::risk_crossing`), not by scanning users. `decide`
//!   emits the signal there, unless the user is active again at or before
//!   that instant, and feeds it back as an event rules can react to.
//!   The facts of the aggregates (`aggregates.rs`), at the instant they
//!   become true: the user's summary (the old one retracted), their cohort
//!   membership and each later bucket of every kind (day, week, month)
//!   they are active in, and whether they are at risk.
//! - key: the user. An erasure retracts the user's facts and forgets the
//!   activity: activity after it starts a new user (a new cohort).

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::aggregates::{Fact, Update};
use crate::analytics::bgnbd::{self, Summary};
use crate::spec::{Analytics, Bucket, Churn};
use crate::time::{MS_PER_DAY, Time, civil_from_days, days_from_civil};

/// A user's activity, from their first activity on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub first_day: i64,
    pub last_day: i64,
    pub active_days: u32,
    /// The `segment` field of the first activity event (strings as they
    /// are, other values as JSON), `None` when absent or null.
    pub segment: Option<CompactString>,
    /// When the churn signal is due, if it is.
    pub crossing: Option<Time>,
    /// The active days after the first, as days since it: with the first,
    /// every bucket the user was active in, of every kind, which an erasure
    /// retracts from the retention counts.
    later_days: Vec<u32>,
    /// Whether the churn signal came and the user was not active since.
    at_risk: bool,
}

impl Activity {
    /// A user's first activity, at `t`.
    pub fn first(analytics: &Analytics, t: Time, segment: Option<CompactString>) -> Activity {
        let day = bgnbd::day_of(t);
        let mut activity = Activity {
            first_day: day,
            last_day: day,
            active_days: 1,
            segment,
            crossing: None,
            later_days: Vec::new(),
            at_risk: false,
        };
        activity.refresh(analytics);
        activity
    }

    /// Notes activity at `t` (not before the last). Returns the summary
    /// before it when `t` is on a new active day.
    pub fn note(&mut self, analytics: &Analytics, t: Time) -> Option<Summary> {
        let day = bgnbd::day_of(t);
        let before = self.summary();
        let new_day = day > self.last_day;
        if !new_day {
            // The same summary: the same crossing (an activity at exactly
            // the crossing's midnight is on a new day).
            return None;
        }
        self.last_day = day;
        self.active_days += 1;
        self.later_days.push((day - self.first_day) as u32);
        // The crossing moves with new activity: "unless the user is active
        // again at or before that instant".
        self.refresh(analytics);
        Some(before)
    }

    pub fn summary(&self) -> Summary {
        Summary {
            first_day: self.first_day,
            last_day: self.last_day,
            active_days: self.active_days,
        }
    }

    /// The facts of a user's first activity, at `t`: their summary, and
    /// their membership of a cohort of every bucket kind.
    pub fn joined(&self, user: &str, holdout: bool, t: Time, out: &mut Vec<Update>) {
        out.push((self.summary_fact(user, &self.summary()), t, 1));
        for bucket in Bucket::ALL {
            out.push((self.retained(bucket, holdout, 0), t, 1));
        }
    }

    /// The facts of activity at `t` on a new active day, after `before`:
    /// the new summary, the buckets the user is active in for the first
    /// time, and the end of a churn risk.
    pub fn active_again(
        &mut self,
        user: &str,
        holdout: bool,
        before: Summary,
        t: Time,
        out: &mut Vec<Update>,
    ) {
        out.push((self.summary_fact(user, &before), t, -1));
        out.push((self.summary_fact(user, &self.summary()), t, 1));
        for bucket in Bucket::ALL {
            let (now, then) = (
                bucket_index(bucket, self.last_day),
                bucket_index(bucket, before.last_day),
            );
            if now > then {
                let k = (now - bucket_index(bucket, self.first_day)) as u32;
                out.push((self.retained(bucket, holdout, k), t, 1));
            }
        }
        self.settle(t, out);
    }

    /// The churn signal came at `t`: the user is at risk.
    pub fn signalled(&mut self, t: Time, out: &mut Vec<Update>) {
        if !self.at_risk {
            self.at_risk = true;
            out.push((Fact::AtRisk, t, 1));
        }
    }

    /// Activity at `t` ends a churn risk.
    pub fn settle(&mut self, t: Time, out: &mut Vec<Update>) {
        if self.at_risk {
            self.at_risk = false;
            out.push((Fact::AtRisk, t, -1));
        }
    }

    /// Retracts at `t` every fact of the user (an erasure).
    pub fn retract(&mut self, user: &str, holdout: bool, t: Time, out: &mut Vec<Update>) {
        self.settle(t, out);
        self.all_facts(user, holdout, t, -1, out);
    }

    /// States at `t` every fact of the user again (a restart from a
    /// checkpoint: the views of the aggregates start empty).
    pub fn restate(&self, user: &str, holdout: bool, t: Time, out: &mut Vec<Update>) {
        if self.at_risk {
            out.push((Fact::AtRisk, t, 1));
        }
        self.all_facts(user, holdout, t, 1, out);
    }

    /// The summary and every bucket of every kind the user was active in,
    /// with multiplicity `diff`.
    fn all_facts(&self, user: &str, holdout: bool, t: Time, diff: isize, out: &mut Vec<Update>) {
        out.push((self.summary_fact(user, &self.summary()), t, diff));
        let days = std::iter::once(self.first_day)
            .chain(self.later_days.iter().map(|d| self.first_day + *d as i64));
        for bucket in Bucket::ALL {
            let cohort = bucket_index(bucket, self.first_day);
            let mut last = None;
            for day in days.clone() {
                let index = bucket_index(bucket, day);
                if last != Some(index) {
                    last = Some(index);
                    let k = (index - cohort) as u32;
                    out.push((self.retained(bucket, holdout, k), t, diff));
                }
            }
        }
    }

    fn summary_fact(&self, user: &str, s: &Summary) -> Fact {
        Fact::Summary {
            user: CompactString::from(user),
            first_day: s.first_day,
            last_day: s.last_day,
            active_days: s.active_days,
        }
    }

    fn retained(&self, bucket: Bucket, holdout: bool, k: u32) -> Fact {
        Fact::Retained {
            bucket,
            cohort: bucket_index(bucket, self.first_day),
            segment: self.segment.clone(),
            holdout,
            k,
        }
    }

    fn refresh(&mut self, analytics: &Analytics) {
        self.crossing = analytics
            .churn
            .as_ref()
            .and_then(|c| crossing(c, &self.summary()));
    }
}

fn crossing(churn: &Churn, summary: &Summary) -> Option<Time> {
    bgnbd::risk_crossing(&churn.model, churn.unit, churn.threshold, summary)
}

/// The index of the bucket holding UTC day `day`: the day itself, the ISO
/// week (weeks starting on Monday, 1970-01-05 starting week 1), or the
/// month (year × 12 + month − 1).
pub fn bucket_index(bucket: Bucket, day: i64) -> i64 {
    match bucket {
        Bucket::Day => day,
        // 1970-01-01 was a Thursday: day 4 is the first Monday.
        Bucket::Week => (day - 4).div_euclid(7) + 1,
        Bucket::Month => {
            let (y, m, _) = civil_from_days(day);
            y * 12 + m as i64 - 1
        }
    }
}

/// The first UTC day of bucket `index`.
pub fn bucket_first_day(bucket: Bucket, index: i64) -> i64 {
    match bucket {
        Bucket::Day => index,
        Bucket::Week => (index - 1) * 7 + 4,
        Bucket::Month => days_from_civil(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1),
    }
}

/// `YYYY-MM-DD` of a UTC day.
pub fn format_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The event id of a churn signal at `time`: `churn.risk_high:{user}:{YYYY-MM-DD}`.
pub fn signal_id(user: &str, time: Time) -> String {
    format!(
        "churn.risk_high:{user}:{}",
        format_day(time.div_euclid(MS_PER_DAY))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;

    fn day(s: &str) -> i64 {
        parse_rfc3339(&format!("{s}T00:00:00Z")).unwrap() / MS_PER_DAY
    }

    #[test]
    fn buckets_are_utc_days_iso_weeks_and_months() {
        // 2026-03-02 is a Monday, 2026-03-08 a Sunday.
        let (mon, sun, next) = (day("2026-03-02"), day("2026-03-08"), day("2026-03-09"));
        let week = |d| bucket_index(Bucket::Week, d);
        assert_eq!(week(mon), week(sun));
        assert_eq!(week(next), week(mon) + 1);
        assert_eq!(bucket_first_day(Bucket::Week, week(sun)), mon);
        // Before 1970 too: 1969-12-29 was a Monday.
        let old = day("1969-12-31");
        assert_eq!(
            format_day(bucket_first_day(Bucket::Week, week(old))),
            "1969-12-29"
        );
        let month = |d| bucket_index(Bucket::Month, d);
        assert_eq!(month(day("2026-02-28")) + 1, month(day("2026-03-01")));
        assert_eq!(month(day("2025-12-31")) + 1, month(day("2026-01-01")));
        assert_eq!(
            format_day(bucket_first_day(Bucket::Month, month(day("2026-02-17")))),
            "2026-02-01"
        );
        assert_eq!(
            bucket_first_day(Bucket::Day, day("2026-02-17")),
            day("2026-02-17")
        );
    }

    #[test]
    fn a_signal_id_names_the_user_and_the_day() {
        let t = parse_rfc3339("2026-05-04T00:00:00Z").unwrap();
        assert_eq!(signal_id("u-1", t), "churn.risk_high:u-1:2026-05-04");
    }
}
