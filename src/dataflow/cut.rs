//! Cut: where a checkpoint divides a stateful stage's input (DESIGN.md §7,
//! "Checkpoints and recovery").
//!
//! A checkpoint at event time T holds what the records sent before T (in
//! timely time: a source sends at the time it has released) have made, and
//! the source positions where those records end. A stage whose frontier
//! has reached T has all of them, but it may also have been handed records
//! sent at T or later, which belong after the cut. A `cut` in front of the
//! stage keeps those back:
//!
//! - inputs: the stage's records (routed to their worker by `pact`), and
//!   the checkpoint requests (every worker sees every request).
//! - output: the same records, each batch passed on once the input
//!   frontier is past its time (no request at or before it can still
//!   arrive) and no requested checkpoint at or before its time is still to
//!   be taken; until the stage has taken its snapshot as of T ([`Taken`]),
//!   the output's frontier stays at T.
//! - time: unchanged. A batch is never held past the point where its stage
//!   could use it: the stage decides at time t only once the frontier has
//!   passed t, and a record is never sent at a time after its own.
//!
//! So timely's frontier is the barrier: nothing stops reading, and a stage
//! pauses only while it takes its own snapshot.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::scheduling::Activator;

use crate::time::Time;

/// Take checkpoint `id` as of event time `time`; `last` at a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub time: Time,
    pub last: bool,
}

/// How far a worker's stateful stage has taken its snapshots, shared with
/// the cuts in front of it (all on one worker).
#[derive(Clone)]
pub struct Taken {
    through: Rc<Cell<Time>>,
    cuts: Rc<RefCell<Vec<Activator>>>,
}

impl Default for Taken {
    fn default() -> Self {
        Taken {
            through: Rc::new(Cell::new(Time::MIN)),
            cuts: Rc::default(),
        }
    }
}

impl Taken {
    /// The snapshot as of `t` is taken: the cuts may let later records in.
    pub fn set(&self, t: Time) {
        self.through.set(self.through.get().max(t));
        for cut in self.cuts.borrow().iter() {
            cut.activate();
        }
    }

    fn through(&self) -> Time {
        self.through.get()
    }
}

/// Puts a cut in front of the stage that `taken` reports for. `restored`
/// (a recovery's records of this worker) is passed on first, at its time.
pub fn cut<'s, D, P>(
    stream: Stream<'s, Time, Vec<D>>,
    pact: P,
    requests: Stream<'s, Time, Vec<Request>>,
    taken: Taken,
    restored: Option<(Time, Vec<D>)>,
    name: &str,
) -> Stream<'s, Time, Vec<D>>
where
    D: ExchangeData,
    P: ParallelizationContract<Time, Vec<D>>,
{
    let scope = stream.scope();
    let mut builder = OperatorBuilder::new(name.to_owned(), scope);
    let info = builder.operator_info();
    let mut records = builder.new_input(stream, pact);
    let mut requests = builder.new_input(requests, Pipeline);
    let (output, cut_stream) = builder.new_output::<Vec<D>>();
    let mut output = OutputBuilder::from(output);
    taken
        .cuts
        .borrow_mut()
        .push(scope.activator_for(info.address.clone()));

    builder.build(move |mut capabilities| {
        let mut held = capabilities.pop();
        let mut stash: BTreeMap<Time, Vec<Vec<D>>> = BTreeMap::new();
        if let Some((t, records)) = restored
            && !records.is_empty()
        {
            stash.insert(t, vec![records]);
        }
        // Requested times whose snapshot is not yet taken.
        let mut pending: Vec<Time> = Vec::new();
        move |frontiers| {
            records.for_each(|cap, data| {
                let t = *cap.least().expect("a totally ordered time");
                stash.entry(t).or_default().push(std::mem::take(data));
            });
            requests.for_each(|_, data| pending.extend(data.iter().map(|r| r.time)));
            let through = taken.through();
            pending.retain(|t| *t > through);
            let frontier = frontiers
                .iter()
                .filter_map(|f| f.frontier().first().copied())
                .min()
                .unwrap_or(Time::MAX);
            let limit = frontier.min(pending.iter().copied().min().unwrap_or(Time::MAX));
            let Some(cap) = held.as_mut() else { return };
            while let Some(entry) = stash.first_entry()
                && *entry.key() < limit
            {
                let (t, batches) = entry.remove_entry();
                let at = cap.delayed(&t);
                let mut output = output.activate();
                let mut session = output.session(&at);
                for mut batch in batches {
                    session.give_container(&mut batch);
                }
            }
            let least = stash.keys().next().copied().unwrap_or(Time::MAX).min(limit);
            if least == Time::MAX {
                held = None;
            } else if least > *cap.time() {
                cap.downgrade(&least);
            }
        }
    });
    cut_stream
}
