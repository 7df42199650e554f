//! Sinks: where decisions leave the dataflow: JSON-lines files and a
//! summary (`files`, for replays) and Kafka topics (`kafka`, for the live
//! job), both from the same [`Decision`] and report streams. In the live
//! job each channel's dispatches are also delivered where its
//! `[sinks.CHANNEL]` table says (`channels`): a copy on another topic, or
//! a provider over HTTP (`http`).

pub mod channels;
pub mod files;
pub mod http;
pub mod kafka;

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle;

use crate::record::output::Decision;
use crate::time::Time;

/// Collects a worker's decisions into `into`, as the batches they came in
/// (appending them to one vector regrew and copied it, in fresh memory);
/// the probe tells when all decisions up to a time have arrived.
pub fn collect<'s>(
    decisions: Stream<'s, Time, Vec<Decision>>,
    into: Rc<RefCell<Vec<Vec<Decision>>>>,
) -> Handle<Time> {
    let (probe, decisions) = decisions.probe();
    decisions.sink(Pipeline, "Collect", move |(input, _frontier)| {
        input.for_each(|_cap, data| into.borrow_mut().push(std::mem::take(data)));
    });
    probe
}
