//! Write: each worker's snapshot to the store, then the manifest that
//! makes the checkpoint complete.
//!
//! - input: the [`Snapshot`]s `decide` takes, one per worker per request.
//! - `write`: each worker puts its part (`part-W.bin`) and sends what the
//!   manifest records of it, with the positions of its partitions at the
//!   checkpoint's time ([`SourcePositions::take`]), to worker 0.
//! - `complete`: worker 0 writes the manifest once it has every worker's
//!   part and every output before the checkpoint's time has been
//!   acknowledged by the broker (the `acked` probe: a checkpoint resumed
//!   from never makes those outputs again, so they must be safe first),
//!   prunes old checkpoints, and announces each checkpoint's outcome
//!   to every worker, which tells its source ([`SourcePositions::outcome`]:
//!   a complete checkpoint's positions may be committed).
//! - time: everything about the checkpoint at T travels at T, and worker
//!   0 holds T until the manifest is written, so a probe past the outcomes
//!   passes T only once the outcome is known everywhere.
//!
//! A worker's part is put by a thread of its own, so that a slow store
//! does not stall decisions; the manifest, a small JSON file, is written
//! by worker 0 itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::probe::Handle;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Inspect};

use super::positions::{PartitionPosition, SourcePositions};
use super::store::{Manifest, Part, Store};
use crate::dataflow::cut::Request;
use crate::dataflow::decide::Snapshot;
use crate::ops::Metrics;
use crate::time::Time;

/// A worker's part as written (`part: None` if it could not be).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Written {
    pub request: Request,
    pub worker: usize,
    pub part: Option<Part>,
    pub positions: Vec<PartitionPosition>,
    pub users: usize,
    /// How long the worker took to take, encode and write its part.
    pub seconds: f64,
}

/// A checkpoint's outcome: complete (its manifest written) or not.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub id: u64,
    pub complete: bool,
}

/// How many complete checkpoints the store keeps.
pub const KEEP: usize = 3;

/// Writes the snapshots and completes the checkpoints; returns the
/// outcomes as every worker has recorded them in `positions`.
pub fn write<'s>(
    snapshots: Stream<'s, Time, Vec<Snapshot>>,
    store: Arc<Store>,
    positions: SourcePositions,
    acked: Handle<Time>,
    template: Manifest,
    metrics: Metrics,
) -> Stream<'s, Time, Vec<Outcome>> {
    let scope = snapshots.scope();
    let (index, peers) = (scope.index(), scope.peers());

    // The parts are put by a thread of the worker's own, so that a slow
    // store never stalls the worker's decisions; the operator holds the
    // checkpoint's time until its part is written.
    let mut builder = OperatorBuilder::new("CheckpointWrite".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(snapshots, Pipeline);
    let (output, written) = builder.new_output::<Vec<Written>>();
    let mut output = OutputBuilder::from(output);
    let (parts, to_put) = std::sync::mpsc::channel::<(u64, String, Bytes)>();
    let (put, results) = std::sync::mpsc::channel::<(u64, anyhow::Result<Part>, f64)>();
    let wake = scope.worker().sync_activator_for(info.address.to_vec());
    let part_store = store.clone();
    std::thread::Builder::new()
        .name(format!("checkpoint-{index}"))
        .spawn(move || {
            for (id, name, bytes) in to_put {
                let started = std::time::Instant::now();
                let result = part_store.put_part(id, &name, bytes);
                if put
                    .send((id, result, started.elapsed().as_secs_f64()))
                    .is_err()
                {
                    break;
                }
                let _ = wake.activate();
            }
        })
        .expect("a thread for checkpoint writes");
    let worker_positions = positions.clone();
    builder.build(move |_capabilities| {
        // Parts being written: the capability at the checkpoint's time and
        // what the manifest will record of it.
        let mut writing: BTreeMap<u64, (Capability<Time>, Written)> = BTreeMap::new();
        move |_frontiers| {
            input.for_each(|cap, data| {
                for snapshot in data.drain(..) {
                    let request = snapshot.request;
                    let positions = worker_positions.take(request.id, request.time, request.last);
                    let mut written = Written {
                        request,
                        worker: index,
                        part: None,
                        positions: Vec::new(),
                        users: snapshot.users,
                        seconds: snapshot.seconds,
                    };
                    let at = cap.delayed(&request.time, 0);
                    match positions {
                        // Nothing released yet: nothing to hold.
                        _ if request.time == Time::MIN => {
                            output.activate().session(&at).give(written)
                        }
                        None => {
                            tracing::error!(id = request.id, worker = index, "no source positions for the checkpoint's time");
                            output.activate().session(&at).give(written)
                        }
                        Some(positions) => {
                            written.positions = positions;
                            let name = format!("part-{index:04}.bin");
                            let _ = parts.send((request.id, name, Bytes::from(snapshot.bytes)));
                            writing.insert(request.id, (at, written));
                        }
                    }
                }
            });
            while let Ok((id, result, seconds)) = results.try_recv() {
                let Some((at, mut written)) = writing.remove(&id) else {
                    continue;
                };
                match result {
                    Ok(part) => written.part = Some(part),
                    Err(e) => {
                        tracing::error!(id, error = %format!("{e:#}"), "cannot write a checkpoint part")
                    }
                }
                written.seconds += seconds;
                output.activate().session(&at).give(written);
            }
        }
    });

    let mut builder = OperatorBuilder::new("CheckpointManifest".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(written, Exchange::new(|_: &Written| 0));
    let (output, outcomes) = builder.new_output::<Vec<Outcome>>();
    let mut output = OutputBuilder::from(output);
    builder.build(move |mut capabilities| {
        let activator = scope.activator_for(info.address.clone());
        let mut held = if index == 0 { capabilities.pop() } else { None };
        let mut gathering: BTreeMap<u64, (Instant, Vec<Written>)> = BTreeMap::new();
        move |frontiers| {
            input.for_each(|_, data| {
                for w in data.drain(..) {
                    gathering
                        .entry(w.request.id)
                        .or_insert_with(|| (Instant::now(), Vec::new()))
                        .1
                        .push(w);
                }
            });
            let Some(cap) = held.as_mut() else { return };
            // Every part written, every output before the time acknowledged.
            let full: Vec<u64> = gathering
                .iter()
                .filter(|(_, (_, parts))| {
                    parts.len() == peers && !acked.less_than(&parts[0].request.time)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in full {
                let (started, mut parts) = gathering.remove(&id).expect("gathered");
                parts.sort_by_key(|w| w.worker);
                let request = parts[0].request;
                let complete = complete(&store, &template, request, &parts, started, &metrics);
                output
                    .activate()
                    .session(&cap.delayed(&request.time))
                    .give(Outcome {
                        id: request.id,
                        complete,
                    });
            }
            let frontier = frontiers[0].frontier().first().copied();
            let least = gathering
                .values()
                .map(|(_, parts)| parts[0].request.time)
                .chain(frontier)
                .min();
            match least {
                None => held = None,
                Some(t) if t > *cap.time() => cap.downgrade(&t),
                Some(_) => {}
            }
            // Waiting for acknowledgements, which no input announces.
            if !gathering.is_empty() {
                activator.activate_after(std::time::Duration::from_millis(5));
            }
        }
    });

    outcomes
        .broadcast()
        .inspect(move |o: &Outcome| positions.outcome(o.id, o.complete))
}

/// Writes the manifest of the checkpoint whose parts are `parts`; true if
/// it is complete.
fn complete(
    store: &Store,
    template: &Manifest,
    request: Request,
    parts: &[Written],
    started: Instant,
    metrics: &Metrics,
) -> bool {
    if request.time == Time::MIN {
        tracing::info!(
            id = request.id,
            "no checkpoint: nothing has been released yet"
        );
        return false;
    }
    if parts.iter().any(|w| w.part.is_none()) {
        tracing::error!(
            id = request.id,
            "checkpoint incomplete: a part could not be written"
        );
        metrics.checkpoint_outcome(false);
        return false;
    }
    let mut manifest = template.clone();
    manifest.id = request.id;
    manifest.time = request.time;
    manifest.workers = parts.len();
    manifest.parts = parts.iter().filter_map(|w| w.part.clone()).collect();
    manifest.positions = parts
        .iter()
        .flat_map(|w| w.positions.iter().cloned())
        .collect();
    manifest.positions.sort();
    if let Err(e) = store.complete(&manifest) {
        tracing::error!(id = request.id, error = %format!("{e:#}"), "cannot write a checkpoint manifest");
        metrics.checkpoint_outcome(false);
        return false;
    }
    let bytes: u64 = manifest.parts.iter().map(|p| p.bytes).sum();
    let users: usize = parts.iter().map(|w| w.users).sum();
    // The slowest worker's part, then the manifest.
    let slowest = parts.iter().map(|w| w.seconds).fold(0.0, f64::max);
    let write_seconds = slowest + started.elapsed().as_secs_f64();
    metrics.checkpoint(write_seconds, bytes);
    tracing::info!(
        id = request.id,
        time = %crate::time::format_rfc3339(request.time),
        bytes,
        users,
        write_seconds,
        last = request.last,
        "checkpoint complete"
    );
    if let Err(e) = store.prune(KEEP) {
        tracing::warn!(error = %format!("{e:#}"), "cannot prune old checkpoints");
    }
    true
}
