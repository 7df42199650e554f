//! Provider callbacks (DESIGN.md §9): `POST /v1/receipts` takes a JSON
//! array of receipts (§2) and appends the valid ones to the receipts
//! topic, keyed by dispatch id, where they drive channel fallback like any
//! other receipt. It answers `{"accepted": N, "refused": [{"index": I,
//! "error": "…"}]}` once the broker has acknowledged every accepted one —
//! so a provider that gets a 200 knows its receipts are kept, and one that
//! gets an error can send them again — with 400 when none was valid and
//! 503 when the broker did not take them.

use std::sync::Arc;

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::job::JobConfig;
use crate::record::parse_receipt;

/// What the producer hands back to each record's delivery report.
type Ack = Box<oneshot::Sender<Result<(), String>>>;

struct Context;

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::kafka::log(level, fac, message);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Ack;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Ack) {
        let _ = ack.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
    }
}

/// The receipts topic, written by the callbacks endpoint.
pub struct ReceiptsTopic {
    producer: ThreadedProducer<Context>,
    topic: String,
}

impl ReceiptsTopic {
    pub fn new(job: &JobConfig) -> anyhow::Result<Arc<ReceiptsTopic>> {
        let mut config = crate::source::kafka::client_config(job);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1");
        let producer = config
            .create_with_context(Context)
            .context("cannot create the receipts producer")?;
        Ok(Arc::new(ReceiptsTopic {
            producer,
            topic: job.topics.receipts.clone(),
        }))
    }

    /// Appends `(key, value)` records; resolves once the broker has
    /// acknowledged all of them, or with the first error.
    async fn append(&self, records: Vec<(String, String)>) -> Result<(), String> {
        let mut acks = Vec::with_capacity(records.len());
        for (key, value) in records {
            let (tx, rx) = oneshot::channel();
            let record = BaseRecord::with_opaque_to(&self.topic, Box::new(tx))
                .key(key.as_bytes())
                .payload(value.as_bytes());
            if let Err((e, _)) = self.producer.send(record) {
                return Err(format!("the broker did not take the receipt: {e}"));
            }
            acks.push(rx);
        }
        for ack in acks {
            match ack.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("the broker did not acknowledge a receipt: {e}")),
                Err(_) => return Err("the receipts producer stopped".into()),
            }
        }
        Ok(())
    }
}

/// The answer to a callback: status and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// Handles a `POST /v1/receipts` body.
pub async fn post(topic: &ReceiptsTopic, body: &[u8]) -> Answer {
    let items: Vec<&RawValue> = match serde_json::from_slice(body) {
        Ok(items) => items,
        Err(e) => {
            return Answer {
                status: 400,
                body: serde_json::json!({
                    "error": format!("the body must be a JSON array of receipts: {e}")
                }),
            };
        }
    };
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (index, raw) in items.iter().enumerate() {
        match parse_receipt(raw.get()) {
            Ok(r) => accepted.push((r.dispatch_id, raw.get().to_string())),
            Err(error) => refused.push(serde_json::json!({"index": index, "error": error})),
        }
    }
    if accepted.is_empty() {
        return Answer {
            status: 400,
            body: serde_json::json!({
                "error": "no valid receipt in the body",
                "accepted": 0,
                "refused": refused,
            }),
        };
    }
    let n = accepted.len();
    if let Err(error) = topic.append(accepted).await {
        tracing::warn!(%error, "receipts from a callback were not appended");
        return Answer {
            status: 503,
            body: serde_json::json!({ "error": error }),
        };
    }
    Answer {
        status: 200,
        body: serde_json::json!({"accepted": n, "refused": refused}),
    }
}
