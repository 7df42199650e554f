//! The state part of a checkpoint: what one worker held as of the
//! checkpoint's time T, encoded with bincode (serde). Every entry is keyed
//! by its user's routing hash, so that a recovery can hand each to the
//! worker that owns the user now, however many workers there are.

use serde::{Deserialize, Serialize};

use crate::dataflow::decide::{DecideState, DecideStateRef};
use crate::dataflow::profile::ProfileUpsert;

/// One worker's part of a checkpoint.
#[derive(Default, Serialize, Deserialize)]
pub struct WorkerState {
    /// Decision state, event keys last seen, and arrivals at T or later.
    pub decide: DecideState,
    /// Preferences and consent: each slot's value in force at T (as an
    /// upsert at T − 1), then the upserts at T or later already read.
    pub profile: Vec<ProfileUpsert>,
}

/// [`WorkerState`] borrowed (same encoding).
#[derive(Serialize)]
struct WorkerStateRef<'a> {
    decide: &'a DecideStateRef<'a>,
    profile: &'a [ProfileUpsert],
}

/// Encodes a worker's part.
pub fn encode(decide: &DecideStateRef<'_>, profile: &[ProfileUpsert]) -> Vec<u8> {
    bincode::serialize(&WorkerStateRef { decide, profile }).expect("the state encodes")
}

/// Decodes a part that [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> anyhow::Result<WorkerState> {
    Ok(bincode::deserialize(bytes)?)
}

impl WorkerState {
    /// Splits parts among `workers` workers by user hash.
    pub fn split(parts: impl IntoIterator<Item = WorkerState>, workers: usize) -> Vec<WorkerState> {
        let mut out: Vec<WorkerState> = (0..workers).map(|_| WorkerState::default()).collect();
        let mut decide: Vec<DecideState> = (0..workers).map(|_| DecideState::default()).collect();
        for part in parts {
            part.decide.split_into(&mut decide);
            for upsert in part.profile {
                out[(upsert.0.user % workers as u64) as usize]
                    .profile
                    .push(upsert);
            }
        }
        for (out, decide) in out.iter_mut().zip(decide) {
            out.decide = decide;
        }
        out
    }
}
