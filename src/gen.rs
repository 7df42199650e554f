//! Deterministic generator of realistic input fixtures (`nudgeflow gen`).
//!
//! Writes the input streams of docs/semantics.md ("Input records") into one fixture directory:
//! `events.jsonl` (CloudEvents 1.0), `preferences.jsonl`, `consent.jsonl` and
//! `erasures.jsonl`, one compact JSON object per line, each file sorted by record
//! time, times as RFC 3339 UTC with milliseconds. The same [`GenOptions`] always
//! give byte-identical files, so fixtures for benchmarks and soak tests can be
//! regenerated anywhere instead of stored.
//!
//! The data is shaped to exercise the engine's decisions, not only its parser:
//! - activity is skewed (rank ⌊users·u³⌋, scattered over ids by a fixed
//!   permutation): a few heavy users hit caps and dedup windows, a long tail
//!   barely appears;
//! - event times follow a diurnal curve (peak 15:00 UTC, trough 03:00, weekends
//!   quieter) over `days` days, in a mix of 20 event types from the segments
//!   ecommerce, fintech, healthcare and saas. Object ids are per user
//!   (`c-<user>-<k>`, `o-<user>-<k>`, k < 4), so an `order.placed` often names the
//!   cart of an earlier `cart.abandoned`, as cancellations need;
//! - ~1% of events are re-sent 1 s – 10 min later with the same source, id and
//!   data but a later `time`: the duplicates the engine must drop;
//! - a baseline in the day before `start_ms`, the state a job would find:
//!   marketing consent for 85% of users (so marketing rules have someone to
//!   reach), preferences for 60%. During the event span: ~1 consent change per
//!   10 events (20% of them revocations), ~1 preference change per 20 (quiet hours
//!   in real IANA zones, muted rules, 3% deletions), ~1 erasure per 50 000.
//!
//! No receipts: they answer dispatches, so [`receipts`] writes them from
//! the dispatches of a replay (`nudgeflow gen receipts`).
//! [`retention`] writes another kind of fixture: weekly activity with a
//! planted uplift of the treated group over the holdout, and its spec
//! (`nudgeflow gen retention`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::time::{MS_PER_DAY as DAY, MS_PER_HOUR as HOUR, MS_PER_MIN as MINUTE};

pub mod receipts;
pub mod retention;

/// 2026-03-01T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_772_323_200_000;

/// What to generate and where.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub users: u64,
    /// Original events; about 1% more lines are written as re-sent duplicates.
    pub events: u64,
    pub seed: u64,
    /// Fixture directory, created if missing.
    pub out: PathBuf,
    /// Earliest event time, ms since the Unix epoch.
    pub start_ms: i64,
    /// Span of event time in days.
    pub days: u32,
}

impl Default for GenOptions {
    fn default() -> Self {
        let (users, events, seed, days) = (10_000, 1_000_000, 42, 7);
        let (out, start_ms) = ("fixture".into(), DEFAULT_START_MS);
        GenOptions {
            users,
            events,
            seed,
            out,
            start_ms,
            days,
        }
    }
}

/// Records written per file. `events` counts the lines of `events.jsonl`, duplicates
/// included (`events - duplicates` is the requested number); `bytes` is all files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenStats {
    pub events: u64,
    pub preferences: u64,
    pub consent: u64,
    pub erasures: u64,
    pub duplicates: u64,
    pub bytes: u64,
}

const SEGMENTS: [&str; 4] = ["ecommerce", "fintech", "healthcare", "saas"];
const CHANNELS: [&str; 5] = ["push", "email", "sms", "in_app", "webhook"];
/// Channels of consent changes, weighted by repetition.
const CONSENT_CHANNELS: [&str; 8] = [
    "*", "push", "push", "email", "email", "sms", "in_app", "webhook",
];
#[rustfmt::skip]
const SOURCES: [[&str; 2]; 4] = [
    ["shop-web", "shop-app"], ["bank-core", "bank-app"],
    ["clinic-portal", "clinic-app"], ["saas-app", "saas-web"],
];
/// (time zone, locale) of a user's region.
#[rustfmt::skip]
const REGIONS: [(&str, &str); 10] = [
    ("Europe/Berlin", "de-DE"), ("Europe/London", "en-GB"), ("America/New_York", "en-US"),
    ("America/Los_Angeles", "en-US"), ("Asia/Kolkata", "en-IN"), ("Australia/Sydney", "en-AU"),
    ("Asia/Tokyo", "ja-JP"), ("UTC", "en"), ("America/Sao_Paulo", "pt-BR"),
    ("Europe/Paris", "fr-FR"),
];
#[rustfmt::skip]
const MUTABLE_RULES: [&str; 6] = [
    "price-drop", "weekly-digest", "cart-recovery", "trial-ending", "appointment-reminder",
    "refill-reminder",
];
/// Event types: (type, weight in per mille, fixed segment (else the user's own),
/// template of the type's `data` fields). In templates `{u}` is the user number,
/// `{k}` one of the user's objects (`<user>-<0..4>`), `{i}` the event number, `{p}`
/// a product, `{at}` a time 1–72 h ahead, `{#a-b}` an integer, `{$a-b}` an amount
/// of a..b cents written with two decimals, and `{x|y|z}` one of x, y, z.
#[rustfmt::skip]
const TYPES: [(&str, u32, Option<usize>, &str); 20] = [
    ("page.viewed", 400, None, r#""path":"{/|/cart|/account|/search|/deals}","referrer":"{direct|search|email|push}","#),
    ("cart.abandoned", 120, Some(0), r#""cart_id":"c-{k}","cart_value":{$500-50000},"items":{#1-8},"#),
    ("order.placed", 80, Some(0), r#""order_id":"o-{k}","cart_id":"c-{k}","cart_value":{$500-50000},"#),
    ("payment.failed", 30, None, r#""payment_id":"pay-{i}","amount":{$100-200000},"reason":"{card_declined|insufficient_funds|expired_card}","#),
    ("payment.succeeded", 50, None, r#""payment_id":"pay-{i}","amount":{$100-200000},"#),
    ("login.new_device", 30, None, r#""device":"{iPhone 15|Pixel 8|Windows PC|Mac}","country":"{DE|US|GB|IN|AU|BR}","#),
    ("product.price_dropped", 50, Some(0), r#""product_id":"p-{p}","drop_pct":{#1-50},"price":{$199-99999},"#),
    ("order.shipped", 40, Some(0), r#""order_id":"o-{k}","carrier":"{DHL|UPS|FedEx|USPS}","#),
    ("delivery.out_for_delivery", 30, Some(0), r#""order_id":"o-{k}","#),
    ("fraud.suspected", 5, Some(1), r#""account_id":"acct-{u}","score":0.{#70-99},"#),
    ("account.balance_low", 30, Some(1), r#""account_id":"acct-{u}","balance":{$0-50000},"#),
    ("appointment.booked", 20, Some(2), r#""appointment_id":"a-{k}","starts_at":"{at}","#),
    ("appointment.cancelled", 5, Some(2), r#""appointment_id":"a-{k}","#),
    ("prescription.refill_due", 15, Some(2), r#""rx_id":"rx-{k}","#),
    ("user.signed_up", 20, None, r#""via":"{organic|ads|referral|app-store}","#),
    ("onboarding.completed", 10, None, r#""steps":{#3-8},"#),
    ("search.performed", 20, None, r#""query":"{shoes|headphones|dentist|savings|invoice export}","#),
    ("subscription.renewed", 15, Some(3), r#""plan":"{starter|pro|team}","amount":{$900-49900},"#),
    ("trial.ending", 10, Some(3), r#""plan":"pro","days_left":{#1-7},"#),
    ("feature.used", 20, Some(3), r#""feature":"{export|dashboard|api|sso|reports}","#),
];

/// Writes the fixture; `progress` gets the number of event lines written, about
/// every 100 000 and once at the end.
pub fn generate(opts: &GenOptions, progress: &mut dyn FnMut(u64)) -> Result<GenStats> {
    if opts.days == 0 || (opts.users == 0 && opts.events > 0) {
        bail!("gen needs days ≥ 1, and users ≥ 1 when there are events");
    }
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let users = Users::new(opts.users, opts.seed);
    let mut stats = GenStats::default();
    write_events(opts, &users, &mut stats, progress)?;

    // Baseline records (distinct users, the day before the start), then changes.
    let (base, span) = (
        (opts.start_ms - DAY, 1440),
        (opts.start_ms, opts.days as usize * 1440),
    );
    let n_base = |pct: u64| opts.users * pct / 100;
    let mut s = Stream::open(opts, "preferences.jsonl", 2)?;
    s.records(n_base(60), base, |rng, k, t, line| {
        preference(line, rng, &users, users.baseline(k), t, false)
    })?;
    s.records(opts.events / 20, span, |rng, _, t, line| {
        let user = users.mixed(rng);
        preference(line, rng, &users, user, t, true)
    })?;
    stats.preferences = s.finish(&mut stats.bytes)?;

    let mut s = Stream::open(opts, "consent.jsonl", 3)?;
    s.records(n_base(85), base, |rng, k, t, line| {
        let channel = pick(rng, &["*", "*", "*", "push", "email"]);
        consent(line, users.baseline(k), t, channel, "marketing", true)
    })?;
    s.records(opts.events / 10, span, |rng, _, t, line| {
        let user = users.mixed(rng);
        let channel = pick(rng, &CONSENT_CHANNELS);
        let purpose = ["transactional", "marketing"][rng.random_bool(0.8) as usize];
        consent(line, user, t, channel, purpose, rng.random_bool(0.8))
    })?;
    stats.consent = s.finish(&mut stats.bytes)?;

    let mut s = Stream::open(opts, "erasures.jsonl", 4)?;
    s.records((opts.events + 25_000) / 50_000, span, |rng, _, t, line| {
        user_time(line, users.active(rng), t);
        line.extend_from_slice(b"}\n");
    })?;
    stats.erasures = s.finish(&mut stats.bytes)?;
    tracing::info!(?stats, out = %out.display(), "fixture generated");
    Ok(stats)
}

fn stream_rng(seed: u64, stream: u64) -> Pcg64Mcg {
    Pcg64Mcg::seed_from_u64(mix(seed ^ mix(stream)))
}

fn create(dir: &Path, name: &str) -> Result<BufWriter<File>> {
    let path = dir.join(name);
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

fn pick<'a>(rng: &mut Pcg64Mcg, items: &[&'a str]) -> &'a str {
    items.choose(rng).unwrap()
}

/// SplitMix64's finaliser: a fixed, fast 64-bit hash.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A bijection of `0..n`: `r ↦ (a·r + b) mod n` with `a` coprime to `n`.
struct Perm(u64, u64, u64);

impl Perm {
    fn new(n: u64, salt: u64) -> Perm {
        let n = n.max(1);
        let gcd = |(mut a, mut b): (u64, u64)| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let mut a = (mix(salt) % n) | 1;
        while gcd((a, n)) != 1 {
            a += 1;
        }
        Perm(n, a, mix(salt ^ 1) % n)
    }
    fn get(&self, r: u64) -> u64 {
        ((r as u128 * self.1 as u128 + self.2 as u128) % self.0 as u128) as u64
    }
}

/// The user population: who is active, and each user's fixed segment and region.
struct Users {
    n: u64,
    seed: u64,
    heavy: Perm,
    cover: Perm,
}

impl Users {
    fn new(n: u64, seed: u64) -> Users {
        let (heavy, cover) = (Perm::new(n, seed ^ 0xA11CE), Perm::new(n, seed ^ 0xC0FFEE));
        Users {
            n,
            seed,
            heavy,
            cover,
        }
    }
    /// An activity-weighted user: rank ⌊n·u³⌋, so rank 0 gets (1/n)^⅓ of all activity.
    fn active(&self, rng: &mut Pcg64Mcg) -> u64 {
        let u: f64 = rng.random();
        self.heavy
            .get(((self.n as f64 * u * u * u) as u64).min(self.n - 1))
    }
    /// Half activity-weighted, half uniform: changes that reach the long tail too.
    fn mixed(&self, rng: &mut Pcg64Mcg) -> u64 {
        match rng.random_bool(0.5) {
            true => self.active(rng),
            false => rng.random_range(0..self.n),
        }
    }
    /// The k-th user of the baseline (distinct for k < n).
    fn baseline(&self, k: u64) -> u64 {
        self.cover.get(k)
    }
    fn segment(&self, user: u64) -> usize {
        match mix(user ^ self.seed) % 100 {
            0..45 => 0,
            45..65 => 1,
            65..80 => 2,
            _ => 3,
        }
    }
    fn region(&self, user: u64) -> (&'static str, &'static str) {
        REGIONS[(mix(user ^ !self.seed) % REGIONS.len() as u64) as usize]
    }
}

/// Relative event rate per UTC hour: trough at 03:00, peak at 15:00. Integers, so
/// that no libm function makes the output differ between platforms.
const HOURLY: [u32; 24] = [
    50, 39, 32, 30, 32, 39, 50, 65, 82, 100, 118, 135, 150, 161, 168, 170, 168, 161, 150, 135, 118,
    100, 82, 65,
];

/// Maps sorted quantiles in [0, 1) to times in a window, with a diurnal and weekly
/// rate; its cursor only moves forward, so sorted quantiles give sorted times.
struct Timeline {
    start: i64,
    cum: Vec<f64>, // cum[m]: the weight of the window's first m minutes
    idx: usize,
}

impl Timeline {
    fn new((start, minutes): (i64, usize)) -> Timeline {
        let mut cum = Vec::with_capacity(minutes + 1);
        cum.push(0.0);
        for m in 0..minutes as i64 {
            let t = start + m * MINUTE;
            let hour = (t.rem_euclid(DAY) / HOUR) as usize;
            let weekend = matches!((t.div_euclid(DAY) + 4).rem_euclid(7), 0 | 6);
            let w = HOURLY[hour] * if weekend { 4 } else { 5 }; // weekends 20% quieter
            cum.push(cum[m as usize] + w as f64);
        }
        Timeline { start, cum, idx: 0 }
    }
    fn at(&mut self, p: f64) -> i64 {
        let target = p * self.cum.last().unwrap();
        while self.idx + 2 < self.cum.len() && self.cum[self.idx + 1] <= target {
            self.idx += 1;
        }
        let (lo, hi) = (self.cum[self.idx], self.cum[self.idx + 1]);
        let ms = ((target - lo) / (hi - lo) * MINUTE as f64) as i64;
        self.start + self.idx as i64 * MINUTE + ms.clamp(0, MINUTE - 1)
    }
}

fn write_events(
    opts: &GenOptions,
    users: &Users,
    stats: &mut GenStats,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut w = create(&opts.out, "events.jsonl")?;
    let mut rng = stream_rng(opts.seed, 1);
    let mut timeline = Timeline::new((opts.start_ms, opts.days as usize * 1440));
    // Re-sends waiting for their time: (time, event number, line).
    let mut resend: BinaryHeap<Reverse<(i64, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut line = Vec::with_capacity(512);
    let mut emit = |w: &mut BufWriter<File>, line: &[u8]| -> Result<()> {
        w.write_all(line)?;
        (stats.events, stats.bytes) = (stats.events + 1, stats.bytes + line.len() as u64);
        if stats.events.is_multiple_of(100_000) {
            progress(stats.events);
        }
        Ok(())
    };
    for i in 0..opts.events {
        let t = timeline.at((i as f64 + rng.random::<f64>()) / opts.events as f64);
        while let Some(Reverse((due, ..))) = resend.peek()
            && *due <= t
        {
            emit(&mut w, &resend.pop().unwrap().0.2)?;
        }
        let user = users.active(&mut rng);
        let mut r = rng.random_range(0..1000u32);
        let &(ty, _, fixed, template) = TYPES
            .iter()
            .find(|e| r.checked_sub(e.1).map(|rest| r = rest).is_none())
            .unwrap();
        let seg = fixed.unwrap_or_else(|| users.segment(user));
        let source = pick(&mut rng, &SOURCES[seg]);
        line.clear();
        write!(
            line,
            r#"{{"specversion":"1.0","id":"e-{i}","source":"{source}","type":"{ty}","#
        )?;
        line.extend_from_slice(br#""time":""#);
        let time_at = line.len();
        push_time(&mut line, t);
        write!(line, r#"","subject":"u-{user}","data":{{"#)?;
        fill(&mut line, &mut rng, template, i, user, t);
        writeln!(line, r#""segment":"{}"}}}}"#, SEGMENTS[seg])?;
        emit(&mut w, &line)?;
        if rng.random_bool(0.01) {
            let u: f64 = rng.random();
            let due = t + 1000 + (599_000.0 * u * u) as i64;
            let mut dup = line.clone();
            dup[time_at..time_at + 24].copy_from_slice(&crate::time::rfc3339_bytes(due));
            resend.push(Reverse((due, i, dup)));
            stats.duplicates += 1;
        }
    }
    while let Some(Reverse((_, _, dup))) = resend.pop() {
        emit(&mut w, &dup)?;
    }
    w.flush()?;
    progress(stats.events);
    Ok(())
}

/// Appends an event's `data` fields from its template (see [`TYPES`]).
fn fill(d: &mut Vec<u8>, rng: &mut Pcg64Mcg, template: &str, i: u64, u: u64, t: i64) {
    let (mut rest, k) = (template, rng.random_range(0..4));
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').expect("template braces");
        let (spec, text) = (&rest[open + 1..close], &rest[..open]);
        d.extend_from_slice(text.as_bytes());
        rest = &rest[close + 1..];
        let _ = match spec {
            "u" => write!(d, "{u}"),
            "i" => write!(d, "{i}"),
            "k" => write!(d, "{u}-{k}"),
            "p" => write!(
                d,
                "{}",
                rng.random_range(0..5000u32).min(rng.random_range(0..5000))
            ),
            "at" => {
                let q = 15 * MINUTE; // on a quarter hour, 1–72 h ahead
                let at = (t + rng.random_range(HOUR..=72 * HOUR - q)).div_euclid(q) * q + q;
                d.write_all(&crate::time::rfc3339_bytes(at))
            }
            _ if spec.contains('|') => {
                let choice = rng.random_range(0..spec.split('|').count());
                d.write_all(spec.split('|').nth(choice).unwrap().as_bytes())
            }
            _ => {
                let (lo, hi) = spec[1..].split_once('-').expect("template range");
                let v = rng.random_range(lo.parse::<u32>().unwrap()..=hi.parse().unwrap());
                match spec.starts_with('$') {
                    true => write!(d, "{}.{:02}", v / 100, v % 100),
                    false => write!(d, "{v}"),
                }
            }
        };
    }
    d.extend_from_slice(rest.as_bytes());
}

/// One time-sorted output file of the non-event streams.
struct Stream {
    w: BufWriter<File>,
    rng: Pcg64Mcg,
    line: Vec<u8>,
    count: u64,
    bytes: u64,
}

impl Stream {
    fn open(opts: &GenOptions, name: &str, stream: u64) -> Result<Stream> {
        let (w, rng) = (create(&opts.out, name)?, stream_rng(opts.seed, stream));
        Ok(Stream {
            w,
            rng,
            line: Vec::new(),
            count: 0,
            bytes: 0,
        })
    }
    /// Writes `n` records at sorted times in the window (start, minutes); `record`
    /// gets the rng, the record's number and time, and the line to fill.
    fn records(
        &mut self,
        n: u64,
        window: (i64, usize),
        mut record: impl FnMut(&mut Pcg64Mcg, u64, i64, &mut Vec<u8>),
    ) -> Result<()> {
        let mut timeline = Timeline::new(window);
        for k in 0..n {
            let t = timeline.at((k as f64 + self.rng.random::<f64>()) / n as f64);
            self.line.clear();
            record(&mut self.rng, k, t, &mut self.line);
            self.w.write_all(&self.line)?;
            (self.count, self.bytes) = (self.count + 1, self.bytes + self.line.len() as u64);
        }
        Ok(())
    }
    fn finish(mut self, bytes: &mut u64) -> Result<u64> {
        self.w.flush()?;
        *bytes += self.bytes;
        Ok(self.count)
    }
}

/// `{"user":"u-<user>","time":"<t>"`, the start of every non-event record.
fn user_time(line: &mut Vec<u8>, user: u64, t: i64) {
    let _ = write!(line, r#"{{"user":"u-{user}","time":""#);
    push_time(line, t);
    line.push(b'"');
}

fn preference(
    line: &mut Vec<u8>,
    rng: &mut Pcg64Mcg,
    users: &Users,
    user: u64,
    t: i64,
    ongoing: bool,
) {
    user_time(line, user, t);
    if ongoing && rng.random_bool(0.03) {
        line.extend_from_slice(b",\"deleted\":true}\n");
        return;
    }
    let list = |line: &mut Vec<u8>, name: &str, items: &[&str]| {
        let _ = write!(line, r#","{name}":["#);
        for (i, item) in items.iter().enumerate() {
            let _ = write!(line, r#"{}"{item}""#, if i == 0 { "" } else { "," });
        }
        line.push(b']');
    };
    let (tz, locale) = users.region(user);
    if rng.random_bool(0.85) {
        let mut channels = CHANNELS;
        channels.shuffle(rng);
        let n = rng.random_range(1..=5) * (rng.random_bool(0.98) as usize); // 2%: none
        list(line, "channels", &channels[..n]);
    }
    if rng.random_bool(0.65) {
        let start = pick(rng, &["20:30", "21:00", "22:00", "22:00", "23:00"]);
        let end = pick(rng, &["06:00", "07:00", "07:00", "07:30", "08:00"]);
        let _ = write!(line, r#","quiet_hours":{{"start":"{start}","end":"{end}""#);
        if rng.random_bool(0.95) {
            let _ = write!(line, r#","tz":"{tz}""#);
        }
        line.push(b'}');
    }
    if rng.random_bool(0.2) {
        let n = rng.random_range(1..=2);
        list(
            line,
            "muted_rules",
            &MUTABLE_RULES.sample(rng, n).copied().collect::<Vec<_>>(),
        );
    }
    if rng.random_bool(0.9) {
        let _ = write!(line, r#","locale":"{locale}""#);
    }
    line.extend_from_slice(b"}\n");
}

fn consent(line: &mut Vec<u8>, user: u64, t: i64, channel: &str, purpose: &str, granted: bool) {
    user_time(line, user, t);
    let _ = writeln!(
        line,
        r#","channel":"{channel}","purpose":"{purpose}","granted":{granted}}}"#
    );
}

/// Appends `ms` as RFC 3339 UTC with milliseconds.
fn push_time(out: &mut Vec<u8>, ms: i64) {
    out.extend_from_slice(&crate::time::rfc3339_bytes(ms));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    fn run(name: &str, seed: u64, events: u64, users: u64) -> (PathBuf, GenStats) {
        let out = std::env::temp_dir().join(format!("nudgeflow-gen-{}-{name}", std::process::id()));
        let opts = GenOptions {
            users,
            events,
            seed,
            out: out.clone(),
            days: 2,
            ..Default::default()
        };
        let mut calls = 0;
        let stats = generate(&opts, &mut |_| calls += 1).unwrap();
        assert!(calls >= 1);
        (out, stats)
    }

    fn lines(dir: &Path, file: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}: {e}: {l}")))
            .collect()
    }

    fn s<'a>(v: &'a Value, field: &str) -> &'a str {
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("missing string {field} in {v}"))
    }

    fn ms(s: &str) -> i64 {
        crate::time::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let files = [
            "events.jsonl",
            "preferences.jsonl",
            "consent.jsonl",
            "erasures.jsonl",
        ];
        let read = |dir: &Path| files.map(|f| std::fs::read(dir.join(f)).unwrap());
        let (a, sa) = run("det-a", 7, 60_000, 800);
        let (b, sb) = run("det-b", 7, 60_000, 800);
        let (c, _) = run("det-c", 8, 60_000, 800);
        assert_eq!(sa, sb);
        assert!(read(&a) == read(&b), "same seed must give identical files");
        assert_ne!(read(&a)[0], read(&c)[0]);
        assert_ne!(read(&a)[2], read(&c)[2]);
        assert_eq!(
            sa.bytes,
            read(&a).iter().map(|f| f.len() as u64).sum::<u64>()
        );
        for d in [a, b, c] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn records_are_valid_sorted_and_complete() {
        let (dir, stats) = run("valid", 1, 50_000, 2_000);
        let sorted = |file: &str, recs: &[Value]| {
            let times: Vec<&str> = recs.iter().map(|r| s(r, "time")).collect();
            assert!(
                times.iter().all(|t| t.len() == 24 && t.ends_with('Z')),
                "{file}"
            );
            // Fixed-width UTC text sorts like the instants it names.
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{file} not sorted by time"
            );
        };
        let events = lines(&dir, "events.jsonl");
        assert_eq!(events.len() as u64, stats.events);
        sorted("events", &events);
        for e in &events {
            assert_eq!(s(e, "specversion"), "1.0");
            assert!(s(e, "id").starts_with("e-") && s(e, "subject").starts_with("u-"));
            assert!(
                TYPES.iter().any(|t| t.0 == s(e, "type"))
                    && SOURCES.concat().contains(&s(e, "source"))
            );
            let data = &e["data"];
            assert!(SEGMENTS.contains(&s(data, "segment")));
            match s(e, "type") {
                "cart.abandoned" => {
                    let v = data["cart_value"].as_f64().unwrap();
                    assert!((5.0..=500.0).contains(&v) && s(data, "cart_id").starts_with("c-"));
                }
                "product.price_dropped" => {
                    assert!((1..=50).contains(&data["drop_pct"].as_u64().unwrap()))
                }
                "account.balance_low" => {
                    assert!((0.0..=500.0).contains(&data["balance"].as_f64().unwrap()))
                }
                "appointment.booked" => {
                    let ahead = ms(s(data, "starts_at")) - ms(s(e, "time"));
                    assert!((HOUR..=72 * HOUR).contains(&ahead), "{e}");
                }
                _ => {}
            }
        }
        // Skewed activity: the busiest 1% of users have ~20% of events; the tail appears.
        let mut per_user: HashMap<&str, usize> = HashMap::new();
        events
            .iter()
            .for_each(|e| *per_user.entry(s(e, "subject")).or_default() += 1);
        let mut counts: Vec<usize> = per_user.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = counts[..20].iter().sum();
        assert!(
            top * 100 > events.len() * 15 && counts.len() > 1_800,
            "{top} {}",
            counts.len()
        );
        let prefs = lines(&dir, "preferences.jsonl");
        assert_eq!(prefs.len() as u64, stats.preferences);
        sorted("preferences", &prefs);
        for p in &prefs {
            s(p, "user");
            for c in p["channels"].as_array().into_iter().flatten() {
                assert!(CHANNELS.contains(&c.as_str().unwrap()));
            }
            if let Some(q) = p.get("quiet_hours") {
                assert!(s(q, "start").len() == 5 && s(q, "end").len() == 5);
            }
        }
        assert!(
            prefs.iter().any(|p| p["deleted"] == true)
                && prefs.iter().any(|p| p.get("muted_rules").is_some())
        );
        let consent = lines(&dir, "consent.jsonl");
        assert_eq!(consent.len() as u64, stats.consent);
        sorted("consent", &consent);
        for c in &consent {
            s(c, "user");
            assert!(s(c, "channel") == "*" || CHANNELS.contains(&s(c, "channel")));
            assert!(
                ["marketing", "transactional"].contains(&s(c, "purpose"))
                    && c["granted"].is_boolean()
            );
        }
        let revoked =
            consent.iter().filter(|c| c["granted"] == false).count() as f64 / consent.len() as f64;
        assert!((0.05..0.2).contains(&revoked), "revocations {revoked}");
        let granted_early: HashSet<&str> = consent
            .iter()
            .filter(|c| s(c, "time") < "2026-03-01" && s(c, "purpose") == "marketing")
            .map(|c| s(c, "user"))
            .collect();
        assert_eq!(
            granted_early.len(),
            1_700,
            "85% of users grant marketing before the start"
        );
        let erasures = lines(&dir, "erasures.jsonl");
        assert_eq!((erasures.len() as u64, stats.erasures), (1, 1));
        sorted("erasures", &erasures);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn about_one_percent_duplicates() {
        let (dir, stats) = run("dups", 3, 60_000, 5_000);
        let events = lines(&dir, "events.jsonl");
        let mut first: HashMap<(&str, &str), &Value> = HashMap::new();
        let mut dups = 0;
        for e in &events {
            if let Some(orig) = first.insert((s(e, "source"), s(e, "id")), e) {
                dups += 1;
                assert_eq!(
                    (&orig["type"], &orig["subject"], &orig["data"]),
                    (&e["type"], &e["subject"], &e["data"])
                );
                assert!(s(orig, "time") < s(e, "time"));
            }
        }
        assert_eq!(dups, stats.duplicates);
        assert_eq!(stats.events - stats.duplicates, 60_000);
        assert!(
            (480..720).contains(&dups),
            "{dups} duplicates, expected ~600"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
