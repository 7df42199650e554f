//! Cross-check against the independent Python implementation of docs/semantics.md
//! (`scripts/oracle.py`) on generated data, for every shipped spec: the
//! decisions must be the same set, and dead letters the same lines.
//!
//! A second check replays the same data with provider receipts generated
//! for each spec's dispatches (`nudgeflow gen receipts`), twice: receipts
//! for the first attempts, then for every attempt of that replay, so that
//! further attempts of channel fallback get receipts too.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use nudgeflow::r#gen::receipts::{ReceiptOptions, generate_receipts};
use nudgeflow::r#gen::{GenOptions, generate};

const SPECS: [&str; 5] = ["core", "ecommerce", "fintech", "healthcare", "saas"];

/// Generates the shared input fixture into `dir/in`.
fn generated_fixture(dir: &Path) -> PathBuf {
    let fixture = dir.join("in");
    // Two days from the autumn clock change, so quiet hours cross it.
    let start_ms = nudgeflow::time::parse_rfc3339("2026-10-24T00:00:00Z").unwrap();
    let opts = GenOptions {
        users: 400,
        events: 6_000,
        seed: 5,
        out: fixture.clone(),
        days: 2,
        start_ms,
    };
    generate(&opts, &mut |_| {}).unwrap();
    fixture
}

fn spec_path(spec_name: &str) -> PathBuf {
    common::repo().join(format!("dataflows/{spec_name}.toml"))
}

/// Replays `fixture` with the engine into `ours` and with the oracle into
/// `theirs`, and returns the comparison's report, with whether they agree.
fn engine_and_oracle(
    spec_name: &str,
    fixture: &Path,
    ours: &Path,
    theirs: &Path,
) -> (bool, String) {
    let spec_path = spec_path(spec_name);
    let spec = std::sync::Arc::new(nudgeflow::spec::Spec::load(&spec_path).unwrap());
    common::replay(&spec, fixture, ours, 2, 256 << 10);
    let oracle = Command::new("python3")
        .arg(common::repo().join("scripts/oracle.py"))
        .arg("--spec")
        .arg(&spec_path)
        .arg("--fixture")
        .arg(fixture)
        .arg("--out")
        .arg(theirs)
        .output()
        .expect("python3 runs scripts/oracle.py");
    assert!(
        oracle.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&oracle.stderr)
    );
    let cmp = Command::new("python3")
        .arg(common::repo().join("scripts/compare.py"))
        .arg(ours)
        .arg(theirs)
        .output()
        .unwrap();
    (
        cmp.status.success(),
        String::from_utf8_lossy(&cmp.stdout).into_owned(),
    )
}

#[test]
fn engine_agrees_with_the_oracle_on_generated_data() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = generated_fixture(tmp.path());
    let mut failures = String::new();
    for spec_name in SPECS {
        let ours = tmp.path().join(format!("{spec_name}-engine"));
        let theirs = tmp.path().join(format!("{spec_name}-oracle"));
        let (agree, report) = engine_and_oracle(spec_name, &fixture, &ours, &theirs);
        println!("{spec_name}:\n{report}");
        if !agree {
            failures += &format!("{spec_name}:\n{report}\n");
        }
        assert!(
            common::read(&ours.join("dispatches.jsonl")).lines().count() > 50,
            "{spec_name}: the check is not vacuous"
        );
    }
    assert!(
        failures.is_empty(),
        "engine and oracle disagree:\n{failures}"
    );
}

/// The dispatches of `dispatches.jsonl` with an attempt above 1.
fn further_attempts(dir: &Path) -> usize {
    common::read(&dir.join("dispatches.jsonl"))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|d| d["attempt"].as_u64() != Some(1))
        .count()
}

/// Whether a rule of the spec has `fallback_after`.
fn has_fallback(spec_name: &str) -> bool {
    let text = std::fs::read_to_string(spec_path(spec_name)).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    doc.get("rule")
        .and_then(|rules| rules.as_array())
        .is_some_and(|rules| rules.iter().any(|r| r.get("fallback_after").is_some()))
}

#[test]
fn engine_agrees_with_the_oracle_on_generated_data_with_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = generated_fixture(tmp.path());
    let mut failures = String::new();
    for spec_name in SPECS {
        // The dispatches without receipts; receipts are drawn for them.
        let plain = tmp.path().join(format!("{spec_name}-plain"));
        let spec = std::sync::Arc::new(nudgeflow::spec::Spec::load(&spec_path(spec_name)).unwrap());
        common::replay(&spec, &fixture, &plain, 2, 256 << 10);
        // This spec's own fixture: the generated inputs and its receipts.
        let with_receipts = tmp.path().join(format!("{spec_name}-in"));
        std::fs::create_dir_all(&with_receipts).unwrap();
        for file in ["events", "preferences", "consent", "erasures"] {
            let name = format!("{file}.jsonl");
            std::fs::copy(fixture.join(&name), with_receipts.join(&name)).unwrap();
        }
        let mut dispatches = plain.join("dispatches.jsonl");
        for round in 1..=2 {
            let stats = generate_receipts(&ReceiptOptions {
                dispatches: vec![dispatches.clone()],
                out: with_receipts.clone(),
                seed: 11,
            })
            .unwrap();
            assert!(
                stats.receipts > 50,
                "{spec_name}: the check is not vacuous ({stats:?})"
            );
            let ours = tmp.path().join(format!("{spec_name}-engine-{round}"));
            let theirs = tmp.path().join(format!("{spec_name}-oracle-{round}"));
            let (agree, report) = engine_and_oracle(spec_name, &with_receipts, &ours, &theirs);
            let further = further_attempts(&theirs);
            println!(
                "{spec_name}, receipts round {round} ({} receipts, {further} further attempts):\n{report}",
                stats.receipts
            );
            if !agree {
                failures += &format!("{spec_name}, receipts round {round}:\n{report}\n");
            }
            assert!(
                !has_fallback(spec_name) || further > 0,
                "{spec_name}: a spec with fallback_after made no further attempt"
            );
            // The next round draws receipts for this round's attempts too.
            dispatches = ours.join("dispatches.jsonl");
        }
    }
    assert!(
        failures.is_empty(),
        "engine and oracle disagree with receipts:\n{failures}"
    );
}
