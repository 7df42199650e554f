//! Checkpoints of the live job (DESIGN.md §7, "Checkpoints and recovery";
//! docs/checkpoints.md).
//!
//! - [`clock`]: worker 0 requests a checkpoint every `interval`, at the
//!   least time every source has released, and once more at a stop.
//! - `dataflow::cut` holds records sent at or after that time back from the
//!   stateful stages, and `decide` snapshots its state and the profiles as
//!   of it ([`state`]).
//! - [`write`](mod@write): each worker writes its part, worker 0 the manifest that
//!   makes the checkpoint complete; each source then commits the positions
//!   the checkpoint holds ([`positions`]).
//! - [`store`]: checkpoints behind a URL, versioned and checksummed.
//! - [`recover`]: a starting job loads the newest complete checkpoint and
//!   gives each worker the users it owns now.

pub mod clock;
pub mod positions;
pub mod state;
pub mod store;
pub mod write;

use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::source::kafka::Resume;
use crate::spec::Spec;
use state::WorkerState;
use store::{FORMAT, Manifest, RuleSummary, Store};

/// The manifest fields that describe the job (the rest are filled in per
/// checkpoint): the format, the spec's fingerprint, its rules and windows.
pub fn template(spec: &Spec, fingerprint: &str) -> Manifest {
    Manifest {
        format: FORMAT,
        id: 0,
        time: 0,
        spec: fingerprint.to_string(),
        workers: 0,
        rules: spec
            .rules
            .iter()
            .map(|r| RuleSummary {
                name: r.name.clone(),
                dedup_window: r.dedup.as_ref().map(|d| d.window),
            })
            .collect(),
        longest_window: spec.longest_window(),
        dedup_horizon: spec.dedup_horizon,
        positions: Vec::new(),
        parts: Vec::new(),
    }
}

/// What a job starts from: the state of each of this process's workers,
/// where the sources resume, and the next checkpoint's id.
pub struct Recovered {
    pub workers: Vec<WorkerState>,
    pub resume: Option<Arc<Resume>>,
    pub next_id: u64,
}

/// Loads the newest complete, intact checkpoint (saying why newer ones
/// were passed over), checks it against `spec`, and splits its state
/// among the `local` workers of process `process` of `processes`.
pub fn recover(
    store: &Store,
    spec: &Spec,
    process: usize,
    processes: usize,
    local: usize,
) -> anyhow::Result<Recovered> {
    let next_id = store.ids()?.last().map_or(1, |id| id + 1);
    let found = store.latest()?;
    for (id, why) in &found.skipped {
        tracing::warn!(checkpoint = id, reason = %why, "checkpoint passed over");
    }
    let empty = || (0..local).map(|_| WorkerState::default()).collect();
    let Some(loaded) = found.loaded else {
        tracing::info!(url = %store.url(), "no checkpoint: starting afresh");
        return Ok(Recovered {
            workers: empty(),
            resume: None,
            next_id,
        });
    };
    let manifest = &loaded.manifest;
    let map = compat(manifest, spec).with_context(|| {
        format!(
            "cannot resume from checkpoint {} in {}: the spec changed in a way it cannot follow \
             (docs/checkpoints.md lists the safe changes). Run with the spec it was taken with \
             until it is decided, or start afresh by moving the checkpoint directory away",
            manifest.id,
            store.url()
        )
    })?;
    let old_names: Vec<String> = manifest.rules.iter().map(|r| r.name.clone()).collect();
    let mut parts = Vec::with_capacity(loaded.parts.len());
    for (bytes, part) in loaded.parts.iter().zip(&manifest.parts) {
        let mut state = state::decode(bytes).with_context(|| {
            format!(
                "checkpoint {}: part {} cannot be read",
                manifest.id, part.name
            )
        })?;
        state
            .decide
            .renumber_rules(&map, &old_names)
            .map_err(|e| anyhow::anyhow!("cannot resume from checkpoint {}: {e}: put the rule back until its notifications are decided, or start afresh by moving {} away", manifest.id, store.url()))?;
        parts.push(state);
    }
    let peers = processes * local;
    let mut all = WorkerState::split(parts, peers);
    let workers: Vec<WorkerState> = all.drain(process * local..(process + 1) * local).collect();
    let users: usize = workers.iter().map(|w| w.decide.users.len()).sum();
    let profile: usize = workers.iter().map(|w| w.profile.len()).sum();
    let waiting: usize = workers.iter().map(|w| w.decide.waiting.len()).sum();
    tracing::info!(
        checkpoint = manifest.id,
        time = %crate::time::format_rfc3339(manifest.time),
        written_by = manifest.workers,
        users,
        profile,
        waiting,
        "resuming from checkpoint"
    );
    Ok(Recovered {
        workers,
        resume: Some(Arc::new(Resume {
            time: manifest.time,
            positions: manifest.positions.clone(),
        })),
        next_id,
    })
}

/// Checks that `spec` can go on from a checkpoint taken with the spec
/// `manifest` describes; returns each old rule's new index.
fn compat(manifest: &Manifest, spec: &Spec) -> anyhow::Result<Vec<Option<u16>>> {
    let mut map = Vec::with_capacity(manifest.rules.len());
    for old in &manifest.rules {
        let new = spec.rules.iter().position(|r| r.name == old.name);
        if let Some(i) = new {
            let window = spec.rules[i].dedup.as_ref().map(|d| d.window);
            // No dedup window is a window of 0: the checkpoint kept nothing.
            let (w, o) = (window.unwrap_or(0), old.dedup_window.unwrap_or(0));
            if w > o {
                bail!(
                    "rule {:?}: its dedup window grew from {o} ms to {w} ms, but the checkpoint remembers its dispatches only {o} ms back",
                    old.name
                );
            }
        }
        map.push(new.map(|i| i as u16));
    }
    if spec.longest_window() > manifest.longest_window {
        bail!(
            "the longest cap or dedup window grew from {} ms to {} ms, but the checkpoint remembers dispatches only {} ms back",
            manifest.longest_window,
            spec.longest_window(),
            manifest.longest_window
        );
    }
    if spec.dedup_horizon > manifest.dedup_horizon {
        bail!(
            "dedup_horizon grew from {} ms to {} ms, but the checkpoint remembers event keys only {} ms back",
            manifest.dedup_horizon,
            spec.dedup_horizon,
            manifest.dedup_horizon
        );
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Spec {
        Spec::parse("t.toml", text).unwrap()
    }

    const RULES: &str = r#"
dedup_horizon = "1h"
[[rule]]
name = "a"
on = "x"
purpose = "transactional"
channels = ["push"]
dedup = { window = "10m" }
[[rule]]
name = "b"
on = "y"
purpose = "transactional"
channels = ["push"]
"#;

    #[test]
    fn reordered_and_added_rules_are_renumbered_by_name() {
        let old = template(&spec(RULES), "f");
        let new = spec(&format!(
            "dedup_horizon = \"1h\"\n{}",
            r#"
[[rule]]
name = "c"
on = "z"
purpose = "transactional"
channels = ["push"]
[[rule]]
name = "b"
on = "y"
purpose = "transactional"
channels = ["push"]
[[rule]]
name = "a"
on = "x"
purpose = "transactional"
channels = ["push"]
dedup = { window = "5m" }
"#
        ));
        assert_eq!(compat(&old, &new).unwrap(), vec![Some(2), Some(1)]);
    }

    #[test]
    fn a_removed_rule_maps_to_nothing() {
        let old = template(&spec(RULES), "f");
        let new = spec(&RULES.replace("name = \"b\"\non = \"y\"", "name = \"d\"\non = \"y\""));
        assert_eq!(compat(&old, &new).unwrap(), vec![Some(0), None]);
    }

    #[test]
    fn windows_that_grow_beyond_the_checkpoints_memory_are_refused() {
        let old = template(&spec(RULES), "f");
        let longer_dedup = spec(&RULES.replace("window = \"10m\"", "window = \"20m\""));
        let e = compat(&old, &longer_dedup).unwrap_err().to_string();
        assert!(e.contains("rule \"a\": its dedup window grew"), "{e}");
        let longer_horizon = spec(&RULES.replace("\"1h\"", "\"2h\""));
        let e = compat(&old, &longer_horizon).unwrap_err().to_string();
        assert!(e.contains("dedup_horizon grew"), "{e}");
        let capped = spec(&format!(
            "{RULES}\n[[cap]]\npurpose = \"transactional\"\nmax = 3\nper = \"1d\"\n"
        ));
        let e = compat(&old, &capped).unwrap_err().to_string();
        assert!(e.contains("longest cap or dedup window grew"), "{e}");
        // Shorter windows are safe: the checkpoint remembers more than
        // they need.
        let shorter = spec(
            &RULES
                .replace("\"1h\"", "\"30m\"")
                .replace("\"10m\"", "\"1m\""),
        );
        assert!(compat(&old, &shorter).is_ok());
    }
}
