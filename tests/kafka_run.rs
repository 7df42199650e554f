//! `nudgeflow run` against a real Kafka-compatible broker (Tansu, started
//! on a free loopback port by scripts/kafka-up.sh, installed when
//! missing): the live job decides exactly what a replay of the same
//! records decides (DESIGN.md §7), across processes, on time on a silent
//! topic, with bad input on the dead-letter topic, events in CloudEvents
//! binary mode, and a clean stop on SIGTERM.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use common::kafka::{
    Broker, Engine, Job, Received, compare, decided_at, job_config, produce_fixture, read_topics,
    sorted_lines, sorted_values, topics,
};
use common::kafka::{committed, end_offsets, producer, queue, read_topic, send, stop_all};
use common::{http, read, repo};
use nudgeflow::r#gen::{GenOptions, generate};
use nudgeflow::time;
use rdkafka::producer::Producer;
use serde_json::value::RawValue;

/// Fixtures whose outcome depends on each file being one partition (§7:
/// each partition has its own watermark, so with a stream's records spread
/// over partitions by user, what is late differs). They run on topics of
/// one partition, which is what a file is, and must then decide exactly as
/// the replay does.
const ONE_PARTITION_FIXTURES: &[&str] = &["late-records", "saas-scenario"];

use common::case_spec_path as spec_path;

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
    workers: usize,
) -> (Vec<Received>, Vec<Received>, Vec<Received>) {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), &broker.brokers, spec, prefix, "");
    produce_fixture(&config, fixture);
    let mut jobs = Vec::new();
    let w = workers.to_string();
    if processes == 1 {
        jobs.push(Job::start(&config, &["-w", &w]));
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
        // Generous for a debug build on a busy machine.
        Duration::from_secs(30 + (expected.0 + expected.1) as u64 / 1000),
    )
    .into_iter();
    for (status, job) in stop_all(&mut jobs).into_iter().zip(&jobs) {
        assert!(
            status.success(),
            "the job exited with {status}:\n{}",
            job.log()
        );
    }
    (
        read.next().unwrap(),
        read.next().unwrap(),
        read.next().unwrap(),
    )
}

#[test]
fn golden_fixtures_decide_as_the_replay_does() {
    goldens(1);
}

/// (b) The same across two processes of one worker each (timely's cluster
/// mode over loopback): each reads only its worker's partitions.
#[test]
fn golden_fixtures_decide_the_same_across_two_processes() {
    goldens(2);
}

/// (a) Every golden fixture, produced into its own topics, decided by
/// `nudgeflow run` in `processes` processes.
fn goldens(processes: usize) {
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
            processes,
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

/// (a, b) A generated stream of 200k events (all streams, re-sent
/// duplicates, many users) decides as the replay does, in one process of
/// two workers and in two processes of one worker.
#[test]
fn a_generated_stream_decides_as_the_replay_does() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = tmp.path().join("in");
    let opts = GenOptions {
        users: 20_000,
        events: 200_000,
        seed: 17,
        out: fixture.clone(),
        days: 7,
        ..Default::default()
    };
    generate(&opts, &mut |_| {}).unwrap();
    let spec_path = repo().join("dataflows/ecommerce.toml");
    let spec = std::sync::Arc::new(nudgeflow::spec::Spec::load(&spec_path).unwrap());
    let expected = tmp.path().join("expected");
    common::replay(&spec, &fixture, &expected, 2, 1 << 20);
    let dispatches = sorted_lines(&read(&expected.join("dispatches.jsonl")));
    let suppressions = sorted_lines(&read(&expected.join("suppressions.jsonl")));
    let letters = read(&expected.join("dead_letters.jsonl")).lines().count();
    assert!(
        dispatches.len() > 10_000,
        "a realistic stream: {} dispatches",
        dispatches.len()
    );

    let all: Vec<String> = ["w", "p"].iter().flat_map(|p| topics(p)).collect();
    let broker = Broker::start(Engine::Memory, 4, &all);
    let now = time::format_rfc3339(time::now_ms() - spec.allowed_lateness - 200);
    let mut failures = Vec::new();
    for (prefix, processes, workers) in [("w", 1, 2), ("p", 2, 1)] {
        let (d, s, l) = run_fixture(
            &broker,
            prefix,
            &fixture,
            &spec_path,
            (dispatches.len(), suppressions.len(), letters),
            processes,
            workers,
        );
        let name = format!("{processes} process(es) of {workers} worker(s)");
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

/// A spec of one transactional rule on `t` (push, which needs no consent)
/// and one delayed by 2 s on `d`, with 1 s of allowed lateness.
fn small_spec(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("spec.toml");
    std::fs::write(
        &path,
        "allowed_lateness = \"1s\"\n\
         [[rule]]\nname = \"now\"\non = \"t\"\npurpose = \"transactional\"\nchannels = [\"push\"]\n\
         [[rule]]\nname = \"later\"\non = \"d\"\npurpose = \"transactional\"\nchannels = [\"push\"]\ndelay = \"2s\"\n",
    )
    .unwrap();
    path
}

fn event(id: &str, kind: &str, time: &str, user: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"test","type":"{kind}","time":"{time}","subject":"{user}"}}"#
    )
}

/// (c) On a topic that then stays silent, a delayed decision is made
/// within idle_timeout + allowed_lateness + 1 s of its wall-clock time:
/// with every partition idle, the worker releases event time by the wall
/// clock (§7).
#[test]
fn a_delayed_rule_fires_on_a_silent_topic() {
    let broker = Broker::start(Engine::Memory, 2, &topics("s"));
    let dir = tempfile::tempdir().unwrap();
    let spec = small_spec(dir.path());
    let config = job_config(dir.path(), &broker.brokers, &spec, "s", "");
    let mut job = Job::start(&config, &[]);
    job.wait_ready();
    let t = time::now_ms();
    let producer = producer(&broker.brokers);
    let value = event("e-1", "d", &time::format_rfc3339(t), "u-1");
    send(
        &producer,
        "s.events",
        Some("u-1"),
        Some(value.as_bytes()),
        &[],
    );
    let due = t + 2_000;
    let d = read_topic(
        &broker.brokers,
        "s.dispatches",
        1,
        Duration::ZERO,
        Duration::from_secs(30),
    );
    let arrived = time::now_ms();
    assert_eq!(d.len(), 1, "no dispatch:\n{}", job.log());
    let v: serde_json::Value = serde_json::from_str(&d[0].value).unwrap();
    assert_eq!(v["decision_time"], time::format_rfc3339(due).as_str());
    let bound = 200 + 1_000 + 1_000;
    assert!(
        arrived >= due && arrived - due <= bound,
        "the dispatch due at {due} arrived at {arrived}: {} ms after, the bound is {bound} ms",
        arrived - due
    );
    assert!(job.stop().success());
}

/// (d) A flood of bad input of every kind, on every input topic, goes to
/// the dead-letter topic, each record once with its topic, partition and
/// offset, while the good events among it are decided and the job runs on.
#[test]
fn malformed_records_go_to_the_dead_letter_topic_while_decisions_go_on() {
    let broker = Broker::start(Engine::Memory, 2, &topics("m"));
    let dir = tempfile::tempdir().unwrap();
    let spec = small_spec(dir.path());
    let config = job_config(dir.path(), &broker.brokers, &spec, "m", "");
    let mut job = Job::start(&config, &[]);
    job.wait_ready();

    type Bad = (
        &'static str,
        Option<Vec<u8>>,
        Vec<(&'static str, &'static str)>,
    );
    let text = |t: &str| Some(t.as_bytes().to_vec());
    let bad: Vec<Bad> = vec![
        ("events", text("not json"), vec![]),
        ("events", text(r#"{"specversion":"1.0","id":"x","#), vec![]),
        (
            "events",
            text(
                r#"{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2026-01-01T00:00:00Z"}"#,
            ),
            vec![],
        ),
        (
            "events",
            text(
                r#"{"specversion":"1.0","id":7,"source":"s","type":"t","time":"2026-01-01T00:00:00Z","subject":"u"}"#,
            ),
            vec![],
        ),
        (
            "events",
            text(
                r#"{"specversion":"1.0","id":"x","source":"s","type":"t","time":"2026-13-01T00:00:00Z","subject":"u"}"#,
            ),
            vec![],
        ),
        (
            "events",
            text(
                r#"{"specversion":"1.0","id":"x","source":"s","type":"t","time":"yesterday","subject":"u"}"#,
            ),
            vec![],
        ),
        ("events", text("[1,2,3]"), vec![]),
        ("events", Some(vec![0xff, 0xfe, b'{', 0x80]), vec![]),
        ("events", text(""), vec![]),
        ("events", None, vec![]),
        (
            "events",
            text("{not json either"),
            vec![
                ("ce_specversion", "1.0"),
                ("ce_id", "b"),
                ("ce_source", "s"),
                ("ce_type", "t"),
                ("ce_time", "2026-01-01T00:00:00Z"),
                ("ce_subject", "u"),
            ],
        ),
        (
            "events",
            text("{}"),
            vec![
                ("ce_specversion", "1.0"),
                ("ce_id", "b"),
                ("ce_source", "s"),
                ("ce_type", "t"),
                ("ce_time", "never"),
                ("ce_subject", "u"),
            ],
        ),
        (
            "preferences",
            text(r#"{"user":"u","time":"2026-01-01T00:00:00Z","channels":["fax"]}"#),
            vec![],
        ),
        (
            "preferences",
            text(
                r#"{"user":"u","time":"2026-01-01T00:00:00Z","quiet_hours":{"start":"22:00","end":"07:00","tz":"Mars/Olympus"}}"#,
            ),
            vec![],
        ),
        ("preferences", text(""), vec![]),
        (
            "consent",
            text(
                r#"{"user":"u","channel":"pigeon","purpose":"marketing","granted":true,"time":"2026-01-01T00:00:00Z"}"#,
            ),
            vec![],
        ),
        (
            "consent",
            text(
                r#"{"user":"u","channel":"email","purpose":"newsletter","granted":true,"time":"2026-01-01T00:00:00Z"}"#,
            ),
            vec![],
        ),
        (
            "consent",
            text(
                r#"{"user":"u","channel":"email","purpose":"marketing","granted":"yes","time":"2026-01-01T00:00:00Z"}"#,
            ),
            vec![],
        ),
        ("consent", None, vec![]),
        ("erasures", text(r#"{"user":"u"}"#), vec![]),
        ("receipts", text("receipt?"), vec![]),
    ];
    let rounds = 200;
    let producer = producer(&broker.brokers);
    for round in 0..rounds {
        for (stream, value, headers) in &bad {
            let topic = format!("m.{stream}");
            queue(&producer, &topic, Some("u"), value.as_deref(), headers);
        }
        // Now, so that a good event is never behind what the idle job has
        // released by the wall clock.
        let good = event(
            &format!("g-{round}"),
            "t",
            &time::format_rfc3339(time::now_ms()),
            &format!("u-{round}"),
        );
        queue(
            &producer,
            "m.events",
            Some(&format!("u-{round}")),
            Some(good.as_bytes()),
            &[],
        );
    }
    // One bad record that, escaped into a dead letter whole, would not fit
    // in a message (every control character takes six bytes in JSON).
    let huge = vec![1u8; 300_000];
    queue(&producer, "m.events", Some("u"), Some(&huge), &[]);
    producer.flush(Duration::from_secs(60)).unwrap();

    let expected_letters = rounds * bad.len() + 1;
    let mut read = read_topics(
        &broker.brokers,
        &[
            ("m.dispatches".to_string(), rounds),
            ("m.dead-letters".to_string(), expected_letters),
        ],
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .into_iter();
    let (dispatches, letters) = (read.next().unwrap(), read.next().unwrap());
    job.assert_running();

    let mut users: Vec<String> = dispatches
        .iter()
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(&m.value).unwrap()["user"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    users.sort();
    let mut want: Vec<String> = (0..rounds).map(|r| format!("u-{r}")).collect();
    want.sort();
    assert_eq!(users, want, "each good event is decided once");

    // Every input message, by position.
    let mut inputs = std::collections::HashMap::new();
    for stream in ["events", "preferences", "consent", "erasures", "receipts"] {
        let topic = format!("m.{stream}");
        let n = bad.iter().filter(|b| b.0 == stream).count() * rounds
            + if stream == "events" { rounds + 1 } else { 0 };
        for m in read_topic(
            &broker.brokers,
            &topic,
            n,
            Duration::ZERO,
            Duration::from_secs(30),
        ) {
            inputs.insert((topic.clone(), m.partition, m.offset), m);
        }
    }
    let mut seen = HashSet::new();
    let mut cut = 0;
    for letter in &letters {
        let v: serde_json::Value = serde_json::from_str(&letter.value).unwrap();
        let at = (
            v["topic"].as_str().unwrap().to_string(),
            v["partition"].as_i64().unwrap() as i32,
            v["offset"].as_i64().unwrap(),
        );
        assert!(seen.insert(at.clone()), "two dead letters for {at:?}");
        let input = inputs
            .get(&at)
            .unwrap_or_else(|| panic!("{at:?} is no input message: {letter:?}"));
        assert!(
            !input.value.contains("\"g-"),
            "a good event became a dead letter: {}",
            letter.value
        );
        assert!(!v["reason"].as_str().unwrap().is_empty());
        assert_eq!(
            v["stream"].as_str().unwrap(),
            at.0.strip_prefix("m.").unwrap()
        );
        let raw = input.raw.clone().unwrap_or_default();
        let binary = input.headers.iter().any(|(k, _)| k == "ce_specversion");
        match std::str::from_utf8(&raw) {
            Ok(text)
                if v["reason"]
                    .as_str()
                    .unwrap()
                    .contains("is cut to its first") =>
            {
                let record = v["record"].as_str().unwrap();
                assert!(record.len() < text.len() && text.starts_with(record));
                cut += 1;
            }
            Ok(text) if !binary || v["reason"].as_str().unwrap().contains("not JSON") => {
                assert_eq!(v["record"].as_str(), Some(text), "{}", letter.value)
            }
            Ok(_) => assert!(v["record"].is_string(), "{}", letter.value),
            Err(_) => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
                assert_eq!(
                    v["record_base64"].as_str(),
                    Some(b64.as_str()),
                    "{}",
                    letter.value
                );
            }
        }
    }
    let without: Vec<String> = inputs
        .iter()
        .filter(|(at, m)| !seen.contains(*at) && !m.value.contains("\"g-"))
        .take(5)
        .map(|(at, m)| format!("{at:?}: {:?} {:?}", m.raw, m.headers))
        .collect();
    assert!(
        without.is_empty(),
        "bad records without a dead letter: {without:#?}"
    );
    assert_eq!(letters.len(), expected_letters);
    assert_eq!(cut, 1, "the huge record's dead letter holds its beginning");
    assert!(job.stop().success());
}

/// (e) Events in the CloudEvents Kafka binding's binary mode (attributes
/// in `ce_*` headers, the value being `data`) decide exactly like the same
/// events in structured mode.
#[test]
fn binary_mode_events_decide_like_structured_ones() {
    let case = repo().join("fixtures/ecommerce-scenario");
    let broker = Broker::start(Engine::Memory, 2, &topics("b"));
    let dir = tempfile::tempdir().unwrap();
    // Everything but the events, produced as `nudgeflow produce` does.
    let rest = dir.path().join("rest");
    std::fs::create_dir(&rest).unwrap();
    for f in [
        "preferences.jsonl",
        "consent.jsonl",
        "erasures.jsonl",
        "receipts.jsonl",
    ] {
        if case.join(f).exists() {
            std::fs::copy(case.join(f), rest.join(f)).unwrap();
        }
    }
    let config = job_config(dir.path(), &broker.brokers, &spec_path(&case), "b", "");
    produce_fixture(&config, &rest);
    let producer = producer(&broker.brokers);
    let mut binary = 0;
    for line in read(&case.join("events.jsonl")).lines() {
        // Raw values, so that `data` keeps its bytes (and key order).
        let Ok(event) = serde_json::from_str::<BTreeMap<String, &RawValue>>(line) else {
            queue(&producer, "b.events", None, Some(line.as_bytes()), &[]);
            continue;
        };
        let attributes: Vec<(String, String)> = event
            .iter()
            .filter(|(k, _)| *k != "data")
            .filter_map(|(k, v)| {
                serde_json::from_str::<String>(v.get())
                    .ok()
                    .map(|v| (format!("ce_{k}"), v))
            })
            .collect();
        if attributes.len() != event.len() - event.contains_key("data") as usize {
            // An attribute that is not a string has no header form.
            queue(&producer, "b.events", None, Some(line.as_bytes()), &[]);
            continue;
        }
        let mut headers: Vec<(&str, &str)> = attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.push(("content-type", "application/json"));
        let data = event
            .get("data")
            .map(|d| d.get().as_bytes().to_vec())
            .unwrap_or_default();
        let subject = event
            .get("subject")
            .and_then(|s| serde_json::from_str::<String>(s.get()).ok());
        let key = subject.as_deref();
        queue(&producer, "b.events", key, Some(&data), &headers);
        binary += 1;
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert!(binary > 10, "most events go in binary mode ({binary})");

    let expected = case.join("expected");
    let dispatches = sorted_lines(&read(&expected.join("dispatches.jsonl")));
    let suppressions = sorted_lines(&read(&expected.join("suppressions.jsonl")));
    let mut job = Job::start(&config, &[]);
    let mut read = read_topics(
        &broker.brokers,
        &[
            ("b.dispatches".to_string(), dispatches.len()),
            ("b.suppressions".to_string(), suppressions.len()),
        ],
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .into_iter();
    job.assert_running();
    let now = time::format_rfc3339(time::now_ms());
    let mut failures = Vec::new();
    failures.extend(compare(
        "binary mode",
        "dispatches",
        &read.next().unwrap(),
        &dispatches,
        &now,
    ));
    failures.extend(compare(
        "binary mode",
        "suppressions",
        &read.next().unwrap(),
        &suppressions,
        &now,
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(job.stop().success());
}

/// (f) SIGTERM: the job stops reading, waits for every output to be
/// acknowledged, commits the offsets of what it decided and exits 0. On
/// the sqlite engine, which keeps committed offsets, a restart then reads
/// nothing again and decides nothing twice. The HTTP endpoints answer
/// while it runs, /metrics only with the bearer token.
#[test]
fn sigterm_commits_offsets_and_exits_zero() {
    let case = repo().join("fixtures/ecommerce-scenario");
    let broker = Broker::start(Engine::Sqlite, 2, &topics("t"));
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), &broker.brokers, &spec_path(&case), "t", "");
    let text = read(&config).replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\ntoken_env = \"NUDGEFLOW_TEST_TOKEN\"\n",
    );
    std::fs::write(&config, text).unwrap();
    produce_fixture(&config, &case);
    let expected = read(&case.join("expected/dispatches.jsonl"))
        .lines()
        .count();

    // SAFETY: set before any thread of this test reads the environment;
    // the job inherits it.
    unsafe { std::env::set_var("NUDGEFLOW_TEST_TOKEN", "s3cret") };
    let mut job = Job::start(&config, &[]);
    let addr = job.http_addr();
    assert_eq!(http::get(&addr, "/healthz", &[]).status, 200);
    let first = read_topic(
        &broker.brokers,
        "t.dispatches",
        expected,
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
    assert_eq!(first.len(), expected);
    assert_eq!(http::get(&addr, "/readyz", &[]).status, 200);
    assert_eq!(http::get(&addr, "/metrics", &[]).status, 401);
    assert_eq!(
        http::get(&addr, "/metrics", &["Authorization: Bearer wrong"]).status,
        401
    );
    let metrics = http::get(&addr, "/metrics", &["Authorization: Bearer s3cret"]);
    assert_eq!(metrics.status, 200);
    let events = read(&case.join("events.jsonl"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let line = format!("nudgeflow_records_in_total{{topic=\"t.events\"}} {events}");
    assert!(
        metrics.body.lines().any(|l| l == line),
        "no {line:?} in\n{}",
        metrics.body
    );
    let line = format!("nudgeflow_records_out_total{{topic=\"t.dispatches\"}} {expected}");
    assert!(
        metrics.body.lines().any(|l| l == line),
        "no {line:?} in\n{}",
        metrics.body
    );
    assert_eq!(http::get(&addr, "/nothing", &[]).status, 404);

    // `nudgeflow tail` prints the same dispatches, one a line.
    let tail = std::process::Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
        .args([
            "tail",
            "--from-beginning",
            "--limit",
            &expected.to_string(),
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(tail.status.success());
    let mut tailed: Vec<String> = String::from_utf8(tail.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    tailed.sort();
    assert_eq!(tailed, sorted_values(&first));

    let log = job.log();
    let status = job.stop();
    assert!(status.success(), "exit {status}:\n{log}");
    for stream in ["events", "preferences", "consent"] {
        let topic = format!("t.{stream}");
        let mut committed = committed(&broker.brokers, "t-group", &topic);
        committed.sort();
        assert_eq!(
            committed,
            end_offsets(&broker.brokers, &topic),
            "{topic}: committed offsets"
        );
    }

    let mut job = Job::start(&config, &[]);
    job.wait_ready();
    std::thread::sleep(Duration::from_secs(1));
    let addr = job.http_addr();
    let metrics = http::get(&addr, "/metrics", &["Authorization: Bearer s3cret"]);
    assert!(
        !metrics.body.contains("nudgeflow_records_in_total{"),
        "the restarted job read records again:\n{}",
        metrics.body
    );
    let again = read_topic(
        &broker.brokers,
        "t.dispatches",
        expected + 1,
        Duration::ZERO,
        Duration::from_secs(3),
    );
    assert_eq!(
        again.len(),
        expected,
        "a restart after a clean stop decides nothing twice"
    );
    assert!(job.stop().success());
}

/// `nudgeflow produce` into a broker that lacks one of the fixture's
/// topics fails, naming it, before sending anything.
#[test]
fn produce_names_a_missing_topic_and_sends_nothing() {
    let broker = Broker::start(Engine::Memory, 1, &["x.events".to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let case = repo().join("fixtures/saas-scenario");
    let config = job_config(dir.path(), &broker.brokers, &spec_path(&case), "x", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
        .args(["produce", "--config"])
        .arg(&config)
        .arg("--fixture")
        .arg(&case)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        ["x.preferences", "x.consent"]
            .iter()
            .any(|t| stderr.contains(&format!("topic {t} does not exist on the broker"))),
        "{stderr}"
    );
    assert_eq!(end_offsets(&broker.brokers, "x.events"), vec![(0, 0)]);

    // `run` stops at its start on a missing output topic, naming it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("topic x.dispatches does not exist on the broker"),
        "{stderr}"
    );
}

/// (h) Provider callbacks (§9): `POST /v1/receipts` needs the bearer
/// token, refuses bad receipts by index, appends the good ones to the
/// receipts topic keyed by dispatch id, and they drive channel fallback
/// (§4): a `failed` receipt for attempt 1 on push makes attempt 2 on SMS
/// at the receipt's time. A receipt behind the watermark is a dead letter,
/// counted as a late receipt (§9).
#[test]
fn provider_callbacks_append_receipts_that_drive_fallback() {
    let broker = Broker::start(Engine::Memory, 2, &topics("r"));
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "allowed_lateness = \"1s\"\n[[rule]]\nname = \"otp\"\non = \"t\"\n\
         purpose = \"transactional\"\nchannels = [\"push\", \"sms\"]\nfallback_after = \"1h\"\n",
    )
    .unwrap();
    let config = job_config(dir.path(), &broker.brokers, &spec, "r", "");
    let text = read(&config).replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\ntoken_env = \"NUDGEFLOW_TEST_TOKEN\"\n",
    );
    std::fs::write(&config, text).unwrap();
    // SAFETY: every test of this binary sets the same value before its
    // job starts; the job inherits it.
    unsafe { std::env::set_var("NUDGEFLOW_TEST_TOKEN", "s3cret") };
    let mut job = Job::start(&config, &[]);
    job.wait_ready();
    let addr = job.http_addr();
    let producer = producer(&broker.brokers);
    let t = time::now_ms();
    let value = event("e-1", "t", &time::format_rfc3339(t), "u-1");
    send(
        &producer,
        "r.events",
        Some("u-1"),
        Some(value.as_bytes()),
        &[],
    );
    let first = read_topic(
        &broker.brokers,
        "r.dispatches",
        1,
        Duration::ZERO,
        Duration::from_secs(30),
    );
    assert_eq!(first.len(), 1, "no dispatch:\n{}", job.log());
    let first: serde_json::Value = serde_json::from_str(&first[0].value).unwrap();
    assert_eq!(
        (first["channel"].as_str(), first["attempt"].as_i64()),
        (Some("push"), Some(1))
    );
    let id = first["dispatch_id"].as_str().unwrap().to_string();

    let post = |headers: &[&str], body: &str| {
        let mut all = vec!["Content-Type: application/json"];
        all.extend_from_slice(headers);
        http::request(&addr, "POST", "/v1/receipts", &all, body)
    };
    let auth = "Authorization: Bearer s3cret";
    let failed_at = time::format_rfc3339(time::now_ms().max(t + 1));
    let good = format!(r#"{{"dispatch_id":"{id}","status":"failed","time":"{failed_at}"}}"#);
    let body =
        format!(r#"[{good},{{"dispatch_id":"{id}","status":"lost","time":"{failed_at}"}},7]"#);
    let denied = post(&[], &body);
    assert_eq!(denied.status, 401, "{}", denied.body);
    assert!(denied.body.contains("\"error\""), "{}", denied.body);
    let none = post(&[auth], r#"[{"status":"failed"}]"#);
    assert_eq!(none.status, 400, "{}", none.body);
    let bad = post(&[auth], "not json");
    assert_eq!(bad.status, 400, "{}", bad.body);
    let answer = post(&[auth], &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    let refused: Vec<i64> = answer["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_i64().unwrap())
        .collect();
    assert_eq!(refused, [1, 2], "{answer}");
    assert!(
        answer["refused"][0]["error"]
            .as_str()
            .unwrap()
            .contains("status"),
        "{answer}"
    );

    let receipts = read_topic(
        &broker.brokers,
        "r.receipts",
        1,
        Duration::from_millis(500),
        Duration::from_secs(30),
    );
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].key.as_deref(), Some(id.as_str()));
    assert_eq!(receipts[0].value, good);

    let both = read_topic(
        &broker.brokers,
        "r.dispatches",
        2,
        Duration::ZERO,
        Duration::from_secs(30),
    );
    assert_eq!(both.len(), 2, "no attempt 2:\n{}", job.log());
    let second: serde_json::Value = both
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(&m.value).unwrap())
        .find(|d| d["attempt"] == 2)
        .expect("attempt 2");
    assert_eq!(second["channel"], "sms");
    assert_eq!(second["decision_time"], failed_at.as_str());
    assert_ne!(second["dispatch_id"], first["dispatch_id"]);

    // A receipt behind the watermark cannot drive fallback: it is a dead
    // letter, counted as a late receipt.
    let old =
        format!(r#"[{{"dispatch_id":"{id}","status":"failed","time":"2020-01-01T00:00:00Z"}}]"#);
    assert_eq!(post(&[auth], &old).status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = http::get(&addr, "/metrics", &[auth]).body;
        if metrics
            .lines()
            .any(|l| l == "nudgeflow_late_receipts_total 1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no late receipt counted:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(job.stop().success());
}

/// (i) The in-app inbox (§9) over real HTTP: an `in_app` dispatch appears
/// in its user's inbox, `POST …/read` writes an `opened` receipt that
/// marks it read once it comes back through the receipts topic, and an
/// erasure empties the inbox.
#[test]
fn the_inbox_serves_in_app_dispatches_marks_reads_and_empties_on_erasure() {
    let broker = Broker::start(Engine::Memory, 2, &topics("i"));
    let dir = tempfile::tempdir().unwrap();
    let spec = news_spec(dir.path(), "news-v2");
    let config = job_config(dir.path(), &broker.brokers, &spec, "i", "");
    let mut job = Job::start(&config, &[]);
    job.wait_ready();
    let addr = job.http_addr();
    let producer = producer(&broker.brokers);
    let t = time::now_ms();
    let value = format!(
        r#"{{"specversion":"1.0","id":"e-1","source":"test","type":"n","time":"{}","subject":"u-1","data":{{"title":"hi"}}}}"#,
        time::format_rfc3339(t)
    );
    send(
        &producer,
        "i.events",
        Some("u-1"),
        Some(value.as_bytes()),
        &[],
    );
    let inbox = |query: &str| -> serde_json::Value {
        let reply = http::get(&addr, &format!("/v1/users/u-1/inbox{query}"), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        serde_json::from_str(&reply.body).unwrap()
    };
    let until = |what: &str, done: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = inbox("");
            if done(&answer) {
                return answer;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {answer}\n{}",
                job.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let placed = until("the item", &|a| a["items"].as_array().unwrap().len() == 1);
    let item = &placed["items"][0];
    assert_eq!(item["rule"], "news");
    assert_eq!(item["template"], "news-v2");
    assert_eq!(item["vars"], serde_json::json!({"title": "hi"}));
    assert_eq!(item["time"], time::format_rfc3339(t).as_str());
    assert_eq!(item["read"], false);
    assert!(placed["as_of"].as_str().unwrap() > item["time"].as_str().unwrap());
    let id = item["dispatch_id"].as_str().unwrap().to_string();
    let dispatches = read_topic(
        &broker.brokers,
        "i.dispatches",
        1,
        Duration::ZERO,
        Duration::from_secs(10),
    );
    assert!(dispatches[0].value.contains(&id), "{}", dispatches[0].value);
    assert_eq!(
        inbox("?unread=true&limit=5")["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        http::get(&addr, "/v1/users/u-1/inbox?limit=x", &[]).status,
        400
    );
    let nobody = http::get(&addr, "/v1/users/nobody/inbox", &[]);
    assert_eq!(nobody.status, 200);
    assert!(nobody.body.contains("\"items\":[]"), "{}", nobody.body);

    let read = |id: &str| {
        http::request(
            &addr,
            "POST",
            &format!("/v1/users/u-1/inbox/{id}/read"),
            &[],
            "",
        )
    };
    assert_eq!(read("00000000-0000-0000-0000-000000000000").status, 404);
    let marked = read(&id);
    assert_eq!(marked.status, 200, "{}", marked.body);
    until("read", &|a| a["items"][0]["read"] == true);
    assert_eq!(inbox("?unread=true")["items"].as_array().unwrap().len(), 0);
    // Its placement in the inbox wrote `delivered`; the read, `opened`.
    let receipts = read_topic(
        &broker.brokers,
        "i.receipts",
        2,
        Duration::ZERO,
        Duration::from_secs(10),
    );
    let statuses: Vec<(String, String)> = receipts
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.value).unwrap();
            let field = |k: &str| v[k].as_str().unwrap().to_string();
            (field("dispatch_id"), field("status"))
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (id.clone(), "delivered".into()),
            (id.clone(), "opened".into())
        ]
    );

    let erasure = format!(
        r#"{{"user":"u-1","time":"{}"}}"#,
        time::format_rfc3339(time::now_ms())
    );
    send(
        &producer,
        "i.erasures",
        Some("u-1"),
        Some(erasure.as_bytes()),
        &[],
    );
    until("erased", &|a| a["items"].as_array().unwrap().is_empty());
    assert!(job.stop().success());
}

/// (j) In a cluster every process serves every user's inbox: users whose
/// decisions are made on either process are read from both, and a read
/// marked through one process shows in the other.
#[test]
fn every_process_serves_every_inbox() {
    let broker = Broker::start(Engine::Memory, 2, &topics("j"));
    let dir = tempfile::tempdir().unwrap();
    let spec = news_spec(dir.path(), "news");
    let config = job_config(dir.path(), &broker.brokers, &spec, "j", "");
    let hosts = common::two_process_hostfile(dir.path());
    let hosts = hosts.to_str().unwrap().to_string();
    let mut jobs: Vec<Job> = (0..2)
        .map(|p| Job::start(&config, &["-n", "2", "-p", &p.to_string(), "-h", &hosts]))
        .collect();
    let addrs: Vec<String> = jobs.iter_mut().map(|j| j.http_addr()).collect();
    for job in &mut jobs {
        job.wait_ready();
    }
    let producer = producer(&broker.brokers);
    let users: Vec<String> = (0..6).map(|i| format!("u-{i}")).collect();
    let t = time::format_rfc3339(time::now_ms());
    for (i, user) in users.iter().enumerate() {
        let value = event(&format!("e-{i}"), "n", &t, user);
        send(
            &producer,
            "j.events",
            Some(user),
            Some(value.as_bytes()),
            &[],
        );
    }
    let items = |addr: &str, user: &str| -> Vec<serde_json::Value> {
        let reply = http::get(addr, &format!("/v1/users/{user}/inbox"), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        v["items"].as_array().unwrap().clone()
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("every inbox on both processes", &|| {
        addrs
            .iter()
            .all(|a| users.iter().all(|u| items(a, u).len() == 1))
    });
    for user in &users {
        let id = items(&addrs[0], user)[0]["dispatch_id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/v1/users/{user}/inbox/{id}/read");
        let marked = http::request(&addrs[1], "POST", &path, &[], "");
        assert_eq!(marked.status, 200, "{}", marked.body);
    }
    wait("every read on both processes", &|| {
        addrs
            .iter()
            .all(|a| users.iter().all(|u| items(a, u)[0]["read"] == true))
    });
    for (status, job) in stop_all(&mut jobs).into_iter().zip(&jobs) {
        assert!(status.success(), "{status}:\n{}", job.log());
    }
}

/// (k) An inbox item leaves the inbox `inbox_ttl` after it was placed,
/// with no other record arriving: the idle partitions release event time
/// by the wall clock.
#[test]
fn an_inbox_item_leaves_after_its_ttl() {
    let broker = Broker::start(Engine::Memory, 1, &topics("x"));
    let dir = tempfile::tempdir().unwrap();
    let spec = news_spec(dir.path(), "news");
    let extra = "[sinks.in_app]\nkind = \"inbox\"\ninbox_ttl = \"2s\"\n";
    let config = job_config(dir.path(), &broker.brokers, &spec, "x", extra);
    let mut job = Job::start(&config, &[]);
    job.wait_ready();
    let addr = job.http_addr();
    let t = time::now_ms();
    let value = event("e-1", "n", &time::format_rfc3339(t), "u-1");
    let producer = producer(&broker.brokers);
    send(
        &producer,
        "x.events",
        Some("u-1"),
        Some(value.as_bytes()),
        &[],
    );
    let items = || -> (usize, String) {
        let reply = http::get(&addr, "/v1/users/u-1/inbox", &[]);
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        let n = v["items"].as_array().unwrap().len();
        (n, v["as_of"].as_str().unwrap().to_string())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while items().0 == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "never placed:\n{}",
            job.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    loop {
        let (n, as_of) = items();
        let as_of = time::parse_rfc3339(&as_of).unwrap();
        if n == 0 {
            assert!(as_of > t + 2_000, "left at {as_of}, placed at {t}");
            break;
        }
        assert!(
            as_of <= t + 2_000,
            "still there as of {as_of}, placed at {t}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "never left:\n{}",
            job.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(job.stop().success());
}

/// A spec of one transactional rule `news` on `n`, in the app (the inbox),
/// with `template`, and 1 s of allowed lateness.
fn news_spec(dir: &Path, template: &str) -> std::path::PathBuf {
    let path = dir.join("spec.toml");
    let text = format!(
        "allowed_lateness = \"1s\"\n[[rule]]\nname = \"news\"\non = \"n\"\n\
         template = {template:?}\npurpose = \"transactional\"\nchannels = [\"in_app\"]\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// (l) The aggregates live (DESIGN.md §5, §8): a fixture with `[analytics]`
/// produced into the job's topics, decided by two processes; each answers
/// the query API for every user, as of its frontier, with what the replay
/// of the same records wrote (buckets after the replay's as-of time aside:
/// the live frontier is later, so the live answer has them).
#[test]
fn every_process_answers_the_query_api_as_the_replay_does() {
    let case = repo().join("fixtures/analytics-retention");
    let broker = Broker::start(Engine::Memory, 2, &topics("l"));
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(dir.path(), &broker.brokers, &spec_path(&case), "l", "");
    produce_fixture(&config, &case);
    let hosts = common::two_process_hostfile(dir.path());
    let hosts = hosts.to_str().unwrap().to_string();
    let mut jobs: Vec<Job> = (0..2)
        .map(|p| Job::start(&config, &["-n", "2", "-p", &p.to_string(), "-h", &hosts]))
        .collect();
    let addrs: Vec<String> = jobs.iter_mut().map(|j| j.http_addr()).collect();
    let expected = |file: &str| -> serde_json::Value {
        serde_json::from_str(&read(&case.join("expected").join(file))).unwrap()
    };
    let replayed = expected("retention.json");
    let last = replayed["as_of"].as_str().unwrap().to_string();
    let get = |addr: &str, path: &str| -> serde_json::Value {
        let reply = http::get(addr, path, &[]);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        serde_json::from_str(&reply.body).unwrap()
    };
    // Each process, once its frontier has passed every record.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for addr in &addrs {
        loop {
            let reply = http::get(addr, "/v1/retention", &[]);
            if reply.status == 200 {
                let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
                if v["as_of"].as_str().unwrap() > last.as_str() {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{addr}: no answer past {last}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for addr in &addrs {
        let live = get(addr, "/v1/retention");
        let (live_rows, rows) = (
            live["rows"].as_array().unwrap(),
            replayed["rows"].as_array().unwrap(),
        );
        assert_eq!(live_rows.len(), rows.len(), "{live}");
        for (l, r) in live_rows.iter().zip(rows) {
            for key in ["cohort", "segment", "group", "size"] {
                assert_eq!(l[key], r[key], "{l} vs {r}");
            }
            // Every bucket the replay answered for, the same.
            for (k, count) in r["retained"].as_array().unwrap().iter().enumerate() {
                if !count.is_null() {
                    assert_eq!(&l["retained"][k], count, "{l} vs {r}");
                }
            }
        }
        let delivery = get(addr, "/v1/delivery");
        assert_eq!(delivery["channels"], expected("delivery.json")["channels"]);
        for line in read(&case.join("expected/churn.jsonl")).lines() {
            let replayed: serde_json::Value = serde_json::from_str(line).unwrap();
            let user = replayed["user"].as_str().unwrap();
            let live = get(addr, &format!("/v1/churn/users/{user}"));
            for key in ["x", "t_x", "first_active", "last_active"] {
                assert_eq!(live[key], replayed[key], "{user}: {live} vs {replayed}");
            }
        }
        let never = http::get(addr, "/v1/churn/users/nobody", &[]);
        assert_eq!(never.status, 404, "{}", never.body);
    }
    for (status, job) in stop_all(&mut jobs).into_iter().zip(&jobs) {
        assert!(status.success(), "{status}:\n{}", job.log());
    }
}
