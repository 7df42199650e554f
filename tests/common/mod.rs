//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod http;
pub mod kafka;
pub mod provider;

use nudgeflow::replay::{Cluster, ReplayOptions, run_to_dir};
use nudgeflow::source::fixture::DEFAULT_STRIPES_PER_STEP;
use nudgeflow::spec::Spec;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Replays `fixture` with `spec` on `workers` threads and `stripe` bytes per
/// stripe into `out` (with the default stripes per step).
pub fn replay(spec: &Arc<Spec>, fixture: &Path, out: &Path, workers: usize, stripe: u64) {
    replay_steps(
        spec,
        fixture,
        out,
        workers,
        stripe,
        DEFAULT_STRIPES_PER_STEP,
    );
}

/// [`replay`] with `steps` stripes per timely timestamp.
pub fn replay_steps(
    spec: &Arc<Spec>,
    fixture: &Path,
    out: &Path,
    workers: usize,
    stripe: u64,
    steps: usize,
) {
    let opts = ReplayOptions {
        spec: spec.clone(),
        fixture: fixture.to_path_buf(),
        cluster: Cluster::single(workers),
        stripe_bytes: stripe,
        stripes_per_step: steps,
        progress: false,
        as_of: None,
    };
    run_to_dir(&opts, out)
        .unwrap_or_else(|e| panic!("replay of {} failed: {e:#}", fixture.display()));
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// How `actual` differs from `expected`, as a readable report, or None when
/// they are equal byte for byte.
///
/// Lines are compared as multisets: each distinct line that `actual` holds
/// fewer times than `expected` is shown once with `-`, each it holds more
/// times with `+`, with both counts when either is above one
/// (`  - line (expected 2, got 1)`). When both hold the same lines the same
/// number of times, the report says the order differs and gives the first
/// line where they part; with the same lines in the same order, that only
/// the line endings differ.
pub fn diff(name: &str, expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for line in &e {
        counts.entry(line).or_default().0 += 1;
    }
    for line in &a {
        counts.entry(line).or_default().1 += 1;
    }
    let mut out = format!("{name}: expected {} lines, got {}\n", e.len(), a.len());
    let mut shown = HashSet::new();
    let missing = e.iter().filter(|l| counts[*l].1 < counts[*l].0);
    let extra = a.iter().filter(|l| counts[*l].1 > counts[*l].0);
    for (sign, line) in missing.map(|l| ('-', l)).chain(extra.map(|l| ('+', l))) {
        if shown.insert(*line) {
            let (want, got) = counts[line];
            if want > 1 || got > 1 {
                out += &format!("  {sign} {line} (expected {want}, got {got})\n");
            } else {
                out += &format!("  {sign} {line}\n");
            }
        }
    }
    if shown.is_empty() {
        match e.iter().zip(&a).position(|(x, y)| x != y) {
            Some(i) => {
                out += &format!(
                    "  (same lines, different order; line {} is expected to be\n    {}\n  but is\n    {})\n",
                    i + 1,
                    e[i],
                    a[i]
                )
            }
            None => out += "  (same lines in the same order; line endings differ)\n",
        }
    }
    Some(out)
}

/// The spec of a fixture case: its `spec.toml`, or the repo file named in
/// its `spec.ref`.
pub fn case_spec(case: &Path) -> Arc<Spec> {
    let path = case_spec_path(case);
    Arc::new(Spec::load(&path).unwrap_or_else(|e| panic!("{e}")))
}

/// The spec of a golden case: its own `spec.toml`, or the one `spec.ref`
/// names.
pub fn case_spec_path(case: &Path) -> PathBuf {
    let own = case.join("spec.toml");
    if own.exists() {
        own
    } else {
        let reference = std::fs::read_to_string(case.join("spec.ref"))
            .unwrap_or_else(|_| panic!("{} has neither spec.toml nor spec.ref", case.display()));
        repo().join(reference.trim())
    }
}

/// A TCP port on loopback that was free a moment ago, for a process
/// started later to listen on. Drawn at random below Linux's ephemeral
/// range (32768 and up), where the kernel gives out the ports of outgoing
/// connections and of binds to port 0: the other tests' brokers, clients
/// and clusters take theirs there, so they cannot take this one meanwhile.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let draw = DRAWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port =
            20_000 + (RandomState::new().hash_one((std::process::id(), draw)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A host file for a two-process cluster on loopback, written into `dir`.
pub fn two_process_hostfile(dir: &Path) -> PathBuf {
    let hosts = dir.join("hosts");
    let text = format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port());
    std::fs::write(&hosts, text).unwrap();
    hosts
}
