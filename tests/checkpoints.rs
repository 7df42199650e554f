//! Checkpoints and recovery of `nudgeflow run` (DESIGN.md §7) against a
//! real Tansu on its sqlite engine (which keeps records and committed
//! offsets across restarts): a job killed at any moment, restarted with
//! more or fewer workers and processes, loses nothing and decides nothing
//! differently; a stop re-sends nothing; a corrupt checkpoint is passed
//! over; a reminder outlives the record that booked it.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kafka::{
    Broker, Engine, Job, Received, compare, job_config, produce_fixture, read_topic, send,
    sorted_lines, stop_all, topics,
};
use common::{read, repo};
use nudgeflow::r#gen::receipts::{ReceiptOptions, generate_receipts};
use nudgeflow::r#gen::{GenOptions, generate};
use nudgeflow::time;
use rand::{RngExt, SeedableRng};

/// A job config on `broker` for `spec`, checkpointing every second into
/// `dir/state`.
fn config(dir: &Path, broker: &Broker, spec: &Path, prefix: &str) -> PathBuf {
    let checkpoint = "[checkpoint]\nurl = \"state\"\ninterval = \"1s\"\n";
    job_config(dir, &broker.brokers, spec, prefix, checkpoint)
}

/// One dispatch per `dispatch_id`: fails if two copies of one differ.
fn first_copies(messages: &[Received]) -> (Vec<Received>, usize) {
    let mut by_id: BTreeMap<String, &Received> = BTreeMap::new();
    let mut resent = 0;
    for m in messages {
        let v: serde_json::Value = serde_json::from_str(&m.value).unwrap();
        let id = v["dispatch_id"].as_str().unwrap().to_string();
        match by_id.get(&id) {
            Some(first) => {
                assert_eq!(
                    first.value, m.value,
                    "a re-sent dispatch differs from its first copy"
                );
                resent += 1;
            }
            None => {
                by_id.insert(id, m);
            }
        }
    }
    (by_id.into_values().cloned().collect(), resent)
}

/// Distinct suppressions (they have no id: the whole record is one).
fn distinct(messages: &[Received]) -> (Vec<Received>, usize) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in messages {
        if seen.insert(m.value.clone()) {
            out.push(m.clone());
        }
    }
    let repeated = messages.len() - out.len();
    (out, repeated)
}

/// The expected lines decided by `now` (RFC 3339): those the live job must
/// have made (see `compare`).
fn due<'a>(lines: &'a [String], now: &str) -> HashSet<&'a String> {
    lines
        .iter()
        .filter(|l| common::kafka::decided_at(l).as_str() <= now)
        .collect()
}

/// Reads `topic` until it holds every line of `expected` (first copies),
/// or `timeout` passes (checking once a second: the check parses them all).
fn read_until_all(
    broker: &Broker,
    topic: &str,
    expected: &HashSet<&String>,
    timeout: Duration,
) -> Vec<Received> {
    let mut checked = Instant::now();
    common::kafka::read_topic_until(&broker.brokers, topic, timeout, |got, _| {
        if checked.elapsed() < Duration::from_secs(1) {
            return false;
        }
        checked = Instant::now();
        let have: HashSet<&String> = got.iter().map(|m| &m.value).collect();
        expected.iter().all(|l| have.contains(*l))
    })
}

/// Waits until `jobs` have produced every dispatch and suppression of `g`
/// due by `now` on the topics of `prefix`, stops them (each must exit 0),
/// and checks that every output is one the replay made, every re-sent
/// dispatch identical to its first copy; prints how many were re-sent.
fn check_outputs(
    name: &str,
    broker: &Broker,
    prefix: &str,
    g: &Generated,
    now: &str,
    jobs: &mut [Job],
) {
    let topic = |s: &str| format!("{prefix}.{s}");
    let timeout = Duration::from_secs(300);
    let got = read_until_all(
        broker,
        &topic("dispatches"),
        &due(&g.dispatches, now),
        timeout,
    );
    let suppressions = read_until_all(
        broker,
        &topic("suppressions"),
        &due(&g.suppressions, now),
        timeout,
    );
    // The aggregates each process answers (retention and delivery at one
    // as-of time), checked below against a replay as of that time.
    let reports: Vec<serde_json::Value> = jobs
        .iter_mut()
        .map(|job| {
            let reply = common::http::get(&job.http_addr(), "/v1/report", &[]);
            assert_eq!(reply.status, 200, "{}", reply.body);
            serde_json::from_str(&reply.body).unwrap()
        })
        .collect();
    for (status, job) in stop_all(jobs).into_iter().zip(jobs.iter()) {
        assert!(status.success(), "exit {status}:\n{}", job.log());
    }
    let (dispatches, resent) = first_copies(&got);
    let (suppressions, repeated) = distinct(&suppressions);
    eprintln!(
        "{name}: {} dispatches ({resent} re-sent, identical), {} suppressions ({repeated} repeated)",
        dispatches.len(),
        suppressions.len()
    );
    let mut failures = Vec::new();
    failures.extend(compare(name, "dispatches", &dispatches, &g.dispatches, now));
    failures.extend(compare(
        name,
        "suppressions",
        &suppressions,
        &g.suppressions,
        now,
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for live in reports {
        check_aggregates(name, g, &live);
    }
}

/// The aggregates a restarted (and rescaled) job answers are those a
/// replay of the same input answers as of the same time: the facts of the
/// users in a checkpoint are stated again on restart, none twice.
fn check_aggregates(name: &str, g: &Generated, live: &serde_json::Value) {
    let as_of = time::parse_rfc3339(live["as_of"].as_str().unwrap()).unwrap();
    let spec = std::sync::Arc::new(nudgeflow::spec::Spec::load(&g.spec).unwrap());
    let out = tempfile::tempdir().unwrap();
    let opts = nudgeflow::replay::ReplayOptions {
        spec,
        fixture: g.fixture.clone(),
        cluster: nudgeflow::replay::Cluster::single(2),
        stripe_bytes: 1 << 20,
        stripes_per_step: 4,
        progress: false,
        as_of: Some(as_of),
    };
    nudgeflow::replay::run_to_dir(&opts, out.path()).unwrap();
    let replayed = |file: &str| -> serde_json::Value {
        serde_json::from_str(&read(&out.path().join(file))).unwrap()
    };
    let delivery = replayed("delivery.json");
    assert!(
        delivery["channels"]["push"]["delivered"].as_i64() > Some(0),
        "{delivery}"
    );
    assert_eq!(
        live["delivery"], delivery,
        "{name}: live delivery differs from the replay's"
    );
    assert_eq!(
        live["retention"],
        replayed("retention.json"),
        "{name}: live retention differs from the replay's"
    );
}

/// A generated stream of 200k events with provider receipts for the
/// dispatches they make (so channel fallback's attempts in flight are in
/// the checkpoints), and what a replay decides from it.
struct Generated {
    _dir: tempfile::TempDir,
    fixture: PathBuf,
    spec: PathBuf,
    dispatches: Vec<String>,
    suppressions: Vec<String>,
}

fn generated(seed: u64) -> Generated {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("in");
    let opts = GenOptions {
        users: 20_000,
        events: 200_000,
        seed,
        out: fixture.clone(),
        days: 7,
        ..Default::default()
    };
    generate(&opts, &mut |_| {}).unwrap();
    let spec = repo().join("dataflows/ecommerce.toml");
    let loaded = std::sync::Arc::new(nudgeflow::spec::Spec::load(&spec).unwrap());
    let plain = dir.path().join("plain");
    common::replay(&loaded, &fixture, &plain, 2, 1 << 20);
    generate_receipts(&ReceiptOptions {
        dispatches: vec![plain.join("dispatches.jsonl")],
        out: fixture.clone(),
        seed,
    })
    .unwrap();
    let expected = dir.path().join("expected");
    common::replay(&loaded, &fixture, &expected, 2, 1 << 20);
    Generated {
        dispatches: sorted_lines(&read(&expected.join("dispatches.jsonl"))),
        suppressions: sorted_lines(&read(&expected.join("suppressions.jsonl"))),
        fixture,
        spec,
        _dir: dir,
    }
}

/// How the job runs after its n-th start: one worker, two workers, two
/// processes of one worker, in turn (every restart is also a rescale).
fn start(config: &Path, n: usize) -> Vec<Job> {
    match n % 3 {
        0 => vec![Job::start(config, &["-w", "2"])],
        1 => vec![Job::start(config, &["-w", "1"])],
        _ => {
            let dir = config.parent().unwrap();
            let hosts = common::two_process_hostfile(dir);
            let hosts = hosts.to_str().unwrap().to_string();
            (0..2)
                .map(|p| Job::start(config, &["-n", "2", "-p", &p.to_string(), "-h", &hosts]))
                .collect()
        }
    }
}

/// (a, b, c) `kill -9` of the job at random moments, ten times while it
/// works through a 200k-event stream, restarting it each time with one
/// worker, two workers or two processes (a rescale at every restart; with
/// two processes, only one of them is killed, and the other, whose peer
/// is gone, is then stopped too): every dispatch and suppression the
/// replay decides is produced, none other, and every re-sent dispatch is
/// byte-identical to its first copy.
#[test]
fn kill_nine_at_random_moments_loses_nothing_and_decides_nothing_differently() {
    let g = generated(23);
    let broker = Broker::start(Engine::Sqlite, 2, &topics("k"));
    let dir = tempfile::tempdir().unwrap();
    // NUDGEFLOW_TEST_KEEP keeps the runs' logs and checkpoints.
    let dir = match std::env::var_os("NUDGEFLOW_TEST_KEEP") {
        Some(_) => dir.keep(),
        None => dir.path().to_path_buf(),
    };
    eprintln!("kill -9: job directory {}", dir.display());
    let config = config(&dir, &broker, &g.spec, "k");
    produce_fixture(&config, &g.fixture);
    let now = time::format_rfc3339(time::now_ms() - 2_000);

    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
    let mut resumed = 0;
    for n in 0..10 {
        let mut jobs = start(&config, n);
        // A random moment after the run's first checkpoint (on sqlite the
        // first release may take seconds: Tansu serves some partitions'
        // first records late), so that most runs move the stream on; every
        // fourth run is killed early instead, before or while it resumes.
        let started = Instant::now();
        if n % 4 == 3 {
            std::thread::sleep(Duration::from_millis(rng.random_range(200..1_500)));
        } else {
            while !jobs[0].log().contains("checkpoint complete")
                && started.elapsed() < Duration::from_secs(60)
            {
                for job in &mut jobs {
                    job.assert_running();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(0..2_500)));
        }
        for job in &mut jobs {
            job.assert_running();
        }
        resumed += jobs[0].log().contains("resuming from checkpoint") as usize;
        if n % 4 == 3 && !jobs[0].log().contains("resuming from checkpoint") {
            resumed += 1; // killed before it logged its start
        }
        // SIGKILL of one process (the second of two); the other, its peer
        // gone, is killed a moment later if it has not exited.
        let victim = jobs.len() - 1;
        drop(jobs.remove(victim));
        std::thread::sleep(Duration::from_millis(500));
        drop(jobs);
    }
    assert!(
        resumed >= 9,
        "only {resumed} of 10 starts resumed from a checkpoint"
    );

    let mut jobs = start(&config, 10);
    check_outputs("kill -9 ×10", &broker, "k", &g, &now, &mut jobs);
}

/// (d) The broker stops and starts again while the job works through a
/// stream: the job reconnects and decides exactly what the replay does.
#[test]
fn a_broker_restart_midway_changes_nothing() {
    let g = generated(31);
    let broker = Broker::start(Engine::Sqlite, 2, &topics("b"));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &broker, &g.spec, "b");
    produce_fixture(&config, &g.fixture);
    let now = time::format_rfc3339(time::now_ms() - 2_000);
    let mut jobs = start(&config, 0);
    let started = Instant::now();
    while !jobs[0].log().contains("checkpoint complete") {
        jobs[0].assert_running();
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.restart();
    check_outputs("broker restart", &broker, "b", &g, &now, &mut jobs);
}

/// (e) A stop takes a last checkpoint: started again, the job re-sends
/// nothing. The stop is a SIGTERM to one process of two: the whole job
/// stops, both processes exit 0, and one process of one worker goes on.
#[test]
fn a_stop_of_one_process_then_a_start_re_sends_nothing() {
    let case = repo().join("fixtures/ecommerce-scenario");
    let broker = Broker::start(Engine::Sqlite, 2, &topics("s"));
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &broker,
        &repo().join("dataflows/ecommerce.toml"),
        "s",
    );
    produce_fixture(&config, &case);
    let count = |name: &str| read(&case.join("expected").join(name)).lines().count();
    let wanted = [
        ("s.dispatches".to_string(), count("dispatches.jsonl")),
        ("s.suppressions".to_string(), count("suppressions.jsonl")),
    ];
    let mut jobs = start(&config, 2);
    let first = common::kafka::read_topics(
        &broker.brokers,
        &wanted,
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
    for (got, (topic, n)) in first.iter().zip(&wanted) {
        assert_eq!(got.len(), *n, "{topic}");
    }
    let second = stop_all(&mut jobs[1..]).pop().unwrap();
    assert!(second.success(), "process 1: {second}:\n{}", jobs[1].log());
    let status = jobs[0].wait_exit(Duration::from_secs(60));
    assert!(status.success(), "process 0: {status}:\n{}", jobs[0].log());

    let mut job = Job::start(&config, &["-w", "1"]);
    job.wait_ready();
    std::thread::sleep(Duration::from_secs(2));
    let log = job.log();
    assert!(log.contains("resuming from checkpoint"), "{log}");
    // It goes on taking checkpoints, and says so in its metrics.
    let metrics = common::http::get(&job.http_addr(), "/metrics", &[]).body;
    let complete = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nudgeflow_checkpoints_total{outcome=\"complete\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(complete.is_some_and(|n| n > 0), "{metrics}");
    let again = common::kafka::read_topics(
        &broker.brokers,
        &[
            (wanted[0].0.clone(), wanted[0].1 + 1),
            (wanted[1].0.clone(), wanted[1].1 + 1),
        ],
        Duration::ZERO,
        Duration::from_secs(3),
    );
    for (got, (topic, n)) in again.iter().zip(&wanted) {
        assert_eq!(got.len(), *n, "{topic}: re-sent after a stop:\n{log}");
    }
    assert!(job.stop().success());
}

/// (f) The newest checkpoint's part is corrupt: the restart says so,
/// resumes from the one before, and re-sends only identical outputs. (The
/// store is given as a `file://` URL.)
#[test]
fn a_corrupt_newest_checkpoint_is_passed_over_for_the_one_before() {
    let case = repo().join("fixtures/ecommerce-scenario");
    let broker = Broker::start(Engine::Sqlite, 2, &topics("c"));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &broker, &common::case_spec_path(&case), "c");
    // The store by URL, as an object store is given.
    let url = format!("file://{}", dir.path().join("state").display());
    let text = read(&config).replace("url = \"state\"", &format!("url = {url:?}"));
    std::fs::write(&config, text).unwrap();
    produce_fixture(&config, &case);
    let expected = sorted_lines(&read(&case.join("expected/dispatches.jsonl")));
    let mut job = Job::start(&config, &["-w", "2"]);
    read_topic(
        &broker.brokers,
        "c.dispatches",
        expected.len(),
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    job.assert_running();
    assert!(job.stop().success());

    let state = dir.path().join("state");
    let mut checkpoints: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("manifest.json").exists())
        .collect();
    checkpoints.sort();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    let newest = checkpoints.pop().unwrap();
    let previous = checkpoints.pop().unwrap();
    let part = newest.join("part-0000.bin");
    let mut bytes = std::fs::read(&part).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();

    let mut job = Job::start(&config, &["-w", "2"]);
    job.wait_ready();
    std::thread::sleep(Duration::from_secs(2));
    let log = job.log();
    let id = |p: &Path| {
        p.file_name().unwrap().to_str().unwrap()["ckpt-".len()..]
            .parse::<u64>()
            .unwrap()
    };
    assert!(
        log.contains("checkpoint passed over") && log.contains("corrupt"),
        "{log}"
    );
    assert!(
        log.contains(&format!("checkpoint={}", id(&previous))),
        "resumed from another checkpoint than {previous:?}:\n{log}"
    );
    assert!(job.stop().success());
    let got = read_topic(
        &broker.brokers,
        "c.dispatches",
        expected.len(),
        Duration::from_secs(1),
        Duration::from_secs(30),
    );
    let (firsts, resent) = first_copies(&got);
    eprintln!("after the corrupt checkpoint: {resent} dispatches re-sent, identical");
    let now = time::format_rfc3339(time::now_ms());
    assert_eq!(
        compare("corrupt", "dispatches", &firsts, &expected, &now),
        None
    );
}

/// (g) A reminder due 30 days after its booking survives a restart after
/// the booking has left the topic: the restarted job reads its events from
/// a new, empty topic, so it can only know the reminder from the
/// checkpoint, and sends it on time. It is a marketing reminder, sent only
/// with the user's consent, given before the checkpoint: the consent too
/// comes from the checkpoint.
#[test]
fn a_thirty_day_reminder_outlives_its_booking_record() {
    let mut names = topics("g");
    names.push("g.events-after".to_string());
    let broker = Broker::start(Engine::Sqlite, 1, &names);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "allowed_lateness = \"1s\"\n\
         [[rule]]\nname = \"reminder\"\non = \"appointment.booked\"\npurpose = \"marketing\"\n\
         channels = [\"email\"]\nat = { field = \"starts_at\", before = \"24h\" }\n",
    )
    .unwrap();
    let config = config(dir.path(), &broker, &spec, "g");
    // Booked 30 days ago, for tomorrow: the reminder is due in 20 s.
    let now = time::now_ms();
    let due = now + 20_000;
    let booked = time::format_rfc3339(now - 30 * 86_400_000);
    let starts_at = time::format_rfc3339(due + 86_400_000);
    let event = format!(
        "{{\"specversion\":\"1.0\",\"id\":\"b-1\",\"source\":\"clinic\",\"type\":\"appointment.booked\",\
         \"time\":\"{booked}\",\"subject\":\"u-1\",\"data\":{{\"starts_at\":\"{starts_at}\"}}}}"
    );
    let consent = format!(
        "{{\"user\":\"u-1\",\"channel\":\"email\",\"purpose\":\"marketing\",\"granted\":true,\"time\":\"{booked}\"}}"
    );
    let producer = common::kafka::producer(&broker.brokers);
    let key = Some("u-1");
    send(&producer, "g.consent", key, Some(consent.as_bytes()), &[]);
    send(&producer, "g.events", key, Some(event.as_bytes()), &[]);

    let mut job = Job::start(&config, &[]);
    job.wait_ready();
    std::thread::sleep(Duration::from_secs(2));
    job.assert_running();
    assert!(job.stop().success());
    let early = read_topic(
        &broker.brokers,
        "g.dispatches",
        1,
        Duration::ZERO,
        Duration::from_secs(2),
    );
    assert!(early.is_empty(), "sent before it was due: {early:?}");

    // The booking is gone: the job now reads events from an empty topic.
    let text = read(&config).replace("\"g.events\"", "\"g.events-after\"");
    std::fs::write(&config, text).unwrap();
    let mut job = Job::start(&config, &[]);
    let got = read_topic(
        &broker.brokers,
        "g.dispatches",
        1,
        Duration::ZERO,
        Duration::from_secs(60),
    );
    assert!(
        job.log().contains("resuming from checkpoint"),
        "{}",
        job.log()
    );
    job.assert_running();
    let job_log = job.log();
    assert!(job.stop().success());
    let suppressed = read_topic(
        &broker.brokers,
        "g.suppressions",
        1,
        Duration::ZERO,
        Duration::from_secs(2),
    );
    assert_eq!(
        got.len(),
        1,
        "the reminder was not sent; suppressed: {suppressed:?}\n{job_log}"
    );
    let v: serde_json::Value = serde_json::from_str(&got[0].value).unwrap();
    assert_eq!(v["event_key"], "clinic/b-1");
    assert_eq!(v["channel"], "email");
    assert_eq!(v["decision_time"], time::format_rfc3339(due).as_str());
    let sent = time::now_ms();
    assert!(sent >= due, "sent {} ms early", due - sent);
}
