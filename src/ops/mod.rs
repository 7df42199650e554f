//! Operations: the live job's Prometheus metrics (`metrics`) and its HTTP
//! endpoints (`http`): `/metrics`, `/healthz` and `/readyz` (DESIGN.md §7
//! "Observability") and the provider callbacks (`callbacks`, §9), served on a small tokio runtime of their own so that
//! timely workers never block on I/O.

pub mod callbacks;
pub mod http;
pub mod metrics;
pub mod query;

pub use http::{Health, Running, Views, spawn};
pub use metrics::Metrics;
