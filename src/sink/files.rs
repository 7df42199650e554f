//! The replay output directory: `dispatches.jsonl`, `suppressions.jsonl`,
//! `dead_letters.jsonl` (DESIGN.md §3 records, one JSON object per line) and
//! `summary.json` (counts by channel, rule and reason).
//!
//! Lines are sorted by time, then by their bytes, so that a run's files are
//! byte-identical for any number of workers and processes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::record::output::{DeadLetter, Decision};
use crate::spec::Spec;
use crate::time::Time;

/// Counts of one run (or one process's share of it).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub events: u64,
    pub duplicates_dropped: u64,
    pub late_events: u64,
    pub candidates: u64,
    pub deferrals: u64,
    pub dispatches: u64,
    pub suppressions: u64,
    pub dead_letters: u64,
    pub by_channel: BTreeMap<String, u64>,
    pub by_reason: BTreeMap<String, u64>,
    pub by_rule: BTreeMap<String, RuleCounts>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RuleCounts {
    pub dispatched: u64,
    pub suppressed: u64,
}

impl Summary {
    /// Adds another worker's counts.
    pub fn absorb(&mut self, other: Summary) {
        self.records += other.records;
        self.events += other.events;
        self.duplicates_dropped += other.duplicates_dropped;
        self.late_events += other.late_events;
        self.candidates += other.candidates;
        self.deferrals += other.deferrals;
        self.dispatches += other.dispatches;
        self.suppressions += other.suppressions;
        self.dead_letters += other.dead_letters;
        for (k, v) in other.by_channel {
            *self.by_channel.entry(k).or_default() += v;
        }
        for (k, v) in other.by_reason {
            *self.by_reason.entry(k).or_default() += v;
        }
        for (k, v) in other.by_rule {
            let e = self.by_rule.entry(k).or_default();
            e.dispatched += v.dispatched;
            e.suppressed += v.suppressed;
        }
    }

    pub fn count_decisions<'d>(
        &mut self,
        spec: &Spec,
        decisions: impl IntoIterator<Item = &'d Decision>,
    ) {
        // Tallied by index and static name first: a `String` key per
        // decision allocated and compared a string for every decision.
        let mut rules = vec![RuleCounts::default(); spec.rules.len()];
        let mut channels: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
        for d in decisions {
            match d {
                Decision::Dispatch(d) => {
                    self.dispatches += 1;
                    *channels.entry(d.channel.as_str()).or_default() += 1;
                    rules[d.rule as usize].dispatched += 1;
                }
                Decision::Suppression(s) => {
                    self.suppressions += 1;
                    *reasons.entry(s.reason.as_str()).or_default() += 1;
                    if let Some(r) = s.rule {
                        rules[r as usize].suppressed += 1;
                    }
                }
            }
        }
        for (channel, n) in channels {
            *self.by_channel.entry(channel.into()).or_default() += n;
        }
        for (reason, n) in reasons {
            *self.by_reason.entry(reason.into()).or_default() += n;
        }
        for (rule, counts) in spec.rules.iter().zip(rules) {
            if counts.dispatched + counts.suppressed > 0 {
                let e = self.by_rule.entry(rule.name.clone()).or_default();
                e.dispatched += counts.dispatched;
                e.suppressed += counts.suppressed;
            }
        }
    }
}

pub type Lines = Vec<(Time, String)>;

/// Renders decisions as JSON lines: (dispatches, suppressions). Each worker
/// renders its own, in parallel.
pub fn render<'d>(
    spec: &Spec,
    decisions: impl IntoIterator<Item = &'d Decision>,
) -> (Lines, Lines) {
    let (mut dispatches, mut suppressions) = (Vec::new(), Vec::new());
    for d in decisions {
        let line = (d.time(), d.to_json_line(spec));
        match d {
            Decision::Dispatch(_) => dispatches.push(line),
            Decision::Suppression(_) => suppressions.push(line),
        }
    }
    (dispatches, suppressions)
}

fn write_lines(path: &Path, lines: &mut Lines) -> anyhow::Result<()> {
    // Stable sort finds and merges runs: each worker's lines come sorted.
    lines.sort();
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    write_halves(&file, lines).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `lines` with two threads, each half at its own offset: copying
/// tens of MiB into fresh page-cache pages is slow on small VMs, and was
/// the longest serial step of a large replay.
#[cfg(unix)]
fn write_halves(file: &std::fs::File, lines: &[(Time, String)]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    fn write_at(
        file: &std::fs::File,
        lines: &[(Time, String)],
        mut at: u64,
    ) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1 << 20);
        for (_, line) in lines {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            if buf.len() >= 1 << 20 {
                file.write_all_at(&buf, at)?;
                at += buf.len() as u64;
                buf.clear();
            }
        }
        file.write_all_at(&buf, at)
    }
    let (first, second) = lines.split_at(lines.len() / 2);
    let offset = first.iter().map(|(_, l)| l.len() as u64 + 1).sum();
    std::thread::scope(|s| {
        let second = s.spawn(|| write_at(file, second, offset));
        let first = write_at(file, first, 0);
        first.and(second.join().expect("the writer thread does not panic"))
    })
}

#[cfg(not(unix))]
fn write_halves(file: &std::fs::File, lines: &[(Time, String)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    for (_, line) in lines {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Writes the output directory (created if missing), sorting the lines in
/// place.
pub fn write_outputs(
    dir: &Path,
    dispatches: &mut Lines,
    suppressions: &mut Lines,
    dead_letters: &[DeadLetter],
    summary: &Summary,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_lines(&dir.join("dispatches.jsonl"), dispatches)?;
    write_lines(&dir.join("suppressions.jsonl"), suppressions)?;
    let mut letters: Vec<_> = dead_letters.iter().collect();
    letters.sort_by(|a, b| (a.stream.file_name(), a.line).cmp(&(b.stream.file_name(), b.line)));
    write_lines(
        &dir.join("dead_letters.jsonl"),
        &mut letters.iter().map(|d| (0, d.to_json_line())).collect(),
    )?;
    let json = serde_json::to_string_pretty(summary)? + "\n";
    std::fs::write(dir.join("summary.json"), json)
        .with_context(|| format!("cannot write {}/summary.json", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::output::{Dispatch, Reason, Suppression};
    use crate::spec::Channel;

    /// Counts by channel, reason and rule name, added to what a summary
    /// already holds; a rule without decisions is not listed.
    #[test]
    fn decisions_are_counted_by_channel_reason_and_rule() {
        let spec = Spec::parse(
            "t.toml",
            r#"
[[rule]]
name = "a"
on = "x"
purpose = "transactional"
channels = ["email", "push"]

[[rule]]
name = "b"
on = "y"
purpose = "transactional"
channels = ["email"]

[[rule]]
name = "unused"
on = "z"
purpose = "transactional"
channels = ["email"]
"#,
        )
        .unwrap();
        let dispatch = |rule, channel| {
            Decision::Dispatch(Dispatch {
                user: "u".into(),
                rule,
                channel,
                attempt: 1,
                event_key: "s/1".into(),
                event_time: 0,
                decision_time: 0,
                locale: None,
                vars: None,
            })
        };
        let suppression = |rule, reason| {
            Decision::Suppression(Suppression {
                user: "u".into(),
                rule,
                event_key: "s/1".into(),
                time: 0,
                reason,
            })
        };
        let decisions = [
            dispatch(0, Channel::Email),
            dispatch(0, Channel::Push),
            dispatch(1, Channel::Email),
            suppression(Some(1), Reason::Muted),
            suppression(Some(0), Reason::Muted),
            suppression(None, Reason::Late),
        ];
        let mut summary = Summary::default();
        summary.count_decisions(&spec, &decisions[..3]);
        summary.count_decisions(&spec, &decisions[3..]);
        assert_eq!((summary.dispatches, summary.suppressions), (3, 3));
        let names =
            |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>();
        assert_eq!(
            names(&summary.by_channel),
            [("email".to_string(), 2), ("push".to_string(), 1)]
        );
        assert_eq!(
            names(&summary.by_reason),
            [("late".to_string(), 1), ("muted".to_string(), 2)]
        );
        let rules: Vec<_> = summary
            .by_rule
            .iter()
            .map(|(k, c)| (k.as_str(), c.dispatched, c.suppressed))
            .collect();
        assert_eq!(rules, [("a", 2, 1), ("b", 1, 1)]);
    }

    /// Lines sorted by time then bytes, one per line, whatever the count
    /// (the two halves meet at the right offset).
    #[test]
    fn lines_are_written_sorted_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0usize, 1, 2, 5, 3000] {
            let mut lines: Lines = (0..n)
                .map(|i| {
                    (
                        (i % 7) as Time,
                        format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 300)),
                    )
                })
                .rev()
                .collect();
            let path = dir.path().join(format!("out-{n}.jsonl"));
            write_lines(&path, &mut lines).unwrap();
            let mut expected: Vec<(Time, String)> = lines.clone();
            expected.sort();
            let expected: String = expected.iter().map(|(_, l)| format!("{l}\n")).collect();
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                expected,
                "{n} lines"
            );
        }
    }
}
