//! nudgeflow: event-driven customer notifications on Timely and Differential
//! Dataflow. See the README for the architecture; the contract, `docs/semantics.md`, is
//! referenced by section throughout.

pub mod analytics;
pub mod checkpoint;
pub mod connect;
pub mod dataflow;
pub mod diff;
pub mod explain;
pub mod feed;
pub mod r#gen;
pub mod ingest;
pub mod job;
pub mod ops;
pub mod query;
pub mod record;
pub mod replay;
pub mod report;
pub mod run;
pub mod sink;
pub mod source;
pub mod spec;
pub mod time;
