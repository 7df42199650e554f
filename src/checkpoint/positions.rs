//! Source positions for checkpoints: where each partition of a worker
//! stood when the worker released a time, and which of those positions a
//! complete checkpoint holds (and may so be committed to the group).
//!
//! One [`SourcePositions`] per worker, shared by its Kafka source (which
//! notes positions at each release and commits), its checkpoint writer
//! (which takes the positions of a checkpoint's time) and the operator
//! that learns each checkpoint's outcome. All three run on the worker's
//! thread.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// Where a partition's reading stood: the next offset to read (`None`
/// before its first record) and the largest event time it had delivered
/// (its watermark's basis); in a checkpoint, also the time its worker had
/// released then (records after the position behind it were late).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: Option<i64>,
    pub seen: Option<Time>,
    #[serde(default)]
    pub released: Option<Time>,
}

/// A checkpoint's positions of this worker's partitions, and what became
/// of the checkpoint.
#[derive(Clone, Debug)]
pub struct Taken {
    pub id: u64,
    pub time: Time,
    /// The checkpoint taken at a stop.
    pub last: bool,
    pub positions: Vec<PartitionPosition>,
    /// `Some(true)` once its manifest is written, `Some(false)` if it
    /// failed.
    pub complete: Option<bool>,
}

#[derive(Default)]
struct Inner {
    /// The worker reads partitions: a checkpoint must find its positions.
    reads: bool,
    /// The releases at which the positions were the same, with them,
    /// oldest first.
    noted: VecDeque<(Vec<Time>, Vec<PartitionPosition>)>,
    /// Checkpoints taken, oldest first, until their positions are
    /// committed or passed over.
    taken: VecDeque<Taken>,
}

#[derive(Clone, Default)]
pub struct SourcePositions(Rc<RefCell<Inner>>);

impl SourcePositions {
    /// The worker has released `release`, its partitions being at
    /// `positions`.
    pub fn note(&self, release: Time, positions: Vec<PartitionPosition>) {
        let mut inner = self.0.borrow_mut();
        match inner.noted.back_mut() {
            Some((releases, p)) if *p == positions => releases.push(release),
            _ => inner.noted.push_back((vec![release], positions)),
        }
    }

    /// The worker reads partitions (its source says so when it starts).
    pub fn set_reads(&self) {
        self.0.borrow_mut().reads = true;
    }

    /// The positions at the worker's first release at or after `t` (the
    /// records before them were all sent before `t`), for checkpoint `id`
    /// at `t`; the source commits them once the checkpoint is complete.
    /// Empty for a worker without partitions; `None` if a worker with
    /// partitions has not released `t` (which the cut rules out).
    pub fn take(&self, id: u64, t: Time, last: bool) -> Option<Vec<PartitionPosition>> {
        let mut inner = self.0.borrow_mut();
        let newest = |releases: &Vec<Time>| releases.last().copied().unwrap_or(Time::MIN);
        let reads = inner.reads;
        while inner.noted.len() > 1 && newest(&inner.noted[0].0) < t {
            inner.noted.pop_front();
        }
        let positions = match inner.noted.front_mut() {
            Some((releases, p)) if newest(releases) >= t => {
                let first = releases.iter().copied().find(|r| *r >= t);
                releases.retain(|r| *r >= t);
                p.iter()
                    .map(|q| PartitionPosition {
                        released: first,
                        ..q.clone()
                    })
                    .collect()
            }
            _ if reads => return None,
            _ => Vec::new(),
        };
        inner.taken.push_back(Taken {
            id,
            time: t,
            last,
            positions: positions.clone(),
            complete: None,
        });
        Some(positions)
    }

    /// Records the outcome of checkpoint `id`.
    pub fn outcome(&self, id: u64, complete: bool) {
        let mut inner = self.0.borrow_mut();
        if let Some(taken) = inner.taken.iter_mut().find(|c| c.id == id) {
            taken.complete = Some(complete);
        }
    }

    /// Takes the checkpoints `ready` says may be committed (their outcome
    /// known and every output before them acknowledged), oldest first.
    pub fn settled(&self, ready: impl Fn(Time) -> bool) -> Vec<Taken> {
        let mut inner = self.0.borrow_mut();
        let mut settled = Vec::new();
        while let Some(front) = inner.taken.front()
            && front.complete.is_some()
            && ready(front.time)
        {
            settled.extend(inner.taken.pop_front());
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> Vec<PartitionPosition> {
        vec![PartitionPosition {
            topic: "t".into(),
            partition: 0,
            offset: Some(offset),
            seen: Some(offset * 10),
            released: None,
        }]
    }

    fn released(mut p: Vec<PartitionPosition>, t: Time) -> Vec<PartitionPosition> {
        p[0].released = Some(t);
        p
    }

    #[test]
    fn a_checkpoint_takes_the_positions_of_the_first_release_at_or_after_it() {
        let p = SourcePositions::default();
        p.note(10, at(1));
        p.note(20, at(1)); // unchanged: one entry for releases 10..=20
        p.note(30, at(2));
        p.note(40, at(3));
        let first = p.take(1, 15, false);
        assert_eq!(first, Some(released(at(1), 20)), "released 20 at offset 1");
        let second = p.take(2, 25, false);
        assert_eq!(
            second,
            Some(released(at(2), 30)),
            "first release ≥ 25 is 30"
        );
        assert_eq!(p.take(3, 40, true), Some(released(at(3), 40)));
        p.outcome(2, true);
        p.outcome(1, false);
        let settled = p.settled(|t| t <= 30);
        assert_eq!(settled.len(), 2);
        assert_eq!(settled[0].complete, Some(false));
        assert_eq!((settled[1].time, settled[1].complete), (25, Some(true)));
        assert!(p.settled(|_| true).is_empty(), "40 has no outcome yet");
        p.outcome(3, true);
        assert!(p.settled(|_| true)[0].last);
    }

    /// A stop's checkpoint may share its time with the periodic one before
    /// it: each gets its own outcome.
    #[test]
    fn checkpoints_at_one_time_are_told_apart_by_id() {
        let p = SourcePositions::default();
        p.note(10, at(1));
        p.take(1, 10, false);
        p.take(2, 10, true);
        p.outcome(2, true);
        assert!(p.settled(|_| true).is_empty(), "1 has no outcome yet");
        p.outcome(1, false);
        let settled = p.settled(|_| true);
        assert_eq!(settled.len(), 2);
        assert_eq!((settled[0].complete, settled[0].last), (Some(false), false));
        assert_eq!((settled[1].complete, settled[1].last), (Some(true), true));
    }

    #[test]
    fn a_worker_that_reads_partitions_needs_a_release_at_or_after_the_checkpoint() {
        let p = SourcePositions::default();
        assert_eq!(
            p.take(1, 10, false),
            Some(Vec::new()),
            "no partitions: nothing to hold"
        );
        p.set_reads();
        p.note(5, at(1));
        assert_eq!(p.take(2, 10, false), None);
    }
}
