//! Clock: when to take a checkpoint, and as of which time.
//!
//! - input: the sources' `running` output, whose frontier is the least
//!   time every source has released, and on which a source that is told
//!   to stop says so (to worker 0).
//! - output: checkpoint [`Request`]s, from worker 0 only: every `interval`
//!   of wall-clock time (when the released time has moved since the last
//!   one), and once more, marked `last`, when any process is told to stop.
//! - time: a request for T is sent at T, and worker 0's clock holds its
//!   capability at the released frontier, so no stage can pass T before it
//!   knows of the request. After the stop's request the clock holds at its
//!   time, so nothing after the last checkpoint is decided.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::dataflow::cut::Request;
use crate::time::Time;

pub fn clock<'s>(
    released: Stream<'s, Time, Vec<()>>,
    interval: Duration,
    first_id: u64,
    stop: Arc<AtomicBool>,
) -> Stream<'s, Time, Vec<Request>> {
    let scope = released.scope();
    let index = scope.index();
    let mut builder = OperatorBuilder::new("CheckpointClock".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(released, Exchange::new(|_: &()| 0));
    let (output, requests) = builder.new_output::<Vec<Request>>();
    let mut output = OutputBuilder::from(output);
    builder.build(move |mut capabilities| {
        let activator = scope.activator_for(info.address.clone());
        let mut held = if index == 0 { capabilities.pop() } else { None };
        let mut id = first_id;
        let mut next_at = Instant::now() + interval;
        let mut last_time = Time::MIN;
        let mut stopped = false;
        let tick = interval.min(Duration::from_millis(100));
        let mut told = false;
        move |frontiers| {
            input.for_each(|_, data| told |= !data.is_empty());
            let Some(cap) = held.as_mut() else { return };
            let Some(frontier) = frontiers[0].frontier().first().copied() else {
                held = None;
                return;
            };
            if stopped {
                return;
            }
            if frontier > *cap.time() {
                cap.downgrade(&frontier);
            }
            let stopping = told || stop.load(Ordering::Relaxed);
            let now = Instant::now();
            let t = *cap.time();
            if stopping || (now >= next_at && t > last_time) {
                output.activate().session(&*cap).give(Request {
                    id,
                    time: t,
                    last: stopping,
                });
                tracing::debug!(id, time = t, last = stopping, "checkpoint requested");
                id += 1;
                last_time = t;
                next_at = now + interval;
                stopped = stopping;
            }
            activator.activate_after(tick);
        }
    });
    requests
}
