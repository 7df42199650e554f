//! The replay output directory: `dispatches.jsonl`, `suppressions.jsonl`,
//! `dead_letters.jsonl` (DESIGN.md §3 records, one JSON object per line) and
//! `summary.json` (counts by channel, rule and reason).
//!
//! Each worker renders its decisions as they come ([`render_lines`]); the
//! lines are sorted by time, then by their bytes, so that a run's files are
//! byte-identical for any number of workers and processes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle;

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
        let mut tally = Tally::new(spec);
        decisions.into_iter().for_each(|d| tally.add(d));
        tally.add_to(spec, self);
    }
}

/// Decision counts by rule index and static names, added to a [`Summary`]
/// once at the end (a `String` key per decision allocated and compared a
/// string for every decision).
#[derive(Default)]
pub struct Tally {
    dispatches: u64,
    suppressions: u64,
    rules: Vec<RuleCounts>,
    channels: BTreeMap<&'static str, u64>,
    reasons: BTreeMap<&'static str, u64>,
}

impl Tally {
    pub fn new(spec: &Spec) -> Tally {
        Tally {
            dispatches: 0,
            suppressions: 0,
            rules: vec![RuleCounts::default(); spec.rules.len()],
            channels: BTreeMap::new(),
            reasons: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, d: &Decision) {
        match d {
            Decision::Dispatch(d) => {
                self.dispatches += 1;
                *self.channels.entry(d.channel.as_str()).or_default() += 1;
                self.rules[d.rule as usize].dispatched += 1;
            }
            Decision::Suppression(s) => {
                self.suppressions += 1;
                *self.reasons.entry(s.reason.as_str()).or_default() += 1;
                if let Some(r) = s.rule {
                    self.rules[r as usize].suppressed += 1;
                }
            }
        }
    }

    /// Adds the counts to `summary`; rules without decisions are not listed.
    pub fn add_to(self, spec: &Spec, summary: &mut Summary) {
        summary.dispatches += self.dispatches;
        summary.suppressions += self.suppressions;
        for (channel, n) in self.channels {
            *summary.by_channel.entry(channel.into()).or_default() += n;
        }
        for (reason, n) in self.reasons {
            *summary.by_reason.entry(reason.into()).or_default() += n;
        }
        for (rule, counts) in spec.rules.iter().zip(self.rules) {
            if counts.dispatched + counts.suppressed > 0 {
                let e = summary.by_rule.entry(rule.name.clone()).or_default();
                e.dispatched += counts.dispatched;
                e.suppressed += counts.suppressed;
            }
        }
    }
}

/// JSON lines rendered back to back into large chunks (no allocation per
/// line, no buffer regrown and copied), each line with its time and place.
#[derive(Default)]
pub struct Lines {
    chunks: Vec<Vec<u8>>,
    index: Vec<Line>,
}

#[derive(Clone, Copy)]
struct Line {
    time: Time,
    chunk: u32,
    start: u32,
    len: u32,
}

/// Bytes per chunk of [`Lines`]; a new chunk is started when less than
/// [`CHUNK_ROOM`] is left (a longer line grows its chunk, which is correct,
/// only slower).
const CHUNK_BYTES: usize = 1 << 20;
const CHUNK_ROOM: usize = 16 << 10;

impl Lines {
    /// Appends a line at `time`, rendered by `render` (without newline).
    pub fn push(&mut self, time: Time, render: impl FnOnce(&mut Vec<u8>)) {
        if self
            .chunks
            .last()
            .is_none_or(|c| c.capacity() - c.len() < CHUNK_ROOM)
        {
            self.chunks.push(Vec::with_capacity(CHUNK_BYTES));
        }
        let chunk = self.chunks.len() - 1;
        let bytes = &mut self.chunks[chunk];
        let start = bytes.len();
        render(bytes);
        let len = bytes.len() - start;
        let (Ok(start), Ok(len)) = (u32::try_from(start), u32::try_from(len)) else {
            panic!("a JSON line of {len} bytes (at {start}) does not fit in 4 GiB")
        };
        self.index.push(Line {
            time,
            chunk: chunk as u32,
            start,
            len,
        });
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn bytes(&self, l: &Line) -> &[u8] {
        let start = l.start as usize;
        &self.chunks[l.chunk as usize][start..start + l.len as usize]
    }

    /// Sorts the lines by time, then by their bytes.
    pub fn sort(&mut self) {
        let mut index = std::mem::take(&mut self.index);
        index.sort_unstable_by(|a, b| {
            a.time
                .cmp(&b.time)
                .then_with(|| self.bytes(a).cmp(self.bytes(b)))
        });
        self.index = index;
    }

    /// The lines in their order, with their times.
    pub fn iter(&self) -> impl Iterator<Item = (Time, &[u8])> {
        self.index.iter().map(|l| (l.time, self.bytes(l)))
    }
}

/// One worker's rendered decisions and their counts.
#[derive(Default)]
pub struct Rendered {
    pub dispatches: Lines,
    pub suppressions: Lines,
    pub tally: Tally,
}

impl Rendered {
    pub fn new(spec: &Spec) -> Rendered {
        Rendered {
            dispatches: Lines::default(),
            suppressions: Lines::default(),
            tally: Tally::new(spec),
        }
    }

    /// Counts and renders one decision.
    pub fn add(&mut self, spec: &Spec, d: &Decision) {
        self.tally.add(d);
        let lines = match d {
            Decision::Dispatch(_) => &mut self.dispatches,
            Decision::Suppression(_) => &mut self.suppressions,
        };
        lines.push(d.time(), |out| d.write_json(spec, out));
    }
}

/// The file sink of a worker: renders and counts each batch of decisions
/// as it arrives, in the worker's thread, and drops the decisions (rendered
/// lines are about as large, and no decision waits for the end of the run).
/// The probe tells when every decision up to a time is in.
pub fn render_lines<'s>(
    decisions: Stream<'s, Time, Vec<Decision>>,
    spec: Arc<Spec>,
    into: Rc<RefCell<Rendered>>,
) -> Handle<Time> {
    let (probe, decisions) = decisions.probe();
    decisions.sink(Pipeline, "RenderLines", move |(input, _frontier)| {
        let mut into = into.borrow_mut();
        input.for_each(|_cap, data| {
            for d in data.drain(..) {
                into.add(&spec, &d);
            }
        });
    });
    probe
}

/// Writes `lines` (each part sorted) merged in order (time, then bytes)
/// into `file`, which is empty.
fn write_lines(file: &File, parts: &[&Lines]) -> std::io::Result<()> {
    let mut lines: Vec<(Time, &[u8])> = Vec::with_capacity(parts.iter().map(|l| l.len()).sum());
    parts.iter().for_each(|l| lines.extend(l.iter()));
    // Stable sort finds and merges the parts' sorted runs.
    lines.sort();
    write_halves(file, &lines)
}

/// Writes `lines` with two threads, each half at its own offset: copying
/// tens of MiB into fresh page-cache pages is slow on small VMs, and was
/// the longest serial step of a large replay.
#[cfg(unix)]
fn write_halves(file: &File, lines: &[(Time, &[u8])]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    fn write_at(file: &File, lines: &[(Time, &[u8])], mut at: u64) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1 << 20);
        for (_, line) in lines {
            buf.extend_from_slice(line);
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
fn write_halves(file: &File, lines: &[(Time, &[u8])]) -> std::io::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    for (_, line) in lines {
        w.write_all(line)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Opens (or creates) an output file for writing, keeping what it holds.
fn create(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// The output files of a replay, opened before it runs: a directory that
/// cannot be written is reported at once, and emptying the previous run's
/// files (tens of MiB for the file system to free) can happen while the
/// dataflow runs ([`OutputFiles::empty`]).
pub struct OutputFiles {
    dir: PathBuf,
    dispatches: File,
    suppressions: File,
    dead_letters: File,
}

impl OutputFiles {
    /// Creates `dir` if missing and opens (or creates) its output files,
    /// without emptying them yet.
    pub fn open(dir: &Path) -> anyhow::Result<OutputFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let open = |name: &str| create(&dir.join(name));
        Ok(OutputFiles {
            dir: dir.to_path_buf(),
            dispatches: open("dispatches.jsonl")?,
            suppressions: open("suppressions.jsonl")?,
            dead_letters: open("dead_letters.jsonl")?,
        })
    }

    /// Empties the files (of a previous run's lines). A plain file that
    /// holds lines is replaced by a new empty one rather than truncated: on
    /// ext4 a file truncated to zero is flushed when it is closed
    /// (`auto_da_alloc`), which cost the end of every run 20–35 ms. An empty
    /// file is left as is; a symbolic link is truncated where it points.
    pub fn empty(&mut self) -> anyhow::Result<()> {
        let dir = &self.dir;
        // An earlier run's summary would describe files it no longer has.
        match std::fs::remove_file(dir.join("summary.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| {
                    format!("cannot remove {}", dir.join("summary.json").display())
                });
            }
            _ => {}
        }
        for (file, name) in [
            (&mut self.dispatches, "dispatches.jsonl"),
            (&mut self.suppressions, "suppressions.jsonl"),
            (&mut self.dead_letters, "dead_letters.jsonl"),
        ] {
            let path = dir.join(name);
            let held = file
                .metadata()
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            // Only a plain file is replaced: an output that is a link to
            // somewhere else is emptied where it points.
            let plain = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
            if held > 0 && plain {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot empty {}", path.display()))?;
                *file = create(&path)?;
            } else if held > 0 {
                file.set_len(0)
                    .with_context(|| format!("cannot empty {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Writes the outputs into the emptied files, each file's lines merged
    /// from the workers' sorted parts, and `summary.json`.
    pub fn write(
        &self,
        dispatches: &[Lines],
        suppressions: &[Lines],
        dead_letters: &[DeadLetter],
        summary: &Summary,
    ) -> anyhow::Result<()> {
        fn parts(lines: &[Lines]) -> Vec<&Lines> {
            lines.iter().collect()
        }
        // Dead letters in order of file and line (then of the whole line).
        let mut ordered: Vec<(&str, u64, String)> = dead_letters
            .iter()
            .map(|d| (d.file.as_str(), d.line, d.to_json_line()))
            .collect();
        ordered.sort_unstable();
        let mut letters = Lines::default();
        for (place, (_, _, line)) in ordered.iter().enumerate() {
            letters.push(place as Time, |out| out.extend_from_slice(line.as_bytes()));
        }
        letters.sort();
        for (file, name, parts) in [
            (&self.dispatches, "dispatches.jsonl", parts(dispatches)),
            (
                &self.suppressions,
                "suppressions.jsonl",
                parts(suppressions),
            ),
            (&self.dead_letters, "dead_letters.jsonl", vec![&letters]),
        ] {
            write_lines(file, &parts)
                .with_context(|| format!("cannot write {}", self.dir.join(name).display()))?;
        }
        let json = serde_json::to_string_pretty(summary)? + "\n";
        let path = self.dir.join("summary.json");
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::output::{Detail, Dispatch, Reason, Suppression};
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
                detail: Detail::None,
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
    /// and however they are split into parts and chunks (the two halves
    /// meet at the right offset; lines longer than a chunk's spare room
    /// stay whole).
    #[test]
    fn lines_are_written_sorted_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        for (n, parts) in [
            (0usize, 1usize),
            (1, 1),
            (2, 2),
            (5, 3),
            (3000, 1),
            (9000, 2),
        ] {
            let line = |i: usize| {
                let pad = if i % 1000 == 999 { 40_000 } else { i % 300 };
                format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(pad))
            };
            let mut split: Vec<Lines> = (0..parts).map(|_| Lines::default()).collect();
            let mut expected = Vec::new();
            for i in (0..n).rev() {
                let (time, text) = ((i % 7) as Time, line(i));
                split[i % parts].push(time, |out| out.extend_from_slice(text.as_bytes()));
                expected.push((time, text));
            }
            split.iter_mut().for_each(Lines::sort);
            let path = dir.path().join(format!("out-{n}-{parts}.jsonl"));
            let file = File::create(&path).unwrap();
            write_lines(&file, &split.iter().collect::<Vec<_>>()).unwrap();
            expected.sort();
            let expected: String = expected.iter().map(|(_, l)| format!("{l}\n")).collect();
            assert!(
                std::fs::read_to_string(&path).unwrap() == expected,
                "{n} lines in {parts} parts"
            );
        }
    }

    /// Files of an earlier, larger run are replaced, not overwritten in
    /// part: what they held beyond the new lines is gone.
    #[test]
    fn outputs_replace_a_previous_run() {
        let dir = tempfile::tempdir().unwrap();
        let stale = "x".repeat(10_000) + "\n";
        for name in [
            "dispatches.jsonl",
            "suppressions.jsonl",
            "dead_letters.jsonl",
        ] {
            std::fs::write(dir.path().join(name), &stale).unwrap();
        }
        let mut lines = Lines::default();
        lines.push(3, |out| out.extend_from_slice(b"{\"b\":1}"));
        lines.push(1, |out| out.extend_from_slice(b"{\"a\":1}"));
        lines.sort();
        let mut files = OutputFiles::open(dir.path()).unwrap();
        files.empty().unwrap();
        files
            .write(&[lines], &[], &[], &Summary::default())
            .unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("dispatches.jsonl"), "{\"a\":1}\n{\"b\":1}\n");
        assert_eq!(read("suppressions.jsonl"), "");
        assert_eq!(read("dead_letters.jsonl"), "");
        assert!(read("summary.json").contains("\"dispatches\": 0"));
    }

    /// Emptying removes an earlier summary, and an output that is a
    /// symbolic link stays one: the file it points to is emptied.
    #[cfg(unix)]
    #[test]
    fn emptying_keeps_links_and_drops_the_old_summary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.jsonl");
        std::fs::write(&target, "old\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("dispatches.jsonl")).unwrap();
        std::fs::write(dir.path().join("summary.json"), "{}\n").unwrap();
        let mut files = OutputFiles::open(dir.path()).unwrap();
        files.empty().unwrap();
        assert!(!dir.path().join("summary.json").exists());
        let link = std::fs::symlink_metadata(dir.path().join("dispatches.jsonl")).unwrap();
        assert!(link.file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    }
}
