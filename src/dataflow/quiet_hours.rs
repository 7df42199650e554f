//! Quiet hours (docs/semantics.md step 4): is an instant inside the user's quiet
//! hours, and when do they end?
//!
//! Quiet hours are `[start, end)` in the user's local time (IANA zone,
//! bundled tz database), wrapping midnight when `start > end`; `start = end`
//! means none. A deferred candidate moves to the first instant after `t` at
//! which local time reads `end`: when a clock change repeats `end`, the first
//! occurrence after `t`; when it skips `end`, the instant the clocks jump.
//!
//! The tz database's calendar ends at 9999-12-30T22:00:00.999Z: at later
//! instants (only decision times near the end of the accepted range, see
//! [`crate::time::MAX_TIME`]) no quiet hours apply, and quiet hours whose
//! end falls on a local date after 9999-12-31, or after `MAX_TIME`, defer
//! nothing.

use jiff::civil::Date;
use jiff::tz::{AmbiguousOffset, TimeZone};

use crate::record::QuietHours;
use crate::time::{MAX_TIME, MS_PER_DAY, MS_PER_MIN, Time, civil_from_days};

fn timestamp(t: Time) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_millisecond(t).ok()
}

fn offset_ms(tz: &TimeZone, t: jiff::Timestamp) -> i64 {
    tz.to_offset(t).seconds() as i64 * 1000
}

/// Is `t` within `q` (in its zone)?
pub fn in_quiet_hours(q: &QuietHours, t: Time) -> bool {
    let tz = q.tz.time_zone();
    let Some(at) = timestamp(t).filter(|_| q.start_min != q.end_min) else {
        return false;
    };
    let local = (t + offset_ms(tz, at)).rem_euclid(MS_PER_DAY);
    let (start, end) = (
        q.start_min as i64 * MS_PER_MIN,
        q.end_min as i64 * MS_PER_MIN,
    );
    if start < end {
        start <= local && local < end
    } else {
        local >= start || local < end
    }
}

/// The first instant strictly after `t` at which local time is `q.end_min`;
/// `None` past the end of the tz database's calendar, or if that instant
/// would be after [`MAX_TIME`].
pub fn quiet_hours_end(q: &QuietHours, t: Time) -> Option<Time> {
    let tz = q.tz.time_zone();
    let end = q.end_min as i64 * MS_PER_MIN;
    let local_day = (t + offset_ms(tz, timestamp(t)?)).div_euclid(MS_PER_DAY);
    let mut best: Option<Time> = None;
    // The answer lies on the local day of `t` or the next; neighbours cover
    // zones whose offsets change by whole days.
    for day in local_day - 1..=local_day + 2 {
        let (y, m, d) = civil_from_days(day);
        let Ok(civil) = Date::new(y as i16, m as i8, d as i8) else {
            continue;
        };
        let civil = civil.at((q.end_min / 60) as i8, (q.end_min % 60) as i8, 0, 0);
        let local = day * MS_PER_DAY + end;
        let candidates: [Option<Time>; 2] = match tz.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => {
                [Some(local - offset.seconds() as i64 * 1000), None]
            }
            AmbiguousOffset::Fold { before, after } => [
                Some(local - before.seconds() as i64 * 1000),
                Some(local - after.seconds() as i64 * 1000),
            ],
            AmbiguousOffset::Gap { after, .. } => {
                // The jump happens in (local − after, local − before].
                let jump = timestamp(local - after.seconds() as i64 * 1000).and_then(|from| {
                    tz.following(from)
                        .next()
                        .map(|tr| tr.timestamp().as_millisecond())
                });
                [jump, None]
            }
        };
        for c in candidates.into_iter().flatten() {
            if c > t && best.is_none_or(|b| c < b) {
                best = Some(c);
            }
        }
    }
    best.filter(|&b| b <= MAX_TIME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Zone;
    use crate::time::{format_rfc3339, parse_rfc3339};

    fn q(start: &str, end: &str, tz: &str) -> QuietHours {
        let m = |s: &str| s[..2].parse::<u16>().unwrap() * 60 + s[3..].parse::<u16>().unwrap();
        QuietHours {
            start_min: m(start),
            end_min: m(end),
            tz: Zone::named(tz).unwrap(),
        }
    }
    fn t(s: &str) -> Time {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn wraps_midnight_and_is_half_open() {
        let q = q("22:00", "07:00", "Europe/Berlin");
        assert!(in_quiet_hours(&q, t("2026-03-01T22:00:00+01:00")));
        assert!(in_quiet_hours(&q, t("2026-03-02T06:59:59.999+01:00")));
        assert!(!in_quiet_hours(&q, t("2026-03-02T07:00:00+01:00")));
        assert!(!in_quiet_hours(&q, t("2026-03-01T21:59:59.999+01:00")));
        assert_eq!(
            format_rfc3339(quiet_hours_end(&q, t("2026-03-01T23:00:00+01:00")).unwrap()),
            "2026-03-02T06:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339(quiet_hours_end(&q, t("2026-03-02T01:00:00+01:00")).unwrap()),
            "2026-03-02T06:00:00.000Z"
        );
        let none = self::q("07:00", "07:00", "UTC");
        assert!(!in_quiet_hours(&none, t("2026-03-01T07:00:00Z")));
    }

    #[test]
    fn end_skipped_by_spring_forward_is_the_jump() {
        // Berlin jumps 02:00 → 03:00 on 2026-03-29 (at 01:00Z); 02:30 does not exist.
        let q = q("22:00", "02:30", "Europe/Berlin");
        let at = quiet_hours_end(&q, t("2026-03-28T23:00:00+01:00")).unwrap();
        assert_eq!(format_rfc3339(at), "2026-03-29T01:00:00.000Z");
    }

    /// Past the end of the tz database's calendar (9999-12-30T22:00:00.999Z) no
    /// quiet hours apply; before it they end as usual, up to the last
    /// accepted instant.
    #[test]
    fn no_quiet_hours_past_the_calendar() {
        let q = q("00:00", "23:00", "UTC");
        assert!(in_quiet_hours(&q, t("9999-12-30T21:00:00Z")));
        assert_eq!(
            format_rfc3339(quiet_hours_end(&q, t("9999-12-30T21:00:00Z")).unwrap()),
            "9999-12-30T23:00:00.000Z"
        );
        assert!(!in_quiet_hours(&q, t("9999-12-31T12:00:00Z")));
        assert_eq!(quiet_hours_end(&q, t("9999-12-31T12:00:00Z")), None);
        // The next 07:00 at +14:00 is on the local date 10000-01-01, which
        // the calendar does not have (though it is 9999-12-31T17:00Z); at
        // −10:00 the next 07:00 is on 9999-12-31 local, 17:00Z.
        let q = self::q("22:00", "07:00", "Pacific/Kiritimati");
        assert_eq!(quiet_hours_end(&q, t("9999-12-30T20:00:00Z")), None);
        let q = self::q("22:00", "07:00", "Pacific/Honolulu");
        assert_eq!(
            format_rfc3339(quiet_hours_end(&q, t("9999-12-30T21:00:00Z")).unwrap()),
            "9999-12-31T17:00:00.000Z"
        );
    }

    #[test]
    fn end_repeated_by_fall_back_is_the_first_after_t() {
        // Berlin falls back 03:00 → 02:00 on 2026-10-25 (at 01:00Z); 02:30 happens twice.
        let q = q("01:00", "02:30", "Europe/Berlin");
        let first = quiet_hours_end(&q, t("2026-10-25T01:30:00+02:00")).unwrap();
        assert_eq!(format_rfc3339(first), "2026-10-25T00:30:00.000Z");
        // In the repeated hour, after the first 02:30: the second one.
        let second = quiet_hours_end(&q, t("2026-10-25T02:00:00+01:00")).unwrap();
        assert!(in_quiet_hours(&q, t("2026-10-25T02:00:00+01:00")));
        assert_eq!(format_rfc3339(second), "2026-10-25T01:30:00.000Z");
    }

    #[test]
    fn zones_east_and_west() {
        let q = q("21:00", "08:00", "America/New_York");
        assert!(in_quiet_hours(&q, t("2026-07-01T02:00:00Z")));
        assert_eq!(
            format_rfc3339(quiet_hours_end(&q, t("2026-07-01T02:00:00Z")).unwrap()),
            "2026-07-01T12:00:00.000Z"
        );
        let q = self::q("22:00", "06:30", "Asia/Kolkata");
        assert_eq!(
            format_rfc3339(quiet_hours_end(&q, t("2026-07-01T17:00:00Z")).unwrap()),
            "2026-07-02T01:00:00.000Z"
        );
    }
}
