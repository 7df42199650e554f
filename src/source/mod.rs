//! Sources: where records enter the dataflow. The only places that read
//! input. Today: fixture directories (`fixture`); Kafka comes later and must
//! produce the same [`Sourced`] stream.

pub mod fixture;

use crate::record::Record;

/// A parsed input record with its position in its partition (for fixture
/// files, the byte offset of its line), which breaks ties "later in the
/// stream wins" between records of the same partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced {
    pub record: Record,
    pub seq: u64,
    /// Older than its partition's watermark (DESIGN.md §4 "Late records").
    pub late: bool,
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
    /// process `i / local_workers`.
    pub fn process_owns(&self, user: &str) -> bool {
        self.processes == 1
            || (crate::record::user_hash(user) % self.peers() as u64) as usize / self.local_workers
                == self.process
    }
}
