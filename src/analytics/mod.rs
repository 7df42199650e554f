//! Analytics (DESIGN.md §5): the models behind churn risk and retention,
//! as pure functions the dataflow calls.
//!
//! - [`answers`]: the query API's answers and the report's data, from the
//!   aggregates the dataflow keeps (`dataflow::aggregates`).
//! - [`bgnbd`]: BG/NBD P(alive) of a user's activity summary, and the
//!   first UTC midnight at which it falls below the churn threshold.

pub mod answers;
pub mod bgnbd;
