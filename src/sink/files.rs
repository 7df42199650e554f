//! The replay output directory: `dispatches.jsonl`, `suppressions.jsonl`,
//! `dead_letters.jsonl` (docs/semantics.md, "Output records": one JSON object per line) and
//! `summary.json` (counts by channel, rule and reason).
//!
//! Each worker renders its decisions as they come ([`render_lines`]); the
//! lines are sorted by time, then by their bytes, so that a run's files are
//! byte-identical for any number of workers and processes.
//!
//! **Clusters.** Process `I` of `N` writes its share into `part-I/` (the same
//! files, its own counts in `summary.json`, and `part.json`, which names the
//! run and `N`); [`merge`] joins `part-0` to `part-(N-1)` into the files a
//! one-process replay writes, byte for byte.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle;

use crate::record::output::{DeadLetter, Decision, Position};
use crate::source::Report;
use crate::spec::Spec;
use crate::time::Time;

/// Counts of one run (or one process's share of it: in a cluster every
/// count is of the records and users that process owns, so the shares add
/// up to the counts of a one-process run).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub events: u64,
    pub duplicates_dropped: u64,
    pub late_events: u64,
    pub candidates: u64,
    pub deferrals: u64,
    pub dispatches: u64,
    pub suppressions: u64,
    /// `churn.risk_high` signals (`[analytics.churn]`).
    pub churn_signals: u64,
    pub dead_letters: u64,
    pub by_channel: BTreeMap<String, u64>,
    pub by_reason: BTreeMap<String, u64>,
    pub by_rule: BTreeMap<String, RuleCounts>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
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
        self.churn_signals += other.churn_signals;
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
    churn_signals: u64,
    rules: Vec<RuleCounts>,
    channels: BTreeMap<&'static str, u64>,
    reasons: BTreeMap<&'static str, u64>,
}

impl Tally {
    pub fn new(spec: &Spec) -> Tally {
        Tally {
            dispatches: 0,
            suppressions: 0,
            churn_signals: 0,
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
            Decision::Churn(_) => self.churn_signals += 1,
        }
    }

    /// Adds the counts to `summary`; rules without decisions are not listed.
    pub fn add_to(self, spec: &Spec, summary: &mut Summary) {
        summary.dispatches += self.dispatches;
        summary.suppressions += self.suppressions;
        summary.churn_signals += self.churn_signals;
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

/// One worker's rendered decisions and their counts, and its source's
/// dead letters and counts.
#[derive(Default)]
pub struct Rendered {
    pub dispatches: Lines,
    pub suppressions: Lines,
    pub churn_signals: Lines,
    pub tally: Tally,
    pub dead_letters: Vec<DeadLetter>,
    pub records: u64,
    pub late: u64,
}

impl Rendered {
    pub fn new(spec: &Spec) -> Rendered {
        Rendered {
            tally: Tally::new(spec),
            ..Rendered::default()
        }
    }

    /// Counts and renders one decision.
    pub fn add(&mut self, spec: &Spec, d: &Decision) {
        self.tally.add(d);
        let lines = match d {
            Decision::Dispatch(_) => &mut self.dispatches,
            Decision::Suppression(_) => &mut self.suppressions,
            Decision::Churn(_) => &mut self.churn_signals,
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
    reports: Stream<'s, Time, Vec<Report>>,
    spec: Arc<Spec>,
    into: Rc<RefCell<Rendered>>,
) -> Handle<Time> {
    let (probe, decisions) = decisions.probe();
    let sink = into.clone();
    decisions.sink(Pipeline, "RenderLines", move |(input, _frontier)| {
        let mut into = sink.borrow_mut();
        input.for_each(|_cap, data| {
            for d in data.drain(..) {
                into.add(&spec, &d);
            }
        });
    });
    let reports = reports.probe_with(&probe);
    reports.sink(Pipeline, "CollectReports", move |(input, _frontier)| {
        let mut into = into.borrow_mut();
        input.for_each(|_cap, data| {
            for report in data.drain(..) {
                match report {
                    Report::DeadLetter(d) => into.dead_letters.push(d),
                    Report::Counts { records, late, .. } => {
                        into.records += records;
                        into.late += late;
                    }
                }
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
    churn_signals: File,
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
            churn_signals: open("churn_signals.jsonl")?,
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
        // An earlier run's summary (and part manifest) would describe
        // files it no longer has.
        for name in ["summary.json", MANIFEST] {
            match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e)
                        .with_context(|| format!("cannot remove {}", dir.join(name).display()));
                }
                _ => {}
            }
        }
        for (file, name) in [
            (&mut self.dispatches, "dispatches.jsonl"),
            (&mut self.suppressions, "suppressions.jsonl"),
            (&mut self.churn_signals, "churn_signals.jsonl"),
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
    /// from the workers' sorted parts, and `summary.json`. `dead_letters`
    /// are in their order already ([`dead_letter_lines`]).
    pub fn write(
        &self,
        dispatches: &[Lines],
        suppressions: &[Lines],
        churn_signals: &[Lines],
        dead_letters: &Lines,
        summary: &Summary,
    ) -> anyhow::Result<()> {
        fn parts(lines: &[Lines]) -> Vec<&Lines> {
            lines.iter().collect()
        }
        for (file, name, parts) in [
            (&self.dispatches, "dispatches.jsonl", parts(dispatches)),
            (
                &self.suppressions,
                "suppressions.jsonl",
                parts(suppressions),
            ),
            (
                &self.churn_signals,
                "churn_signals.jsonl",
                parts(churn_signals),
            ),
            (&self.dead_letters, "dead_letters.jsonl", vec![dead_letters]),
        ] {
            write_lines(file, &parts)
                .with_context(|| format!("cannot write {}", self.dir.join(name).display()))?;
        }
        let json = serde_json::to_string_pretty(summary)? + "\n";
        let path = self.dir.join("summary.json");
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Writes `part.json`, last: a part directory with it is complete.
    pub fn write_manifest(&self, part: &PartManifest) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(part)? + "\n";
        let path = self.dir.join(MANIFEST);
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Dead letters as lines in the order they are written: by file, then
/// line (then the whole line).
pub fn dead_letter_lines(dead_letters: &[DeadLetter]) -> Lines {
    ordered_letters(
        dead_letters
            .iter()
            .map(|d| {
                let (place, n) = match &d.at {
                    Position::File { file, line } => (file.clone(), *line),
                    Position::Kafka {
                        topic,
                        partition,
                        offset,
                    } => (format!("{topic}:{partition}"), *offset as u64),
                };
                (place, n, d.to_json_line().into_bytes())
            })
            .collect(),
    )
}

fn ordered_letters(mut letters: Vec<(String, u64, Vec<u8>)>) -> Lines {
    letters.sort_unstable();
    let mut lines = Lines::default();
    for (place, (_, _, line)) in letters.iter().enumerate() {
        lines.push(place as Time, |out| out.extend_from_slice(line));
    }
    lines
}

/// The file in a part directory that names its run and place.
pub const MANIFEST: &str = "part.json";

/// What `part.json` says: which run a part directory belongs to and which
/// process of how many wrote it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartManifest {
    /// The run's id, chosen by process 0 and handed to every process as
    /// the cluster connects.
    pub run: String,
    pub process: usize,
    pub processes: usize,
}

/// Where process `process` of a cluster writes its share of `out`.
pub fn part_dir(out: &Path, process: usize) -> PathBuf {
    out.join(format!("part-{process}"))
}

/// The part directories in `dir` (`part-<index>`), by index.
fn part_dirs(dir: &Path) -> anyhow::Result<BTreeMap<usize, PathBuf>> {
    let mut parts = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix("part-"))
            .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        if entry.path().is_dir() {
            parts.insert(index, entry.path());
        }
    }
    Ok(parts)
}

/// Which field of an output line orders it.
#[derive(Clone, Copy)]
enum TimeField {
    /// `"decision_time"`, of a dispatch.
    Decision,
    /// `"time"`, of a suppression.
    Time,
}

impl std::fmt::Debug for TimeField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeField::Decision => "\"decision_time\"",
            TimeField::Time => "\"time\"",
        })
    }
}

/// The lines of a part's output file (sorted, as the file sink wrote them)
/// with the time each is ordered by: a dispatch's `decision_time`, a
/// suppression's `time`.
fn read_lines(path: &Path, time_field: TimeField) -> anyhow::Result<Lines> {
    /// The time fields of an output line (the others are skipped unread).
    #[derive(Deserialize)]
    struct Times {
        decision_time: Option<String>,
        time: Option<String>,
    }
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = Lines::default();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), n + 1);
        let times: Times =
            serde_json::from_slice(line).with_context(|| format!("{}: not a JSON object", at()))?;
        let time = match time_field {
            TimeField::Decision => times.decision_time,
            TimeField::Time => times.time,
        };
        let time = time
            .ok_or_else(|| anyhow::anyhow!("{}: no {time_field:?} time", at()))
            .and_then(|t| {
                crate::time::parse_rfc3339(&t).map_err(|e| anyhow::anyhow!("{}: {e}", at()))
            })?;
        lines.push(time, |out| out.extend_from_slice(line));
    }
    Ok(lines)
}

/// A part's dead letters with the file and line they are ordered by.
fn read_letters(path: &Path, into: &mut Vec<(String, u64, Vec<u8>)>) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Place {
        file: String,
        line: u64,
    }
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let place: Place = serde_json::from_slice(line)
            .with_context(|| format!("{} line {}: not a dead letter", path.display(), n + 1))?;
        into.push((place.file, place.line, line.to_vec()));
    }
    Ok(())
}

/// Merges the parts a cluster replay wrote into `dir` (`part-0` to
/// `part-(N-1)`, see [`part_dir`]) into `dir`'s own output files and
/// `summary.json`: the files a one-process replay of the same inputs
/// writes, byte for byte. Refuses, before writing anything, when a part is
/// missing or incomplete, when the parts come from different runs, or
/// when a part's files do not hold what its summary counts.
pub fn merge(dir: &Path) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        dir.is_dir(),
        "{} is not a directory; merge reads the part-* directories that `replay -n N -p I --out DIR` writes",
        dir.display()
    );
    let found = part_dirs(dir)?;
    anyhow::ensure!(
        !found.is_empty(),
        "{} holds no part-* directories; merge reads the parts that `replay -n N -p I --out {}` writes",
        dir.display(),
        dir.display()
    );
    let mut manifests = BTreeMap::new();
    for (&index, part) in &found {
        let path = part.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "{} is incomplete: it has no {MANIFEST} (its process has not finished, or failed)",
                part.display()
            ),
            _ => anyhow::anyhow!("cannot read {}: {e}", path.display()),
        })?;
        let manifest: PartManifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a part manifest", path.display()))?;
        anyhow::ensure!(
            manifest.process == index,
            "{} says it holds process {}'s part, not process {index}'s",
            path.display(),
            manifest.process
        );
        manifests.insert(index, manifest);
    }
    let (&first, reference) = manifests.iter().next().expect("at least one part");
    for (&index, m) in &manifests {
        anyhow::ensure!(
            m.run == reference.run && m.processes == reference.processes,
            "the parts in {} come from different runs: part-{first} is of run {} (-n {}), part-{index} of run {} (-n {}); \
             replay every process again into the same --out, or remove the stale part",
            dir.display(),
            reference.run,
            reference.processes,
            m.run,
            m.processes
        );
    }
    let processes = reference.processes;
    let missing: Vec<String> = (0..processes)
        .filter(|i| !found.contains_key(i))
        .map(|i| format!("part-{i}"))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} lacks {} of run {}, which had {processes} processes (-n {processes}): merge needs part-0 to part-{}",
        dir.display(),
        missing.join(", "),
        reference.run,
        processes - 1
    );

    let mut summary = Summary::default();
    let mut dispatches = Vec::with_capacity(processes);
    let mut suppressions = Vec::with_capacity(processes);
    let mut churn_signals = Vec::with_capacity(processes);
    let mut letters = Vec::new();
    for part in found.values() {
        let path = part.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let share: Summary = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a replay summary", path.display()))?;
        let d = read_lines(&part.join("dispatches.jsonl"), TimeField::Decision)?;
        let s = read_lines(&part.join("suppressions.jsonl"), TimeField::Time)?;
        let c = read_lines(&part.join("churn_signals.jsonl"), TimeField::Time)?;
        let before = letters.len();
        read_letters(&part.join("dead_letters.jsonl"), &mut letters)?;
        for (name, lines, counted) in [
            ("dispatches.jsonl", d.len(), share.dispatches),
            ("suppressions.jsonl", s.len(), share.suppressions),
            ("churn_signals.jsonl", c.len(), share.churn_signals),
            (
                "dead_letters.jsonl",
                letters.len() - before,
                share.dead_letters,
            ),
        ] {
            anyhow::ensure!(
                lines as u64 == counted,
                "{} holds {lines} lines but {} counts {counted}: the part was changed after its replay",
                part.join(name).display(),
                path.display()
            );
        }
        summary.absorb(share);
        dispatches.push(d);
        suppressions.push(s);
        churn_signals.push(c);
    }
    let mut files = OutputFiles::open(dir)?;
    files.empty()?;
    files
        .write(
            &dispatches,
            &suppressions,
            &churn_signals,
            &ordered_letters(letters),
            &summary,
        )
        .with_context(|| format!("writing {}", dir.display()))?;
    // Every process holds all the aggregates; process 0 wrote them.
    let first = &found[&0];
    for name in AGGREGATE_FILES {
        let (from, to) = (first.join(name), dir.join(name));
        match std::fs::copy(&from, &to) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&to);
            }
            Err(e) => return Err(e).with_context(|| format!("copying {}", from.display())),
        }
    }
    Ok(summary)
}

/// The aggregates `replay --out` writes with `[analytics]` (DESIGN.md §8).
pub const AGGREGATE_FILES: [&str; 3] = ["retention.json", "delivery.json", "churn.jsonl"];

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
                id: None,
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
            .write(&[lines], &[], &[], &Lines::default(), &Summary::default())
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

    /// Writes one part of a run into `dir/part-{process}` as a cluster
    /// process does; its dispatches at `times`.
    fn write_part(dir: &Path, run: &str, process: usize, processes: usize, times: &[Time]) {
        let spec = Spec::parse("t.toml", "").unwrap();
        let mut lines = Lines::default();
        let mut summary = Summary::default();
        for &t in times {
            let d = Decision::Suppression(Suppression {
                user: format!("u-{t}").into(),
                rule: None,
                event_key: "s/1".into(),
                time: t,
                reason: Reason::Late,
                detail: Detail::None,
            });
            lines.push(t, |out| d.write_json(&spec, out));
            summary.count_decisions(&spec, [&d]);
        }
        lines.sort();
        summary.records = 10 * times.len() as u64;
        let letters: Vec<DeadLetter> = (process == 0)
            .then(|| DeadLetter {
                stream: crate::record::StreamKind::Events,
                at: Position::File {
                    file: "events.jsonl".into(),
                    line: 7,
                },
                reason: "bad".into(),
                record: crate::record::output::Payload::Text("x".into()),
            })
            .into_iter()
            .collect();
        summary.dead_letters = letters.len() as u64;
        let mut files = OutputFiles::open(&part_dir(dir, process)).unwrap();
        files.empty().unwrap();
        files
            .write(&[], &[lines], &[], &dead_letter_lines(&letters), &summary)
            .unwrap();
        files
            .write_manifest(&PartManifest {
                run: run.into(),
                process,
                processes,
            })
            .unwrap();
    }

    /// Merged parts are the files one writer of all the lines writes, with
    /// the counts summed.
    #[test]
    fn merge_joins_parts_into_what_one_process_writes() {
        let dir = tempfile::tempdir().unwrap();
        write_part(dir.path(), "r1", 0, 2, &[5, 1, 9]);
        write_part(dir.path(), "r1", 1, 2, &[3, 5, 12]);
        let whole = tempfile::tempdir().unwrap();
        write_part(whole.path(), "r0", 0, 1, &[5, 1, 9, 3, 5, 12]);
        let merged = merge(dir.path()).unwrap();
        let expected = part_dir(whole.path(), 0);
        for name in [
            "dispatches.jsonl",
            "suppressions.jsonl",
            "dead_letters.jsonl",
            "summary.json",
        ] {
            let read = |d: &Path| std::fs::read_to_string(d.join(name)).unwrap();
            assert_eq!(read(dir.path()), read(&expected), "{name}");
        }
        assert_eq!((merged.suppressions, merged.records), (6, 60));
        assert_eq!(merged.dead_letters, 1);
    }

    /// Merge refuses, and writes nothing, when a part is missing or
    /// unfinished, when parts come from different runs, and when a part's
    /// files do not hold what its summary counts.
    #[test]
    fn merge_refuses_missing_foreign_and_changed_parts() {
        let refused = |dir: &Path| {
            let e = merge(dir).expect_err("merge refuses").to_string();
            assert!(!dir.join("summary.json").exists(), "wrote despite: {e}");
            e
        };
        let dir = tempfile::tempdir().unwrap();
        assert!(refused(dir.path()).contains("holds no part-* directories"));

        write_part(dir.path(), "r1", 0, 3, &[1]);
        write_part(dir.path(), "r1", 2, 3, &[2]);
        let e = refused(dir.path());
        assert!(
            e.contains("lacks part-1 of run r1") && e.contains("-n 3"),
            "{e}"
        );

        write_part(dir.path(), "r2", 1, 3, &[2]);
        let e = refused(dir.path());
        assert!(e.contains("different runs") && e.contains("r2"), "{e}");

        write_part(dir.path(), "r1", 1, 3, &[2]);
        std::fs::remove_file(part_dir(dir.path(), 2).join(MANIFEST)).unwrap();
        let e = refused(dir.path());
        assert!(e.contains("part-2 is incomplete"), "{e}");

        write_part(dir.path(), "r1", 2, 3, &[2]);
        std::fs::write(part_dir(dir.path(), 1).join("suppressions.jsonl"), "").unwrap();
        let e = refused(dir.path());
        assert!(e.contains("holds 0 lines") && e.contains("counts 1"), "{e}");

        write_part(dir.path(), "r1", 1, 3, &[2]);
        merge(dir.path()).unwrap();
    }
}
