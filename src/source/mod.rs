//! Sources: where records enter the dataflow, and the only places that
//! read input: fixture directories (`fixture`) and Kafka topics (`kafka`).
//! Both ingest every record with `crate::ingest` and produce the same
//! streams ([`SourceStreams`]), with each record's partition position as
//! its `seq` (a fixture line's byte offset, a Kafka offset), which breaks
//! ties "later in the stream wins" between records of one partition.

pub mod fixture;
pub mod kafka;

use timely::dataflow::Stream;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::dataflow::profile::ProfileUpsert;
use crate::dataflow::route::Arrival;
use crate::ingest::Ingested;
use crate::record::output::DeadLetter;
use crate::time::Time;

type Output<C> = OutputBuilder<Time, timely::container::CapacityContainerBuilder<Vec<C>>>;

/// A source operator's three outputs, which its capabilities 0, 1 and 2
/// are for: arrivals, profile upserts, reports.
pub(crate) struct Outputs {
    arrivals: Output<Arrival>,
    profile: Output<ProfileUpsert>,
    reports: Output<Report>,
}

impl Outputs {
    /// Adds the three outputs to `builder`.
    pub(crate) fn new<'s>(builder: &mut OperatorBuilder<'s, Time>) -> (Outputs, SourceStreams<'s>) {
        let (arrivals_out, arrivals) = builder.new_output();
        let (profile_out, profile) = builder.new_output();
        let (reports_out, reports) = builder.new_output();
        let outputs = Outputs {
            arrivals: OutputBuilder::from(arrivals_out),
            profile: OutputBuilder::from(profile_out),
            reports: OutputBuilder::from(reports_out),
        };
        (
            outputs,
            SourceStreams {
                arrivals,
                profile,
                reports,
            },
        )
    }

    /// Sends what `ingested` holds (its routed records, its dead letters
    /// and counts as reports) at `caps`, leaving it empty.
    pub(crate) fn send(&mut self, caps: &[Capability<Time>], ingested: &mut Ingested) {
        let routed = &mut ingested.routed;
        if !routed.arrivals.is_empty() {
            self.arrivals
                .activate()
                .session(&caps[0])
                .give_container(&mut routed.arrivals);
        }
        if !routed.profile.is_empty() {
            self.profile
                .activate()
                .session(&caps[1])
                .give_container(&mut routed.profile);
        }
        let reports = ingested.take_reports();
        if !reports.is_empty() {
            self.reports
                .activate()
                .session(&caps[2])
                .give_iterator(reports.into_iter());
        }
    }
}

/// What a source produces: the two inputs of the decision dataflow, and
/// its reports.
pub struct SourceStreams<'s> {
    pub arrivals: Stream<'s, Time, Vec<Arrival>>,
    pub profile: Stream<'s, Time, Vec<ProfileUpsert>>,
    pub reports: Stream<'s, Time, Vec<Report>>,
}

/// What a source reports beside the records it routes.
#[derive(Clone, Debug)]
pub enum Report {
    /// A bad record (docs/semantics.md "Bad input").
    DeadLetter(DeadLetter),
    /// Records admitted, late events among them, and the largest time among
    /// them, since the last count.
    Counts {
        records: u64,
        late: u64,
        latest: Time,
    },
}

/// Where this worker sits in the cluster, and which users it answers for.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub process: usize,
    pub processes: usize,
    pub local_index: usize,
    pub local_workers: usize,
}

impl Placement {
    pub fn peers(&self) -> usize {
        self.processes * self.local_workers
    }

    /// Does this worker's process own `user`? Users are routed to worker
    /// `user_hash % peers` (timely's exchange rule); worker `i` lives in
    /// process `i / local_workers`. `user_hash` is `record::user_hash`.
    pub fn process_owns(&self, user_hash: u64) -> bool {
        self.processes == 1
            || (user_hash % self.peers() as u64) as usize / self.local_workers == self.process
    }
}
