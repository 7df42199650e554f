//! Golden fixtures: every `fixtures/<case>/` with an `expected/` directory is
//! replayed and its outputs, `summary.json` included, must equal the
//! expected files byte for byte — once on one worker with the default stripe
//! size, and once on three workers with tiny stripes (so every file is cut
//! into many stripes and the cross-stripe lateness and line numbering are
//! exercised).
//!
//! Each case is its own test, named after its directory, so one case runs
//! and fails by name: `cargo test --test golden -- caps`. `scripts/bless.sh
//! CASE` rewrites a case's expected files from the engine.

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};

use common::{case_spec, diff, read, replay, repo};

const OUTPUTS: [&str; 4] = [
    "dispatches.jsonl",
    "suppressions.jsonl",
    "dead_letters.jsonl",
    "summary.json",
];

/// Outputs compared when the case expects them: churn signals, for the
/// cases whose spec computes churn risk, and the aggregates, for the cases
/// whose spec has `[analytics]`.
const OPTIONAL_OUTPUTS: [&str; 4] = [
    "churn_signals.jsonl",
    "retention.json",
    "delivery.json",
    "churn.jsonl",
];

/// (workers, stripe bytes) of each replay of a case.
const RUNS: [(usize, u64); 2] = [(1, 1 << 20), (3, 97)];

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let trials = cases()
        .into_iter()
        .map(|case| {
            let name = case.file_name().unwrap().to_string_lossy().to_string();
            Trial::test(name, move || check(&case))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// The case directories: those of `fixtures/` with an `expected/` directory.
fn cases() -> Vec<PathBuf> {
    let fixtures = repo().join("fixtures");
    let mut cases: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("reading {}: {e}", fixtures.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected").is_dir())
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no golden cases found in {}",
        fixtures.display()
    );
    cases
}

/// Replays `case` once per [`RUNS`] entry and compares every output file
/// with `expected/`; the failure lists every mismatch of every run.
fn check(case: &Path) -> Result<(), Failed> {
    let spec = case_spec(case);
    let tmp = tempfile::tempdir()?;
    let mut failures = String::new();
    for (workers, stripe) in RUNS {
        let out = tmp.path().join(format!("w{workers}"));
        replay(&spec, case, &out, workers, stripe);
        let optional = OPTIONAL_OUTPUTS
            .into_iter()
            .filter(|f| case.join("expected").join(f).is_file());
        for file in OUTPUTS.into_iter().chain(optional) {
            let path = case.join("expected").join(file);
            let expected = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "{}: {e} (scripts/bless.sh {} writes it)",
                    path.display(),
                    case.file_name().unwrap().to_string_lossy()
                )
            })?;
            let actual = read(&out.join(file));
            if let Some(d) = diff(
                &format!("-w {workers}, stripes of {stripe} bytes: {file}"),
                &expected,
                &actual,
            ) {
                failures += &d;
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("golden mismatches (- expected, + actual):\n{failures}").into())
    }
}
