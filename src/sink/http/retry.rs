//! When an HTTP sink tries again (DESIGN.md §9): which answers are worth
//! another request, how long to wait before it (exponential backoff with
//! full jitter, or the provider's `Retry-After`), and what the receipt of
//! a failure says.

use std::time::{Duration, SystemTime};

use rand::RngExt;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;

/// Exponential backoff with full jitter: after the n-th failed attempt the
/// sink waits a uniformly random time in `[0, min(cap, base · 2^(n−1))]`,
/// so that many dispatches failed at once do not come back at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// 100 ms doubling, at most 30 s (§9).
    pub const DEFAULT: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(30),
    };

    /// The longest wait after the `failures`-th failed attempt (1-based).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        self.base
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// A wait after the `failures`-th failed attempt: uniform in
    /// `[0, ceiling(failures)]`.
    pub fn delay(&self, failures: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.ceiling(failures).as_micros() as u64;
        Duration::from_micros(rng.random_range(0..=ceiling))
    }
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx answer.
    Delivered,
    /// Worth another request (a connection error, a timeout, 408, 429,
    /// 5xx): the reason, and how long the provider asked to wait.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other answer (3xx, other 4xx): no request will do better.
    Fail { reason: String },
}

/// The verdict on an HTTP answer; `retry_after` is its `Retry-After`
/// header, if any, read as of `now`.
pub fn judge_status(
    status: StatusCode,
    retry_after: Option<&HeaderValue>,
    now: SystemTime,
) -> Verdict {
    let reason = || format!("HTTP {status}");
    if status.is_success() {
        Verdict::Delivered
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Verdict::Retry {
            reason: reason(),
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        }
    } else {
        Verdict::Fail { reason: reason() }
    }
}

/// The verdict on a request that got no answer: retried, whatever it was
/// (a refused or reset connection, a timeout, a broken answer).
pub fn judge_error(error: &reqwest::Error, timeout: Duration) -> Verdict {
    let reason = if error.is_timeout() {
        format!(
            "timeout: no answer within {}",
            crate::record::output::format_duration(timeout.as_millis() as i64)
        )
    } else if error.is_connect() {
        format!("connection failed: {}", innermost(error))
    } else {
        format!("request failed: {}", innermost(error))
    };
    Verdict::Retry {
        reason,
        retry_after: None,
    }
}

/// The most specific message of an error's chain (reqwest's own says only
/// "error sending request for url (…)").
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut e = error;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

/// A `Retry-After` value: a number of seconds, or an HTTP date (a date in
/// the past is no wait). `None` when it is neither.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_from_100ms_up_to_30s() {
        let b = Backoff::DEFAULT;
        let ms = |n| b.ceiling(n).as_millis();
        assert_eq!(
            (1..=11).map(ms).collect::<Vec<_>>(),
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000
            ]
        );
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jittered_delays_stay_within_their_ceiling_and_spread_over_it() {
        let b = Backoff::DEFAULT;
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
        for failures in 1..=12 {
            let ceiling = b.ceiling(failures);
            let delays: Vec<Duration> = (0..2000).map(|_| b.delay(failures, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "failures {failures}");
            // Full jitter: the whole range is used, not just its top.
            let low = delays.iter().filter(|d| **d < ceiling / 4).count();
            let high = delays.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!(
                low > 300 && high > 300,
                "failures {failures}: {low} low, {high} high"
            );
        }
    }

    #[test]
    fn retried_statuses_are_408_429_and_5xx() {
        let now = SystemTime::now();
        let judge = |code: u16| judge_status(StatusCode::from_u16(code).unwrap(), None, now);
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(judge(code), Verdict::Delivered, "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert!(matches!(judge(code), Verdict::Retry { .. }), "{code}");
        }
        for code in [301, 302, 304, 400, 401, 403, 404, 409, 410, 422] {
            assert!(matches!(judge(code), Verdict::Fail { .. }), "{code}");
        }
        assert_eq!(
            judge(400),
            Verdict::Fail {
                reason: "HTTP 400 Bad Request".into()
            }
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v = |s: &str| parse_retry_after(&HeaderValue::from_str(s).unwrap(), now);
        assert_eq!(v("2"), Some(Duration::from_secs(2)));
        assert_eq!(v(" 0 "), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(v(&later), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(v(&earlier), Some(Duration::ZERO));
        assert_eq!(v("soon"), None);
        assert_eq!(v("-1"), None);
        let status = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            judge_status(status, Some(&HeaderValue::from_static("3")), now),
            Verdict::Retry {
                reason: "HTTP 429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }
}
