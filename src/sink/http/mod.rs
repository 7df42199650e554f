//! The HTTP channel sink (DESIGN.md §9): a channel whose `[sinks.CHANNEL]`
//! table says `kind = "http"` has each of its dispatches `POST`ed to a
//! provider, with the dispatch JSON line as body and its `dispatch_id` as
//! `Idempotency-Key`, retried with backoff, and its outcome written as a
//! receipt on the receipts topic.
//!
//! - `config`: the settings of one sink ([`HttpConfig`]), as the job config
//!   gives them (`job` reads and checks the table).
//! - `retry`: which answers are retried, the backoff, `Retry-After`.
//! - `encode`: the receipt line.
//! - `send`: the sink ([`HttpSink`]) and the runtime it sends on
//!   ([`Driver`]).
//!
//! The Kafka sink of `run` (`sink::kafka`) hands each HTTP channel's
//! dispatches to its sink once the dispatch itself is on the dispatches
//! topic, writes each outcome's receipt, and counts a dispatch's output as
//! acknowledged only once its outcome is settled and its receipt (if any)
//! acknowledged by the broker, so that offsets and checkpoints never pass a
//! dispatch whose delivery a crash could lose. Delivery is at least once:
//! after a crash a request may be made again, always with the same key.

pub mod config;
pub mod encode;
pub mod retry;
pub mod send;

pub use config::{HttpConfig, SuccessReceipt};
pub use encode::{Receipt, Status};
pub use retry::Backoff;
pub use send::{Done, Driver, HttpSink, Outcome, Request};
