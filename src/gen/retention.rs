//! Retention data with a planted, known uplift (`nudgeflow gen retention`).
//!
//! Writes `events.jsonl` and `spec.toml` into a fixture directory: weekly
//! activity of `users` users over `weeks` ISO weeks from `start` (a Monday,
//! 00:00 UTC), shaped so that the retention of DESIGN.md §5 has a known
//! answer. A replay of the fixture through its `spec.toml` should find the
//! effect the options planted; a retention query that does not has a bug.
//!
//! Each user `u-<n>` (n < `users`) gets, from the seed and n only:
//! - a group: `holdout` iff the holdout function of DESIGN.md §4 step 2
//!   ([`in_holdout`]) puts `u-<n>` in the holdout of `spec.toml`, whose
//!   `holdout` is the `holdout` option; `treated` otherwise;
//! - a segment: `ecommerce` (50%), `saas` (30%) or none (20%: the activity
//!   events have no `segment` field, the user's segment is null), written
//!   as `data.segment` on every `order.placed` of the user;
//! - a cohort: one of the first `cohorts` weeks, uniformly. The user's first
//!   `order.placed` (the first activity) falls at a uniform time in that
//!   week, and 30% of users order once more later that same week;
//! - activity: in each later week k = 1, 2, … of the span the user is active
//!   (places 1 to 3 orders, at uniform times of that week) with probability
//!   `base` + `uplift` when treated and `base` in the holdout,
//!   independently of every other week and user;
//! - noise: 0 to 2 `page.viewed` events in every week of the span, also
//!   before the first order and in weeks without one. They are not activity
//!   and must change no cohort, segment or retained count.
//!
//! **The planted effect.** Cohort, segment and group are drawn
//! independently, and activity in week cohort + k (k ≥ 1, inside the span)
//! is a Bernoulli draw of the group's probability, so for every cohort and
//! segment
//!
//! E[retained(cohort, segment, treated, k) / size] = `base` + `uplift`,
//! E[retained(cohort, segment, holdout, k) / size] = `base`,
//!
//! exactly (k = 0 is the cohort size itself). The difference treated −
//! holdout estimates `uplift`, with the binomial standard error of the
//! counts. Weeks after the span (cohort + k ≥ `weeks`) have no data.
//!
//! Each (user, week) draws from its own random stream, and whether the user
//! is active that week is the stream's first draw compared with the group's
//! probability; so for one seed, raising `uplift` only adds active weeks to
//! treated users, and the holdout's events stay byte for byte the same.
//!
//! Events are CloudEvents 1.0 like the rest of `gen`, sorted by time (ties
//! by user and event), times RFC 3339 UTC with milliseconds (whole
//! seconds); the same options give byte-identical files. The spec holds
//! the holdout, one marketing rule (so that the holdout withholds
//! something) and `[analytics]` with `activity = ["order.placed"]`,
//! `segment = "segment"` and `bucket = "week"`.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::mix;
use crate::dataflow::holdout::in_holdout;
use crate::time::{MS_PER_DAY as DAY, MS_PER_SEC};

const WEEK: i64 = 7 * DAY;

/// 2026-03-02T00:00:00Z, a Monday.
pub const DEFAULT_RETENTION_START_MS: i64 = super::DEFAULT_START_MS + DAY;

/// Segments (name, source, per mille of users); the last has no field.
const SEGMENTS: [(Option<&str>, &str, u32); 3] = [
    (Some("ecommerce"), "shop-web", 500),
    (Some("saas"), "saas-app", 300),
    (None, "web", 200),
];
const PATHS: [&str; 5] = ["/", "/pricing", "/search", "/account", "/deals"];

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct RetentionOptions {
    /// Fixture directory, created if missing.
    pub out: PathBuf,
    pub users: u64,
    /// Span of the data, in ISO weeks from `start_ms`.
    pub weeks: u32,
    /// Users' first activity is spread over the first `cohorts` weeks.
    pub cohorts: u32,
    /// The spec's `holdout` fraction.
    pub holdout: f64,
    /// Probability that a user is active in each week after their first.
    pub base: f64,
    /// Added to `base` for treated users only.
    pub uplift: f64,
    pub seed: u64,
    /// The first week's Monday, 00:00 UTC, ms since the Unix epoch.
    pub start_ms: i64,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions {
            out: "fixture".into(),
            users: 20_000,
            weeks: 8,
            cohorts: 4,
            holdout: 0.2,
            base: 0.30,
            uplift: 0.0,
            seed: 1,
            start_ms: DEFAULT_RETENTION_START_MS,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionStats {
    pub users: u64,
    /// Users in the holdout group.
    pub holdout_users: u64,
    /// The holdout in basis points, as the spec reads it.
    pub holdout_bp: u64,
    /// Lines of `events.jsonl`.
    pub events: u64,
    /// `order.placed` lines (activity).
    pub orders: u64,
    /// `page.viewed` lines (noise).
    pub page_views: u64,
    /// Bytes of `events.jsonl`.
    pub bytes: u64,
}

/// Writes `events.jsonl` and `spec.toml` into `opts.out`.
pub fn generate_retention(opts: &RetentionOptions) -> Result<RetentionStats> {
    check(opts)?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let spec_text = spec_toml(opts);
    // The group of a user is what the replay's spec makes of it: the
    // holdout in basis points is read back from the spec written.
    let spec = crate::spec::Spec::parse("spec.toml", &spec_text)
        .map_err(|e| anyhow::anyhow!("the generated spec is invalid: {e}"))?;
    let path = opts.out.join("spec.toml");
    std::fs::write(&path, &spec_text).with_context(|| format!("writing {}", path.display()))?;

    let mut stats = RetentionStats {
        users: opts.users,
        holdout_bp: spec.holdout_bp,
        ..Default::default()
    };
    // (time, user, week, event number in the week, line)
    let mut events: Vec<(i64, u64, u32, u32, String)> = Vec::new();
    for user in 0..opts.users {
        let holdout = in_holdout(&format!("u-{user}"), spec.holdout_bp);
        stats.holdout_users += holdout as u64;
        user_events(opts, user, holdout, &mut events);
    }
    events.sort_unstable_by_key(|e| (e.0, e.1, e.2, e.3));

    let path = opts.out.join("events.jsonl");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    for (.., line) in &events {
        w.write_all(line.as_bytes())?;
        stats.bytes += line.len() as u64;
        match line.contains(r#""type":"order.placed""#) {
            true => stats.orders += 1,
            false => stats.page_views += 1,
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    stats.events = events.len() as u64;
    tracing::info!(?stats, out = %opts.out.display(), "retention fixture generated");
    Ok(stats)
}

fn check(opts: &RetentionOptions) -> Result<()> {
    if opts.users == 0 || opts.weeks == 0 {
        bail!("gen retention needs --users ≥ 1 and --weeks ≥ 1");
    }
    if opts.cohorts == 0 || opts.cohorts > opts.weeks {
        bail!(
            "--cohorts {} must be from 1 to --weeks ({})",
            opts.cohorts,
            opts.weeks
        );
    }
    let fraction = |v: f64| (0.0..=1.0).contains(&v);
    if !fraction(opts.holdout) {
        bail!(
            "--holdout {} is not a fraction from 0.0 to 1.0",
            opts.holdout
        );
    }
    if !fraction(opts.base) {
        bail!("--base {} is not a probability from 0.0 to 1.0", opts.base);
    }
    if !opts.uplift.is_finite() || !fraction(treated_p(opts)) {
        bail!(
            "--base + --uplift ({} + {}) must be a probability from 0.0 to 1.0",
            opts.base,
            opts.uplift
        );
    }
    // 1970-01-05 was a Monday.
    if (opts.start_ms - 4 * DAY).rem_euclid(WEEK) != 0 {
        bail!(
            "--start {} is not a Monday 00:00:00 UTC: weeks of the data must be the ISO weeks of the retention buckets",
            crate::time::format_rfc3339(opts.start_ms)
        );
    }
    if opts
        .start_ms
        .checked_add(opts.weeks as i64 * WEEK)
        .is_none_or(|end| end > crate::time::MAX_TIME)
    {
        bail!("--start plus --weeks is past the year 9999");
    }
    Ok(())
}

/// base + uplift, with the rounding of a sum that should be 1 forgiven.
fn treated_p(opts: &RetentionOptions) -> f64 {
    let p = opts.base + opts.uplift;
    match p {
        _ if (1.0..1.0 + 1e-12).contains(&p) => 1.0,
        _ if (-1e-12..0.0).contains(&p) => 0.0,
        _ => p,
    }
}

/// The random stream of one user's week (`week` = u32::MAX: the user's own
/// draws), `stream` 0 for activity and 1 for noise.
fn rng(seed: u64, user: u64, week: u32, stream: u64) -> Pcg64Mcg {
    let key = mix(user ^ 0x5245_5445_4e54) ^ mix(((week as u64) << 8) | stream);
    Pcg64Mcg::seed_from_u64(mix(seed ^ mix(key)))
}

/// A uniform whole-second time in [from, to).
fn time_in(rng: &mut Pcg64Mcg, from: i64, to: i64) -> i64 {
    let seconds = ((to - from) / MS_PER_SEC).max(1);
    from + rng.random_range(0..seconds) * MS_PER_SEC
}

fn user_events(
    opts: &RetentionOptions,
    user: u64,
    holdout: bool,
    out: &mut Vec<(i64, u64, u32, u32, String)>,
) {
    let mut own = rng(opts.seed, user, u32::MAX, 0);
    let mut r = own.random_range(0..1000u32);
    let &(segment, source, _) = SEGMENTS
        .iter()
        .find(|s| r.checked_sub(s.2).map(|rest| r = rest).is_none())
        .unwrap();
    let cohort = own.random_range(0..opts.cohorts);
    let p = if holdout { opts.base } else { treated_p(opts) };
    for week in 0..opts.weeks {
        let from = opts.start_ms + week as i64 * WEEK;
        let to = from + WEEK;
        let mut n = 0u32;
        // Activity: its stream's first draw decides whether the user is
        // active, so that the draw is the same for every `uplift`.
        let mut act = rng(opts.seed, user, week, 0);
        let active: f64 = act.random();
        let times: Vec<i64> = if week == cohort {
            let first = time_in(&mut act, from, to);
            let mut times = vec![first];
            if act.random_bool(0.3) {
                times.push(time_in(&mut act, first, to));
            }
            times
        } else if week > cohort && active < p {
            let k = 1 + (act.random_bool(0.4) as usize) + (act.random_bool(0.25) as usize);
            (0..k).map(|_| time_in(&mut act, from, to)).collect()
        } else {
            Vec::new()
        };
        for t in times {
            let mut line = String::with_capacity(256);
            let id = format!("o-{user}-{week}-{n}");
            head(&mut line, &id, source, "order.placed", user, t);
            let cents = act.random_range(500..50_000u32);
            let _ = write!(
                line,
                r#""order_id":"{id}","cart_value":{}.{:02}"#,
                cents / 100,
                cents % 100
            );
            if let Some(segment) = segment {
                let _ = write!(line, r#","segment":"{segment}""#);
            }
            line.push_str("}}\n");
            out.push((t, user, week, n, line));
            n += 1;
        }
        // Noise.
        let mut noise = rng(opts.seed, user, week, 1);
        for _ in 0..noise.random_range(0..3u32) {
            let t = time_in(&mut noise, from, to);
            let mut line = String::with_capacity(256);
            head(
                &mut line,
                &format!("v-{user}-{week}-{n}"),
                source,
                "page.viewed",
                user,
                t,
            );
            let path = PATHS[noise.random_range(0..PATHS.len())];
            let _ = writeln!(line, r#""path":"{path}"}}}}"#);
            out.push((t, user, week, n, line));
            n += 1;
        }
    }
}

/// An event up to the opening brace of its `data`.
fn head(line: &mut String, id: &str, source: &str, kind: &str, user: u64, t: i64) {
    let _ = write!(
        line,
        r#"{{"specversion":"1.0","id":"{id}","source":"{source}","type":"{kind}","subject":"u-{user}","time":"{}","data":{{"#,
        crate::time::format_rfc3339(t)
    );
}

/// A probability as a short decimal (0.1 + 0.2 as 0.3).
fn decimal(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The spec a replay of the fixture should use.
fn spec_toml(opts: &RetentionOptions) -> String {
    let o = opts;
    format!(
        r#"# Written by `nudgeflow gen retention --users {users} --weeks {weeks} --cohorts {cohorts}
#   --holdout {holdout:?} --base {base} --uplift {uplift} --seed {seed} --start {start}`.
# Planted: for every weekly cohort, segment and k >= 1, retained / size is
# {treated} in expectation for treated users and {base} for the holdout.

holdout = {holdout:?}

# A marketing rule, so that the holdout withholds something: a nudge after
# a page view, at most one a week.
[[rule]]
name = "weekly-nudge"
on = "page.viewed"
template = "weekly-nudge"
purpose = "marketing"
channels = ["push", "email"]
dedup = {{ window = "7d" }}

[analytics]
activity = ["order.placed"]
segment = "segment"         # the `segment` field of a user's first order
bucket = "week"             # ISO weeks, UTC
"#,
        users = o.users,
        weeks = o.weeks,
        cohorts = o.cohorts,
        holdout = o.holdout,
        base = decimal(o.base),
        uplift = decimal(o.uplift),
        seed = o.seed,
        start = crate::time::format_rfc3339(o.start_ms),
        treated = decimal(treated_p(o)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::HashMap;
    use std::path::Path;

    fn run(dir: &Path, name: &str, opts: RetentionOptions) -> (PathBuf, RetentionStats) {
        let out = dir.join(name);
        let stats = generate_retention(&RetentionOptions {
            out: out.clone(),
            ..opts
        })
        .unwrap();
        (out, stats)
    }

    fn small(seed: u64, uplift: f64) -> RetentionOptions {
        RetentionOptions {
            users: 4_000,
            seed,
            uplift,
            ..Default::default()
        }
    }

    fn events(dir: &Path) -> Vec<Value> {
        std::fs::read_to_string(dir.join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The ISO week (Monday-based, UTC) of an event, counted from 1970.
    fn week(e: &Value) -> i64 {
        let ms = crate::time::parse_rfc3339(e["time"].as_str().unwrap()).unwrap();
        (ms.div_euclid(DAY) - 4).div_euclid(7)
    }

    /// Per group (holdout?): (user-weeks after the cohort week within the
    /// data's span, those the user was active in), from the events and
    /// the holdout function with the spec's holdout.
    fn rates(dir: &Path, weeks: i64) -> HashMap<bool, (u64, u64)> {
        let spec = crate::spec::Spec::load(&dir.join("spec.toml")).unwrap();
        let analytics = spec.analytics.as_ref().expect("[analytics]");
        let events = events(dir);
        let first = week(&events[0]);
        let last = first + weeks - 1;
        // user → (cohort week, active weeks), in time order.
        let mut users: HashMap<&str, (i64, Vec<i64>)> = HashMap::new();
        for e in &events {
            if !analytics.is_activity(e["type"].as_str().unwrap()) {
                continue;
            }
            let w = week(e);
            let (_, active) = users
                .entry(e["subject"].as_str().unwrap())
                .or_insert((w, Vec::new()));
            if active.last() != Some(&w) {
                active.push(w);
            }
        }
        let mut out: HashMap<bool, (u64, u64)> = HashMap::new();
        for (user, (cohort, active)) in &users {
            let group = out.entry(in_holdout(user, spec.holdout_bp)).or_default();
            group.0 += (last - cohort) as u64;
            group.1 += active.iter().filter(|w| *w > cohort).count() as u64;
        }
        out
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |seed| RetentionOptions {
            users: 300,
            seed,
            uplift: 0.1,
            ..Default::default()
        };
        let (a, sa) = run(dir.path(), "a", opts(7));
        let (b, sb) = run(dir.path(), "b", opts(7));
        let (c, _) = run(dir.path(), "c", opts(8));
        let read =
            |d: &Path| ["events.jsonl", "spec.toml"].map(|f| std::fs::read(d.join(f)).unwrap());
        assert_eq!(sa, sb);
        assert!(read(&a) == read(&b), "same seed must give identical files");
        assert_ne!(read(&a)[0], read(&c)[0]);
        assert_eq!(sa.bytes, read(&a)[0].len() as u64);
        assert_eq!(sa.events, sa.orders + sa.page_views);
    }

    #[test]
    fn events_are_valid_sorted_and_mixed() {
        let dir = tempfile::tempdir().unwrap();
        let (d, stats) = run(dir.path(), "v", small(3, 0.0));
        let events = events(&d);
        assert_eq!(events.len() as u64, stats.events);
        let times: Vec<&str> = events.iter().map(|e| e["time"].as_str().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "not sorted");
        assert!(times[0] >= "2026-03-02" && *times.last().unwrap() < "2026-04-27");
        let mut ids = std::collections::HashSet::new();
        let (mut segments, mut noise_first) = (HashMap::new(), 0);
        let mut ordered = std::collections::HashSet::new();
        for e in &events {
            assert_eq!(e["specversion"], "1.0");
            for f in ["id", "source", "type", "subject", "time"] {
                assert!(e[f].is_string(), "{f} in {e}");
            }
            assert!(ids.insert((e["source"].clone(), e["id"].clone())));
            let user = e["subject"].as_str().unwrap();
            match e["type"].as_str().unwrap() {
                "order.placed" => {
                    let seg = e["data"].get("segment").map(|s| s.as_str().unwrap());
                    assert_eq!(*segments.entry(user).or_insert(seg), seg);
                    ordered.insert(user);
                }
                "page.viewed" => noise_first += !ordered.contains(user) as u32,
                other => panic!("type {other}"),
            }
        }
        assert_eq!(segments.len() as u64, stats.users, "every user orders");
        let n = |s| segments.values().filter(|v| **v == s).count() as f64 / 4000.0;
        assert!((n(Some("ecommerce")) - 0.5).abs() < 0.04);
        assert!((n(Some("saas")) - 0.3).abs() < 0.04);
        assert!((n(None) - 0.2).abs() < 0.04);
        assert!(noise_first > 1000, "page views before the first order");
        let h = stats.holdout_users as f64 / 4000.0;
        assert!(
            (h - 0.2).abs() < 0.03 && stats.holdout_bp == 2000,
            "{stats:?}"
        );
    }

    /// Binomial standard error of a rate p over n trials.
    fn se(p: f64, n: u64) -> f64 {
        (p * (1.0 - p) / n as f64).sqrt()
    }

    #[test]
    fn without_uplift_both_groups_are_active_at_the_base_rate() {
        let dir = tempfile::tempdir().unwrap();
        let (d, _) = run(dir.path(), "z", small(11, 0.0));
        for (holdout, (n, k)) in rates(&d, 8) {
            let rate = k as f64 / n as f64;
            assert!(
                (rate - 0.3).abs() < 4.0 * se(0.3, n),
                "holdout {holdout}: {rate} over {n}"
            );
        }
    }

    #[test]
    fn the_planted_uplift_is_the_difference_of_the_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (d, _) = run(dir.path(), "u", small(12, 0.1));
        let r = rates(&d, 8);
        let ((nt, kt), (nh, kh)) = (r[&false], r[&true]);
        let (pt, ph) = (kt as f64 / nt as f64, kh as f64 / nh as f64);
        let se_diff = (se(0.4, nt).powi(2) + se(0.3, nh).powi(2)).sqrt();
        assert!(
            (pt - ph - 0.1).abs() < 4.0 * se_diff,
            "treated {pt} over {nt}, holdout {ph} over {nh}"
        );
        assert!((pt - 0.4).abs() < 4.0 * se(0.4, nt) && (ph - 0.3).abs() < 4.0 * se(0.3, nh));
        // The uplift only adds treated activity: the holdout's events are
        // the same as without it.
        let (z, _) = run(dir.path(), "z", small(12, 0.0));
        let spec = crate::spec::Spec::load(&d.join("spec.toml")).unwrap();
        let held = |dir: &Path| {
            events(dir)
                .into_iter()
                .filter(|e| in_holdout(e["subject"].as_str().unwrap(), spec.holdout_bp))
                .collect::<Vec<_>>()
        };
        assert_eq!(held(&d), held(&z));
    }

    #[test]
    fn bad_options_are_refused() {
        let bad = [
            RetentionOptions {
                base: 0.95,
                uplift: 0.1,
                ..Default::default()
            },
            RetentionOptions {
                cohorts: 9,
                ..Default::default()
            },
            RetentionOptions {
                holdout: 1.5,
                ..Default::default()
            },
            RetentionOptions {
                start_ms: DEFAULT_RETENTION_START_MS + DAY,
                ..Default::default()
            },
        ];
        for opts in bad {
            assert!(check(&opts).is_err(), "{opts:?}");
        }
        let edge = RetentionOptions {
            base: 0.9,
            uplift: 0.1,
            ..Default::default()
        };
        check(&edge).unwrap();
        assert_eq!(
            crate::time::format_rfc3339(DEFAULT_RETENTION_START_MS),
            "2026-03-02T00:00:00.000Z"
        );
    }
}
