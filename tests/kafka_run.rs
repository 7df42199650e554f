//! `nudgeflow run` against a real Kafka-compatible broker (Tansu, started
//! on a free loopback port by scripts/kafka-up.sh, installed when
//! missing): the live job decides exactly what a replay of the same
//! records decides (DESIGN.md §7), across processes, on time on a silent
//! topic, with bad input on the dead-letter topic, events in CloudEvents
//! binary mode, and a clean stop on SIGTERM.

mod common;

use std::path::Path;
use std::time::Duration;

use common::kafka::{
    Broker, Engine, Job, Received, job_config, produce_fixture, read_topics, topics,
};
use common::{read, repo};
use nudgeflow::time;

/// Fixtures whose outcome depends on each file being one partition (§7:
/// each partition has its own watermark, so with a stream's records spread
/// over partitions by user, what is late differs). They run on topics of
/// one partition, which is what a file is, and must then decide exactly as
/// the replay does.
const ONE_PARTITION_FIXTURES: &[&str] = &["late-records", "saas-scenario"];

/// The decision time of an output line: `decision_time` of a dispatch,
/// `time` of a suppression. Times are RFC 3339 with four-digit years in
/// UTC, so they order as strings.
fn decided_at(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v.get("decision_time")
        .or_else(|| v.get("time"))
        .and_then(|t| t.as_str())
        .unwrap()
        .to_string()
}

/// Checks what the live job produced against what the replay expects.
/// Once every partition is idle the live job releases event time up to
/// now − allowed_lateness − idle_timeout (§7), so every expected output
/// decided up to then must be there, and none other than expected; one
/// decided later (time-range reaches 9999-12-31 and allows 100000 days of
/// lateness) is made only if a partition's watermark passed it before the
/// partition went idle, a race §7 allows.
fn compare(
    name: &str,
    what: &str,
    got: &[Received],
    expected: &[String],
    now: &str,
) -> Option<String> {
    let got = sorted_values(got);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| decided_at(l).as_str() <= now && !got.contains(l))
        .collect();
    let extra: Vec<&String> = got.iter().filter(|l| !expected.contains(l)).collect();
    let mut seen = got.clone();
    seen.dedup();
    let twice = got.len() - seen.len();
    if missing.is_empty() && extra.is_empty() && twice == 0 {
        return None;
    }
    Some(format!(
        "{name}: {what}: {} missing, {} not expected, {twice} repeated\nmissing: {missing:#?}\nnot expected: {extra:#?}",
        missing.len(),
        extra.len()
    ))
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn sorted_values(messages: &[Received]) -> Vec<String> {
    let mut v: Vec<String> = messages.iter().map(|m| m.value.clone()).collect();
    v.sort();
    v
}

fn spec_path(case: &Path) -> std::path::PathBuf {
    let own = case.join("spec.toml");
    if own.exists() {
        own
    } else {
        repo().join(read(&case.join("spec.ref")).trim())
    }
}

/// Produces `fixture` into fresh topics, runs the job with `args` until
/// its outputs reach the expected counts (then a second more), stops it,
/// and returns the dispatches, suppressions and dead letters it produced.
fn run_fixture(
    broker: &Broker,
    prefix: &str,
    fixture: &Path,
    spec: &Path,
    expected: (usize, usize, usize),
    processes: usize,
) -> (Vec<Received>, Vec<Received>, Vec<Received>) {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), &broker.brokers, spec, prefix, "");
    produce_fixture(&config, fixture);
    let mut jobs = Vec::new();
    if processes == 1 {
        jobs.push(Job::start(&config, &[]));
    } else {
        let hosts = common::two_process_hostfile(dir.path());
        let hosts = hosts.to_str().unwrap().to_string();
        for p in 0..processes {
            jobs.push(Job::start(
                &config,
                &[
                    "-n",
                    &processes.to_string(),
                    "-p",
                    &p.to_string(),
                    "-h",
                    &hosts,
                ],
            ));
        }
    }
    let wanted = [
        (format!("{prefix}.dispatches"), expected.0),
        (format!("{prefix}.suppressions"), expected.1),
        (format!("{prefix}.dead-letters"), expected.2),
    ];
    let mut read = read_topics(
        &broker.brokers,
        &wanted,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .into_iter();
    for job in jobs {
        let log = job.log();
        let status = job.stop();
        assert!(status.success(), "the job exited with {status}:\n{log}");
    }
    (
        read.next().unwrap(),
        read.next().unwrap(),
        read.next().unwrap(),
    )
}

#[test]
fn golden_fixtures_decide_as_the_replay_does() {
    let mut cases: Vec<_> = std::fs::read_dir(repo().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected").is_dir())
        .collect();
    cases.sort();
    let name = |case: &Path| case.file_name().unwrap().to_str().unwrap().to_string();
    let prefixes: Vec<String> = (0..cases.len()).map(|i| format!("g{i}")).collect();
    let all: Vec<String> = cases
        .iter()
        .zip(&prefixes)
        .flat_map(|(case, prefix)| {
            let one = ONE_PARTITION_FIXTURES.contains(&name(case).as_str());
            topics(prefix)
                .into_iter()
                .map(move |t| if one { format!("{t}:1") } else { t })
        })
        .collect();
    let broker = Broker::start(Engine::Memory, 2, &all);
    let mut failures = Vec::new();
    for (case, prefix) in cases.iter().zip(&prefixes) {
        let name = name(case);
        let expected = case.join("expected");
        let dispatches = sorted_lines(&read(&expected.join("dispatches.jsonl")));
        let suppressions = sorted_lines(&read(&expected.join("suppressions.jsonl")));
        let letters = read(&expected.join("dead_letters.jsonl")).lines().count();
        // What the wall clock releases once every partition is idle (§7;
        // the job's idle_timeout is 200 ms).
        let lateness = common::case_spec(case).allowed_lateness;
        let now = time::format_rfc3339(time::now_ms() - lateness - 200);
        let due = |lines: &[String]| lines.iter().filter(|l| decided_at(l) <= now).count();
        let (d, s, l) = run_fixture(
            &broker,
            prefix,
            case,
            &spec_path(case),
            (due(&dispatches), due(&suppressions), letters),
            1,
        );
        failures.extend(compare(&name, "dispatches", &d, &dispatches, &now));
        failures.extend(compare(&name, "suppressions", &s, &suppressions, &now));
        if l.len() != letters {
            failures.push(format!(
                "{name}: {} dead letters, expected {letters}",
                l.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
