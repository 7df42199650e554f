//! The Kafka sink of `nudgeflow run` (DESIGN.md §7): every output record
//! is one message on its topic.
//!
//! - input: the worker's decisions and the source's reports (dead letters,
//!   counts), each batch at a timely time t.
//! - output: dispatches, suppressions and churn signals keyed by user (dispatches with the
//!   `idempotency-key`, `nudgeflow-channel` and `nudgeflow-rule` headers),
//!   dead letters keyed by their partition (`topic/partition`); and an
//!   empty timely stream whose frontier is "every output before t is
//!   acknowledged by the broker": the sink holds a capability at t while
//!   any message of t is unacknowledged. The source commits offsets
//!   behind that frontier.
//! - delivery: one idempotent producer per worker, `acks=all`. A message
//!   the broker does not take (librdkafka gave up, or its queue is full) is
//!   counted and sent again, never dropped.
//! - channel sinks (`sink::channels`, §9): once a dispatch is sent to the
//!   dispatches topic, its channel's route delivers it too: a copy on
//!   another topic (same key and headers), or a request by the channel's
//!   HTTP sink, whose outcome comes back here and is written as a receipt
//!   to the receipts topic, keyed by dispatch id.
//! - acknowledgement: a dispatch's output is acknowledged once its message
//!   is, and its copy if any, and, for an HTTP channel, once its outcome is
//!   settled and its receipt (if one is written) acknowledged: the HTTP
//!   delivery counts as one pending output of the dispatch's time, handed
//!   over to its receipt's message when there is one. So neither offsets
//!   nor checkpoints pass a dispatch whose request a crash could lose; after
//!   a crash it is decided and requested again, with the same key.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::probe::{Handle, Probe};
use timely::scheduling::SyncActivator;

use crate::job::JobConfig;
use crate::ops::Metrics;
use crate::record::output::Decision;
use crate::sink::channels::{ChannelSinks, Route};
use crate::sink::http::encode::{Receipt, Status};
use crate::sink::http::{Outcome, Request};
use crate::source::Report;
use crate::spec::Spec;
use crate::time::Time;

/// The output topics are indexed: these first, then the channels' copy
/// topics.
const DISPATCHES: usize = 0;
const SUPPRESSIONS: usize = 1;
const DEAD_LETTERS: usize = 2;
const RECEIPTS: usize = 3;
const CHURN_SIGNALS: usize = 4;
const COPIES: usize = 5;

/// What a message carries through librdkafka back to its delivery report.
struct Sent {
    time: Time,
    /// Its topic's index.
    out: usize,
    /// A dispatch's decision time, for the end-to-end latency.
    due: Option<Time>,
}

/// A message to send again.
struct Retry {
    sent: Box<Sent>,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// Shared by the sink and its producer's delivery reports.
struct Acks {
    /// Unacknowledged outputs per timely time: messages, and HTTP
    /// deliveries not yet settled.
    pending: Mutex<BTreeMap<Time, usize>>,
    retries: Mutex<Vec<Retry>>,
    /// HTTP outcomes to write, each with its dispatch's time and channel.
    settled: Mutex<Vec<(Time, &'static str, Outcome)>>,
    activator: OnceLock<SyncActivator>,
    /// Indexed as [`DISPATCHES`], [`SUPPRESSIONS`], … .
    topics: Vec<String>,
    metrics: Metrics,
    /// The job's stop flag.
    stop: Arc<AtomicBool>,
}

impl Acks {
    fn wake(&self) {
        if let Some(a) = self.activator.get() {
            let _ = a.activate();
        }
    }

    /// One output of `time` is acknowledged; wakes the sink when it was
    /// the time's last.
    fn acknowledged(&self, time: Time) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = pending.get_mut(&time).expect("a pending time");
        *n -= 1;
        if *n == 0 {
            pending.remove(&time);
            drop(pending);
            self.wake();
        }
    }
}

struct SinkContext(Arc<Acks>);

impl ClientContext for SinkContext {
    fn stats(&self, _: rdkafka::statistics::Statistics) {}

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::kafka::log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka producer error");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        let acks = &self.0;
        let topic = &acks.topics[sent.out];
        match result {
            Ok(_) => {
                acks.metrics.record_out(topic, 1);
                if let Some(due) = sent.due {
                    let lag = (crate::time::now_ms() - due).max(0);
                    acks.metrics.end_to_end_latency(lag as f64 / 1000.0);
                }
                acks.acknowledged(sent.time);
            }
            Err((error, message)) => {
                acks.metrics.produce_error(topic);
                tracing::warn!(%error, topic, "produce failed: sending again");
                let headers = message.headers().map(|h| {
                    use rdkafka::message::Headers;
                    let mut owned = OwnedHeaders::new();
                    for h in h.iter() {
                        owned = owned.insert(Header {
                            key: h.key,
                            value: h.value,
                        });
                    }
                    owned
                });
                acks.retries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Retry {
                        sent,
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().unwrap_or_default().to_vec(),
                        headers,
                    });
                acks.wake();
            }
        }
    }
}

/// The most of a bad record a dead letter holds: JSON escaping (or base64)
/// of that many bytes stays within librdkafka's default message.max.bytes
/// (1 MB), whatever the record is.
const DEAD_LETTER_RECORD_LIMIT: usize = 128 * 1024;

/// Sends one message, waiting while librdkafka's queue is full. At the
/// stop it gives up on a message the producer refuses (too large, say):
/// that message stays unacknowledged, so the offsets before it are not
/// committed and `run` exits non-zero.
/// Sends a receipt the job writes (an HTTP outcome, an inbox placement)
/// to the receipts topic, keyed by its dispatch id, as an output of `time`.
fn send_receipt(
    producer: &ThreadedProducer<SinkContext>,
    acks: &Acks,
    time: Time,
    dispatch_id: &str,
    line: &[u8],
) {
    let sent = Box::new(Sent {
        time,
        out: RECEIPTS,
        due: None,
    });
    send(
        producer,
        acks,
        sent,
        Some(dispatch_id.as_bytes()),
        line,
        None,
    );
}

fn send(
    producer: &ThreadedProducer<SinkContext>,
    acks: &Acks,
    sent: Box<Sent>,
    key: Option<&[u8]>,
    value: &[u8],
    headers: Option<OwnedHeaders>,
) {
    let topic = &acks.topics[sent.out];
    let mut record = BaseRecord::with_opaque_to(topic, sent).payload(value);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, r)) => {
                // Not retriable as is (e.g. larger than message.max.bytes):
                // counted, logged, and retried slowly so it is never lost
                // silently.
                acks.metrics.produce_error(topic);
                if acks.stop.load(Ordering::Relaxed) {
                    tracing::error!(error = %e, topic, "cannot produce: given up at the stop");
                    return;
                }
                tracing::error!(error = %e, topic, "cannot produce: retrying in 1 s");
                record = r;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The producer of one worker: idempotent, `acks=all`.
fn producer(job: &JobConfig, acks: Arc<Acks>) -> anyhow::Result<ThreadedProducer<SinkContext>> {
    let mut config = crate::source::kafka::client_config(job);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1");
    for (k, v) in &job.kafka.properties {
        if k == "linger.ms" || k.starts_with("queue.buffering") || k.starts_with("batch.") {
            config.set(k, v);
        }
    }
    config
        .create_with_context(SinkContext(acks))
        .context("cannot create the Kafka producer")
}

/// Sinks decisions and reports into their topics and delivers each
/// channel's dispatches as `channels` routes them; returns the stream
/// whose frontier passes t once every output before t is acknowledged
/// (attach `acked` to watch it).
#[allow(clippy::too_many_arguments)]
pub fn kafka_sink<'s>(
    decisions: Stream<'s, Time, Vec<Decision>>,
    reports: Stream<'s, Time, Vec<Report>>,
    spec: Arc<Spec>,
    job: &JobConfig,
    channels: Arc<ChannelSinks>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    acked: &Handle<Time>,
) -> anyhow::Result<()> {
    let scope = decisions.scope();
    let mut topics = vec![
        job.topics.dispatches.clone(),
        job.topics.suppressions.clone(),
        job.topics.dead_letters.clone(),
        job.topics.receipts.clone(),
        job.topics.churn_signals.clone(),
    ];
    let copies = channels.copy_topics();
    // Each channel's copy topic, by index.
    let copy_of: Vec<Option<usize>> = crate::spec::Channel::ALL
        .iter()
        .map(|&c| match channels.route(c) {
            Route::Copy(t) => copies.iter().position(|x| x == t).map(|i| COPIES + i),
            _ => None,
        })
        .collect();
    topics.extend(copies);
    let acks = Arc::new(Acks {
        pending: Mutex::new(BTreeMap::new()),
        retries: Mutex::new(Vec::new()),
        settled: Mutex::new(Vec::new()),
        activator: OnceLock::new(),
        topics,
        metrics: metrics.clone(),
        stop,
    });
    let producer = producer(job, acks.clone())?;
    let mut builder = OperatorBuilder::new("KafkaSink".to_owned(), scope);
    let info = builder.operator_info();
    let _ = acks
        .activator
        .set(scope.worker().sync_activator_for(info.address.to_vec()));
    let mut decisions_in = builder.new_input(decisions, Pipeline);
    let mut reports_in = builder.new_input(reports, Pipeline);
    let (_acked_out, acked_stream) = builder.new_output::<Vec<()>>();

    builder.build(move |_capabilities| {
        // Capabilities held for times with unacknowledged outputs.
        let mut held: BTreeMap<Time, Capability<Time>> = BTreeMap::new();
        let mut value = Vec::with_capacity(512);
        move |_frontiers| {
            let retries =
                std::mem::take(&mut *acks.retries.lock().unwrap_or_else(|e| e.into_inner()));
            for r in retries {
                acks.metrics.produce_retry(&acks.topics[r.sent.out]);
                send(
                    &producer,
                    &acks,
                    r.sent,
                    r.key.as_deref(),
                    &r.value,
                    r.headers,
                );
            }
            // HTTP outcomes: each receipt takes over its delivery's place
            // among the pending outputs of its time; without a receipt the
            // delivery is acknowledged here.
            let settled =
                std::mem::take(&mut *acks.settled.lock().unwrap_or_else(|e| e.into_inner()));
            for (time, channel, outcome) in settled {
                match outcome.receipt() {
                    Some(line) => {
                        acks.metrics.sink_receipt(channel, outcome.status.as_str());
                        send_receipt(&producer, &acks, time, &outcome.dispatch_id, &line);
                    }
                    None => acks.acknowledged(time),
                }
            }
            let mut count = |time: Time, n: usize, cap: &dyn Fn() -> Capability<Time>| {
                if n == 0 {
                    return;
                }
                *acks
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(time)
                    .or_insert(0) += n;
                held.entry(time).or_insert_with(cap);
            };
            decisions_in.for_each(|cap, data| {
                let time = *cap.least().expect("a time");
                // Counted before sending: a delivery report may come at
                // once. A dispatch is one output, plus one for its copy or
                // its HTTP delivery.
                let extra = data
                    .iter()
                    .filter(|d| match d {
                        Decision::Dispatch(x) => {
                            matches!(
                                channels.route(x.channel),
                                Route::Copy(_) | Route::Http(_) | Route::Inbox
                            )
                        }
                        Decision::Suppression(_) | Decision::Churn(_) => false,
                    })
                    .count();
                count(time, data.len() + extra, &|| {
                    cap.retain_least(0).expect("a capability")
                });
                for d in data.drain(..) {
                    value.clear();
                    d.write_json(&spec, &mut value);
                    match &d {
                        Decision::Dispatch(x) => {
                            let rule = &spec.rules[x.rule as usize];
                            acks.metrics.decision("dispatched", 1);
                            let id = x.id(&spec).hyphenated().to_string();
                            let headers = OwnedHeaders::new()
                                .insert(Header {
                                    key: "idempotency-key",
                                    value: Some(id.as_bytes()),
                                })
                                .insert(Header {
                                    key: "nudgeflow-channel",
                                    value: Some(x.channel.as_str().as_bytes()),
                                })
                                .insert(Header {
                                    key: "nudgeflow-rule",
                                    value: Some(rule.name.as_bytes()),
                                });
                            let route = channels.route(x.channel);
                            let copy_headers = match route {
                                Route::Copy(_) => Some(headers.clone()),
                                _ => None,
                            };
                            let sent = Box::new(Sent {
                                time,
                                out: DISPATCHES,
                                due: Some(x.decision_time),
                            });
                            send(
                                &producer,
                                &acks,
                                sent,
                                Some(x.user.as_bytes()),
                                &value,
                                Some(headers),
                            );
                            match route {
                                Route::Record => {}
                                // Placing a dispatch in the inbox (the
                                // dataflow's `inbox`) is its delivery.
                                Route::Inbox => {
                                    let now = crate::time::now_ms();
                                    let receipt = Receipt::new(&id, Status::Delivered, now, None);
                                    acks.metrics.sink_receipt("in_app", "delivered");
                                    send_receipt(&producer, &acks, time, &id, &receipt.to_json());
                                }
                                Route::Copy(_) => {
                                    let out = copy_of[x.channel as usize].expect("a copy topic");
                                    let sent = Box::new(Sent {
                                        time,
                                        out,
                                        due: None,
                                    });
                                    send(
                                        &producer,
                                        &acks,
                                        sent,
                                        Some(x.user.as_bytes()),
                                        &value,
                                        copy_headers,
                                    );
                                }
                                Route::Http(sink) => {
                                    let request = Request {
                                        dispatch_id: id,
                                        body: bytes::Bytes::copy_from_slice(&value),
                                    };
                                    let acks = acks.clone();
                                    let channel = x.channel.as_str();
                                    sink.submit(
                                        request,
                                        Box::new(move |outcome| {
                                            let mut settled = acks
                                                .settled
                                                .lock()
                                                .unwrap_or_else(|e| e.into_inner());
                                            settled.push((time, channel, outcome));
                                            // The sink takes them all when
                                            // it runs: one wake a batch.
                                            let first = settled.len() == 1;
                                            drop(settled);
                                            if first {
                                                acks.wake();
                                            }
                                        }),
                                    );
                                }
                            }
                        }
                        Decision::Churn(c) => {
                            let sent = Box::new(Sent {
                                time,
                                out: CHURN_SIGNALS,
                                due: None,
                            });
                            send(
                                &producer,
                                &acks,
                                sent,
                                Some(c.user.as_bytes()),
                                &value,
                                None,
                            );
                        }
                        Decision::Suppression(s) => {
                            acks.metrics.decision(s.reason.as_str(), 1);
                            let sent = Box::new(Sent {
                                time,
                                out: SUPPRESSIONS,
                                due: None,
                            });
                            send(
                                &producer,
                                &acks,
                                sent,
                                Some(s.user.as_bytes()),
                                &value,
                                None,
                            );
                        }
                    }
                }
            });
            reports_in.for_each(|cap, data| {
                let time = *cap.least().expect("a time");
                let letters = data
                    .iter()
                    .filter(|r| matches!(r, Report::DeadLetter(_)))
                    .count();
                count(time, letters, &|| {
                    cap.retain_least(0).expect("a capability")
                });
                for r in data.drain(..) {
                    if let Report::DeadLetter(mut d) = r {
                        d.cut(DEAD_LETTER_RECORD_LIMIT);
                        acks.metrics.dead_letter(d.stream.name(), 1);
                        // §9: receipts come back through the broker; one
                        // behind the watermark cannot drive fallback.
                        if d.stream == crate::record::StreamKind::Receipts
                            && d.reason.starts_with("late")
                        {
                            let n = acks.metrics.late_receipt();
                            if n.is_power_of_two() {
                                tracing::warn!(
                                    late_receipts = n,
                                    reason = %d.reason,
                                    "a receipt arrived late: raise allowed_lateness to cover the receipts' trip through the broker"
                                );
                            }
                        }
                        let key = match &d.at {
                            crate::record::output::Position::Kafka {
                                topic, partition, ..
                            } => format!("{topic}/{partition}"),
                            crate::record::output::Position::File { file, .. } => file.clone(),
                        };
                        let line = d.to_json_line();
                        let sent = Box::new(Sent {
                            time,
                            out: DEAD_LETTERS,
                            due: None,
                        });
                        send(
                            &producer,
                            &acks,
                            sent,
                            Some(key.as_bytes()),
                            line.as_bytes(),
                            None,
                        );
                    }
                }
            });
            // Release the times whose outputs are all acknowledged.
            let pending = acks.pending.lock().unwrap_or_else(|e| e.into_inner());
            held.retain(|t, _| pending.contains_key(t));
        }
    });
    acked_stream.probe_with(acked);
    Ok(())
}
