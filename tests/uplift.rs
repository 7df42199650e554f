//! A known uplift, measured: `nudgeflow gen retention` plants a treated
//! retention rate of P + U against the holdout's P in every cohort, segment
//! and week after the first; `nudgeflow report` must measure U, within its
//! 95% confidence intervals, and measure no uplift when none is planted.

use std::path::Path;
use std::process::Command;

fn nudgeflow(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nudgeflow {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The report's uplift cells (segment × k) of data planted with `uplift`.
fn measured(dir: &Path, uplift: &str) -> Vec<serde_json::Value> {
    let fixture = dir.join(format!("in-{uplift}"));
    let fixture = fixture.to_str().unwrap();
    nudgeflow(&[
        "gen",
        "retention",
        "--out",
        fixture,
        "--users",
        "20000",
        "--weeks",
        "6",
        "--base",
        "0.3",
        "--uplift",
        uplift,
        "--seed",
        "7",
    ]);
    let spec = format!("{fixture}/spec.toml");
    let page = dir.join(format!("report-{uplift}.html"));
    let data = dir.join(format!("report-{uplift}.json"));
    nudgeflow(&[
        "report",
        "--spec",
        &spec,
        "--fixture",
        fixture,
        "--out",
        page.to_str().unwrap(),
        "--json",
        data.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(&page).unwrap().contains("<html"));
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    data["uplift"].as_array().unwrap().clone()
}

/// How often the planted value is inside the cells' 95% intervals, and
/// the users-weighted mean of the measured uplift.
fn coverage_and_mean(cells: &[serde_json::Value], planted: f64) -> (f64, f64) {
    let (mut inside, mut n, mut weighted, mut users) = (0, 0, 0.0, 0.0);
    for c in cells {
        let (Some(uplift), Some(ci)) = (c["uplift"].as_f64(), c["ci95"].as_array()) else {
            continue;
        };
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(lo < uplift && uplift < hi, "{c}");
        n += 1;
        inside += (lo <= planted && planted <= hi) as u32;
        let w = c["treated"]["users"].as_f64().unwrap() + c["holdout"]["users"].as_f64().unwrap();
        weighted += w * uplift;
        users += w;
    }
    assert!(n >= 10, "cells with both groups: {n}");
    (inside as f64 / n as f64, weighted / users)
}

#[test]
fn the_report_measures_the_planted_uplift() {
    let tmp = tempfile::tempdir().unwrap();
    // Three segments (two named, one absent) × five weeks after the first.
    let planted = measured(tmp.path(), "0.1");
    let segments: std::collections::BTreeSet<String> =
        planted.iter().map(|c| c["segment"].to_string()).collect();
    assert_eq!(segments.len(), 3, "{segments:?}");
    let (coverage, mean) = coverage_and_mean(&planted, 0.1);
    assert!(
        coverage >= 0.85,
        "the planted 0.10 is inside {coverage:.2} of the intervals"
    );
    assert!((mean - 0.1).abs() < 0.015, "mean measured uplift {mean:.4}");
    // Nothing planted: no uplift measured.
    let none = measured(tmp.path(), "0");
    let (coverage, mean) = coverage_and_mean(&none, 0.0);
    assert!(
        coverage >= 0.85,
        "0 is inside {coverage:.2} of the intervals"
    );
    assert!(mean.abs() < 0.015, "mean measured uplift {mean:.4}");
}
