//! nudgeflow: event-driven customer notifications on Timely and Differential
//! Dataflow. See the README for the architecture; `DESIGN.md` semantics are
//! referenced by section throughout.

pub mod record;
pub mod spec;
pub mod time;
pub mod dataflow;
pub mod source;
pub mod replay;
pub mod sink;
