//! Replays a fixture directory (the input files of docs/semantics.md) as a timely source.
//!
//! **Partitions.** Each file is one source partition with its own watermark
//! (largest time seen in file order minus `allowed_lateness`); a record
//! older than its file's watermark is late.
//!
//! **Parallel reading.** Each file is mapped into memory once per process
//! (the OS page cache is read in place, not copied; the files must not
//! change during a replay). A file is cut into fixed-size byte stripes; a
//! stripe owns the lines that *start* inside it. The workers of a process take the
//! stripes round-robin, so they move through event time together. Each
//! worker parses its stripe, publishes the stripe's largest time and line
//! count in a table shared by the process, and finalises it (late verdicts,
//! absolute line numbers) once every earlier stripe is published. Late
//! verdicts are therefore exactly those of one sequential scan, for any
//! number of workers or stripe size.
//!
//! **Time.** Records are sent at a coarse capability: after finalising
//! every [`FixturePlan::stripes_per_step`]th stripe, a worker downgrades to
//! the least time any of its later records can have (the file's watermark),
//! so timely sees one timestamp per few stripes while each record carries
//! its exact millisecond time (always at or after the capability, except
//! late records, which no stage orders by time). Fewer, larger steps make
//! every later stage cheaper (fewer sorts, fewer and larger trace batches
//! to merge and to read), at no cost in memory for parse buffers; the
//! outputs do not depend on it.
//!
//! **Processes.** Every process scans every file and keeps the records of the
//! users it owns (`Placement::process_owns`); process 0 alone reports dead
//! letters and keeps receipts.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use timely::dataflow::Scope;

use super::Outputs;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::{Placement, SourceStreams};
use crate::dataflow::route::Router;
use crate::ingest::{self, Ingest, Ingested, Keep, Origin, Parsed, Watermark};
use crate::record::StreamKind;
use crate::record::output::Position;
use crate::spec::Spec;
use crate::time::Time;

/// The default stripe size: large enough that each step of the dataflow
/// (one per [`DEFAULT_STRIPES_PER_STEP`] stripes) visits many users, so
/// that the per-user stages walk their state and the consent and
/// preference traces in dense key order (1 MiB → 4 MiB cut replay time by
/// about a quarter, `scripts/bench.sh`), small enough to keep workers close
/// in event time and memory modest.
pub const DEFAULT_STRIPE_BYTES: u64 = 4 << 20;

/// The default number of stripes a worker finalises per timestamp: six
/// (24 MiB of input per worker per step). Four cut CPU time by about 5%
/// against one at the same peak memory, eight by 8% more but with 15% more
/// memory, while decisions were held to the end of the run; once the sink
/// rendered them as they came, six cut user time by another 5–8% against
/// four (1.27–1.31 s against 1.34–1.46 s, alternated runs on the benchmark)
/// at the peak memory that four had before.
pub const DEFAULT_STRIPES_PER_STEP: usize = 6;

/// What the workers of one process share about a fixture.
pub struct FixturePlan {
    pub dir: PathBuf,
    pub files: Vec<FilePlan>,
    pub stripe_bytes: u64,
    /// Stripes a worker finalises before it downgrades its capability.
    pub stripes_per_step: usize,
    pub total_bytes: u64,
    /// Bytes finalised so far, for progress reporting.
    pub bytes_done: AtomicU64,
}

pub struct FilePlan {
    pub stream: StreamKind,
    pub path: PathBuf,
    pub len: u64,
    /// The file's bytes (`None` when empty: nothing to map).
    data: Option<memmap2::Mmap>,
    pub stripes: usize,
    published: Mutex<Vec<Option<StripeSummary>>>,
}

#[derive(Clone, Copy)]
struct StripeSummary {
    max_time: Option<Time>,
    lines: u64,
}

impl FixturePlan {
    /// Finds the stream files in `dir`. A directory with none of them is an
    /// error (most likely a wrong path).
    pub fn open(
        dir: &Path,
        stripe_bytes: u64,
        stripes_per_step: usize,
    ) -> anyhow::Result<FixturePlan> {
        anyhow::ensure!(
            dir.is_dir(),
            "fixture directory {} {}",
            dir.display(),
            if dir.exists() {
                "is not a directory; --fixture names the directory that holds events.jsonl and the other streams"
            } else {
                "does not exist"
            }
        );
        let stripe_bytes = stripe_bytes.max(1);
        let mut files = Vec::new();
        for stream in StreamKind::ALL {
            let path = dir.join(stream.file_name());
            // The type is checked before the file is opened: opening a
            // named pipe waits for a writer, and a device is no fixture.
            match std::fs::metadata(&path) {
                Ok(meta) => anyhow::ensure!(
                    meta.is_file(),
                    "{} is not a regular file ({}); a fixture holds JSON-lines files, and it must be a regular file",
                    path.display(),
                    file_kind(&meta.file_type())
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
            }
            let file = File::open(&path)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
            let meta = file.metadata()?;
            anyhow::ensure!(
                meta.is_file(),
                "{} is not a regular file; a fixture holds JSON-lines files",
                path.display()
            );
            let len = meta.len();
            let data = if len == 0 {
                None
            } else {
                // SAFETY: a replay reads its fixture files while nothing
                // writes them (README, "Replay"); the map is read-only.
                Some(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| {
                    anyhow::anyhow!("cannot map {} into memory: {e}", path.display())
                })?)
            };
            let stripes = len.div_ceil(stripe_bytes) as usize;
            files.push(FilePlan {
                stream,
                path,
                len,
                data,
                stripes,
                published: Mutex::new(vec![None; stripes]),
            });
        }
        anyhow::ensure!(
            !files.is_empty(),
            "{} holds none of events.jsonl, preferences.jsonl, consent.jsonl, receipts.jsonl, erasures.jsonl",
            dir.display()
        );
        let total_bytes = files.iter().map(|f| f.len).sum();
        Ok(FixturePlan {
            dir: dir.to_path_buf(),
            files,
            stripe_bytes,
            stripes_per_step: stripes_per_step.max(1),
            total_bytes,
            bytes_done: AtomicU64::new(0),
        })
    }
}

/// What a file that is not a regular file is, for an error message.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a plain file"
    }
}

impl FilePlan {
    /// Unmaps the pages of a finalised stripe from this process (they stay
    /// in the OS page cache), so that resident memory does not grow with
    /// the input. A later read of those bytes (a line crossing into the
    /// stripe) maps them again.
    fn release(&self, offset: usize, len: usize) {
        if let Some(data) = &self.data {
            // SAFETY: the map is read-only and backed by the file, so
            // dropping its pages never changes what later reads see.
            let _ = unsafe {
                data.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
    }

    /// Maps the pages of a stripe about to be parsed in one call (on Linux
    /// 5.14 and later; elsewhere a no-op): the page faults of a first
    /// touch, one per 4 KiB page, cost more than the parsing of it.
    fn populate(&self, offset: usize, len: usize) {
        #[cfg(target_os = "linux")]
        if let Some(data) = &self.data {
            let _ = data.advise_range(memmap2::Advice::PopulateRead, offset, len);
        }
    }

    fn publish(&self, stripe: usize, summary: StripeSummary) {
        self.published.lock().expect("stripe table poisoned")[stripe] = Some(summary);
    }

    /// Largest time and line count of all stripes before `stripe`, once all
    /// of them are published.
    fn prefix(&self, stripe: usize) -> Option<(Option<Time>, u64)> {
        let table = self.published.lock().expect("stripe table poisoned");
        let mut max_time: Option<Time> = None;
        let mut lines = 0;
        for s in &table[..stripe] {
            let s = (*s)?;
            max_time = max_time.max(s.max_time);
            lines += s.lines;
        }
        Some((max_time, lines))
    }
}

/// A parsed stripe waiting for its predecessors.
struct ParsedStripe {
    stripe: usize,
    lines: Vec<ParsedLine>,
    summary: StripeSummary,
}

/// One non-blank line of a stripe.
struct ParsedLine {
    /// Line index within the stripe.
    index: u64,
    /// Where the line is in its file (its start is the record's stream
    /// position).
    range: std::ops::Range<usize>,
    result: Result<Parsed, String>,
}

/// One worker's progress through one file.
struct Cursor {
    next_stripe: usize,
    pending: Option<ParsedStripe>,
    /// Least time any later record of ours in this file can have.
    lower: Time,
}

fn memchr_nl(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

/// Parses (and routes) the lines that start in `stripe`.
fn parse_stripe(
    router: &mut Router,
    plan: &FilePlan,
    stripe_bytes: u64,
    stripe: usize,
    mut lines: Vec<ParsedLine>,
) -> ParsedStripe {
    let buf: &[u8] = plan.data.as_deref().unwrap_or_default();
    let start = (stripe as u64 * stripe_bytes) as usize;
    let end = (start + stripe_bytes as usize).min(buf.len());
    plan.populate(start, end - start);
    // The first line starting at or after `start`.
    let first = match start {
        0 => 0,
        _ => memchr_nl(&buf[start - 1..]).map_or(buf.len(), |i| start + i),
    };
    // Room for the lines of a typical stripe (records of 100–250 bytes), so
    // that the vector is not regrown and copied as it fills.
    lines.clear();
    lines.reserve((end - start) / 96 + 1);
    let mut max_time: Option<Time> = None;
    let mut pos = first;
    let mut index = 0u64;
    while pos < end {
        let stop = memchr_nl(&buf[pos..]).map(|i| pos + i).unwrap_or(buf.len());
        let mut line_end = stop;
        if line_end > pos && buf[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        let bytes = &buf[pos..line_end];
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            let parsed = ingest::parse(router, plan.stream, bytes, pos as u64);
            if let Ok(r) = &parsed {
                max_time = max_time.max(Some(r.time()));
            }
            lines.push(ParsedLine {
                index,
                range: pos..line_end,
                result: parsed,
            });
        }
        index += 1;
        pos = stop + 1;
    }
    ParsedStripe {
        stripe,
        lines,
        summary: StripeSummary {
            max_time,
            lines: index,
        },
    }
}

/// The fixture source: parses, judges and routes every record
/// (`ingest`); its reports carry the dead letters and counts.
pub fn fixture_source<'s>(
    scope: Scope<'s, Time>,
    plan: Arc<FixturePlan>,
    spec: Arc<Spec>,
    placement: Placement,
) -> SourceStreams<'s> {
    let mut builder = OperatorBuilder::new("FixtureSource".to_owned(), scope);
    let info = builder.operator_info();
    let (mut outputs, streams) = Outputs::new(&mut builder);
    let allowed_lateness = spec.allowed_lateness;

    builder.build(move |capabilities| {
        let activator = scope.activator_for(info.address);
        let mut capabilities = Some(capabilities);
        let mut cursors: Vec<Cursor> = plan
            .files
            .iter()
            .map(|_| Cursor {
                next_stripe: placement.local_index,
                pending: None,
                lower: Time::MIN,
            })
            .collect();
        let mut ingest = Ingest::new(spec, Keep::Owned(placement), placement.peers());
        let mut ingested = Ingested::default();
        // Emptied line vectors of finalised stripes, reused (a stripe's
        // vector is megabytes: fresh ones cost page faults).
        let mut spare: Vec<Vec<ParsedLine>> = Vec::new();
        // Stripes finalised since the last downgrade.
        let mut unstamped = 0;

        move |_frontiers| {
            let Some(caps) = capabilities.as_mut() else {
                return;
            };
            // Parse one stripe of the file furthest behind in event time
            // (among those not waiting for other workers), so that files
            // advance together; then finalise every stripe that is ready.
            let mut progressed = false;
            let next = (0..cursors.len())
                .filter(|&i| {
                    cursors[i].pending.is_none() && cursors[i].next_stripe < plan.files[i].stripes
                })
                .min_by_key(|&i| cursors[i].lower);
            if let Some(i) = next {
                let (fplan, c) = (&plan.files[i], &mut cursors[i]);
                let lines = spare.pop().unwrap_or_default();
                let parsed = parse_stripe(
                    ingest.router(),
                    fplan,
                    plan.stripe_bytes,
                    c.next_stripe,
                    lines,
                );
                fplan.publish(parsed.stripe, parsed.summary);
                c.pending = Some(parsed);
                progressed = true;
            }
            for (c, fplan) in cursors.iter_mut().zip(&plan.files) {
                let Some(parsed) = c.pending.as_ref() else {
                    continue;
                };
                let Some((prefix_max, base_line)) = fplan.prefix(parsed.stripe) else {
                    continue;
                };
                let mut parsed = c.pending.take().unwrap();
                let file_name = fplan.stream.file_name();
                let mut watermark = Watermark::after(allowed_lateness, prefix_max);
                let text = fplan.data.as_deref().unwrap_or_default();
                for ParsedLine {
                    index,
                    range,
                    result,
                } in parsed.lines.drain(..)
                {
                    let at = || Position::File {
                        file: file_name.into(),
                        line: base_line + index + 1,
                    };
                    let origin = Origin {
                        stream: fplan.stream,
                        partition: file_name,
                        at: &at,
                    };
                    let bytes = &text[range.clone()];
                    ingest.admit(
                        &origin,
                        bytes,
                        range.start as u64,
                        result,
                        &mut watermark,
                        Time::MIN,
                        &mut ingested,
                    );
                }
                spare.push(std::mem::take(&mut parsed.lines));
                let routed = &ingested.routed;
                let sizes = (routed.arrivals.len(), routed.profile.len());
                outputs.send(caps, &mut ingested);
                // The next stripe most likely routes as many records.
                ingested.routed.arrivals.reserve(sizes.0);
                ingested.routed.profile.reserve(sizes.1);
                let stripe_start = parsed.stripe as u64 * plan.stripe_bytes;
                let stripe_len = plan.stripe_bytes.min(fplan.len - stripe_start);
                fplan.release(stripe_start as usize, stripe_len as usize);
                plan.bytes_done.fetch_add(stripe_len, Ordering::Relaxed);
                c.next_stripe = parsed.stripe + placement.local_workers;
                c.lower = watermark.get().unwrap_or(Time::MIN);
                progressed = true;
                unstamped += 1;
            }
            // Downgrade to the least time a later record can carry, once
            // per `stripes_per_step` stripes.
            let lower = cursors
                .iter()
                .zip(&plan.files)
                .filter(|(c, f)| c.pending.is_some() || c.next_stripe < f.stripes)
                .map(|(c, _)| c.lower)
                .min();
            match lower {
                None => capabilities = None,
                Some(t) => {
                    if t > *caps[0].time() && unstamped >= plan.stripes_per_step {
                        unstamped = 0;
                        for cap in caps.iter_mut() {
                            cap.downgrade(&t);
                        }
                    }
                    activator.activate();
                    if !progressed {
                        // Blocked on a stripe another worker is parsing.
                        std::thread::yield_now();
                    }
                }
            }
        }
    });
    streams
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture that is not a directory is told apart from a missing one.
    #[test]
    fn a_fixture_must_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("events.jsonl");
        std::fs::write(&file, "").unwrap();
        let open = |p: &Path| FixturePlan::open(p, 1 << 20, 1).err().unwrap().to_string();
        assert!(
            open(&file).contains("is not a directory"),
            "{}",
            open(&file)
        );
        let missing = dir.path().join("nothing");
        assert!(
            open(&missing).contains("does not exist"),
            "{}",
            open(&missing)
        );
    }

    #[test]
    #[allow(invalid_from_utf8, reason = "the invalid line is the point")]
    fn lines_that_are_not_utf8_get_the_standard_message() {
        assert_eq!(
            ingest::utf8("{\"id\":\"h\u{e9}llo\"}".as_bytes()),
            Ok("{\"id\":\"h\u{e9}llo\"}")
        );
        let bad = b"{\"id\":\"\xff\"}";
        let e = ingest::utf8(bad).unwrap_err();
        assert_eq!(e, std::str::from_utf8(bad).unwrap_err());
        assert_eq!(
            e.to_string(),
            "invalid utf-8 sequence of 1 bytes from index 7"
        );
    }

    #[test]
    fn open_finds_the_stream_files_and_rejects_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = FixturePlan::open(dir.path(), 1 << 20, 1).err().unwrap();
        assert!(err.to_string().contains("holds none of"), "{err}");

        std::fs::write(dir.path().join("consent.jsonl"), "").unwrap();
        let plan = FixturePlan::open(dir.path(), 1 << 20, 1).unwrap();
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].stripes, 0, "an empty file has no stripes");

        std::fs::create_dir(dir.path().join("events.jsonl")).unwrap();
        let err = FixturePlan::open(dir.path(), 1 << 20, 1).err().unwrap();
        assert!(
            err.to_string()
                .contains("events.jsonl is not a regular file"),
            "{err}"
        );
    }

    /// A named pipe is refused before it is opened (opening it would wait
    /// for a writer for ever), naming the file.
    #[cfg(unix)]
    #[test]
    fn a_named_pipe_is_refused_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("events.jsonl");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        // In a thread: a replay that opens the pipe blocks, and the test
        // fails on the timeout instead of hanging.
        let path = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(
                FixturePlan::open(&path, 1 << 20, 1)
                    .err()
                    .map(|e| e.to_string()),
            );
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("open returns instead of waiting on the pipe")
            .expect("a named pipe is refused");
        assert!(
            err.contains("events.jsonl is not a regular file (a named pipe)")
                && err.contains("must be a regular file"),
            "{err}"
        );
    }
}
