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
//! - key: the user. An erasure forgets the activity: activity after it
//!   starts a new user (a new cohort).

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

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
        };
        activity.refresh(analytics);
        activity
    }

    /// Notes activity at `t` (not before the last). Returns the offset k of
    /// its bucket from the cohort (the bucket of the first activity) when
    /// the user was not yet active in it. Buckets are found from days, not
    /// kept, so that a spec may change its `bucket`.
    pub fn note(&mut self, analytics: &Analytics, t: Time) -> Option<u32> {
        let day = bgnbd::day_of(t);
        let bucket = |d| bucket_index(analytics.bucket, d);
        let new_bucket = bucket(day) > bucket(self.last_day);
        if day > self.last_day {
            self.last_day = day;
            self.active_days += 1;
        }
        // The crossing moves with any activity: "unless the user is active
        // again at or before that instant".
        self.refresh(analytics);
        new_bucket.then(|| (bucket(day) - bucket(self.first_day)) as u32)
    }

    pub fn summary(&self) -> Summary {
        Summary {
            first_day: self.first_day,
            last_day: self.last_day,
            active_days: self.active_days,
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
