//! The live job's metrics, in Prometheus/OpenMetrics text (the
//! `prometheus-client` crate). Recording is a few atomic operations, cheap
//! enough for timely workers and librdkafka's callback threads.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

struct Inner {
    registry: Registry,
    records_in: Family<Labels, Counter>,
    records_out: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
    late_receipts: Counter,
    produce_errors: Family<Labels, Counter>,
    produce_retries: Family<Labels, Counter>,
    consumer_lag: Family<Labels, Gauge>,
    watermark_lag: Family<Labels, Gauge<f64, AtomicU64>>,
    checkpoint_duration: Histogram,
    checkpoint_bytes: Gauge,
    checkpoints: Family<Labels, Counter>,
    latency: Histogram,
    sink_requests: Family<Labels, Counter>,
    sink_retries: Family<Labels, Counter>,
    sink_receipts: Family<Labels, Counter>,
    sink_queue_depth: Family<Labels, Gauge>,
    sink_queue_full: Family<Labels, Counter>,
    sink_request_duration: Family<Labels, Histogram, fn() -> Histogram>,
}

/// What an HTTP sink request came to: its status class, or how it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    Informational,
    Success,
    Redirect,
    ClientError,
    ServerError,
    /// No answer in time.
    Timeout,
    /// No connection.
    Connect,
    /// Any other failure (a broken answer, …).
    Error,
}

impl RequestClass {
    pub const ALL: [RequestClass; 8] = [
        RequestClass::Informational,
        RequestClass::Success,
        RequestClass::Redirect,
        RequestClass::ClientError,
        RequestClass::ServerError,
        RequestClass::Timeout,
        RequestClass::Connect,
        RequestClass::Error,
    ];

    /// The class of an HTTP status code.
    pub fn of_status(code: u16) -> RequestClass {
        match code / 100 {
            1 => RequestClass::Informational,
            2 => RequestClass::Success,
            3 => RequestClass::Redirect,
            4 => RequestClass::ClientError,
            _ => RequestClass::ServerError,
        }
    }

    /// The `class` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestClass::Informational => "1xx",
            RequestClass::Success => "2xx",
            RequestClass::Redirect => "3xx",
            RequestClass::ClientError => "4xx",
            RequestClass::ServerError => "5xx",
            RequestClass::Timeout => "timeout",
            RequestClass::Connect => "connect",
            RequestClass::Error => "error",
        }
    }
}

/// One channel's HTTP sink metrics ([`Metrics::sink`]); clones share them.
#[derive(Clone)]
pub struct SinkMetrics {
    /// Requests, indexed by [`RequestClass`].
    requests: [Counter; 8],
    retries: Counter,
    queue_depth: Gauge,
    queue_full: Counter,
    duration: Histogram,
}

impl SinkMetrics {
    /// One request of `class` that took `seconds`.
    pub fn request(&self, class: RequestClass, seconds: f64) {
        self.requests[class as usize].inc();
        self.duration.observe(seconds);
    }

    pub fn retry(&self) {
        self.retries.inc();
    }

    /// Moves the queue depth by `change`.
    pub fn queue_depth(&self, change: i64) {
        self.queue_depth.inc_by(change);
    }

    pub fn queue_full(&self) {
        self.queue_full.inc();
    }
}

/// Buckets of HTTP request durations: 1 ms to about 33 s.
fn request_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric of the job; clones share them.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nudgeflow");
        let records_in = Family::default();
        registry.register(
            "records_in",
            "Records read, per input topic",
            records_in.clone(),
        );
        let records_out = Family::default();
        registry.register(
            "records_out",
            "Output messages acknowledged by the broker, per topic",
            records_out.clone(),
        );
        let decisions = Family::default();
        registry.register(
            "decisions",
            "Decisions by outcome: dispatched, or the suppression reason",
            decisions.clone(),
        );
        let dead_letters = Family::default();
        registry.register(
            "dead_letters",
            "Bad input records, per stream",
            dead_letters.clone(),
        );
        let late_receipts = Counter::default();
        registry.register(
            "late_receipts",
            "Receipts behind the watermark (dead letters of the receipts stream): the sinks' own receipts come back through the broker, and allowed_lateness must cover that loop",
            late_receipts.clone(),
        );
        let produce_errors = Family::default();
        registry.register(
            "produce_errors",
            "Output messages the broker did not take, per topic (each is sent again)",
            produce_errors.clone(),
        );
        let produce_retries = Family::default();
        registry.register(
            "produce_retries",
            "Output messages sent again, per topic",
            produce_retries.clone(),
        );
        let consumer_lag = Family::default();
        registry.register(
            "consumer_lag",
            "Messages behind the partition's end, per input topic and partition",
            consumer_lag.clone(),
        );
        let watermark_lag = Family::default();
        registry.register(
            "watermark_lag_seconds",
            "How far the event time a worker has released is behind the wall clock",
            watermark_lag.clone(),
        );
        let checkpoint_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "checkpoint_duration_seconds",
            "Time to take and write a checkpoint: the slowest worker's snapshot and part, then the manifest",
            checkpoint_duration.clone(),
        );
        let checkpoint_bytes = Gauge::default();
        registry.register(
            "checkpoint_bytes",
            "Size of the last checkpoint",
            checkpoint_bytes.clone(),
        );
        let checkpoints = Family::default();
        registry.register(
            "checkpoints",
            "Checkpoints by outcome: complete, or incomplete (a part or the manifest not written)",
            checkpoints.clone(),
        );
        // 0.5 ms to about 65 s.
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register(
            "end_to_end_latency_seconds",
            "From a dispatch's decision time (its event's time, plus any delay) to the broker's acknowledgement of it",
            latency.clone(),
        );
        let sink_requests = Family::default();
        registry.register(
            "sink_requests",
            "HTTP sink requests by channel and class: 2xx, 3xx, 4xx, 5xx, timeout, connect (no connection), error (any other failure)",
            sink_requests.clone(),
        );
        let sink_retries = Family::default();
        registry.register(
            "sink_retries",
            "HTTP sink requests made again after a retryable failure, per channel",
            sink_retries.clone(),
        );
        let sink_receipts = Family::default();
        registry.register(
            "sink_receipts",
            "Receipts the sinks wrote to the receipts topic, by channel and status",
            sink_receipts.clone(),
        );
        let sink_queue_depth = Family::default();
        registry.register(
            "sink_queue_depth",
            "Dispatches an HTTP sink holds (waiting, in flight or between attempts), per channel",
            sink_queue_depth.clone(),
        );
        let sink_queue_full = Family::default();
        registry.register(
            "sink_queue_full",
            "Dispatches failed at once because their HTTP sink's queue was full, per channel",
            sink_queue_full.clone(),
        );
        let sink_request_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
                request_duration_histogram,
            );
        registry.register(
            "sink_request_duration_seconds",
            "HTTP sink request latency, from sending a request to its answer read (or its failure), per channel",
            sink_request_duration.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            records_in,
            records_out,
            decisions,
            dead_letters,
            late_receipts,
            produce_errors,
            produce_retries,
            consumer_lag,
            watermark_lag,
            checkpoint_duration,
            checkpoint_bytes,
            checkpoints,
            latency,
            sink_requests,
            sink_retries,
            sink_receipts,
            sink_queue_depth,
            sink_queue_full,
            sink_request_duration,
        }))
    }

    fn topic(topic: &str) -> Labels {
        vec![("topic", topic.to_string())]
    }

    pub fn record_in(&self, topic: &str, n: u64) {
        self.0
            .records_in
            .get_or_create(&Self::topic(topic))
            .inc_by(n);
    }

    pub fn record_out(&self, topic: &str, n: u64) {
        self.0
            .records_out
            .get_or_create(&Self::topic(topic))
            .inc_by(n);
    }

    pub fn decision(&self, outcome: &str, n: u64) {
        self.0
            .decisions
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc_by(n);
    }

    pub fn dead_letter(&self, stream: &str, n: u64) {
        self.0
            .dead_letters
            .get_or_create(&vec![("stream", stream.to_string())])
            .inc_by(n);
    }

    /// Counts a late receipt; returns how many there were.
    pub fn late_receipt(&self) -> u64 {
        self.0.late_receipts.inc() + 1
    }

    pub fn produce_error(&self, topic: &str) {
        self.0
            .produce_errors
            .get_or_create(&Self::topic(topic))
            .inc();
    }

    pub fn produce_retry(&self, topic: &str) {
        self.0
            .produce_retries
            .get_or_create(&Self::topic(topic))
            .inc();
    }

    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        let labels = vec![
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ];
        self.0.consumer_lag.get_or_create(&labels).set(lag);
    }

    pub fn watermark_lag(&self, worker: usize, seconds: f64) {
        self.0
            .watermark_lag
            .get_or_create(&vec![("worker", worker.to_string())])
            .set(seconds);
    }

    pub fn checkpoint(&self, seconds: f64, bytes: u64) {
        self.0.checkpoint_duration.observe(seconds);
        self.0.checkpoint_bytes.set(bytes as i64);
        self.checkpoint_outcome(true);
    }

    /// Counts a checkpoint by its outcome.
    pub fn checkpoint_outcome(&self, complete: bool) {
        let outcome = if complete { "complete" } else { "incomplete" };
        self.0
            .checkpoints
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn end_to_end_latency(&self, seconds: f64) {
        self.0.latency.observe(seconds);
    }

    fn channel(channel: &str) -> Labels {
        vec![("channel", channel.to_string())]
    }

    /// The metrics of one channel's HTTP sink, looked up once, so that a
    /// sink records into them without a lookup per request.
    pub fn sink(&self, channel: &str) -> SinkMetrics {
        let class = |class: &str| {
            self.0
                .sink_requests
                .get_or_create(&vec![
                    ("channel", channel.to_string()),
                    ("class", class.to_string()),
                ])
                .clone()
        };
        let labels = Self::channel(channel);
        SinkMetrics {
            requests: RequestClass::ALL.map(|c| class(c.as_str())),
            retries: self.0.sink_retries.get_or_create(&labels).clone(),
            queue_depth: self.0.sink_queue_depth.get_or_create(&labels).clone(),
            queue_full: self.0.sink_queue_full.get_or_create(&labels).clone(),
            duration: self.0.sink_request_duration.get_or_create(&labels).clone(),
        }
    }

    /// A receipt written, `status` `delivered` or `failed`.
    pub fn sink_receipt(&self, channel: &str, status: &str) {
        let labels = vec![
            ("channel", channel.to_string()),
            ("status", status.to_string()),
        ];
        self.0.sink_receipts.get_or_create(&labels).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.0.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_encoded_with_their_labels() {
        let m = Metrics::new();
        m.record_in("nudgeflow.events", 3);
        m.record_in("nudgeflow.events", 2);
        m.decision("dispatched", 4);
        m.decision("capped", 1);
        m.consumer_lag("nudgeflow.events", 1, 17);
        m.watermark_lag(0, 0.25);
        m.end_to_end_latency(0.003);
        let webhook = m.sink("webhook");
        webhook.request(RequestClass::of_status(503), 0.02);
        webhook.request(RequestClass::of_status(204), 0.003);
        webhook.retry();
        m.sink_receipt("webhook", "delivered");
        webhook.queue_depth(3);
        webhook.queue_depth(-1);
        m.sink("sms").queue_full();
        let text = m.encode();
        for line in [
            "nudgeflow_sink_requests_total{channel=\"webhook\",class=\"5xx\"} 1",
            "nudgeflow_sink_retries_total{channel=\"webhook\"} 1",
            "nudgeflow_sink_receipts_total{channel=\"webhook\",status=\"delivered\"} 1",
            "nudgeflow_sink_queue_depth{channel=\"webhook\"} 2",
            "nudgeflow_sink_queue_full_total{channel=\"sms\"} 1",
            "nudgeflow_sink_request_duration_seconds_count{channel=\"webhook\"} 2",
            "nudgeflow_sink_request_duration_seconds_bucket{le=\"0.004\",channel=\"webhook\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("nudgeflow_records_in_total{topic=\"nudgeflow.events\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("nudgeflow_decisions_total{outcome=\"capped\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nudgeflow_consumer_lag{topic=\"nudgeflow.events\",partition=\"1\"} 17"),
            "{text}"
        );
        assert!(
            text.contains("nudgeflow_watermark_lag_seconds{worker=\"0\"} 0.25"),
            "{text}"
        );
        assert!(
            text.contains("nudgeflow_end_to_end_latency_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("nudgeflow_end_to_end_latency_seconds_bucket{le=\"0.004\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nudgeflow_end_to_end_latency_seconds_bucket{le=\"0.002\"} 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
