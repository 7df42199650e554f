//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    };
    run_to_dir(&opts, out)
        .unwrap_or_else(|e| panic!("replay of {} failed: {e:#}", fixture.display()));
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The lines of `a` and `b` that differ, as a readable diff, or None.
pub fn diff(name: &str, expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let mut out = format!("{name}: expected {} lines, got {}\n", e.len(), a.len());
    for line in &e {
        if !a.contains(line) {
            out += &format!("  - {line}\n");
        }
    }
    for line in &a {
        if !e.contains(line) {
            out += &format!("  + {line}\n");
        }
    }
    if e.len() == a.len() && out.lines().count() == 1 {
        out += "  (same lines, different order)\n";
    }
    Some(out)
}

/// The spec of a fixture case: its `spec.toml`, or the repo file named in
/// its `spec.ref`.
pub fn case_spec(case: &Path) -> Arc<Spec> {
    let own = case.join("spec.toml");
    let path = if own.exists() {
        own
    } else {
        let reference = std::fs::read_to_string(case.join("spec.ref"))
            .unwrap_or_else(|_| panic!("{} has neither spec.toml nor spec.ref", case.display()));
        repo().join(reference.trim())
    };
    Arc::new(Spec::load(&path).unwrap_or_else(|e| panic!("{e}")))
}
