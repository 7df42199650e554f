//! Cross-check against the independent Python implementation of docs/semantics.md
//! (`scripts/oracle.py`) on generated data, for every shipped spec: the
//! decisions must be the same set, and dead letters the same lines.

mod common;

use std::process::Command;

use nudgeflow::r#gen::{GenOptions, generate};

#[test]
fn engine_agrees_with_the_oracle_on_generated_data() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = tmp.path().join("in");
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
    let mut failures = String::new();
    for spec_name in ["core", "ecommerce", "fintech", "healthcare", "saas"] {
        let spec_path = common::repo().join(format!("dataflows/{spec_name}.toml"));
        let spec = std::sync::Arc::new(nudgeflow::spec::Spec::load(&spec_path).unwrap());
        let ours = tmp.path().join(format!("{spec_name}-engine"));
        let theirs = tmp.path().join(format!("{spec_name}-oracle"));
        common::replay(&spec, &fixture, &ours, 2, 256 << 10);
        let oracle = Command::new("python3")
            .arg(common::repo().join("scripts/oracle.py"))
            .arg("--spec")
            .arg(&spec_path)
            .arg("--fixture")
            .arg(&fixture)
            .arg("--out")
            .arg(&theirs)
            .output()
            .expect("python3 runs scripts/oracle.py");
        assert!(
            oracle.status.success(),
            "oracle failed: {}",
            String::from_utf8_lossy(&oracle.stderr)
        );
        let cmp = Command::new("python3")
            .arg(common::repo().join("scripts/compare.py"))
            .arg(&ours)
            .arg(&theirs)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&cmp.stdout);
        println!("{spec_name}:\n{report}");
        if !cmp.status.success() {
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
