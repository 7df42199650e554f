//! Sources: where records enter the dataflow. The only places that read
//! input. Today: fixture directories (`fixture`); Kafka comes later and must
//! produce the same routed streams (`dataflow::route::Streams`), with each
//! record's partition position as its `seq` (for fixture files, the byte
//! offset of its line), which breaks ties "later in the stream wins" between
//! records of the same partition.

pub mod fixture;

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
