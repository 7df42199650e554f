//! Analytics (DESIGN.md §5): the models behind churn risk and retention,
//! as pure functions the dataflow calls.
//!
//! - [`bgnbd`]: BG/NBD P(alive) of a user's activity summary, and the
//!   first UTC midnight at which it falls below the churn threshold.

pub mod bgnbd;
