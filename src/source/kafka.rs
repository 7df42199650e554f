//! The Kafka source of `nudgeflow run` (DESIGN.md §7): each worker reads
//! its own partitions of every input topic and ingests their records with
//! `crate::ingest`, as the fixture source does with files.
//!
//! - input: partition p of each input topic, for worker p mod W (W: every
//!   worker of every process), assigned directly (no group rebalancing),
//!   from the group's committed offset, else from `[kafka] start`.
//! - output: [`SourceStreams`] (arrivals, profile upserts, reports: dead
//!   letters with topic, partition and offset, and counts).
//! - time: records are sent at the worker's capability, the event time it
//!   has released so far. It releases up to the least watermark of its
//!   partitions that are not idle; a partition is idle once it is caught up
//!   (librdkafka reported its end, at first not before the offset the
//!   partition ended at when the job started) and has delivered nothing for
//!   `idle_timeout`; when all are idle, the worker releases up to the wall
//!   clock minus `allowed_lateness` minus `idle_timeout`. A worker with no
//!   partition at all holds nothing back. The capability moves at most once
//!   per activation, never per record.
//! - checkpoints: when the worker releases T it notes every partition's
//!   position and watermark ([`SourcePositions`]); a checkpoint at T takes
//!   those of the worker's first release at or after T. Once the
//!   checkpoint is complete and every output before T is acknowledged by
//!   the broker (the `acked` probe, fed by `sink::kafka`), its offsets are
//!   committed to the group. A restarted job reads each partition from the
//!   checkpoint's offset ([`Resume`]), its watermark restored.
//! - stop: the source stops reading and holds what it has released; it
//!   finishes once the stop's checkpoint (`checkpoint::clock`) is settled.
//!
//! Message formats: the value is a §2 record; events may instead be in the
//! CloudEvents binary mode (`ce_*` headers, the value being `data`), which
//! is rebuilt into the structured JSON and parsed like it. A null value on
//! the preferences topic deletes the preferences of the user the key names,
//! at the message's timestamp. Any other null or empty value is bad input.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Outputs;
use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::probe::Handle;
use timely::dataflow::{Scope, Stream};

use crate::checkpoint::positions::{PartitionPosition, SourcePositions};
use crate::ingest::{Ingest, Ingested, Keep, Origin, Watermark};
use crate::job::{JobConfig, Start};
use crate::ops::{Health, Metrics};
use crate::record::StreamKind;
use crate::record::output::Position;
use crate::source::SourceStreams;
use crate::spec::Spec;
use crate::time::{Time, format_rfc3339};

/// Records a worker reads from one partition per activation, so that one
/// busy partition does not starve the others or the rest of the dataflow.
const BATCH: usize = 4096;

/// What the workers of a process share with `run` and with each other.
pub struct Control {
    /// Set by SIGTERM/SIGINT: stop reading, commit what is acknowledged,
    /// finish.
    pub stop: Arc<AtomicBool>,
    /// Workers of this process whose sources have finished.
    pub finished: AtomicUsize,
    /// Workers of this process not yet caught up on every partition.
    pub not_ready: AtomicUsize,
    /// Set by a worker whose stop could not wait for every output to be
    /// acknowledged, or whose last commit failed: `run` then fails.
    pub unclean: AtomicBool,
    pub metrics: Metrics,
    pub health: Health,
}

impl Control {
    pub fn new(workers: usize, metrics: Metrics, health: Health) -> Control {
        Control {
            stop: Arc::new(AtomicBool::new(false)),
            finished: AtomicUsize::new(0),
            not_ready: AtomicUsize::new(workers),
            unclean: AtomicBool::new(false),
            metrics,
            health,
        }
    }

    fn caught_up_once(&self) {
        if self.not_ready.fetch_sub(1, Ordering::SeqCst) == 1 {
            tracing::info!("every partition has been caught up once: ready");
            self.health.set_ready();
        }
    }
}

/// The librdkafka client settings shared by the consumers and the
/// producer: the brokers, then the job's properties (which may override
/// anything nudgeflow does not own, see `job`).
pub fn client_config(job: &JobConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &job.kafka.brokers);
    for (k, v) in &job.kafka.properties {
        config.set(k, v);
    }
    config
}

/// Logs librdkafka's messages with `tracing`, and publishes the consumer
/// lag of each partition from its statistics.
pub struct SourceContext {
    metrics: Metrics,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.consumer_lag(topic, *p, part.consumer_lag);
                }
            }
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::kafka::log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news (it may become idle), not an error.
        if !matches!(error, KafkaError::PartitionEOF(_))
            && !matches!(&error, KafkaError::Global(c) if *c == rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            tracing::warn!(%error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for SourceContext {}

/// Fails with a clear message when `topic` is not on the broker (which
/// need not create topics on first use).
pub fn check_topic<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("cannot read the broker's metadata for {topic}"))?;
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
        _ => anyhow::bail!(
            "topic {topic} does not exist on the broker: create it first (scripts/kafka-up.sh --topics)"
        ),
    }
}

/// Checks that the job's output topics exist (the churn-signal topic when
/// the spec computes churn risk), so that a misspelt one stops the job at
/// its start rather than stalling its outputs.
pub fn check_outputs(job: &JobConfig, churn: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let consumer: BaseConsumer<Logged> = client_config(job)
        .create_with_context(Logged)
        .context("cannot create a Kafka client")?;
    let churn = churn.then_some(&job.topics.churn_signals);
    for topic in [
        &job.topics.dispatches,
        &job.topics.suppressions,
        &job.topics.dead_letters,
    ]
    .into_iter()
    .chain(churn)
    {
        check_topic(consumer.client(), topic)
            .with_context(|| format!("{}: [topics]", job.path.display()))?;
    }
    Ok(())
}

/// A consumer context that only sends librdkafka's log lines to [`log`].
pub struct Logged;

impl ClientContext for Logged {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }
}

impl ConsumerContext for Logged {}

/// librdkafka's log lines at their level.
pub fn log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    // `[kafka] properties` go to the consumer and the producers alike, so
    // each warns of the other's properties: that is expected, not news.
    let other_clients = fac == "CONFWARN"
        && (message.contains("is a consumer property and will be ignored by this producer")
            || message.contains("is a producer property and will be ignored by this consumer"));
    let level = if other_clients { L::Debug } else { level };
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", fac, "{message}")
        }
        L::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        L::Notice | L::Info => tracing::info!(target: "librdkafka", fac, "{message}"),
        L::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

type Queue = rdkafka::consumer::base_consumer::PartitionQueue<SourceContext>;

/// One partition this worker reads.
struct Partition {
    stream: StreamKind,
    topic: Arc<str>,
    partition: i32,
    /// `topic/partition`, for messages.
    name: String,
    watermark: Watermark,
    /// librdkafka has reported the end of the partition and nothing has
    /// arrived since.
    caught_up: bool,
    /// It has been caught up at least once (for readiness).
    was_caught_up: bool,
    last_record: Instant,
    /// The offset after the last record read (where it started, before
    /// the first).
    next_offset: Option<i64>,
    /// The partition's end when the job started: a report of the end of
    /// the partition counts once the job has read up to it (a broker may
    /// report the end before serving records it holds), or when no record
    /// came in the [`PREMATURE_END`] after an early report.
    end_at_start: i64,
    early_end: Option<Instant>,
}

/// How long a report of a partition's end before the offset it had at the
/// start is distrusted (offsets may have gaps: then it is the end).
const PREMATURE_END: Duration = Duration::from_secs(5);

impl Partition {
    fn idle(&self, now: Instant, idle_timeout: Duration) -> bool {
        self.caught_up && now.duration_since(self.last_record) >= idle_timeout
    }
}

/// The partitions of each input topic this worker reads; a topic the
/// broker does not know is skipped with a warning (it may be created
/// later, but is read only after a restart).
fn my_partitions(
    consumer: &BaseConsumer<SourceContext>,
    job: &JobConfig,
    index: usize,
    peers: usize,
) -> anyhow::Result<Vec<(StreamKind, String, i32)>> {
    let mut mine = Vec::new();
    for (stream, topic) in job.topics.inputs() {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .with_context(|| {
                format!(
                    "cannot read the metadata of topic {topic:?} from {}",
                    job.kafka.brokers
                )
            })?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            continue;
        };
        if let Some(e) = t.error() {
            tracing::warn!(topic, stream = stream.name(), error = ?e, "input topic unavailable: not read");
            continue;
        }
        for p in t.partitions() {
            if p.id() as usize % peers == index {
                mine.push((stream, topic.to_string(), p.id()));
            }
        }
    }
    Ok(mine)
}

/// Where a restarted job resumes: the checkpoint's time and the
/// positions of every partition then.
#[derive(Clone, Debug)]
pub struct Resume {
    pub time: Time,
    pub positions: Vec<PartitionPosition>,
}

/// What a worker's source shares with the rest of the worker.
pub struct SourceLinks {
    /// Every output before a time is acknowledged (`sink::kafka`).
    pub acked: Handle<Time>,
    /// Every source has finished (probed on `running`).
    pub running_everywhere: Handle<Time>,
    /// Positions at each release, and the checkpoints that hold them.
    pub positions: SourcePositions,
}

/// The Kafka source of one worker; returns its streams and `running`,
/// which carries nothing and whose frontier is the least time every source
/// has released, until each has finished.
pub fn kafka_source<'s>(
    scope: Scope<'s, Time>,
    job: Arc<JobConfig>,
    spec: Arc<Spec>,
    links: SourceLinks,
    resume: Option<Arc<Resume>>,
    control: Arc<Control>,
) -> anyhow::Result<(SourceStreams<'s>, Stream<'s, Time, Vec<()>>)> {
    let SourceLinks {
        acked,
        running_everywhere,
        positions: checkpoint_positions,
    } = links;
    let (index, peers) = (scope.index(), scope.peers());
    let mut builder = OperatorBuilder::new("KafkaSource".to_owned(), scope);
    let info = builder.operator_info();
    let (mut outputs, streams) = Outputs::new(&mut builder);
    // A fourth output that carries nothing: its capability is dropped when
    // the source has finished (the others are held), so its frontier is
    // empty once every source of every process has finished, which is
    // when a process may leave (its operators must go on deciding what
    // the others still release until then).
    let (running_out, running) = builder.new_output::<Vec<()>>();
    let mut running_out = timely::dataflow::operators::generic::OutputBuilder::from(running_out);
    let running = running.probe_with(&running_everywhere);

    let mut config = client_config(&job);
    config
        .set("group.id", &job.kafka.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "1000")
        .set("auto.offset.reset", job.kafka.start.as_str());
    let context = SourceContext {
        metrics: control.metrics.clone(),
    };
    let mut consumer: BaseConsumer<SourceContext> = config
        .create_with_context(context)
        .context("cannot create the Kafka consumer")?;
    let activator = Arc::new(scope.worker().sync_activator_for(info.address.to_vec()));
    let wake = activator.clone();
    consumer.set_nonempty_callback(move || {
        let _ = wake.activate();
    });
    let consumer = Arc::new(consumer);
    let mine = my_partitions(&consumer, &job, index, peers)?;
    // A checkpoint's position, else the group's committed offset.
    let resumed = |topic: &str, p: i32| {
        resume.as_ref().and_then(|r| {
            r.positions
                .iter()
                .find(|q| q.topic == topic && q.partition == p)
        })
    };
    // Every partition starts at a concrete offset, so that a checkpoint
    // taken before its first record still says where it stood (a resume
    // from it must not move to "latest", nor to an offset a newer
    // checkpoint committed).
    let mut starts = Vec::with_capacity(mine.len());
    let mut ends = Vec::with_capacity(mine.len());
    for (_, topic, p) in &mine {
        let offset = match resumed(topic, *p).and_then(|q| q.offset) {
            Some(o) => o,
            None => start_offset(&consumer, topic, *p, job.kafka.start)?,
        };
        let (_, end) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(30))
            .with_context(|| format!("cannot read the offsets of {topic}/{p}"))?;
        tracing::debug!(partition = %format!("{topic}/{p}"), offset, end, "starting");
        starts.push(offset);
        ends.push(end);
    }
    let mut assignment = TopicPartitionList::new();
    for ((_, topic, p), offset) in mine.iter().zip(&starts) {
        assignment
            .add_partition_offset(topic, *p, Offset::Offset(*offset))
            .context("cannot build the assignment")?;
    }
    consumer
        .assign(&assignment)
        .context("cannot assign the partitions")?;
    let allowed_lateness = spec.allowed_lateness;
    let now = Instant::now();
    let mut partitions = Vec::new();
    let mut queues: Vec<Queue> = Vec::new();
    for (((stream, topic, p), offset), end) in mine.into_iter().zip(starts).zip(ends) {
        let mut queue = consumer
            .split_partition_queue(&topic, p)
            .with_context(|| format!("cannot read partition {topic}/{p}"))?;
        let wake = activator.clone();
        queue.set_nonempty_callback(move || {
            let _ = wake.activate();
        });
        let at = resumed(&topic, p);
        partitions.push(Partition {
            stream,
            name: format!("{topic}/{p}"),
            partition: p,
            watermark: Watermark::after(allowed_lateness, at.and_then(|q| q.seen)),
            caught_up: false,
            was_caught_up: false,
            last_record: now,
            next_offset: Some(offset),
            end_at_start: end,
            early_end: None,
            topic: topic.into(),
        });
        queues.push(queue);
    }
    tracing::info!(
        worker = index,
        partitions = %partitions.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(","),
        "reading"
    );
    let resumed_release = resume.as_ref().map(|r| {
        partitions
            .iter()
            .filter_map(|p| resumed(&p.topic, p.partition).and_then(|q| q.released))
            .min()
            .unwrap_or(r.time)
            .max(r.time)
    });
    let idle_timeout = job.idle_timeout;
    let tick = (idle_timeout / 2).clamp(Duration::from_millis(5), Duration::from_millis(100));

    builder.build(move |mut capabilities| {
        let activator = scope.activator_for(info.address.clone());
        let mut released = Time::MIN;
        // A restarted job goes on from the checkpoint's time, or from what
        // its partitions' workers had released then, which judged the
        // records after them late or not.
        if let Some(resumed) = resumed_release
            && !partitions.is_empty()
        {
            released = resumed;
            for cap in capabilities.iter_mut() {
                cap.downgrade(&released);
            }
            checkpoint_positions.note(released, positions(&partitions));
        }
        let mut capabilities = Some(capabilities);
        if !partitions.is_empty() {
            checkpoint_positions.set_reads();
        }
        let mut ingest = Ingest::new(spec, Keep::All, peers);
        let mut ingested = Ingested::default();
        let mut ready = partitions.is_empty();
        if ready {
            control.caught_up_once();
        }
        // The last offsets committed, so as not to commit them again.
        let mut committed: Vec<PartitionPosition> = Vec::new();
        let mut scratch = Vec::new();
        let mut stopping_since: Option<Instant> = None;
        let mut announced = false;

        move |_frontiers| {
            let now = Instant::now();
            let stopping = control.stop.load(Ordering::Relaxed);
            let Some(caps) = capabilities.as_mut() else {
                return; // finished
            };
            // A stop of this process stops the whole job: tell worker 0's
            // checkpoint clock, which takes the stop's checkpoint.
            if stopping && !announced {
                announced = true;
                running_out.activate().session(&caps[3]).give(());
            }
            // Serve the consumer's own queue (errors, statistics).
            while let Some(result) = consumer.poll(Duration::ZERO) {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "kafka consumer");
                }
            }
            let mut more = false;
            if !stopping {
                for (part, queue) in partitions.iter_mut().zip(&queues) {
                    let mut n = 0;
                    while n < BATCH {
                        let Some(result) = queue.poll(Duration::ZERO) else {
                            break;
                        };
                        match result {
                            Ok(message) => {
                                n += 1;
                                part.caught_up = false;
                                part.early_end = None;
                                part.last_record = now;
                                part.next_offset = Some(message.offset() + 1);
                                read(
                                    &mut ingest,
                                    part,
                                    &message,
                                    released,
                                    &mut scratch,
                                    &mut ingested,
                                );
                            }
                            Err(KafkaError::PartitionEOF(_)) => {
                                let read_all =
                                    part.next_offset.is_some_and(|o| o >= part.end_at_start);
                                if !read_all && !part.was_caught_up {
                                    part.early_end.get_or_insert(now);
                                    break;
                                }
                                if !part.was_caught_up {
                                    tracing::debug!(partition = %part.name, "caught up");
                                }
                                part.caught_up = true;
                                part.was_caught_up = true;
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(partition = %part.name, error = %e, "kafka fetch");
                                break;
                            }
                        }
                    }
                    if n > 0 {
                        control.metrics.record_in(&part.topic, n as u64);
                    }
                    // An early end with nothing since: the offsets had a gap.
                    if part
                        .early_end
                        .is_some_and(|t| now.duration_since(t) >= PREMATURE_END)
                    {
                        part.early_end = None;
                        part.caught_up = true;
                        part.was_caught_up = true;
                    }
                    more |= n == BATCH;
                }
            }
            outputs.send(caps, &mut ingested);
            if !ready && partitions.iter().all(|p| p.was_caught_up) {
                ready = true;
                control.caught_up_once();
            }

            // Release event time.
            let wall = crate::time::now_ms();
            if !stopping {
                let active = partitions.iter().filter(|p| !p.idle(now, idle_timeout));
                let target = if partitions.is_empty() {
                    Time::MAX
                } else {
                    active
                        .map(|p| p.watermark.get().unwrap_or(Time::MIN))
                        .min()
                        .unwrap_or_else(|| {
                            wall - allowed_lateness - idle_timeout.as_millis() as Time
                        })
                };
                if target > released {
                    released = target;
                    // (A worker without partitions holds its capabilities
                    // at the end of time, to announce a stop.)
                    for cap in caps.iter_mut() {
                        cap.downgrade(&target);
                    }
                    checkpoint_positions.note(target, positions(&partitions));
                }
                if released > Time::MIN {
                    control
                        .metrics
                        .watermark_lag(index, wall.saturating_sub(released).max(0) as f64 / 1000.0);
                }
            }

            // Commit the positions of each complete checkpoint once every
            // output before its time is acknowledged; at a stop, finish
            // once the stop's checkpoint is settled.
            let mut finished = false;
            for taken in checkpoint_positions.settled(|t| !acked.less_than(&t)) {
                if taken.complete == Some(true) && taken.positions != committed {
                    let mode = if taken.last { CommitMode::Sync } else { CommitMode::Async };
                    let tpl = commit_list(&taken.positions);
                    if tpl.count() > 0
                        && let Err(e) = consumer.commit(&tpl, mode)
                    {
                        tracing::warn!(error = %e, "cannot commit offsets");
                        if taken.last {
                            control.unclean.store(true, Ordering::SeqCst);
                        }
                    }
                    committed = taken.positions;
                }
                if taken.last {
                    // Before any release there is nothing to keep.
                    if taken.complete != Some(true) && taken.time != Time::MIN {
                        tracing::error!("the checkpoint at the stop is not complete: a restart goes on from the one before");
                        control.unclean.store(true, Ordering::SeqCst);
                    }
                    finished = true;
                }
            }
            if stopping {
                let since = *stopping_since.get_or_insert(now);
                if !finished && now.duration_since(since) > Duration::from_secs(30) {
                    tracing::error!(
                        "no checkpoint within 30 s of the stop: a restart goes on from the last complete one"
                    );
                    control.unclean.store(true, Ordering::SeqCst);
                    finished = true;
                }
            }
            if finished {
                // Holding the capabilities keeps pending decisions
                // undecided: they are not complete.
                let mut caps = capabilities.take().expect("capabilities");
                drop(caps.pop()); // the `running` output's
                std::mem::forget(caps);
                control.stop.store(true, Ordering::SeqCst);
                control.finished.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if more {
                activator.activate();
            } else {
                activator.activate_after(tick);
            }
        }
    });
    Ok((streams, running))
}

/// Where a partition without a checkpointed position starts: the group's
/// committed offset, else its first or next offset (`[kafka] start`).
fn start_offset(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    partition: i32,
    start: Start,
) -> anyhow::Result<i64> {
    let timeout = Duration::from_secs(30);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .with_context(|| format!("cannot read the committed offset of {topic}/{partition}"))?;
    if let Some(Offset::Offset(o)) = committed
        .find_partition(topic, partition)
        .map(|e| e.offset())
    {
        return Ok(o);
    }
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .with_context(|| format!("cannot read the offsets of {topic}/{partition}"))?;
    Ok(match start {
        Start::Earliest => low,
        Start::Latest => high,
    })
}

/// Where each partition's reading stands.
fn positions(partitions: &[Partition]) -> Vec<PartitionPosition> {
    partitions
        .iter()
        .map(|p| PartitionPosition {
            topic: p.topic.to_string(),
            partition: p.partition,
            offset: p.next_offset,
            seen: p.watermark.seen(),
            released: None,
        })
        .collect()
}

/// The offsets to commit: each partition's next offset, where known.
fn commit_list(positions: &[PartitionPosition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in positions {
        if let Some(o) = p.offset {
            let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(o));
        }
    }
    tpl
}

/// Ingests one message: its value, a CloudEvents binary-mode event rebuilt
/// from its headers, or a preferences tombstone.
fn read(
    ingest: &mut Ingest,
    part: &mut Partition,
    message: &BorrowedMessage<'_>,
    released: Time,
    scratch: &mut Vec<u8>,
    out: &mut Ingested,
) {
    let at = || Position::Kafka {
        topic: part.topic.to_string(),
        partition: part.partition,
        offset: message.offset(),
    };
    let origin = Origin {
        stream: part.stream,
        partition: &part.name,
        at: &at,
    };
    let seq = message.offset() as u64;
    let value = message.payload();
    let bytes: &[u8] = match (part.stream, value) {
        (StreamKind::Events, v) if binary_mode(message) => {
            scratch.clear();
            match rebuild_event(message, v.unwrap_or_default(), scratch) {
                Ok(()) => scratch,
                Err(reason) => {
                    ingest.dead_letter(&origin, v.unwrap_or_default(), reason, out);
                    return;
                }
            }
        }
        (StreamKind::Preferences, None) => {
            scratch.clear();
            match tombstone(message, scratch) {
                Ok(()) => scratch,
                Err(reason) => {
                    ingest.dead_letter(&origin, &[], reason, out);
                    return;
                }
            }
        }
        (_, None) | (_, Some([])) => {
            let what = if value.is_none() { "null" } else { "empty" };
            ingest.dead_letter(
                &origin,
                &[],
                format!(
                    "the message value is {what}: a {} record was expected",
                    part.stream.name()
                ),
                out,
            );
            return;
        }
        (_, Some(v)) => v,
    };
    ingest.ingest(&origin, bytes, seq, &mut part.watermark, released, out);
}

fn header<'m>(message: &'m BorrowedMessage<'_>, name: &str) -> Option<&'m [u8]> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

/// An event in the CloudEvents Kafka binding's binary mode carries
/// `ce_specversion`.
fn binary_mode(message: &BorrowedMessage<'_>) -> bool {
    header(message, "ce_specversion").is_some()
}

/// Writes the structured JSON of a binary-mode event into `out`: its
/// `ce_*` headers as attributes, the value as `data` (none when empty).
fn rebuild_event(
    message: &BorrowedMessage<'_>,
    value: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.push(b'{');
    let mut first = true;
    for name in ["specversion", "id", "source", "type", "time", "subject"] {
        let Some(v) = header(message, &format!("ce_{name}")) else {
            continue;
        };
        let v = std::str::from_utf8(v)
            .map_err(|_| format!("binary-mode event: header ce_{name} is not UTF-8"))?;
        if !first {
            out.push(b',');
        }
        first = false;
        crate::record::output::push_json_str(out, name);
        out.push(b':');
        crate::record::output::push_json_str(out, v);
    }
    if !value.is_empty() {
        serde_json::from_slice::<&serde_json::value::RawValue>(value).map_err(|e| {
            format!("binary-mode event: the value (the event's data) is not JSON: {e}")
        })?;
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(value);
    }
    out.push(b'}');
    Ok(())
}

/// Writes the preferences record a tombstone stands for: the key's user's
/// preferences deleted at the message's timestamp.
fn tombstone(message: &BorrowedMessage<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    let key = message
        .key()
        .ok_or("a preferences tombstone (null value) without a key: no user to delete")?;
    let user = std::str::from_utf8(key)
        .map_err(|_| "a preferences tombstone whose key is not UTF-8".to_string())?;
    let time = message
        .timestamp()
        .to_millis()
        .ok_or("a preferences tombstone without a timestamp")?;
    if !(crate::time::MIN_TIME..=crate::time::MAX_TIME).contains(&time) {
        return Err(format!(
            "a preferences tombstone whose timestamp ({time} ms) is outside the accepted times (years 0000 to 9999)"
        ));
    }
    out.extend_from_slice(b"{\"user\":");
    crate::record::output::push_json_str(out, user);
    out.extend_from_slice(b",\"time\":");
    crate::record::output::push_json_str(out, &format_rfc3339(time));
    out.extend_from_slice(b",\"deleted\":true}");
    Ok(())
}
