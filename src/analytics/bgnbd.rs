//! BG/NBD churn risk (Fader, Hardie & Lee, "Counting your customers the
//! easy way", 2005; DESIGN.md §5): the probability that a user is still
//! "alive", from the days they were active, and the instant it falls below
//! the spec's threshold.
//!
//! Activity is counted per UTC day. A user with first active day f, last
//! active day l and n distinct active days ([`Summary`]) has, evaluated on
//! day e, x = n − 1 repeat active days, t_x = (l − f)/u and T = (e − f)/u in
//! the spec's unit (u = 1 day or 7), fractions kept, and
//!
//! P(alive) = 1 when x = 0, else
//! 1 / (1 + a/(b + x − 1) · ((α + T)/(α + t_x))^(r + x)).
//!
//! P(alive) falls as T grows and rises with each new active day, so the
//! churn signal's instant follows from the closed form once per change of
//! activity ([`risk_crossing`]), rather than from a daily scan of users.
//!
//! Everything here is pure f64 arithmetic. `ln`, `ln_1p` and `exp` come
//! from the platform's C library, so the last bit of P(alive) is the same
//! on every worker of a cluster whose machines share it.

use crate::spec::{BgNbd, Unit};
use crate::time::{MAX_TIME, MS_PER_DAY, Time};

/// A user's activity: UTC days (days since 1970-01-01) of their first and
/// last activity, and how many distinct days they were active on
/// (`1 ≤ active_days ≤ last_day − first_day + 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Summary {
    pub first_day: i64,
    pub last_day: i64,
    pub active_days: u32,
}

/// The model's view of a user at an instant: what `GET
/// /v1/churn/users/{user}` answers (DESIGN.md §8). `t_x` and `T` are in the
/// spec's unit.
#[allow(non_snake_case)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub x: u32,
    pub t_x: f64,
    pub T: f64,
    pub p_alive: f64,
}

/// The last UTC day whose midnight is a representable instant
/// (9999-12-31).
const LAST_DAY: i64 = MAX_TIME.div_euclid(MS_PER_DAY);

/// The UTC day of an instant: floor of τ in days.
pub fn day_of(t: Time) -> i64 {
    t.div_euclid(MS_PER_DAY)
}

/// BG/NBD P(alive) of a user with `x` repeat active days, the last at
/// `t_x`, seen at `T` (0 ≤ t_x ≤ T, both in the model's unit).
///
/// Computed as 1/(1 + e^L) with L = ln a − ln(b + x − 1) + (r + x)·ln(1 +
/// (T − t_x)/(α + t_x)), the log of the second term, so that no power of
/// the ratio is formed: with x large, a/(b + x − 1) is small, and the
/// power overflows an f64 where P(alive) is still a normal number. For L
/// beyond 709 (P(alive) below 1e-308) the answer is 0.
/// It agrees with the formula to about 1e-15 relative, 1e-13 as P(alive)
/// nears 1e-308 (L's own rounding, in the exponent).
#[allow(non_snake_case)]
pub fn p_alive(params: &BgNbd, x: u32, t_x: f64, T: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    let x = f64::from(x);
    let growth = ((T - t_x) / (params.alpha + t_x)).ln_1p();
    let l = params.a.ln() - (params.b + x - 1.0).ln() + (params.r + x) * growth;
    1.0 / (1.0 + l.exp())
}

/// The model's view of a user at instant `at` (DESIGN.md §5: evaluated on
/// the UTC day of `at`).
pub fn evaluate(params: &BgNbd, unit: Unit, summary: &Summary, at: Time) -> Evaluation {
    on_day(params, unit, summary, day_of(at))
}

/// [`evaluate`] on UTC day `e`.
fn on_day(params: &BgNbd, unit: Unit, summary: &Summary, e: i64) -> Evaluation {
    let u = unit.days();
    let x = summary.active_days.saturating_sub(1);
    let t_x = (summary.last_day - summary.first_day) as f64 / u;
    let t = (e - summary.first_day) as f64 / u;
    Evaluation {
        x,
        t_x,
        T: t,
        p_alive: p_alive(params, x, t_x, t),
    }
}

/// The instant of a user's `churn.risk_high` signal if their activity stays
/// as it is: the first UTC midnight after their last active day at which
/// P(alive) is below `threshold` (not equal to it). `None` when there is
/// none up to 9999-12-31: a user active on one day only (x = 0) always has
/// P(alive) = 1.
///
/// Solving P(alive) = θ for T gives the day, with
/// K = ln((1 − θ)/θ) − ln a + ln(b + x − 1):
///
/// T* = t_x + (α + t_x)·(e^(K/(r + x)) − 1), and P(alive) < θ on day e iff
/// (e − f)/u > T*, i.e. e − l > u·(α + t_x)·(e^(K/(r + x)) − 1).
///
/// That day is then checked with [`evaluate`]'s own arithmetic, stepping a
/// day either way where rounding put it on the wrong side, so that
/// `evaluate` at the returned instant is below `threshold` and at the
/// midnight before (unless that is on the last active day) it is not.
/// Only where P(alive) changes by less than its last digit from day to day
/// (a threshold like 1 − 1e-15) can the closed form miss by more; then the
/// day is found by bisection, P(alive) falling as the days pass.
pub fn risk_crossing(
    params: &BgNbd,
    unit: Unit,
    threshold: f64,
    summary: &Summary,
) -> Option<Time> {
    let x = summary.active_days.saturating_sub(1);
    let first = summary.last_day + 1;
    if x == 0 || first > LAST_DAY {
        return None;
    }
    let below = |e: i64| on_day(params, unit, summary, e).p_alive < threshold;

    let u = unit.days();
    let x = f64::from(x);
    let t_x = (summary.last_day - summary.first_day) as f64 / u;
    let k = ((1.0 - threshold) / threshold).ln() - params.a.ln() + (params.b + x - 1.0).ln();
    let days = u * (params.alpha + t_x) * (k / (params.r + x)).exp_m1();
    // `as` saturates (and takes NaN to 0): the clamp brings every guess
    // into the days that can answer.
    let guess = (summary.last_day as f64 + days.floor() + 1.0) as i64;

    // Rounding can put the guess a day off: step to the first day below.
    let mut e = guess.clamp(first, LAST_DAY);
    for _ in 0..3 {
        if !below(e) {
            if e == LAST_DAY {
                // P(alive) only falls: never below by 9999-12-31.
                return None;
            }
            e += 1;
        } else if e > first && below(e - 1) {
            e -= 1;
        } else {
            return Some(e * MS_PER_DAY);
        }
    }
    first_below(first, LAST_DAY, below).map(|e| e * MS_PER_DAY)
}

/// The first day in `first..=last` that is `below`, by bisection;
/// `below` holds from some day on.
fn first_below(first: i64, last: i64, below: impl Fn(i64) -> bool) -> Option<i64> {
    if !below(last) {
        return None;
    }
    // below(hi) holds; below(lo) does not, or lo is before `first`.
    let (mut lo, mut hi) = (first - 1, last);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
// The references keep the 20 digits mpmath printed, more than an f64 holds.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Fader, Hardie & Lee (2005), CDNOW, in weeks.
    const CDNOW: BgNbd = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    /// dataflows/saas.toml, in days.
    const DAILY: BgNbd = BgNbd {
        r: 1.2,
        alpha: 3.0,
        a: 0.3,
        b: 10.0,
    };

    fn assert_close(got: f64, want: f64) {
        let relative = ((got - want) / want).abs();
        assert!(
            relative <= 1e-9,
            "{got:e} is not {want:e} (relative {relative:e})"
        );
    }

    fn summary(first_day: i64, last_day: i64, active_days: u32) -> Summary {
        Summary {
            first_day,
            last_day,
            active_days,
        }
    }

    /// The first midnight after the last active day at which P(alive) is
    /// below `threshold`, day by day, looking at most `limit` days ahead.
    fn scan(params: &BgNbd, unit: Unit, threshold: f64, s: &Summary, limit: i64) -> Option<Time> {
        (s.last_day + 1..=(s.last_day + limit).min(LAST_DAY))
            .map(|e| e * MS_PER_DAY)
            .find(|&m| evaluate(params, unit, s, m).p_alive < threshold)
    }

    /// Two cases small enough to do by hand.
    #[test]
    fn p_alive_by_hand() {
        // r = α = a = 1, b = 2, x = 1, t_x = 1, T = 3:
        // 1 / (1 + 1/2 · (4/2)^2) = 1/3.
        let p = BgNbd {
            r: 1.0,
            alpha: 1.0,
            a: 1.0,
            b: 2.0,
        };
        assert_close(p_alive(&p, 1, 1.0, 3.0), 1.0 / 3.0);
        // r = 0.5, α = 1, a = 2, b = 1, x = 2, t_x = 0, T = 3:
        // 1 / (1 + 2/2 · (4/1)^2.5) = 1/(1 + 32) = 1/33.
        let p = BgNbd {
            r: 0.5,
            alpha: 1.0,
            a: 2.0,
            b: 1.0,
        };
        assert_close(p_alive(&p, 2, 0.0, 3.0), 1.0 / 33.0);
        // Seen right after the last activity (T = t_x): 1 / (1 + a/(b + x − 1))
        // = 1 / (1 + 2/2).
        assert_close(p_alive(&p, 2, 5.0, 5.0), 0.5);
    }

    /// The formula at 50 significant digits (Python, mpmath 1.3), on the
    /// very f64 inputs of the test (`mpf` of a float is exact): with x in
    /// the millions an input's last bit moves P(alive) by 1e-10.
    ///
    /// ```python
    /// from mpmath import mp, mpf, power
    /// mp.dps = 50
    /// def p(r, al, a, b, x, tx, T):
    ///     r, al, a, b, tx, T = (mpf(float(v)) for v in (r, al, a, b, tx, T))
    ///     return 1 / (1 + a / (b + x - 1) * power((al + T) / (al + tx), r + x))
    /// cdnow = (0.243, 4.414, 0.793, 2.426)
    /// p(*cdnow, 2, 30.43, 38.86)      # 0.72657857008067291192
    /// p(*cdnow, 26, 216 / 7, 31.0)    # 0.96885156285189592926
    /// ```
    ///
    /// and so on for each line below. The engine is within 1e-15 of each,
    /// and 3e-14 of the 1e-304 (where L ≈ 700 carries its own rounding
    /// into the exponent).
    #[test]
    fn p_alive_matches_the_formula_at_high_precision() {
        let cases = [
            // CDNOW, in weeks.
            (CDNOW, 2, 30.43, 38.86, 0.726_578_570_080_672_911_92),
            (CDNOW, 2, 10.0, 20.0, 0.569_879_956_606_404_431_75),
            (
                CDNOW,
                1,
                1.0 / 7.0,
                90.0 / 7.0,
                0.368_652_447_550_907_636_68,
            ),
            (CDNOW, 26, 216.0 / 7.0, 31.0, 0.968_851_562_851_895_929_26),
            // A long history: 5000 repeat weeks.
            (CDNOW, 5000, 1000.0, 1003.0, 0.002_101_213_319_912_710_496_1),
            // Far beyond any history, where the power itself, e^714,
            // overflows an f64 (Python's float formula raises
            // OverflowError) but P(alive) does not underflow.
            (
                CDNOW,
                1_000_000,
                10000.0,
                10007.146,
                1.003_409_790_679_952_155_4e-304,
            ),
            // Daily for 30 years (10 957 days), seen 5 and 30 days later.
            (DAILY, 10956, 10956.0, 10961.0, 0.995_963_761_941_910_095_23),
            (
                DAILY,
                10956,
                10956.0,
                10986.0,
                3.580_886_443_892_137_460_3e-9,
            ),
        ];
        for (params, x, t_x, t, want) in cases {
            assert_close(p_alive(&params, x, t_x, t), want);
        }
    }

    #[test]
    fn one_active_day_is_always_alive() {
        assert_eq!(p_alive(&CDNOW, 0, 0.0, 1e6), 1.0);
        let once = summary(20000, 20000, 1);
        let at = (20000 + 365 * 50) * MS_PER_DAY;
        let v = evaluate(&CDNOW, Unit::Week, &once, at);
        assert_eq!((v.x, v.t_x, v.p_alive), (0, 0.0, 1.0));
        assert_close(v.T, 365.0 * 50.0 / 7.0);
        for threshold in [1e-9, 0.5, 0.999_999] {
            assert_eq!(risk_crossing(&CDNOW, Unit::Week, threshold, &once), None);
        }
    }

    /// x, t_x and T from the days, in the unit, fractions kept; the day
    /// is the floor of the instant in days.
    #[test]
    fn evaluate_counts_days_in_units() {
        let s = summary(0, 70, 3);
        // The last millisecond of day 140 is still day 140.
        let at = 141 * MS_PER_DAY - 1;
        let weeks = evaluate(&CDNOW, Unit::Week, &s, at);
        assert_eq!((weeks.x, weeks.t_x, weeks.T), (2, 10.0, 20.0));
        assert_close(weeks.p_alive, 0.569_879_956_606_404_431_75);
        let days = evaluate(&DAILY, Unit::Day, &s, at);
        assert_eq!((days.x, days.t_x, days.T), (2, 70.0, 140.0));
        assert_eq!(days.p_alive, p_alive(&DAILY, 2, 70.0, 140.0));

        // Fractions of a week kept; days before 1970 floor toward the past.
        let s = summary(-3, -2, 2);
        let v = evaluate(&CDNOW, Unit::Week, &s, -1);
        assert_eq!(day_of(-1), -1);
        assert_eq!((v.x, v.t_x, v.T), (1, 1.0 / 7.0, 2.0 / 7.0));
    }

    /// Crossing days from the closed form at 50 digits (mpmath, as
    /// above): with K = ln((1 − θ)/θ) − ln a + ln(b + x − 1) and
    /// T* = t_x + (α + t_x)·(exp(K/(r + x)) − 1), the day is the first e ≥
    /// l + 1 with e > f + u·T*:
    ///
    /// ```text
    /// CDNOW weeks, f 0, l 70, n 3, θ 0.5:           f + 7T* = 162.8399850364622904  → 163
    /// CDNOW weeks, f 0, l 70, n 3, θ 0.01:          f + 7T* = 1472.0078064193956438 → 1473
    /// CDNOW weeks, f 20000, l 20010, n 2, θ 0.3:    f + 7T* = 20167.905133167893354 → 20168
    /// CDNOW weeks, f 20000, l 20400, n 30, θ 0.7:   f + 7T* = 20443.296928053995202 → 20444
    /// CDNOW weeks, f 19000, l 19001, n 2, θ 0.9:    f + 7T* = 18982.491127305452101 → l + 1 = 19002
    /// daily, f 20000, l 20030, n 20, θ 0.5:         f + T*  = 20038.308603474982212 → 20039
    /// daily, f 0, l 10956, n 10957 (30 years), θ 0.5: f + T* = 10966.513201962188586 → 10967
    /// ```
    #[test]
    fn crossing_days_match_the_closed_form_and_a_scan() {
        let cases = [
            (CDNOW, Unit::Week, 0.5, summary(0, 70, 3), 163),
            (CDNOW, Unit::Week, 0.01, summary(0, 70, 3), 1473),
            (CDNOW, Unit::Week, 0.3, summary(20000, 20010, 2), 20168),
            (CDNOW, Unit::Week, 0.7, summary(20000, 20400, 30), 20444),
            (CDNOW, Unit::Week, 0.9, summary(19000, 19001, 2), 19002),
            (DAILY, Unit::Day, 0.5, summary(20000, 20030, 20), 20039),
            (DAILY, Unit::Day, 0.5, summary(0, 10956, 10957), 10967),
        ];
        for (params, unit, threshold, s, day) in cases {
            let got = risk_crossing(&params, unit, threshold, &s);
            assert_eq!(got, Some(day * MS_PER_DAY), "{s:?} θ {threshold}");
            assert_eq!(got, scan(&params, unit, threshold, &s, 10_000), "{s:?}");
            assert!(evaluate(&params, unit, &s, day * MS_PER_DAY).p_alive < threshold);
        }
    }

    /// P(alive) exactly equal to the threshold at a midnight is not below
    /// it: the signal comes a day later. Every midnight of a year after
    /// the last activity, as the threshold, and the next f64 above it.
    #[test]
    fn equal_to_the_threshold_is_not_below() {
        for (params, unit, s) in [
            (CDNOW, Unit::Week, summary(0, 70, 3)),
            (DAILY, Unit::Day, summary(20000, 20030, 20)),
            (CDNOW, Unit::Day, summary(100, 5000, 900)),
        ] {
            for e in s.last_day + 1..s.last_day + 366 {
                let p = evaluate(&params, unit, &s, e * MS_PER_DAY).p_alive;
                assert_eq!(
                    risk_crossing(&params, unit, p, &s),
                    scan(&params, unit, p, &s, 400),
                    "{s:?} day {e}"
                );
                let next = evaluate(&params, unit, &s, (e + 1) * MS_PER_DAY).p_alive;
                if next < p {
                    assert_eq!(
                        risk_crossing(&params, unit, p, &s),
                        Some((e + 1) * MS_PER_DAY)
                    );
                }
                assert_eq!(
                    risk_crossing(&params, unit, p.next_up(), &s),
                    scan(&params, unit, p.next_up(), &s, 400),
                    "{s:?} day {e}"
                );
            }
        }
        // Already below on the first midnight after the last activity.
        let s = summary(0, 70, 3);
        let first = evaluate(&CDNOW, Unit::Week, &s, 71 * MS_PER_DAY).p_alive;
        assert_eq!(
            risk_crossing(&CDNOW, Unit::Week, first.next_up(), &s),
            Some(71 * MS_PER_DAY)
        );
        assert_eq!(
            risk_crossing(&CDNOW, Unit::Week, first, &s),
            Some(72 * MS_PER_DAY)
        );
    }

    /// Histories of decades, and crossings that never come before the
    /// end of 9999.
    #[test]
    fn long_histories_and_no_crossing() {
        // Weekly buyer for 40 years; a daily user for 200 years.
        for (params, unit, threshold, s) in [
            (CDNOW, Unit::Week, 0.5, summary(0, 14_600, 2_000)),
            (CDNOW, Unit::Week, 0.05, summary(-3_000, 14_600, 2_000)),
            (DAILY, Unit::Day, 0.5, summary(0, 73_000, 73_001)),
            (DAILY, Unit::Day, 0.999, summary(0, 73_000, 73_001)),
        ] {
            let got = risk_crossing(&params, unit, threshold, &s);
            assert!(got.is_some(), "{s:?}");
            assert_eq!(got, scan(&params, unit, threshold, &s, 100_000), "{s:?}");
        }
        // Beyond 9999-12-31: a threshold far below anything reached.
        let s = summary(0, 70, 3);
        assert_eq!(risk_crossing(&CDNOW, Unit::Week, 1e-300, &s), None);
        assert_eq!(scan(&CDNOW, Unit::Week, 1e-300, &s, i64::MAX / 2), None);
        // A last activity on the last day there is.
        let s = summary(LAST_DAY - 10, LAST_DAY, 5);
        assert_eq!(risk_crossing(&CDNOW, Unit::Week, 0.5, &s), None);
        // The first midnight after it would be the last there is.
        let s = summary(LAST_DAY - 10, LAST_DAY - 1, 5);
        assert_eq!(
            risk_crossing(&CDNOW, Unit::Week, 0.9, &s),
            Some(LAST_DAY * MS_PER_DAY)
        );
    }

    /// Thresholds so close to 1 that P(alive) changes by less than its
    /// last digit from one day to the next: the closed form can miss by
    /// days, and the answer is still the scan's.
    #[test]
    fn thresholds_at_the_resolution_of_f64() {
        let nearly_sure = BgNbd {
            r: 0.5,
            alpha: 10.0,
            a: 1.0,
            b: 1e16,
        };
        let s = summary(0, 0, 2);
        for k in 1..60 {
            let threshold = 1.0 - f64::from(k) * f64::EPSILON / 2.0;
            assert_eq!(
                risk_crossing(&nearly_sure, Unit::Day, threshold, &s),
                scan(&nearly_sure, Unit::Day, threshold, &s, 1_000_000),
                "θ = 1 − {k}·2^-53"
            );
        }
    }

    #[test]
    fn bisection_finds_the_first_day() {
        for first_true in 5..=20 {
            assert_eq!(first_below(5, 20, |d| d >= first_true), Some(first_true));
        }
        assert_eq!(first_below(5, 20, |_| false), None);
        assert_eq!(first_below(5, 5, |_| true), Some(5));
    }

    fn params() -> impl Strategy<Value = BgNbd> {
        (0.05..5.0, 0.2..60.0, 0.02..5.0, 0.1..50.0).prop_map(|(r, alpha, a, b)| BgNbd {
            r,
            alpha,
            a,
            b,
        })
    }

    fn summaries() -> impl Strategy<Value = Summary> {
        (-5_000i64..30_000, 0i64..3_000, 0.0..=1.0f64).prop_map(|(first_day, span, share)| {
            // 1 to span + 1 active days.
            let active_days = 1 + (share * span as f64) as u32;
            summary(first_day, first_day + span, active_days)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The closed form finds the day a day-by-day scan finds.
        #[test]
        fn risk_crossing_is_the_first_day_below(
            params in params(),
            week in any::<bool>(),
            threshold in prop_oneof![0.02..0.98, 1e-4..0.02, 0.98..0.9999],
            s in summaries(),
        ) {
            let unit = if week { Unit::Week } else { Unit::Day };
            const LIMIT: i64 = 50_000;
            let got = risk_crossing(&params, unit, threshold, &s);
            match scan(&params, unit, threshold, &s, LIMIT) {
                Some(t) => prop_assert_eq!(got, Some(t)),
                // Not within the scan: none, or later.
                None => prop_assert!(
                    got.is_none_or(|t| t > (s.last_day + LIMIT) * MS_PER_DAY),
                    "{:?}", got
                ),
            }
        }
    }
}
