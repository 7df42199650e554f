//! A real Kafka-compatible broker (Tansu, started by scripts/kafka-up.sh,
//! which installs it when missing) and the live job, for integration tests.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::repo;

pub enum Engine {
    Memory,
    Sqlite,
}

/// A broker on a free loopback port, stopped when dropped.
pub struct Broker {
    pub brokers: String,
    pub dir: PathBuf,
    _data: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with `topics` of `partitions` partitions each.
    pub fn start(engine: Engine, partitions: u32, topics: &[String]) -> Broker {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("kafka");
        let out = Command::new(repo().join("scripts/kafka-up.sh"))
            .args([
                "--engine",
                match engine {
                    Engine::Memory => "memory",
                    Engine::Sqlite => "sqlite",
                },
            ])
            .arg("--dir")
            .arg(&dir)
            .args(["--partitions", &partitions.to_string()])
            .args(["--topics", &topics.join(",")])
            .args(["--owner", &std::process::id().to_string()])
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/kafka-up.sh runs");
        assert!(out.status.success(), "kafka-up.sh failed");
        let text = String::from_utf8(out.stdout).unwrap();
        let brokers = text
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BROKERS="))
            .expect("kafka-up.sh prints KAFKA_BROKERS")
            .to_string();
        Broker {
            brokers,
            dir,
            _data: data,
        }
    }

    /// Stops the broker and starts it again on its data and port (the
    /// sqlite engine keeps records and committed offsets).
    pub fn restart(&self) {
        let down = Command::new(repo().join("scripts/kafka-down.sh"))
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(down.success(), "kafka-down.sh failed");
        let up = Command::new(repo().join("scripts/kafka-up.sh"))
            .args(["--engine", "sqlite"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--owner", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .unwrap();
        assert!(up.success(), "kafka-up.sh failed to restart the broker");
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/kafka-down.sh"))
            .arg(&self.dir)
            .status();
    }
}

/// The topics of a job whose topic names start with `prefix`.
pub fn topics(prefix: &str) -> Vec<String> {
    [
        "events",
        "preferences",
        "consent",
        "receipts",
        "erasures",
        "dispatches",
        "suppressions",
        "dead-letters",
        "churn-signals",
    ]
    .iter()
    .map(|t| format!("{prefix}.{t}"))
    .collect()
}

/// Writes a job config for `spec` on `brokers` whose topics start with
/// `prefix`, into `dir/job.toml`.
pub fn job_config(dir: &Path, brokers: &str, spec: &Path, prefix: &str, extra: &str) -> PathBuf {
    let t = |s: &str| format!("{prefix}.{s}");
    let text = format!(
        "spec = {spec:?}\n{extra}\n[kafka]\nbrokers = {brokers:?}\ngroup = {group:?}\n\
         properties = {{ \"fetch.wait.max.ms\" = 10 }}\n\
         [topics]\nevents = {:?}\npreferences = {:?}\nconsent = {:?}\nreceipts = {:?}\n\
         erasures = {:?}\ndispatches = {:?}\nsuppressions = {:?}\ndead_letters = {:?}\n\
         churn_signals = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n",
        t("events"),
        t("preferences"),
        t("consent"),
        t("receipts"),
        t("erasures"),
        t("dispatches"),
        t("suppressions"),
        t("dead-letters"),
        t("churn-signals"),
        spec = spec.display().to_string(),
        group = format!("{prefix}-group"),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn nudgeflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
}

/// `nudgeflow produce` of a fixture into the job's topics.
pub fn produce_fixture(config: &Path, fixture: &Path) {
    let out = nudgeflow()
        .args(["produce", "--config"])
        .arg(config)
        .arg("--fixture")
        .arg(fixture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `nudgeflow run`; killed when dropped.
pub struct Job {
    child: Option<Child>,
    log: PathBuf,
}

impl Job {
    /// Starts `nudgeflow run --config CONFIG ARGS…`, logging into
    /// `dir/run-N.log`.
    pub fn start(config: &Path, args: &[&str]) -> Job {
        Job::start_with_env(config, args, &[])
    }

    /// [`Job::start`] with these environment variables set.
    pub fn start_with_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Job {
        let dir = config.parent().unwrap();
        let n = std::fs::read_dir(dir).unwrap().count();
        let log = dir.join(format!("run-{n}.log"));
        let child = nudgeflow()
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            // NUDGEFLOW_TEST_LOG sets the jobs' log filter (info by default).
            .env(
                "NUDGEFLOW_LOG",
                std::env::var("NUDGEFLOW_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Job {
            child: Some(child),
            log,
        }
    }

    /// Polls `found` every 20 ms until it gives a value; fails with the
    /// job's log if the job exits or a minute passes first.
    fn wait_for<T>(&mut self, what: &str, mut found: impl FnMut(&Job) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(value) = found(self) {
                return value;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{what} within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address of its HTTP endpoints, from its log.
    pub fn http_addr(&mut self) -> String {
        self.wait_for("no HTTP address", |job| {
            job.log()
                .lines()
                .find_map(|l| l.strip_prefix("nudgeflow: http on "))
                .map(|addr| addr.trim().to_string())
        })
    }

    /// Waits until `/readyz` answers 200 (every partition caught up once).
    pub fn wait_ready(&mut self) {
        let addr = self.http_addr();
        self.wait_for("not ready", |_| {
            (super::http::get(&addr, "/readyz", &[]).status == 200).then_some(())
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most a minute) for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        stop_all(std::slice::from_mut(&mut self)).pop().unwrap()
    }

    fn terminate(&self) {
        let child = self.child.as_ref().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits for the job to exit on its own (at most `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the job did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails with the job's log if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the job exited ({status}):\n{}", self.log());
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends SIGTERM to every process of a job, then waits (at most a minute)
/// for their exit statuses: a process of a cluster leaves once all have
/// stopped.
pub fn stop_all(jobs: &mut [Job]) -> Vec<std::process::ExitStatus> {
    for job in jobs.iter() {
        job.terminate();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    jobs.iter_mut()
        .map(|job| {
            let child = job.child.as_mut().unwrap();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!(
                        "the job did not stop within 60 s of SIGTERM:\n{}",
                        job.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .collect()
}

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

pub fn producer(brokers: &str) -> BaseProducer {
    client(brokers)
        .set("linger.ms", "1")
        .create()
        .expect("a producer")
}

/// Sends one message and waits for its acknowledgement.
pub fn send(
    producer: &BaseProducer,
    topic: &str,
    key: Option<&str>,
    value: Option<&[u8]>,
    headers: &[(&str, &str)],
) {
    queue(producer, topic, key, value, headers);
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Queues one message; `producer.flush` waits for it.
pub fn queue(
    producer: &BaseProducer,
    topic: &str,
    key: Option<&str>,
    value: Option<&[u8]>,
    headers: &[(&str, &str)],
) {
    let mut record = BaseRecord::<str, [u8]>::to(topic);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    if !headers.is_empty() {
        let mut h = rdkafka::message::OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(rdkafka::message::Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                producer.poll(Duration::from_millis(10));
                record = r;
            }
            Err((e, _)) => panic!("producing to {topic}: {e}"),
        }
    }
}

/// A message read back.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The value as text (lossy), empty for a null value.
    pub value: String,
    /// The value's bytes; `None` for a null value.
    pub raw: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

/// Reads `topic` from the beginning until it holds at least `n` messages
/// and nothing more arrives for `settle`, or `timeout` passes.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    n: usize,
    settle: Duration,
    timeout: Duration,
) -> Vec<Received> {
    read_topic_until(brokers, topic, timeout, |out, last| {
        out.len() >= n && last.elapsed() >= settle
    })
}

/// Reads `topic` from the beginning, one consumer all along, until
/// `enough(messages, when the last arrived)` holds (asked after every
/// message and every empty poll of 50 ms) or `timeout` passes.
pub fn read_topic_until(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    mut enough: impl FnMut(&[Received], Instant) -> bool,
) -> Vec<Received> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", "nudgeflow-tests-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        // A fetch that cuts a stored batch makes Tansu's memory engine skip
        // the rest of it (README, Tansu): fetch whole batches.
        .set("max.partition.fetch.bytes", "33554432")
        .set("fetch.max.bytes", "67108864")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    while started.elapsed() < timeout && !enough(&out, last) {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                last = Instant::now();
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Received {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    raw: m.payload().map(<[u8]>::to_vec),
                    headers,
                    at: last,
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The offsets `group` has committed on `topic`, by partition.
/// [`read_topic`] of several topics at once, each on its own thread.
pub fn read_topics(
    brokers: &str,
    wanted: &[(String, usize)],
    settle: Duration,
    timeout: Duration,
) -> Vec<Vec<Received>> {
    std::thread::scope(|s| {
        let readers: Vec<_> = wanted
            .iter()
            .map(|(topic, n)| s.spawn(move || read_topic(brokers, topic, *n, settle, timeout)))
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

pub fn committed(brokers: &str, group: &str, topic: &str) -> Vec<(i32, i64)> {
    let consumer: BaseConsumer = client(brokers).set("group.id", group).create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (e.partition(), o)
        })
        .collect()
}

/// The number of messages in each partition of `topic`.
pub fn end_offsets(brokers: &str, topic: &str) -> Vec<(i32, i64)> {
    let consumer: BaseConsumer = client(brokers).create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut out = Vec::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            out.push((p.id(), high));
        }
    }
    out.sort();
    out
}

/// The decision time of an output line: `decision_time` of a dispatch,
/// `time` of a suppression. Times are RFC 3339 with four-digit years in
/// UTC, so they order as strings.
pub fn decided_at(line: &str) -> String {
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
pub fn compare(
    name: &str,
    what: &str,
    got: &[Received],
    expected: &[String],
    now: &str,
) -> Option<String> {
    let got = sorted_values(got);
    let got_set: HashSet<&String> = got.iter().collect();
    let expected_set: HashSet<&String> = expected.iter().collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| decided_at(l).as_str() <= now && !got_set.contains(l))
        .take(20)
        .collect();
    let extra: Vec<&String> = got
        .iter()
        .filter(|l| !expected_set.contains(l))
        .take(20)
        .collect();
    let twice = got.len() - got_set.len();
    if missing.is_empty() && extra.is_empty() && twice == 0 {
        return None;
    }
    Some(format!(
        "{name}: {what}: missing (at most 20 shown): {missing:#?}\nnot expected: {extra:#?}\n{twice} repeated"
    ))
}

pub fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

pub fn sorted_values(messages: &[Received]) -> Vec<String> {
    let mut v: Vec<String> = messages.iter().map(|m| m.value.clone()).collect();
    v.sort();
    v
}
