//! Simulated provider receipts for the dispatches of a replay (`nudgeflow gen
//! receipts`).
//!
//! Reads the `dispatches.jsonl` a replay wrote and writes `receipts.jsonl`
//! into a fixture directory: what channel providers would report about each
//! dispatch, so that a second replay of the fixture exercises channel
//! fallback (DESIGN.md §4, "Fallback"). Each dispatch, at its decision time
//! t, gets one fate, drawn per mille:
//!
//! | per mille | receipts |
//! |---|---|
//! | 620 | `delivered` at t + 30 min·u³ (most within minutes, some late); then `opened` for 30% of them (within 6 h), `clicked` for 30% of those (within 10 min of opening), `complained` for 2% (within a day), and a `failed` after the success for 3% (which must change nothing) |
//! | 100 | `failed` at t + 2 h·u³ (a tenth of them at exactly t) |
//! | 50 | `bounced`, likewise |
//! | 50 | `failed` likewise, then `delivered` 1–30 min later (too late to count) |
//! | 20 | `complained` only, within 30 min (neither success nor failure) |
//! | 160 | nothing (the attempt times out) |
//!
//! u is uniform in [0, 1); delays are whole seconds, so that a receipt now
//! and then falls exactly on the end of a fallback window. Besides, 1% of
//! dispatches get a receipt from before their decision time (1 s – 1 h
//! earlier, which counts for nothing), and 1% a receipt for a random id that
//! no dispatch has.
//!
//! The receipts of a dispatch are drawn from the seed, its `dispatch_id` and
//! its decision time only: the same dispatch gets the same receipts whatever
//! other dispatches the input holds, so receipts generated again from the
//! dispatches of a replay with receipts (attempts 2 and later included) keep
//! those of the first attempts. The file is sorted by time (ties in the order
//! of (dispatch id, decision time) of their dispatch), times RFC 3339 UTC
//! with milliseconds, so its replay has no late receipts; the same inputs and
//! seed give byte-identical files.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::mix;
use crate::time::{MS_PER_DAY as DAY, MS_PER_HOUR as HOUR, MS_PER_MIN as MINUTE, MS_PER_SEC};

/// What to read and where to write.
#[derive(Debug, Clone)]
pub struct ReceiptOptions {
    /// `dispatches.jsonl` files of replays (a cluster replay's parts may be
    /// given one by one).
    pub dispatches: Vec<PathBuf>,
    /// Fixture directory (created if missing); `receipts.jsonl` is written
    /// there.
    pub out: PathBuf,
    pub seed: u64,
}

/// Counts of what was read and written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptStats {
    /// Dispatch lines read.
    pub dispatches: u64,
    /// Receipt lines written.
    pub receipts: u64,
    /// Receipts by status.
    pub by_status: BTreeMap<&'static str, u64>,
    /// Dispatches that got no receipt at all.
    pub silent: u64,
    /// Receipts timed before their dispatch.
    pub early: u64,
    /// Receipts for ids of no dispatch.
    pub unknown: u64,
}

/// Writes `out/receipts.jsonl` for the dispatches of `opts.dispatches`.
pub fn generate_receipts(opts: &ReceiptOptions) -> Result<ReceiptStats> {
    let mut dispatches = Vec::new();
    for path in &opts.dispatches {
        read_dispatches(path, &mut dispatches)?;
    }
    dispatches.sort();
    let mut stats = ReceiptStats {
        dispatches: dispatches.len() as u64,
        ..Default::default()
    };
    // (time, dispatch number, receipt number): the sort key of each line.
    let mut receipts: Vec<(i64, usize, usize, String)> = Vec::new();
    for (n, (id, t)) in dispatches.iter().enumerate() {
        let mut out = Vec::new();
        receipts_of(opts.seed, id, *t, &mut out, &mut stats);
        if out.is_empty() {
            stats.silent += 1;
        }
        for (k, (time, id, status)) in out.into_iter().enumerate() {
            *stats.by_status.entry(status).or_default() += 1;
            let line = format!(
                r#"{{"dispatch_id":"{id}","status":"{status}","time":"{}"}}"#,
                crate::time::format_rfc3339(time)
            );
            receipts.push((time, n, k, line));
        }
    }
    receipts.sort();
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let path = opts.out.join("receipts.jsonl");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    for (.., line) in &receipts {
        writeln!(w, "{line}")?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    stats.receipts = receipts.len() as u64;
    Ok(stats)
}

/// Appends (dispatch id, decision time) of every line of a dispatches file.
fn read_dispatches(path: &Path, out: &mut Vec<(String, i64)>) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}: not JSON", at()))?;
        let (Some(id), Some(time)) = (v["dispatch_id"].as_str(), v["decision_time"].as_str())
        else {
            bail!(
                "{}: a dispatch needs string `dispatch_id` and `decision_time`",
                at()
            );
        };
        let t = crate::time::parse_rfc3339(time).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        out.push((id.to_string(), t));
    }
    Ok(())
}

/// FNV-1a 64 of `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

/// A delay of `max`·u^`power`, in whole seconds.
fn delay(rng: &mut Pcg64Mcg, max: i64, power: i32) -> i64 {
    let u: f64 = rng.random();
    (max as f64 * u.powi(power)) as i64 / MS_PER_SEC * MS_PER_SEC
}

/// The receipts (time, dispatch id, status) of the dispatch `id` decided at
/// `t`, from the fates in the module documentation.
fn receipts_of(
    seed: u64,
    id: &str,
    t: i64,
    out: &mut Vec<(i64, String, &'static str)>,
    stats: &mut ReceiptStats,
) {
    let mut rng = Pcg64Mcg::seed_from_u64(mix(seed ^ mix(fnv1a(id.as_bytes()) ^ t as u64)));
    let mut put = |time: i64, status| out.push((time, id.to_string(), status));
    let failure = |rng: &mut Pcg64Mcg| match rng.random_bool(0.1) {
        true => 0,
        false => delay(rng, 2 * HOUR, 3),
    };
    let fate = rng.random_range(0..1000u32);
    match fate {
        0..620 => {
            let delivered = t + delay(&mut rng, 30 * MINUTE, 3);
            put(delivered, "delivered");
            if rng.random_bool(0.3) {
                let opened = delivered + delay(&mut rng, 6 * HOUR, 2);
                put(opened, "opened");
                if rng.random_bool(0.3) {
                    put(opened + delay(&mut rng, 10 * MINUTE, 1), "clicked");
                }
            }
            if rng.random_bool(0.02) {
                put(delivered + delay(&mut rng, DAY, 1), "complained");
            }
            if rng.random_bool(0.03) {
                put(delivered + delay(&mut rng, HOUR, 1), "failed");
            }
        }
        620..770 => {
            let status = if fate < 720 { "failed" } else { "bounced" };
            put(t + failure(&mut rng), status);
        }
        770..820 => {
            let failed = t + failure(&mut rng);
            put(failed, "failed");
            let later = rng.random_range(1..=30) * MINUTE;
            put(failed + later, "delivered");
        }
        820..840 => put(t + delay(&mut rng, 30 * MINUTE, 1), "complained"),
        _ => {}
    }
    if rng.random_bool(0.01) {
        let status = ["delivered", "failed"][rng.random_range(0..2usize)];
        let before = rng.random_range(1..=3600) * MS_PER_SEC;
        put(t - before, status);
        stats.early += 1;
    }
    if rng.random_bool(0.01) {
        let (a, b): (u64, u64) = (rng.random(), rng.random());
        let unknown = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        );
        let status = ["delivered", "failed", "bounced"][rng.random_range(0..3usize)];
        out.push((t + delay(&mut rng, HOUR, 1), unknown, status));
        stats.unknown += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn dispatch(id: &str, t: &str) -> String {
        format!(r#"{{"dispatch_id":"{id}","user":"u-1","attempt":1,"decision_time":"{t}"}}"#)
    }

    fn write_dispatches(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    fn run(dir: &Path, inputs: Vec<PathBuf>, seed: u64, out: &str) -> (Vec<Value>, ReceiptStats) {
        let opts = ReceiptOptions {
            dispatches: inputs,
            out: dir.join(out),
            seed,
        };
        let stats = generate_receipts(&opts).unwrap();
        let text = std::fs::read_to_string(dir.join(out).join("receipts.jsonl")).unwrap();
        let recs = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (recs, stats)
    }

    fn ms(v: &Value) -> i64 {
        crate::time::parse_rfc3339(v["time"].as_str().unwrap()).unwrap()
    }

    /// Sorted, deterministic, with the documented mix, and each dispatch's
    /// receipts independent of the other dispatches.
    #[test]
    fn receipts_are_sorted_deterministic_and_mixed() {
        let dir = tempfile::tempdir().unwrap();
        let base = crate::time::parse_rfc3339("2026-03-01T10:00:00Z").unwrap();
        let lines: Vec<String> = (0..4000)
            .map(|i| {
                let t = crate::time::format_rfc3339(base + i * 7919);
                dispatch(&format!("d-{i:05}"), &t)
            })
            .collect();
        let all = write_dispatches(dir.path(), "all.jsonl", &lines);
        let half = write_dispatches(dir.path(), "half.jsonl", &lines[..2000]);
        let (a, stats) = run(dir.path(), vec![all.clone()], 7, "a");
        let (b, _) = run(dir.path(), vec![all], 7, "b");
        let (c, _) = run(dir.path(), vec![half], 7, "c");
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| ms(&w[0]) <= ms(&w[1])), "not sorted");
        assert_eq!(stats.dispatches, 4000);
        assert_eq!(stats.receipts, a.len() as u64);
        let first_half = |v: &&Value| {
            let id = v["dispatch_id"].as_str().unwrap();
            id.starts_with("d-") && id < "d-02000"
        };
        let firsts: Vec<&Value> = a.iter().filter(first_half).collect();
        let half_known: Vec<&Value> = c.iter().filter(first_half).collect();
        assert_eq!(firsts, half_known, "receipts depend on other dispatches");
        let n = |s: &str| stats.by_status.get(s).copied().unwrap_or(0);
        assert!((2500..2950).contains(&n("delivered")), "{stats:?}");
        assert!((550..870).contains(&n("failed")), "{stats:?}");
        assert!((120..280).contains(&n("bounced")), "{stats:?}");
        assert!(n("opened") > 500 && n("clicked") > 100, "{stats:?}");
        assert!((80..190).contains(&n("complained")), "{stats:?}");
        assert!((450..850).contains(&stats.silent), "{stats:?}");
        assert!((15..70).contains(&stats.early) && (15..70).contains(&stats.unknown));
        let (d, _) = run(dir.path(), vec![dir.path().join("all.jsonl")], 8, "d");
        assert_ne!(a, d, "another seed gives other receipts");
    }

    #[test]
    fn a_bad_dispatch_line_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            dispatch("d-1", "2026-03-01T10:00:00Z"),
            r#"{"dispatch_id":"d-2"}"#.to_string(),
        ];
        let path = write_dispatches(dir.path(), "bad.jsonl", &lines);
        let opts = ReceiptOptions {
            dispatches: vec![path],
            out: dir.path().join("out"),
            seed: 1,
        };
        let e = generate_receipts(&opts).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:2"), "{e}");
    }
}
