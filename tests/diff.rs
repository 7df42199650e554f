//! `nudgeflow diff`, run as a user runs it: two specs over one golden
//! fixture, the report checked against counts computed here, independently,
//! from the output files of `nudgeflow replay` under each spec.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn nudgeflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nudgeflow"));
    cmd.env_remove("NUDGEFLOW_LOG").stdin(Stdio::null());
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A copy of the repository's spec `from` with `old` replaced by `new`
/// (which must be there), written as `dir/name`.
fn edited_spec(dir: &Path, name: &str, from: &str, old: &str, new: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(from)).unwrap();
    assert!(text.contains(old), "{from} has no {old:?}");
    let path = dir.join(name);
    std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
    path
}

/// `nudgeflow diff --spec a --spec b --fixture fixture` and `extra`.
fn diff(a: &Path, b: &Path, fixture: &str, extra: &[&str]) -> Output {
    nudgeflow()
        .arg("diff")
        .arg("--spec")
        .arg(a)
        .arg("--spec")
        .arg(b)
        .arg("--fixture")
        .arg(repo().join(fixture))
        .args(extra)
        .output()
        .unwrap()
}

/// The JSON report of `diff`, which must succeed.
fn diff_json(a: &Path, b: &Path, fixture: &str) -> Value {
    let run = diff(a, b, fixture, &["--json"]);
    assert!(run.status.success(), "{}", stderr(&run));
    serde_json::from_str(&stdout(&run)).expect("--json prints one JSON document")
}

/// The decision lines (dispatches, then suppressions) that `nudgeflow
/// replay` writes for `spec` over `fixture`.
fn replay(spec: &Path, fixture: &str, dir: &Path) -> Vec<Value> {
    let out = dir.join(format!(
        "out-{}",
        spec.file_name().unwrap().to_string_lossy()
    ));
    let run = nudgeflow()
        .arg("replay")
        .arg("--spec")
        .arg(spec)
        .arg("--fixture")
        .arg(repo().join(fixture))
        .arg("--out")
        .arg(&out)
        .arg("-q")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    ["dispatches.jsonl", "suppressions.jsonl"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(out.join(f))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Per rule (`null` for late events): "dispatched" and each reason, with
/// their numbers of lines.
fn per_rule(lines: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for l in lines {
        let rule = l["rule"].as_str().unwrap_or("null").to_string();
        let what = match l["reason"].as_str() {
            Some(reason) => reason.to_string(),
            None => "dispatched".to_string(),
        };
        *counts.entry((rule, what)).or_default() += 1;
    }
    counts
}

/// The same counts, as the JSON report states them: (A, B) per rule and
/// outcome, zeros left out.
fn report_per_rule(report: &Value) -> BTreeMap<(String, String), (u64, u64)> {
    let mut counts = BTreeMap::new();
    for r in report["rules"].as_array().unwrap() {
        let rule = r["rule"].as_str().unwrap_or("null").to_string();
        let mut add = |what: &str, n: &Value| {
            let (a, b) = (n["a"].as_u64().unwrap(), n["b"].as_u64().unwrap());
            if a + b > 0 {
                counts.insert((rule.clone(), what.to_string()), (a, b));
            }
        };
        add("dispatched", &r["dispatched"]);
        for (reason, n) in r["suppressed"].as_object().unwrap() {
            add(reason, n);
        }
    }
    counts
}

/// What a decision line says, without its detail: the kind, channel or
/// reason and time, by user, event key, rule and (for dispatches) attempt.
fn outcome(l: &Value) -> (String, String, String, String, String) {
    let (what, time) = match l["reason"].as_str() {
        Some(reason) => (format!("suppressed {reason}"), &l["time"]),
        None => (
            format!("dispatched {} #{}", l["channel"], l["attempt"]),
            &l["decision_time"],
        ),
    };
    (
        l["user"].as_str().unwrap().to_string(),
        l["event_key"].as_str().unwrap().to_string(),
        l["rule"].to_string(),
        what,
        time.as_str().unwrap().to_string(),
    )
}

/// Users whose decisions differ between the two runs: the multisets of
/// their outcomes are not equal.
fn users_whose_decisions_differ(a: &[Value], b: &[Value]) -> BTreeSet<String> {
    let mut by_user: BTreeMap<String, (Vec<_>, Vec<_>)> = BTreeMap::new();
    for l in a {
        let o = outcome(l);
        by_user.entry(o.0.clone()).or_default().0.push(o);
    }
    for l in b {
        let o = outcome(l);
        by_user.entry(o.0.clone()).or_default().1.push(o);
    }
    by_user
        .into_iter()
        .filter_map(|(user, (mut x, mut y))| {
            x.sort();
            y.sort();
            (x != y).then_some(user)
        })
        .collect()
}

/// Checks the report's counts per rule and reason, totals and users
/// affected against the two replays' own output files.
fn check_against_replays(report: &Value, a: &[Value], b: &[Value]) {
    let (ra, rb) = (per_rule(a), per_rule(b));
    let mut expected = BTreeMap::new();
    for key in ra.keys().chain(rb.keys()) {
        let n = |m: &BTreeMap<(String, String), u64>| m.get(key).copied().unwrap_or(0);
        expected.insert(key.clone(), (n(&ra), n(&rb)));
    }
    assert_eq!(report_per_rule(report), expected, "per rule and reason");
    let dispatches = |v: &[Value]| v.iter().filter(|l| l["reason"].is_null()).count() as u64;
    let t = &report["totals"];
    assert_eq!(t["dispatches"]["a"], dispatches(a));
    assert_eq!(t["dispatches"]["b"], dispatches(b));
    assert_eq!(t["suppressions"]["a"], a.len() as u64 - dispatches(a));
    assert_eq!(t["suppressions"]["b"], b.len() as u64 - dispatches(b));
    let affected = users_whose_decisions_differ(a, b);
    assert_eq!(
        report["users_affected"],
        affected.len() as u64,
        "{affected:?}"
    );
    let sampled: BTreeSet<String> = report["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_str().unwrap().to_string())
        .collect();
    assert!(sampled.is_subset(&affected), "{sampled:?} ⊄ {affected:?}");
    let users: BTreeSet<&str> = a
        .iter()
        .chain(b)
        .map(|l| l["user"].as_str().unwrap())
        .collect();
    assert_eq!(report["users"], users.len() as u64);
}

/// The text report's count rows as (section, group, label) → (A, B, Δ):
/// the section is `totals` or `by rule`, the group the rule (or, in
/// totals, the row a count is indented under).
fn text_rows(text: &str) -> BTreeMap<(String, String, String), (u64, u64, String)> {
    let mut rows = BTreeMap::new();
    let (mut section, mut group) = (String::new(), String::new());
    for line in text.lines() {
        if line.starts_with("changed decisions") || line.starts_with("dead letters:") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.ends_with(&["A", "B", "Δ"]) {
            section = words[..words.len() - 3].join(" ");
            continue;
        }
        if section.is_empty() {
            continue;
        }
        let numbers: Vec<u64> = words
            .iter()
            .filter(|w| !w.starts_with(['+', '-']))
            .filter_map(|w| w.parse().ok())
            .collect();
        let delta = words.last().filter(|w| w.starts_with(['+', '-']));
        if numbers.len() != 2 {
            // A rule's name, with how many of its decisions changed.
            group = line.split("  (").next().unwrap().to_string();
            continue;
        }
        let label_words = words.len() - 2 - delta.is_some() as usize;
        let label = words[..label_words].join(" ");
        if !line.starts_with(' ') && section == "totals" {
            group = label.clone();
        }
        rows.insert(
            (section.clone(), group.clone(), label),
            (
                numbers[0],
                numbers[1],
                delta.map_or(String::new(), |d| d.to_string()),
            ),
        );
    }
    rows
}

/// A tighter marketing cap (2 an hour → 1 an hour) on fixtures/caps: the
/// report's counts per rule and reason, totals and users affected are
/// those of the two replays' files; every decision keeps its identity
/// and the changed ones are exactly those whose outcome differs; the
/// sample shows both outcomes; `--json` holds the same numbers as the
/// text; `--exit-code` makes the change status 1.
#[test]
fn a_tighter_cap_is_reported_per_rule_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let a = repo().join("fixtures/caps/spec.toml");
    let b = edited_spec(
        tmp.path(),
        "tight.toml",
        "fixtures/caps/spec.toml",
        "purpose = \"marketing\"\nmax = 2\nper = \"1h\"",
        "purpose = \"marketing\"\nmax = 1\nper = \"1h\"",
    );
    let report = diff_json(&a, &b, "fixtures/caps");
    let (la, lb) = (
        replay(&a, "fixtures/caps", tmp.path()),
        replay(&b, "fixtures/caps", tmp.path()),
    );
    check_against_replays(&report, &la, &lb);

    // No decision appears or disappears: one outcome per identity in each.
    let by_identity = |lines: &[Value]| -> BTreeMap<(String, String, String), String> {
        lines
            .iter()
            .map(|l| {
                let (user, key, rule, what, time) = outcome(l);
                ((user, key, rule), format!("{what} at {time}"))
            })
            .collect()
    };
    let (ia, ib) = (by_identity(&la), by_identity(&lb));
    assert_eq!(ia.len(), la.len(), "one decision per identity in A");
    assert_eq!(ia.keys().collect::<Vec<_>>(), ib.keys().collect::<Vec<_>>());
    let changed = ia.iter().filter(|(k, v)| ib[*k] != **v).count() as u64;
    assert!(changed >= 4, "a tighter cap changes a few decisions");
    let d = &report["decisions"];
    assert_eq!(d["changed"], changed);
    assert_eq!(d["unchanged"], ia.len() as u64 - changed);
    assert_eq!(
        (d["only_in_a"].as_u64(), d["only_in_b"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(report["differs"], true);
    let promo = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "promo")
        .unwrap();
    assert_eq!(promo["changed"], changed, "all the changes are promo's");

    // The sample: every changed decision (fewer than 20), with both sides.
    let sample = report["sample"].as_array().unwrap();
    assert_eq!(sample.len() as u64, changed);
    for c in sample {
        assert_eq!(c["kind"], "changed");
        let key = (
            c["user"].as_str().unwrap().to_string(),
            c["event_key"].as_str().unwrap().to_string(),
            c["rule"].to_string(),
        );
        for (side, identities) in [("a", &ia), ("b", &ib)] {
            let o = &c[side];
            let said = match o["outcome"].as_str().unwrap() {
                "dispatched" => format!(
                    "dispatched {} #1 at {}",
                    o["channel"],
                    o["time"].as_str().unwrap()
                ),
                _ => format!(
                    "suppressed {} at {}",
                    o["reason"].as_str().unwrap(),
                    o["time"].as_str().unwrap()
                ),
            };
            assert_eq!(said, identities[&key], "{side} of {c}");
        }
    }
    let first = &sample[0];
    assert_eq!(
        (first["user"].as_str(), first["event_key"].as_str()),
        (Some("u-1"), Some("app/e-2"))
    );

    // The text: the same numbers, and both outcomes of each sampled change.
    let run = diff(&a, &b, "fixtures/caps", &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(
        text.contains(&format!(
            "decisions: 23 in A, 23 in B: {} unchanged, {changed} changed, 0 only in A, 0 only in B",
            ia.len() as u64 - changed
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "users affected: {} of 8",
            report["users_affected"]
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "  u-1  app/e-2  promo\n    A  dispatched on email at 2026-04-01T10:30:00.000Z\n    B  suppressed rate_limited at 2026-04-01T10:30:00.000Z (marketing cap 1 per 1h is full)\n"
        ),
        "{text}"
    );
    // A tighter hourly cap lets a later one through: fewer dispatches in
    // the morning leave room under the cap of 3 a day.
    assert!(
        text.contains(
            "  u-1  app/e-6  promo\n    A  suppressed rate_limited at 2026-04-01T12:40:00.000Z (marketing cap 3 per 1d is full)\n    B  dispatched on email at 2026-04-01T12:40:00.000Z\n"
        ),
        "{text}"
    );
    let rows = text_rows(&text);
    let delta = |a: u64, b: u64| match b as i64 - a as i64 {
        0 => String::new(),
        d => format!("{d:+}"),
    };
    for ((rule, what), (a, b)) in report_per_rule(&report) {
        let group = if rule == "null" {
            "(no rule: late events)".to_string()
        } else {
            rule
        };
        let key = ("by rule".to_string(), group, what);
        assert_eq!(
            rows.get(&key),
            Some(&(a, b, delta(a, b))),
            "{key:?} in\n{text}"
        );
    }
    let t = &report["totals"];
    for (label, field) in [
        ("dispatches", "dispatches"),
        ("suppressions", "suppressions"),
        ("candidates", "candidates"),
        ("deferrals", "deferrals"),
        ("dead letters", "dead_letters"),
    ] {
        let (a, b) = (
            t[field]["a"].as_u64().unwrap(),
            t[field]["b"].as_u64().unwrap(),
        );
        let key = ("totals".to_string(), label.to_string(), label.to_string());
        assert_eq!(
            rows.get(&key),
            Some(&(a, b, delta(a, b))),
            "{label} in\n{text}"
        );
    }
    for (reason, n) in t["by_reason"].as_object().unwrap() {
        let (a, b) = (n["a"].as_u64().unwrap(), n["b"].as_u64().unwrap());
        let key = (
            "totals".to_string(),
            "suppressions".to_string(),
            reason.clone(),
        );
        assert_eq!(
            rows.get(&key),
            Some(&(a, b, delta(a, b))),
            "{reason} in\n{text}"
        );
    }

    // A report either way; with --exit-code, a change is status 1.
    let run = diff(&a, &b, "fixtures/caps", &["--exit-code", "--sample", "0"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(
        !stdout(&run).contains("changed decisions"),
        "--sample 0 shows none"
    );
}

/// One spec against itself: "no change", status 0 even with --exit-code,
/// and a JSON document that says so.
#[test]
fn identical_specs_report_no_change() {
    let spec = repo().join("dataflows/ecommerce.toml");
    let fixture = "fixtures/ecommerce-scenario";
    let run = diff(&spec, &spec, fixture, &["--exit-code"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(
        text.contains("no change: the 19 decisions and 3 dead letters are the same under A and B"),
        "{text}"
    );
    assert!(!text.contains("changed decisions"), "{text}");
    let report = diff_json(&spec, &spec, fixture);
    assert_eq!(report["differs"], false);
    assert_eq!(
        report["decisions"],
        serde_json::json!({"unchanged": 19, "changed": 0, "only_in_a": 0, "only_in_b": 0})
    );
    assert_eq!(report["users_affected"], 0);
    assert_eq!(report["sample"], serde_json::json!([]));
    assert_eq!(report["dead_letters"]["only_in_a"], 0);
}

/// Quiet hours are the user's, but the spec decides which rules keep them
/// (marketing, not critical): made critical, the promo rule's deferred
/// candidates go out at once. The counts do not move; the times do.
#[test]
fn a_rule_made_critical_no_longer_waits_for_quiet_hours() {
    let tmp = tempfile::tempdir().unwrap();
    let a = repo().join("fixtures/quiet-hours/spec.toml");
    let b = edited_spec(
        tmp.path(),
        "critical.toml",
        "fixtures/quiet-hours/spec.toml",
        "name = \"promo\"\non = \"promo.offer\"\npurpose = \"marketing\"\n",
        "name = \"promo\"\non = \"promo.offer\"\npurpose = \"marketing\"\npriority = \"critical\"\n",
    );
    let fixture = "fixtures/quiet-hours";
    let report = diff_json(&a, &b, fixture);
    let (la, lb) = (
        replay(&a, fixture, tmp.path()),
        replay(&b, fixture, tmp.path()),
    );
    check_against_replays(&report, &la, &lb);
    assert_eq!(
        report["totals"]["deferrals"],
        serde_json::json!({"a": 6, "b": 0})
    );
    assert_eq!(
        report["totals"]["dispatches"],
        serde_json::json!({"a": 12, "b": 12})
    );
    assert_eq!(report["decisions"]["changed"], 6);
    assert_eq!(report["users_affected"], 6);
    let sample = report["sample"].as_array().unwrap();
    let users: Vec<&str> = sample.iter().map(|c| c["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["u-1", "u-2", "u-3", "u-4", "u-6", "u-7"]);
    for c in sample {
        let (a, b) = (&c["a"], &c["b"]);
        assert_eq!(
            (&a["outcome"], &b["outcome"]),
            (&"dispatched".into(), &"dispatched".into())
        );
        assert_eq!(a["channel"], b["channel"]);
        assert!(
            a["time"].as_str() > b["time"].as_str(),
            "deferred in A: {c}"
        );
    }
    // u-1's 22:30 Berlin promo, deferred to 07:00 Berlin under A.
    let text = stdout(&diff(&a, &b, fixture, &[]));
    assert!(
        text.contains(
            "  u-1  app/e-2  promo\n    A  dispatched on push at 2026-01-16T06:00:00.000Z\n    B  dispatched on push at 2026-01-15T21:30:00.000Z\n"
        ),
        "{text}"
    );
}

/// A renamed rule's decisions are only in A under the old name and only
/// in B under the new; a longer `fallback_after` moves the undeliverable
/// that stands for attempt 3; an event late under A is decided under a
/// larger `allowed_lateness`, and the consent record late under A is no
/// longer a dead letter.
#[test]
fn renamed_rules_fallback_and_lateness() {
    let tmp = tempfile::tempdir().unwrap();
    let a = repo().join("dataflows/ecommerce.toml");
    let text = std::fs::read_to_string(&a).unwrap();
    let changed = text
        .replace("name = \"cart-recovery\"", "name = \"cart-winback\"")
        .replace("fallback_after = \"30m\"", "fallback_after = \"2h\"");
    assert_ne!(changed, text);
    let b = tmp.path().join("b.toml");
    std::fs::write(&b, changed).unwrap();
    let fixture = "fixtures/ecommerce-scenario";
    let report = diff_json(&a, &b, fixture);
    let (la, lb) = (
        replay(&a, fixture, tmp.path()),
        replay(&b, fixture, tmp.path()),
    );
    check_against_replays(&report, &la, &lb);
    let cart = |lines: &[Value], rule: &str| lines.iter().filter(|l| l["rule"] == rule).count();
    assert_eq!(
        report["decisions"]["only_in_a"],
        cart(&la, "cart-recovery") as u64
    );
    assert_eq!(
        report["decisions"]["only_in_b"],
        cart(&lb, "cart-winback") as u64
    );
    assert_eq!(report["decisions"]["changed"], 1);
    let undeliverable = report["sample"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "changed")
        .unwrap();
    assert_eq!(undeliverable["rule"], "delivery-update");
    assert_eq!(undeliverable["attempt"], 3, "after attempts 1 and 2");
    assert_eq!(undeliverable["a"]["time"], "2026-03-10T22:11:00.000Z");
    assert_eq!(undeliverable["b"]["time"], "2026-03-10T23:41:00.000Z");
    let names: Vec<&Value> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["rule"])
        .collect();
    assert_eq!(
        names,
        [
            &Value::from("cart-recovery"),
            &"price-drop".into(),
            &"delivery-update".into(),
            &"cart-winback".into(),
            &Value::Null
        ],
        "A's rules in order, then B's new one, then late events"
    );

    let late = edited_spec(
        tmp.path(),
        "late.toml",
        "fixtures/late-records/spec.toml",
        "allowed_lateness = \"5m\"",
        "allowed_lateness = \"1h\"",
    );
    let a = repo().join("fixtures/late-records/spec.toml");
    let report = diff_json(&a, &late, "fixtures/late-records");
    let dl = &report["dead_letters"];
    assert_eq!(
        (dl["only_in_a"].as_u64(), dl["only_in_b"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(dl["sample"][0]["file"], "consent.jsonl");
    assert_eq!(dl["sample"][0]["line"], 2);
    let late_event = &report["sample"][0];
    assert_eq!(late_event["rule"], Value::Null);
    assert_eq!(late_event["a"]["reason"], "late");
    assert_eq!(late_event["b"], Value::Null);
}

/// An event re-sent after the dedup horizon is decided again under the
/// same identity: with `dedup_horizon = "0s"` every re-send is, and the
/// extra decisions are only in B, numbered by occurrence.
#[test]
fn re_sent_events_are_paired_in_order_of_time() {
    let tmp = tempfile::tempdir().unwrap();
    let a = repo().join("fixtures/duplicates-horizon/spec.toml");
    let b = edited_spec(
        tmp.path(),
        "no-horizon.toml",
        "fixtures/duplicates-horizon/spec.toml",
        "dedup_horizon = \"24h\"",
        "dedup_horizon = \"0s\"",
    );
    let fixture = "fixtures/duplicates-horizon";
    let report = diff_json(&a, &b, fixture);
    let (la, lb) = (
        replay(&a, fixture, tmp.path()),
        replay(&b, fixture, tmp.path()),
    );
    check_against_replays(&report, &la, &lb);
    let d = &report["decisions"];
    assert_eq!(d["unchanged"], la.len() as u64);
    assert_eq!(d["only_in_b"], (lb.len() - la.len()) as u64);
    let u2: Vec<(u64, &str)> = report["sample"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["user"] == "u-2")
        .map(|c| {
            (
                c["occurrence"].as_u64().unwrap(),
                c["b"]["time"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        u2,
        [
            (2, "2026-04-01T20:00:00.000Z"),
            (3, "2026-04-02T16:00:00.000Z"),
            (4, "2026-04-03T12:00:00.000Z"),
            (5, "2026-04-04T08:00:00.000Z")
        ]
    );
}

/// The report, text and JSON, is the same for any number of workers.
#[test]
fn the_report_is_the_same_for_any_number_of_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let a = repo().join("dataflows/ecommerce.toml");
    let text = std::fs::read_to_string(&a).unwrap();
    let b = tmp.path().join("b.toml");
    std::fs::write(
        &b,
        text.replace("name = \"price-drop\"", "name = \"price-alert\"")
            .replacen("max = 2", "max = 1", 1)
            .replace("holdout = 0.05", "holdout = 0.5"),
    )
    .unwrap();
    for format in [&[][..], &["--json"][..]] {
        let outputs: Vec<String> = ["1", "2", "4"]
            .iter()
            .map(|w| {
                let mut args = vec!["-w", w, "--sample", "100"];
                args.extend(format);
                let run = diff(&a, &b, "fixtures/ecommerce-scenario", &args);
                assert!(run.status.success(), "{}", stderr(&run));
                stdout(&run)
            })
            .collect();
        assert!(outputs[0].contains("only"), "{}", outputs[0]);
        assert_eq!(outputs[0], outputs[1], "-w 1 and -w 2 {format:?}");
        assert_eq!(outputs[0], outputs[2], "-w 1 and -w 4 {format:?}");
    }
}

/// A bad spec fails as `replay` fails, naming its file, with status 2 (1
/// is "changed" under --exit-code); so does one --spec instead of two.
#[test]
fn a_bad_spec_or_a_missing_one_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let good = repo().join("dataflows/ecommerce.toml");
    let bad = edited_spec(
        tmp.path(),
        "bad.toml",
        "dataflows/ecommerce.toml",
        "max = 2",
        "max = -2",
    );
    for (a, b) in [(&good, &bad), (&bad, &good)] {
        let run = diff(a, b, "fixtures/ecommerce-scenario", &["--exit-code"]);
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        let err = stderr(&run);
        assert!(
            err.starts_with("error: bad spec: ") && err.contains(&bad.display().to_string()),
            "{err}"
        );
        assert_eq!(stdout(&run), "");
    }
    let run = diff(&good, &good, "fixtures/no-such-fixture", &[]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("no-such-fixture"), "{}", stderr(&run));

    let run = nudgeflow()
        .args(["diff", "--spec"])
        .arg(&good)
        .arg("--fixture")
        .arg(repo().join("fixtures/ecommerce-scenario"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("give --spec twice"),
        "{}",
        stderr(&run)
    );
}
