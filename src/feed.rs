//! `nudgeflow produce` and `nudgeflow tail`: load a fixture into a job's
//! input topics, and watch an output topic.
//!
//! `produce` sends each line of a fixture file, in file order, to its
//! stream's topic, keyed as DESIGN.md §7 says (the user; a receipt's
//! dispatch id). A line that is not JSON, or lacks the key field, is sent
//! without a key, as it is: the job makes it a dead letter. Partitions are
//! chosen by key (librdkafka's default partitioner), so each user's records
//! stay in file order, which is time order in a fixture.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::job::JobConfig;
use crate::record::StreamKind;
use crate::source::kafka::{Logged, check_topic, client_config};

/// The key of a record line: the user, or a receipt's dispatch id.
fn key_of(stream: StreamKind, line: &str) -> Option<String> {
    let field = match stream {
        StreamKind::Events => "subject",
        StreamKind::Receipts => "dispatch_id",
        _ => "user",
    };
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get(field)?.as_str().map(str::to_string)
}

/// The producer's context: librdkafka's log lines, and the first of any
/// records the broker did not take.
#[derive(Default)]
struct Feeding {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Feeding {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::kafka::log(level, fac, message);
    }
}

impl ProducerContext for Feeding {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| format!("{} partition {}: {e}", m.topic(), m.partition()));
        }
    }
}

/// Sends every record of `fixture` to the job's input topics; `rate`
/// limits records per second. Returns the number sent, once the broker
/// has acknowledged every one.
pub fn produce(job: &JobConfig, fixture: &Path, rate: Option<f64>) -> anyhow::Result<u64> {
    let producer: BaseProducer<Feeding> = client_config(job)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create_with_context(Feeding::default())
        .context("cannot create the Kafka producer")?;
    // Every topic first, so that a missing one sends nothing at all.
    for stream in StreamKind::ALL {
        if fixture.join(stream.file_name()).exists() {
            check_topic(producer.client(), job.topics.input(stream))?;
        }
    }
    let started = Instant::now();
    let mut sent = 0u64;
    for stream in StreamKind::ALL {
        let path = fixture.join(stream.file_name());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let topic = job.topics.input(stream);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let key = key_of(stream, line);
            let mut record = BaseRecord::<str, str>::to(topic).payload(line);
            if let Some(k) = key.as_deref() {
                record = record.key(k);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        if !matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ) {
                            anyhow::bail!("cannot produce to {topic}: {e}");
                        }
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            producer.poll(Duration::ZERO);
            sent += 1;
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(sent as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("the broker did not acknowledge every record within 60 s")?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = producer
            .context()
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        anyhow::bail!(
            "{failed} of {sent} records were not produced; the first: {}",
            first.unwrap_or_default()
        );
    }
    Ok(sent)
}

/// Prints the values of an output topic (`dispatches`, `suppressions`,
/// `dead_letters`, or a topic name), one a line, as they arrive; from the
/// beginning when `from_beginning`, else from the end. Stops after `limit`
/// messages, if given.
pub fn tail(
    job: &JobConfig,
    topic: &str,
    from_beginning: bool,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let topic = match topic {
        "dispatches" => job.topics.dispatches.as_str(),
        "suppressions" => job.topics.suppressions.as_str(),
        "dead_letters" | "dead-letters" => job.topics.dead_letters.as_str(),
        other => other,
    };
    let consumer: BaseConsumer<Logged> = client_config(job)
        .set("group.id", format!("{}-tail", job.kafka.group))
        .set("enable.auto.commit", "false")
        .create_with_context(Logged)
        .context("cannot create the Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic:?} does not exist");
    let mut tpl = TopicPartitionList::new();
    let start = if from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    for p in partitions {
        tpl.add_partition_offset(topic, p, start)?;
    }
    consumer.assign(&tpl)?;
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    while limit.is_none_or(|l| n < l) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let written = out
                    .write_all(m.payload().unwrap_or_default())
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush());
                match written {
                    Ok(()) => n += 1,
                    // The reader has gone (`tail | head`): done.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "kafka"),
            None => {}
        }
    }
    Ok(())
}
