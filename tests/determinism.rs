//! Determinism (docs/semantics.md): the same input gives byte-identical sorted
//! outputs for 1, 2 and 4 worker threads, any stripe size and number of
//! stripes per timely step, and two processes (timely's cluster mode, the
//! real binary over loopback, both writing into one --out and their parts
//! joined by `nudgeflow merge`). The input carries provider receipts for
//! the spec's dispatches (`nudgeflow gen receipts`), so channel fallback,
//! whose receipts reach every worker, is covered too.

mod common;

use std::process::{Command, Stdio};

use nudgeflow::r#gen::receipts::{ReceiptOptions, generate_receipts};
use nudgeflow::r#gen::{GenOptions, generate};

const FILES: [&str; 6] = [
    "dispatches.jsonl",
    "suppressions.jsonl",
    "dead_letters.jsonl",
    // The aggregates (ecommerce.toml has [analytics]; core.toml writes none).
    "retention.json",
    "delivery.json",
    "churn.jsonl",
];

#[test]
fn same_output_for_any_workers_stripes_and_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = tmp.path().join("in");
    let opts = GenOptions {
        users: 3_000,
        events: 40_000,
        seed: 11,
        out: fixture.clone(),
        days: 3,
        ..Default::default()
    };
    generate(&opts, &mut |_| {}).unwrap();
    // A few bad and out-of-order lines, so dead letters and late events are covered too.
    let mut events = std::fs::read_to_string(fixture.join("events.jsonl")).unwrap();
    events.insert_str(events.len() / 2, "{\"id\":\"x\",\"source\":\"s\",\"type\":\"cart.abandoned\",\"time\":\"2026-03-01T00:00:00Z\",\"subject\":\"u-1\"}\nnot json\n");
    std::fs::write(fixture.join("events.jsonl"), events).unwrap();

    let generated = fixture;
    for spec_name in ["core", "ecommerce"] {
        let spec_path = common::repo().join(format!("dataflows/{spec_name}.toml"));
        let spec = std::sync::Arc::new(nudgeflow::spec::Spec::load(&spec_path).unwrap());
        // This spec's input: the generated records and receipts for the
        // dispatches they make.
        let fixture = tmp.path().join(format!("{spec_name}-in"));
        std::fs::create_dir_all(&fixture).unwrap();
        for entry in std::fs::read_dir(&generated).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, fixture.join(path.file_name().unwrap())).unwrap();
        }
        let plain = tmp.path().join(format!("{spec_name}-plain"));
        common::replay(&spec, &fixture, &plain, 1, 1 << 20);
        generate_receipts(&ReceiptOptions {
            dispatches: vec![plain.join("dispatches.jsonl")],
            out: fixture.clone(),
            seed: 3,
        })
        .unwrap();
        let base = tmp.path().join(format!("{spec_name}-w1"));
        common::replay(&spec, &fixture, &base, 1, 1 << 20);
        let further = common::read(&base.join("dispatches.jsonl"))
            .lines()
            .filter(|l| !l.contains("\"attempt\":1,"))
            .count();
        assert!(
            further > 10,
            "{spec_name}: receipts make further attempts ({further})"
        );
        let dispatches = common::read(&base.join("dispatches.jsonl")).lines().count();
        assert!(
            dispatches > 1_000,
            "{spec_name}: a realistic input yields dispatches ({dispatches})"
        );
        assert!(
            common::read(&base.join("dead_letters.jsonl"))
                .lines()
                .count()
                >= 1
        );
        if spec.analytics.is_some() {
            // Aggregates with something in them: cohorts with later
            // activity, delivered and failed attempts, users at risk.
            let retention = common::read(&base.join("retention.json"));
            let delivery: serde_json::Value =
                serde_json::from_str(&common::read(&base.join("delivery.json"))).unwrap();
            assert!(retention.matches("\"cohort\"").count() >= 2, "{retention}");
            let push = &delivery["channels"]["push"];
            assert!(push["delivered"].as_i64() > Some(0) && push["failed"].as_i64() > Some(0));
            assert!(common::read(&base.join("churn.jsonl")).lines().count() > 1_000);
        }
        for (workers, stripe, steps) in [(2, 64 << 10, 1), (2, 16 << 10, 4), (4, 16 << 10, 3)] {
            let out = tmp.path().join(format!("{spec_name}-w{workers}-{steps}"));
            common::replay_steps(&spec, &fixture, &out, workers, stripe, steps);
            for f in FILES {
                assert!(
                    common::read(&base.join(f)) == common::read(&out.join(f)),
                    "{spec_name}: {f} differs between -w 1 and -w {workers} ({steps} stripes per step)"
                );
            }
        }

        // Two processes, one worker each, talking over loopback, writing
        // into the same --out; `merge` then writes what one process does.
        let hosts = common::two_process_hostfile(tmp.path());
        let out = tmp.path().join(format!("{spec_name}-n2"));
        let children: Vec<_> = (0..2)
            .map(|p| {
                Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
                    .args(["replay", "--spec"])
                    .arg(&spec_path)
                    .arg("--fixture")
                    .arg(&fixture)
                    .arg("--out")
                    .arg(&out)
                    .args(["-q", "-w", "1", "-n", "2", "-p", &p.to_string(), "-h"])
                    .arg(&hosts)
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success(), "a cluster process failed");
        }
        for p in 0..2 {
            assert!(
                !common::read(&out.join(format!("part-{p}/dispatches.jsonl"))).is_empty(),
                "process {p} decides, into its own part"
            );
        }
        let merged = Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
            .arg("merge")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            merged.status.success(),
            "merge failed: {}",
            String::from_utf8_lossy(&merged.stderr)
        );
        for f in FILES.iter().chain(&["summary.json"]) {
            assert!(
                common::read(&base.join(f)) == common::read(&out.join(f)),
                "{spec_name}: {f} differs between one process and two merged"
            );
        }
    }
}
