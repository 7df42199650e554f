//! The Kafka side of `scripts/bench-kafka.sh`: a bare rdkafka
//! consume → produce → commit passthrough (the limit nudgeflow's live job
//! is compared with) and an open-loop load generator that measures latency
//! from an event's append to its output being readable.
//!
//! ```text
//! kafka_bench passthrough BROKERS GROUP FROM[,FROM…] TO UNTIL
//! kafka_bench load BROKERS IN OUT RATE SECONDS
//! ```
//!
//! Every client sets `fetch.wait.max.ms` 10, as the job's config does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["passthrough", brokers, group, from, to, until] => {
            passthrough(brokers, group, from, to, until.parse().unwrap())
        }
        ["load", brokers, input, output, rate, seconds] => load(
            brokers,
            input,
            output,
            rate.parse().unwrap(),
            seconds.parse().unwrap(),
        ),
        _ => {
            eprintln!("usage: see the module comment of examples/kafka_bench.rs");
            std::process::exit(2);
        }
    }
}

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

fn consumer(brokers: &str, group: &str) -> BaseConsumer {
    config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        // A fetch that cuts a stored batch makes Tansu's memory engine skip
        // the rest of it: fetch whole batches.
        .set("max.partition.fetch.bytes", "33554432")
        .set("fetch.max.bytes", "67108864")
        .create()
        .unwrap()
}

/// Assigns every partition of `topics` at `offset`.
fn assign_all(consumer: &BaseConsumer, topics: &str, offset: Offset) {
    let mut tpl = TopicPartitionList::new();
    for topic in topics.split(',') {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), offset).unwrap();
            }
        }
    }
    consumer.assign(&tpl).unwrap();
}

/// Counts delivery reports; the load generator also notes when each event
/// was acknowledged (appended).
struct Acked {
    count: AtomicU64,
    appended: Option<Mutex<HashMap<u64, Instant>>>,
}

struct Ctx(Arc<Acked>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<u64>) {
        match result {
            Ok(_) => {
                if let Some(appended) = &self.0.appended {
                    appended.lock().unwrap().insert(*id, Instant::now());
                }
                self.0.count.fetch_add(1, Ordering::Release);
            }
            Err((e, _)) => panic!("produce failed: {e}"),
        }
    }
}

fn producer(brokers: &str, acked: Arc<Acked>) -> ThreadedProducer<Ctx> {
    config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create_with_context(Ctx(acked))
        .unwrap()
}

/// Sends, waiting while librdkafka's queue is full.
fn send(producer: &ThreadedProducer<Ctx>, mut record: BaseRecord<'_, [u8], [u8], Box<u64>>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    }
}

/// Reads `from` from the beginning, produces every record to `to` (same
/// key and value), and commits the positions whose records are all
/// acknowledged, every 100 ms, until `until` records are acknowledged.
fn passthrough(brokers: &str, group: &str, from: &str, to: &str, until: u64) {
    let consumer = consumer(brokers, group);
    assign_all(&consumer, from, Offset::Beginning);
    let acked = Arc::new(Acked {
        count: AtomicU64::new(0),
        appended: None,
    });
    let producer = producer(brokers, acked.clone());
    let topics: Vec<&str> = from.split(',').collect();
    let started = Instant::now();
    let mut sent = 0u64;
    // Next offset by (topic index, partition).
    let mut positions: HashMap<(usize, i32), i64> = HashMap::new();
    let positions_list = |positions: &HashMap<(usize, i32), i64>| {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in positions {
            tpl.add_partition_offset(topics[*t], *p, Offset::Offset(*o))
                .unwrap();
        }
        tpl
    };
    let mut noted: Vec<(u64, TopicPartitionList)> = Vec::new();
    let mut last_note = Instant::now();
    while acked.count.load(Ordering::Acquire) < until {
        if let Some(result) = consumer.poll(Duration::from_millis(1)) {
            let m = result.unwrap();
            let mut record = BaseRecord::with_opaque_to(to, Box::new(sent));
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(v) = m.payload() {
                record = record.payload(v);
            }
            send(&producer, record);
            sent += 1;
            let t = topics.iter().position(|t| *t == m.topic()).unwrap();
            positions.insert((t, m.partition()), m.offset() + 1);
        }
        if last_note.elapsed() >= Duration::from_millis(100) {
            last_note = Instant::now();
            noted.push((sent, positions_list(&positions)));
            let done = acked.count.load(Ordering::Acquire);
            if let Some(i) = noted.iter().rposition(|(n, _)| *n <= done) {
                let (_, tpl) = noted.drain(..=i).last().unwrap();
                consumer.commit(&tpl, CommitMode::Async).unwrap();
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    consumer
        .commit(&positions_list(&positions), CommitMode::Sync)
        .unwrap();
    println!(
        "passthrough {until} records {elapsed:.2} s {:.0} records/s",
        until as f64 / elapsed
    );
}

/// Sends `rate` events a second for `seconds` to `input` (open loop: on a
/// schedule, whatever the outputs do), each an event of type `bench.ping`
/// for one of 100k users, its time the wall clock, its id its number; reads
/// `output` from its end and matches each output to its event by that
/// number (a dispatch's `event_key`, or the passthrough's copy). Prints the
/// latency from the event's acknowledgement by the broker to its output
/// being read, over all but the first second.
fn load(brokers: &str, input: &str, output: &str, rate: f64, seconds: f64) {
    let acked = Arc::new(Acked {
        count: AtomicU64::new(0),
        appended: Some(Mutex::new(HashMap::new())),
    });
    let producer = producer(brokers, acked.clone());
    let consumer = consumer(brokers, "kafka-bench-load");
    assign_all(&consumer, output, Offset::End);
    // Let the assignment settle at the current end before sending.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(2) {
        consumer.poll(Duration::from_millis(50));
    }
    let total = (rate * seconds) as u64;
    let reader = std::thread::spawn(move || {
        let mut seen: HashMap<u64, Instant> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs_f64(seconds + 30.0);
        while (seen.len() as u64) < total && Instant::now() < deadline {
            if let Some(result) = consumer.poll(Duration::from_millis(5)) {
                let m = result.unwrap();
                let now = Instant::now();
                let value = m.payload().unwrap_or_default();
                if let Some(id) = ping_id(value) {
                    seen.entry(id).or_insert(now);
                }
            }
        }
        seen
    });
    let started = Instant::now();
    let base = nudgeflow::time::now_ms();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let t = base + started.elapsed().as_millis() as i64;
        let user = format!("u-{}", i % 100_000);
        let value = format!(
            r#"{{"specversion":"1.0","id":"p{i}","source":"bench","type":"bench.ping","time":"{}","subject":"{user}"}}"#,
            nudgeflow::time::format_rfc3339(t)
        );
        let record = BaseRecord::with_opaque_to(input, Box::new(i))
            .key(user.as_bytes())
            .payload(value.as_bytes());
        send(&producer, record);
    }
    let send_seconds = started.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(30)).unwrap();
    let seen = reader.join().unwrap();
    let appended = acked.appended.as_ref().unwrap().lock().unwrap();
    let warm = (rate as u64).min(total / 4);
    let mut latencies: Vec<f64> = (warm..total)
        .filter_map(|i| {
            let a = appended.get(&i)?;
            let s = seen.get(&i)?;
            Some(s.saturating_duration_since(*a).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let missing = (total - warm) as usize - latencies.len();
    println!(
        "load sent {total} in {send_seconds:.1} s ({:.0}/s); measured {} missing {missing}; p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
        total as f64 / send_seconds,
        latencies.len(),
        q(0.5),
        q(0.99),
        q(0.999),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
}

/// The event number in an output: `"event_key":"bench/pN"` in a dispatch,
/// `"id":"pN"` in a copy of the event.
fn ping_id(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let start = text
        .find("\"bench/p")
        .map(|i| i + 8)
        .or_else(|| text.find("\"id\":\"p").map(|i| i + 7))?;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
