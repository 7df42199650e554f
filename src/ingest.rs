//! Ingest: one input record, from its bytes to the dataflow's inputs. Every
//! source (fixture files, Kafka) parses, judges lateness and routes with
//! this module, so a record means the same wherever it comes from.
//!
//! - input: the bytes of one record of a stream, its position in its
//!   partition (`seq`: a file's byte offset, a Kafka offset) and the
//!   partition's [`Watermark`].
//! - output: into an [`Ingested`] buffer, either routed records (arrivals
//!   and profile upserts, `dataflow::route`), or a dead letter naming the
//!   stream, the position and why; plus the counts of records and late
//!   events.
//! - time: each record keeps its exact millisecond time. A partition's
//!   watermark is the largest time it has delivered minus the spec's
//!   `allowed_lateness`; a record older than it is late (docs/semantics.md
//!   "Late records"), and so is one older than what its worker has already
//!   released (on Kafka, where idle partitions release event time by the
//!   wall clock). A late event becomes a `late` suppression; any other late
//!   record is a dead letter.
//!
//! Parsing ([`parse`]) and judging ([`Ingest::admit`]) are apart because a
//! fixture stripe is parsed before the watermark at its start is known
//! (`source::fixture`).

use std::sync::Arc;

use crate::dataflow::route::{Arrival, Routed, Router};
use crate::record::output::{DeadLetter, Payload, Position};
use crate::record::{Record, StreamKind, parse_event_ref, parse_line};
use crate::source::Report;
use crate::spec::Spec;
use crate::time::{Time, format_rfc3339};

/// A parsed record: events are routed as they are parsed (no copy of what
/// `decide` does not need); other records are routed when admitted.
pub enum Parsed {
    Event(Arrival),
    /// Boxed: a record is about three times an arrival's size, and most
    /// records are events.
    Other(Box<Record>),
}

impl Parsed {
    pub fn time(&self) -> Time {
        match self {
            Parsed::Event(a) => a.time(),
            Parsed::Other(r) => r.time(),
        }
    }
}

/// Validates bytes as UTF-8: SIMD for the common case (simdutf8), the
/// standard library's checker for the error message when it fails.
pub fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(_) => std::str::from_utf8(bytes),
    }
}

/// Parses one record of `stream` (events are routed at once, with `seq`
/// their position). The error names what is wrong.
pub fn parse(
    router: &mut Router,
    stream: StreamKind,
    bytes: &[u8],
    seq: u64,
) -> Result<Parsed, String> {
    match utf8(bytes) {
        Ok(text) if stream == StreamKind::Events => {
            parse_event_ref(text).map(|e| Parsed::Event(router.event(&e, seq)))
        }
        Ok(text) => parse_line(stream, text).map(|r| Parsed::Other(Box::new(r))),
        Err(e) => Err(format!("the record is not UTF-8 ({e})")),
    }
}

/// A partition's watermark: the largest time it has delivered, minus the
/// allowed lateness.
#[derive(Clone, Copy, Debug)]
pub struct Watermark {
    seen: Option<Time>,
    lateness: Time,
}

impl Watermark {
    pub fn new(allowed_lateness: Time) -> Watermark {
        Watermark {
            seen: None,
            lateness: allowed_lateness,
        }
    }

    /// A watermark that has already seen `seen` (a fixture stripe starts
    /// where the stripes before it ended).
    pub fn after(allowed_lateness: Time, seen: Option<Time>) -> Watermark {
        Watermark {
            seen,
            lateness: allowed_lateness,
        }
    }

    /// The watermark; `None` before the first record.
    pub fn get(&self) -> Option<Time> {
        self.seen.map(|m| m.saturating_sub(self.lateness))
    }

    /// The largest time delivered so far.
    pub fn seen(&self) -> Option<Time> {
        self.seen
    }

    fn observe(&mut self, t: Time) {
        self.seen = self.seen.max(Some(t));
    }
}

/// What a source has ingested since it last sent: routed records, dead
/// letters and counts.
#[derive(Default)]
pub struct Ingested {
    pub routed: Routed,
    pub dead_letters: Vec<DeadLetter>,
    /// Records admitted (late events included, dead letters not).
    pub records: u64,
    /// Late events among them.
    pub late: u64,
    /// The largest time among them.
    pub latest: Option<Time>,
}

impl Ingested {
    /// Takes the dead letters and counts as reports (the counts only when
    /// not zero).
    pub fn take_reports(&mut self) -> Vec<Report> {
        let mut reports: Vec<Report> = self
            .dead_letters
            .drain(..)
            .map(Report::DeadLetter)
            .collect();
        if self.records > 0 {
            reports.push(Report::Counts {
                records: std::mem::take(&mut self.records),
                late: std::mem::take(&mut self.late),
                latest: self.latest.take().unwrap_or(Time::MIN),
            });
        }
        reports
    }
}

/// Which records a source keeps: in a cluster replay every process reads
/// every file and keeps its own users' records; process 0 alone keeps
/// records without a user (receipts) and dead letters. A Kafka worker
/// keeps everything it reads (it alone reads its partitions).
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    All,
    Owned(crate::source::Placement),
}

impl Keep {
    fn user(&self, hash: u64) -> bool {
        match self {
            Keep::All => true,
            Keep::Owned(p) => p.process_owns(hash),
        }
    }

    fn unowned(&self) -> bool {
        match self {
            Keep::All => true,
            Keep::Owned(p) => p.process == 0,
        }
    }
}

/// A worker's ingest state: the router, and which records it keeps.
pub struct Ingest {
    router: Router,
    keep: Keep,
    /// All workers of the job, each of which gets a copy of a receipt.
    peers: usize,
}

/// Where a record comes from, to name it in a dead letter or a lateness
/// message.
pub struct Origin<'a> {
    pub stream: StreamKind,
    /// The partition's name in messages: a file name, or `topic/partition`.
    pub partition: &'a str,
    pub at: &'a dyn Fn() -> Position,
}

impl Ingest {
    pub fn new(spec: Arc<Spec>, keep: Keep, peers: usize) -> Ingest {
        Ingest {
            router: Router::new(spec),
            keep,
            peers,
        }
    }

    pub fn router(&mut self) -> &mut Router {
        &mut self.router
    }

    /// Parses and admits one record.
    pub fn ingest(
        &mut self,
        origin: &Origin<'_>,
        bytes: &[u8],
        seq: u64,
        watermark: &mut Watermark,
        released: Time,
        out: &mut Ingested,
    ) {
        let parsed = parse(&mut self.router, origin.stream, bytes, seq);
        self.admit(origin, bytes, seq, parsed, watermark, released, out);
    }

    /// Makes `bytes` (a record as read) a dead letter, when this worker
    /// keeps dead letters.
    pub fn dead_letter(
        &self,
        origin: &Origin<'_>,
        bytes: &[u8],
        reason: String,
        out: &mut Ingested,
    ) {
        if !self.keep.unowned() {
            return;
        }
        let at = (origin.at)();
        let record = match at {
            // A fixture line is text, lossily decoded.
            Position::File { .. } => Payload::Text(String::from_utf8_lossy(bytes).into_owned()),
            Position::Kafka { .. } => Payload::from_bytes(bytes),
        };
        out.dead_letters.push(DeadLetter {
            stream: origin.stream,
            at,
            reason,
            record,
        });
    }

    /// Judges a parsed record against its partition's `watermark` and the
    /// time its worker has `released`, then routes it into `out` or makes
    /// it a dead letter. `bytes` is the record as read.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &mut self,
        origin: &Origin<'_>,
        bytes: &[u8],
        seq: u64,
        parsed: Result<Parsed, String>,
        watermark: &mut Watermark,
        released: Time,
        out: &mut Ingested,
    ) {
        let parsed = match parsed {
            Err(reason) => return self.dead_letter(origin, bytes, reason, out),
            Ok(parsed) => parsed,
        };
        let t = parsed.time();
        let mark = watermark.get();
        watermark.observe(t);
        let behind_mark = mark.is_some_and(|w| t < w);
        let behind_released = t < released;
        let late = behind_mark || behind_released;
        if late && !matches!(parsed, Parsed::Event(_)) {
            let why = if behind_mark {
                format!(
                    "late: time {} is older than the watermark {} of {}",
                    format_rfc3339(t),
                    format_rfc3339(mark.unwrap()),
                    origin.partition
                )
            } else {
                format!(
                    "late: time {} is older than the event time {} already released",
                    format_rfc3339(t),
                    format_rfc3339(released)
                )
            };
            return self.dead_letter(origin, bytes, why, out);
        }
        let keep = match &parsed {
            Parsed::Event(a) => self.keep.user(a.hash()),
            Parsed::Other(r) => match r.user() {
                Some(user) => self.keep.user(crate::record::user_hash(user)),
                None => self.keep.unowned(),
            },
        };
        if !keep {
            return;
        }
        out.records += 1;
        out.late += late as u64;
        out.latest = out.latest.max(Some(t));
        match parsed {
            // A late event is reported with its user and key, which routing
            // dropped: parse it again (it parsed once, so it parses again).
            Parsed::Event(_) if late => {
                let text = std::str::from_utf8(bytes).expect("the record was UTF-8");
                let e = parse_event_ref(text).expect("the record parsed");
                out.routed.late(&e);
            }
            Parsed::Event(a) => out.routed.event(a),
            Parsed::Other(r) => out.routed.record(*r, seq, self.peers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Arc<Spec> {
        Arc::new(
            Spec::parse(
                "t.toml",
                "allowed_lateness = \"1m\"\n[[rule]]\nname = \"n\"\non = \"t\"\npurpose = \"transactional\"\nchannels = [\"push\"]\n",
            )
            .unwrap(),
        )
    }

    fn event(id: u32, time: &str) -> Vec<u8> {
        format!(
            "{{\"id\":\"e-{id}\",\"source\":\"s\",\"type\":\"t\",\"time\":\"{time}\",\"subject\":\"u-1\"}}"
        )
        .into_bytes()
    }

    #[test]
    fn records_behind_the_watermark_or_the_released_time_are_late() {
        let mut ingest = Ingest::new(spec(), Keep::All, 1);
        let at = || Position::Kafka {
            topic: "ev".into(),
            partition: 3,
            offset: 9,
        };
        let origin = Origin {
            stream: StreamKind::Events,
            partition: "ev/3",
            at: &at,
        };
        let mut mark = Watermark::new(60_000);
        let mut out = Ingested::default();
        ingest.ingest(
            &origin,
            &event(1, "2026-03-01T10:05:00Z"),
            0,
            &mut mark,
            Time::MIN,
            &mut out,
        );
        // Within the lateness: on time.
        ingest.ingest(
            &origin,
            &event(2, "2026-03-01T10:04:30Z"),
            1,
            &mut mark,
            Time::MIN,
            &mut out,
        );
        assert_eq!((out.records, out.late), (2, 0));
        // Older than the watermark 10:04.
        ingest.ingest(
            &origin,
            &event(3, "2026-03-01T10:03:59Z"),
            2,
            &mut mark,
            Time::MIN,
            &mut out,
        );
        assert_eq!((out.records, out.late), (3, 1));
        // Within the watermark but behind what the worker released.
        let released = crate::time::parse_rfc3339("2026-03-01T10:04:40Z").unwrap();
        ingest.ingest(
            &origin,
            &event(4, "2026-03-01T10:04:30Z"),
            3,
            &mut mark,
            released,
            &mut out,
        );
        assert_eq!((out.records, out.late), (4, 2));
        assert!(matches!(out.routed.arrivals[3], Arrival::Late(_)));
        assert!(out.dead_letters.is_empty());
    }

    #[test]
    fn bad_records_become_dead_letters_with_their_position_and_bytes() {
        let mut ingest = Ingest::new(spec(), Keep::All, 1);
        let at = || Position::Kafka {
            topic: "ev".into(),
            partition: 0,
            offset: 41,
        };
        let origin = Origin {
            stream: StreamKind::Events,
            partition: "ev/0",
            at: &at,
        };
        let mut mark = Watermark::new(0);
        let mut out = Ingested::default();
        ingest.ingest(
            &origin,
            b"{\"id\":\xff}",
            41,
            &mut mark,
            Time::MIN,
            &mut out,
        );
        ingest.ingest(&origin, b"{\"id\":1}", 42, &mut mark, Time::MIN, &mut out);
        assert_eq!(out.records, 0);
        let lines: Vec<String> = out.dead_letters.iter().map(|d| d.to_json_line()).collect();
        assert!(
            lines[0].contains("\"topic\":\"ev\",\"partition\":0,\"offset\":41")
                && lines[0].contains("not UTF-8")
                && lines[0].contains("\"record_base64\":\"eyJpZCI6/30=\""),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("\"record\":\"{\\\"id\\\":1}\""),
            "{}",
            lines[1]
        );
    }
}
