//! The `nudgeflow` command line: thin glue over the library.

use anyhow::Context as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use nudgeflow::replay::{Cluster, ReplayOptions, check_out_dir, output_dir, run_to_dir};
use nudgeflow::sink::files::Summary;
use nudgeflow::source::fixture::{DEFAULT_STRIPE_BYTES, DEFAULT_STRIPES_PER_STEP};
use nudgeflow::spec::Spec;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: `mi_option_purge_delay`, 15 in the
/// `mi_option_e` enum of the mimalloc 3 sources that libmimalloc-sys 0.1.49
/// bundles (`c_src/mimalloc/v3/include/mimalloc.h`). The crate names no
/// constant for it, so Cargo.toml pins that version exactly: check the
/// number in the header before moving the pin.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the allocator instead of handing it back to the
/// OS. Each step of the dataflow frees and reallocates buffers of a few
/// MiB (stripes, exchanged batches); returned to the OS, they came back as
/// fresh pages for the kernel to zero again, about a tenth of the run time
/// (`perf stat`: 11.7k page faults and 0.84 s system time on the 1M-event
/// benchmark, against 0.36k and 0.34 s). The resident size stays at its
/// peak, which a long-running job reaches anyway.
fn keep_freed_memory() {
    // SAFETY: called first thing in `main`, before any other thread exists
    // (the option is not thread-safe to set).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// nudgeflow turns event streams (cart abandoned, payment failed, new-device
/// login, …) into consent-respecting notifications: it joins events with
/// each user's preferences and consent, applies delays, cancellations, quiet
/// hours, de-duplication and frequency caps, and emits dispatch commands.
///
/// Run without a command to replay the bundled e-commerce demo.
#[derive(Parser)]
#[command(name = "nudgeflow", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a fixture directory through a spec and write the decisions.
    ///
    /// Reads --fixture DIR/{events,preferences,consent,receipts,erasures}.jsonl (any
    /// subset) and writes dispatches.jsonl, suppressions.jsonl,
    /// dead_letters.jsonl and summary.json into --out, replacing what an
    /// earlier run left there (the files are opened, and emptied, as the
    /// replay starts).
    ///
    /// In a cluster (-n N > 1) the processes first connect to each other
    /// (giving up after --connect-timeout), and process I writes the
    /// decisions of its own workers into --out/part-I/: the same files,
    /// summary.json with its own counts, and part.json (the run's id, I and
    /// N). Processes may share one --out. Once every process has finished,
    /// `nudgeflow merge OUT` joins the parts.
    Replay(ReplayArgs),
    /// Merge the parts of a cluster replay: reads DIR/part-0 to
    /// DIR/part-(N-1) and writes DIR/{dispatches,suppressions,dead_letters}.jsonl
    /// and DIR/summary.json, byte for byte what one process would have
    /// written. Refuses when a part is missing or unfinished, or when the
    /// parts come from different runs.
    Merge {
        /// The --out directory of the cluster replay.
        dir: PathBuf,
    },
    /// Validate specs and job configs (a job config also has its spec
    /// checked); print what is wrong with each, with file and line.
    Check {
        /// Spec or job config files (TOML).
        #[arg(required = true)]
        specs: Vec<PathBuf>,
    },
    /// Generate a realistic, deterministic fixture directory; `gen
    /// receipts` adds provider receipts for the dispatches of its replay.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Gen {
        #[command(subcommand)]
        what: Option<GenWhat>,
        /// Number of distinct users.
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Number of events; about 1% more lines are written, re-sent
        /// duplicates of some of them.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Seed: the same seed gives byte-identical files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Days of event time the events span.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Output directory (created). It must be empty or missing,
        /// unless --force is given.
        #[arg(long, required = true)]
        out: Option<PathBuf>,
        /// Write into a directory that is not empty, replacing the files
        /// gen writes (events, preferences, consent and erasures .jsonl);
        /// other files there are kept.
        #[arg(long)]
        force: bool,
    },
    /// Explain one user's timeline: every record, which rules matched and
    /// why not, each candidate and how it ended (dispatched, or suppressed
    /// with its reason and detail).
    ///
    /// Replays the fixture through the spec in memory (nothing is written)
    /// and prints the user's records and decisions in the order the engine
    /// applies them.
    Explain {
        /// The dataflow spec (TOML).
        #[arg(long)]
        spec: PathBuf,
        /// The fixture directory to replay.
        #[arg(long)]
        fixture: PathBuf,
        /// The user id (an event's `subject`, a record's `user`).
        #[arg(long)]
        user: String,
        /// Worker threads.
        #[arg(short = 'w', long = "workers", default_value_t = 1)]
        workers: usize,
    },
    /// Compare two specs on one fixture: what spec B would have decided
    /// differently from spec A.
    ///
    /// Replays the fixture under A and under B, in memory (nothing is
    /// written) and on the same number of workers, matches their decisions
    /// by user, event key, rule and attempt, and reports what changed:
    /// dispatches and suppressions per rule and reason in A and in B, how
    /// many users are affected, and the first changed decisions with both
    /// outcomes. Give the spec in force first and the proposed one second.
    ///
    /// A decision is changed when it is dispatched on another channel, or
    /// suppressed for another reason, or decided at another time, or
    /// dispatched in one run and suppressed in the other; a rule renamed,
    /// added or removed makes decisions that are only in A or only in B.
    ///
    /// Exit status: 0 with a report, whether or not anything changed; with
    /// --exit-code, 1 when anything changed; 2 when the diff cannot be made
    /// (a bad spec, a missing fixture).
    #[command(
        override_usage = "nudgeflow diff --spec A.toml --spec B.toml --fixture DIR [-w N] [--sample N] [--json] [--exit-code]"
    )]
    Diff(DiffArgs),
    /// Write the analytics report of a replay as one self-contained HTML
    /// page: retention cohorts, treated against holdout with the uplift per
    /// segment, the P(alive) distribution, users at risk over time and
    /// delivery per channel (the spec needs an [analytics] table). The same
    /// page is served live at `/` by `run` and `replay --serve`.
    Report {
        /// The dataflow spec (TOML), with an [analytics] table.
        #[arg(long)]
        spec: PathBuf,
        /// The fixture directory to replay.
        #[arg(long)]
        fixture: PathBuf,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
        /// The time the report is as of (RFC 3339); default 1 ms after the
        /// largest record time of the input.
        #[arg(long, value_parser = parse_time)]
        as_of: Option<i64>,
        /// Also write the report's data, as JSON, to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Worker threads.
        #[arg(short = 'w', long = "workers", default_value_t = 1)]
        workers: usize,
    },
    /// Ask a running job's query API (`run`, or `replay --serve`) and print
    /// the answer as a table.
    Query {
        #[command(subcommand)]
        question: QueryWhat,
        /// The job's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:9464", global = true)]
        url: String,
        /// The environment variable holding the API's bearer token, when
        /// the job has one.
        #[arg(long, global = true)]
        token_env: Option<String>,
        /// Print the answer's JSON as it came.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Run the live job on Kafka until SIGTERM or SIGINT (DESIGN.md §7).
    ///
    /// Reads the job config's input topics (partition p of each by worker
    /// p mod W), decides, and produces dispatches, suppressions and dead
    /// letters to its output topics; serves /metrics, /healthz and /readyz
    /// on [http] listen (process I of a cluster on its port + I). On a stop
    /// signal: stops reading, waits for the outputs to be acknowledged,
    /// commits the offsets they cover, exits 0.
    #[command(disable_help_flag = true)]
    Run {
        /// The job config (TOML), e.g. dataflows/job.toml.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        workers: WorkerArgs,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Load a fixture directory into a job's input topics, keyed by user,
    /// in file order.
    Produce {
        /// The job config (TOML): its brokers and topics are used.
        #[arg(long)]
        config: PathBuf,
        /// The fixture directory.
        #[arg(long)]
        fixture: PathBuf,
        /// Records per second (default: as fast as the broker takes them).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Print the messages of an output topic as they arrive.
    Tail {
        /// The job config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// dispatches, suppressions, dead_letters, or a topic name.
        #[arg(long, default_value = "dispatches")]
        topic: String,
        /// Start at the topic's beginning, not its end.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many messages.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Replay the bundled demo (the default command).
    Demo {
        /// Worker threads.
        #[arg(short = 'w', long = "workers", default_value_t = 1)]
        workers: usize,
    },
}

#[derive(Args)]
struct DiffArgs {
    /// A spec (TOML); give it twice: --spec A.toml --spec B.toml, the one
    /// in force first, the proposed one second.
    #[arg(long = "spec", value_name = "SPEC", required = true)]
    specs: Vec<PathBuf>,
    /// The fixture directory both specs replay.
    #[arg(long)]
    fixture: PathBuf,
    /// Worker threads of each replay (the report is the same for any).
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    workers: usize,
    /// How many changed decisions to show, with both outcomes: the first
    /// by user, event key, rule and attempt. 0 shows none.
    #[arg(long, value_name = "N", default_value_t = nudgeflow::diff::DEFAULT_SAMPLE)]
    sample: usize,
    /// Print the report as one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when anything changed, as `git diff --exit-code`
    /// does (status 2 is an error).
    #[arg(long)]
    exit_code: bool,
}

#[derive(Subcommand, Clone)]
enum QueryWhat {
    /// Retention by cohort, segment and group: the share of each cohort
    /// active in each later bucket.
    Retention {
        /// day, week or month (default: the spec's bucket).
        #[arg(long)]
        bucket: Option<String>,
        /// Buckets after the cohort's (default 12).
        #[arg(long)]
        k: Option<u32>,
        /// Only this segment.
        #[arg(long)]
        segment: Option<String>,
    },
    /// One user's churn risk: P(alive) and the activity behind it.
    Churn {
        /// The user id.
        user: String,
    },
    /// The users at risk, lowest P(alive) first.
    AtRisk {
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Dispatched, delivered and failed attempts per channel and rule.
    Delivery,
}

#[derive(Subcommand)]
enum GenWhat {
    /// Simulate channel providers: write FIXTURE/receipts.jsonl with
    /// receipts for the dispatches of a replay, so that replaying the
    /// fixture again exercises channel fallback.
    ///
    /// Each dispatch, at its decision time t, gets one fate (per mille):
    /// 620 `delivered` within 30 min (most within minutes), then `opened`
    /// (30%, within 6 h), `clicked` (30% of the opened), `complained` (2%)
    /// or a `failed` after the success (3%); 100 `failed` and 50 `bounced`
    /// within 2 h (a tenth at exactly t); 50 `failed`, then `delivered`
    /// 1-30 min later; 20 `complained` only; 160 nothing (a timeout).
    /// Besides, 1% of dispatches get a receipt timed before them and 1% a
    /// receipt for an id no dispatch has. The file is sorted by time; the
    /// same dispatches and seed give byte-identical files, and a dispatch's
    /// receipts depend on the seed, its id and its decision time only, so
    /// running this again on the dispatches of the second replay keeps the
    /// receipts of the first attempts and adds receipts for the later ones.
    ///
    /// Example: `nudgeflow gen --out F && nudgeflow replay --spec S
    /// --fixture F --out O && nudgeflow gen receipts --dispatches
    /// O/dispatches.jsonl --out F && nudgeflow replay --spec S --fixture F
    /// --out O2`.
    Receipts {
        /// The dispatches.jsonl of a replay (repeat the flag for the parts
        /// of a cluster replay).
        #[arg(long, required = true)]
        dispatches: Vec<PathBuf>,
        /// The fixture directory (created if missing) to write
        /// receipts.jsonl into.
        #[arg(long)]
        out: PathBuf,
        /// Seed: the same seed gives byte-identical receipts.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Replace a receipts.jsonl that is already there.
        #[arg(long)]
        force: bool,
    },
    /// Write retention data with a planted, known uplift: FIXTURE/events.jsonl
    /// and FIXTURE/spec.toml, the spec to replay it with.
    ///
    /// Users u-0 … u-(N-1) place a first `order.placed` (the activity of the
    /// spec's [analytics]) in one of the first C weeks (their cohort), then
    /// are active (1-3 orders) in each later week with probability P when
    /// in the holdout and P + U when treated, independently week by week.
    /// The group is the engine's holdout rule (FNV-1a 64 of the user id
    /// mod 10000 below the spec's holdout in basis points), so the effect
    /// is exact in expectation: for every cohort, segment and k >= 1,
    /// E[retained_k / size] = P + U for treated users and P for the
    /// holdout. Activity events carry `data.segment` ("ecommerce" 50%,
    /// "saas" 30%, absent 20%); `page.viewed` events in every week, before
    /// the first order too, are noise that must not count. The spec holds
    /// `holdout = H`, a marketing rule and [analytics] with activity =
    /// ["order.placed"], segment = "segment", bucket = "week". Files are in
    /// time order; the same options give byte-identical files, and for one
    /// seed a larger --uplift only adds activity to treated users.
    ///
    /// Example: `nudgeflow gen retention --out F --uplift 0.05 && nudgeflow
    /// replay --spec F/spec.toml --fixture F --out O`.
    Retention {
        /// The fixture directory (created). It must be empty or missing,
        /// unless --force is given.
        #[arg(long)]
        out: PathBuf,
        /// Number of users.
        #[arg(long, value_name = "N", default_value_t = 20_000)]
        users: u64,
        /// Weeks of data (ISO weeks from --start).
        #[arg(long, value_name = "W", default_value_t = 8)]
        weeks: u32,
        /// Users' first activity is spread over the first C weeks.
        #[arg(long, value_name = "C", default_value_t = 4)]
        cohorts: u32,
        /// The holdout fraction written to spec.toml; replay with a spec
        /// of the same holdout.
        #[arg(long, value_name = "H", default_value_t = 0.2)]
        holdout: f64,
        /// Probability that a user is active in each week after their
        /// first (the holdout's rate).
        #[arg(long, value_name = "P", default_value_t = 0.30)]
        base: f64,
        /// Added to P for treated users only; P + U must be in [0, 1].
        #[arg(
            long,
            value_name = "U",
            default_value_t = 0.0,
            allow_negative_numbers = true
        )]
        uplift: f64,
        /// Seed: the same seed gives byte-identical files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The first week's Monday, 00:00 UTC.
        #[arg(long, default_value = "2026-03-02T00:00:00Z", value_parser = nudgeflow::time::parse_rfc3339)]
        start: i64,
        /// Write into a directory that is not empty, replacing its
        /// events.jsonl and spec.toml (other files there are kept, and
        /// would be replayed with them).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Clone)]
struct WorkerArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    workers: usize,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    processes: usize,
    /// This process's index in the cluster (0-based).
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    process: usize,
    /// Host file: one host:port per line, one line per process (default
    /// localhost:2101+i). `-h` is this flag, as in timely's own programs:
    /// help is `--help`.
    #[arg(short = 'h', long = "hostfile")]
    hostfile: Option<PathBuf>,
    /// In a cluster, how long to wait for every other process to connect
    /// before giving up, naming the missing processes, with nothing
    /// written.
    #[arg(long = "connect-timeout", value_name = "SECS", default_value_t = 60)]
    connect_timeout: u64,
}

#[derive(Args)]
#[command(disable_help_flag = true)]
struct ReplayArgs {
    /// The dataflow spec (TOML), e.g. dataflows/core.toml.
    #[arg(long)]
    spec: PathBuf,
    /// The fixture directory to replay.
    #[arg(long)]
    fixture: PathBuf,
    /// Where to write the outputs (created).
    #[arg(long)]
    out: PathBuf,
    /// With `[analytics]`: the time the aggregates (retention.json,
    /// churn.jsonl, delivery.json) are as of, RFC 3339; default 1 ms after
    /// the largest record time of the input, so that every record counts.
    #[arg(long, value_parser = parse_time)]
    as_of: Option<i64>,
    /// After the replay, answer the query API (DESIGN.md §8) and serve the
    /// report page at `/` on this address, as of --as-of, until
    /// interrupted (e.g. 127.0.0.1:9464).
    #[arg(long)]
    serve: Option<std::net::SocketAddr>,
    /// With --serve: the environment variable holding the bearer token
    /// every request must carry.
    #[arg(long, requires = "serve")]
    token_env: Option<String>,
    #[command(flatten)]
    workers: WorkerArgs,
    /// Bytes per read stripe (workers take stripes of each file in turn).
    #[arg(long, default_value_t = DEFAULT_STRIPE_BYTES, hide = true)]
    stripe_bytes: u64,
    /// Stripes each worker reads per timely timestamp.
    #[arg(long, default_value_t = DEFAULT_STRIPES_PER_STEP, hide = true)]
    stripes_per_step: usize,
    /// Print nothing but errors (no progress bar, summary or cluster
    /// connection messages).
    #[arg(short, long)]
    quiet: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

impl WorkerArgs {
    fn cluster(&self) -> Cluster {
        Cluster {
            workers: self.workers,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile.clone(),
            connect_timeout: Duration::from_secs(self.connect_timeout),
        }
    }
}

fn load_job(path: &Path) -> anyhow::Result<nudgeflow::job::JobConfig> {
    nudgeflow::job::JobConfig::load(path).map_err(|e| anyhow::anyhow!("bad job config: {e}"))
}

fn load_spec(path: &Path) -> anyhow::Result<Arc<Spec>> {
    Spec::load(path)
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("bad spec: {e}"))
}

/// Prints a replay's counts; `out`, when given, is where its files are.
fn print_summary(s: &Summary, secs: f64, workers: usize, out: Option<&Path>) {
    let rate = s.records as f64 / secs.max(1e-9);
    eprintln!(
        "replayed {} records in {:.2} s ({:.0} records/s) on {} worker(s)",
        s.records, secs, rate, workers
    );
    let join = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "  dispatches    {:>9}  by channel: {}",
        s.dispatches,
        join(&s.by_channel)
    );
    eprintln!(
        "  suppressions  {:>9}  by reason: {}",
        s.suppressions,
        join(&s.by_reason)
    );
    eprintln!(
        "  dead letters  {:>9}  duplicates dropped {}, late events {}",
        s.dead_letters, s.duplicates_dropped, s.late_events
    );
    for (rule, c) in &s.by_rule {
        eprintln!(
            "  rule {rule:<24} dispatched {:>8}  suppressed {:>8}",
            c.dispatched, c.suppressed
        );
    }
    if let Some(out) = out {
        eprintln!(
            "  wrote {}/{{dispatches,suppressions,dead_letters}}.jsonl and summary.json",
            out.display()
        );
    }
}

fn parse_time(s: &str) -> Result<i64, String> {
    nudgeflow::time::parse_rfc3339(s)
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    check_out_dir(&args.out)?;
    let opts = ReplayOptions {
        spec: load_spec(&args.spec)?,
        fixture: args.fixture.clone(),
        cluster: args.workers.cluster(),
        stripe_bytes: args.stripe_bytes,
        stripes_per_step: args.stripes_per_step,
        progress: !args.quiet,
        as_of: args.as_of,
    };
    let out = run_to_dir(&opts, &args.out)?;
    if let Some(listen) = args.serve {
        let token = token_from_env(args.token_env.as_deref())?;
        let views = nudgeflow::ops::Views {
            inbox: None,
            analytics: out.analytics.clone(),
        };
        let health = nudgeflow::ops::Health::new();
        health.set_ready();
        let metrics = nudgeflow::ops::Metrics::new();
        let server = nudgeflow::ops::spawn(listen, token, metrics, health, None, views)
            .with_context(|| format!("cannot serve HTTP on {listen}"))?;
        eprintln!(
            "nudgeflow: serving the query API on http://{} until interrupted",
            server.addr
        );
        return nudgeflow::run::wait_for_stop_signal();
    }
    if !args.quiet {
        print_summary(
            &out.summary,
            out.elapsed.as_secs_f64(),
            args.workers.workers,
            Some(&output_dir(&opts.cluster, &args.out)),
        );
        if opts.cluster.processes > 1 {
            eprintln!(
                "  this is process {} of {}: once every process has finished, `nudgeflow merge {}` joins the parts",
                opts.cluster.process,
                opts.cluster.processes,
                args.out.display()
            );
        }
    }
    // The process ends next: freeing every output line (allocated by the
    // worker threads) would only delay the exit.
    std::mem::forget(out);
    Ok(())
}

fn report(
    spec: &Path,
    fixture: PathBuf,
    out: &Path,
    as_of: Option<i64>,
    json: Option<&Path>,
    workers: usize,
) -> anyhow::Result<()> {
    let spec_arc = load_spec(spec)?;
    anyhow::ensure!(
        spec_arc.analytics.is_some(),
        "{} has no [analytics] table: there is nothing to report",
        spec.display()
    );
    let opts = ReplayOptions {
        spec: spec_arc.clone(),
        fixture: fixture.clone(),
        cluster: Cluster::single(workers),
        stripe_bytes: DEFAULT_STRIPE_BYTES,
        stripes_per_step: DEFAULT_STRIPES_PER_STEP,
        progress: true,
        as_of,
    };
    let replayed = nudgeflow::replay::run(&opts)?;
    let view = replayed
        .analytics
        .as_ref()
        .expect("a spec with [analytics]");
    let title = format!("{} on {}", spec.display(), fixture.display());
    let data = nudgeflow::analytics::answers::report(&spec_arc, &view.read(), title);
    let data = serde_json::to_value(&data)?;
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&data)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    std::fs::write(out, nudgeflow::report::static_page(&data))
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// The bearer token in the variable `--token-env` names, if given.
fn token_from_env(var: Option<&str>) -> anyhow::Result<Option<String>> {
    var.map(|var| {
        std::env::var(var).with_context(|| format!("--token-env {var}: the variable is not set"))
    })
    .transpose()
}

fn query(what: QueryWhat, url: &str, token_env: Option<&str>, json: bool) -> anyhow::Result<()> {
    use nudgeflow::query::Question;
    let token = token_from_env(token_env)?;
    let question = match what {
        QueryWhat::Retention { bucket, k, segment } => Question::Retention { bucket, k, segment },
        QueryWhat::Churn { user } => Question::Churn { user },
        QueryWhat::AtRisk { limit } => Question::AtRisk { limit },
        QueryWhat::Delivery => Question::Delivery,
    };
    let answer = nudgeflow::query::ask(url, &question, token.as_deref())?;
    let text = match json {
        true => answer.text + "\n",
        false => nudgeflow::query::render(&question, &answer.json),
    };
    // A reader that stops early (`| head`) is not an error.
    use std::io::Write as _;
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn explain(spec: &Path, fixture: PathBuf, user: &str, workers: usize) -> anyhow::Result<()> {
    let opts = ReplayOptions {
        spec: load_spec(spec)?,
        fixture,
        cluster: Cluster::single(workers),
        stripe_bytes: DEFAULT_STRIPE_BYTES,
        stripes_per_step: DEFAULT_STRIPES_PER_STEP,
        progress: false,
        as_of: None,
    };
    print!("{}", nudgeflow::explain::explain(&opts, user)?);
    Ok(())
}

/// `nudgeflow diff`: 0 with a report; 1 with --exit-code when anything
/// changed; 2 when the diff cannot be made (diff(1)'s convention, so that a
/// script can tell a change from a failure).
fn diff(args: DiffArgs) -> std::process::ExitCode {
    use std::io::Write;
    use std::process::ExitCode;
    let [a, b] = <[PathBuf; 2]>::try_from(args.specs).unwrap_or_else(|specs| {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::WrongNumberOfValues,
                format!(
                    "diff compares two specs: give --spec twice (--spec A.toml --spec B.toml), not {} time(s)",
                    specs.len()
                ),
            )
            .exit()
    });
    let report = (|| {
        let opts = nudgeflow::diff::DiffOptions {
            a: (a.display().to_string(), load_spec(&a)?),
            b: (b.display().to_string(), load_spec(&b)?),
            fixture: args.fixture,
            workers: args.workers,
            sample: args.sample,
        };
        nudgeflow::diff::diff(&opts)
    })();
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let text = if args.json {
        report.to_json()
    } else {
        report.to_text()
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that stops early (`| head`) is no failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write the report: {e}");
            return ExitCode::from(2);
        }
        _ => {}
    }
    if args.exit_code && report.differs {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A directory removed, with what it holds, when dropped (also when the
/// command fails).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// The bundled demo: the e-commerce spec over its scenario fixture, both
/// compiled into the binary so that it runs from anywhere.
fn demo(workers: usize) -> anyhow::Result<()> {
    const SPEC: &str = include_str!("../dataflows/ecommerce.toml");
    const FILES: [(&str, &str); 4] = [
        (
            "events.jsonl",
            include_str!("../fixtures/ecommerce-scenario/events.jsonl"),
        ),
        (
            "preferences.jsonl",
            include_str!("../fixtures/ecommerce-scenario/preferences.jsonl"),
        ),
        (
            "consent.jsonl",
            include_str!("../fixtures/ecommerce-scenario/consent.jsonl"),
        ),
        (
            "receipts.jsonl",
            include_str!("../fixtures/ecommerce-scenario/receipts.jsonl"),
        ),
    ];
    let dir = TempDir(std::env::temp_dir().join(format!("nudgeflow-demo-{}", std::process::id())));
    let dir = &dir.0;
    let fixture = dir.join("fixture");
    std::fs::create_dir_all(&fixture)?;
    for (name, text) in FILES {
        std::fs::write(fixture.join(name), text)?;
    }
    let spec = Arc::new(Spec::parse("dataflows/ecommerce.toml", SPEC)?);
    let opts = ReplayOptions {
        spec: spec.clone(),
        fixture,
        cluster: Cluster::single(workers),
        stripe_bytes: DEFAULT_STRIPE_BYTES,
        stripes_per_step: DEFAULT_STRIPES_PER_STEP,
        progress: false,
        as_of: None,
    };
    let out_dir = dir.join("out");
    let out = run_to_dir(&opts, &out_dir)?;
    println!("# nudgeflow demo: dataflows/ecommerce.toml over fixtures/ecommerce-scenario");
    println!("# dispatches (decision time order):");
    print!(
        "{}",
        std::fs::read_to_string(out_dir.join("dispatches.jsonl"))?
    );
    println!("# suppressions:");
    print!(
        "{}",
        std::fs::read_to_string(out_dir.join("suppressions.jsonl"))?
    );
    // The aggregates ([analytics] of the spec), as the query API answers.
    for (name, what) in [
        ("retention.json", "retention by weekly cohort"),
        ("delivery.json", "delivery per channel and rule"),
    ] {
        println!("# {what} ({name}):");
        print!("{}", std::fs::read_to_string(out_dir.join(name))?);
    }
    // The demo's directory is removed: its outputs were printed above.
    print_summary(&out.summary, out.elapsed.as_secs_f64(), workers, None);
    Ok(())
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    // The live job reports its progress (partitions, readiness, stopping)
    // at `info`; the batch commands only warn.
    let default_filter = match cli.command {
        Some(Command::Run { .. }) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NUDGEFLOW_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        None => demo(1),
        Some(Command::Demo { workers }) => demo(workers),
        Some(Command::Replay(args)) => replay(args),
        Some(Command::Explain {
            spec,
            fixture,
            user,
            workers,
        }) => explain(&spec, fixture, &user, workers),
        Some(Command::Merge { dir }) => merge(&dir),
        // Its own exit status: 1 can mean "changed".
        Some(Command::Diff(args)) => return diff(args),
        Some(Command::Report {
            spec,
            fixture,
            out,
            as_of,
            json,
            workers,
        }) => report(&spec, fixture, &out, as_of, json.as_deref(), workers),
        Some(Command::Query {
            question,
            url,
            token_env,
            json,
        }) => query(question, &url, token_env.as_deref(), json),
        Some(Command::Run {
            config, workers, ..
        }) => load_job(&config).and_then(|job| {
            nudgeflow::run::run(nudgeflow::run::RunOptions {
                job,
                cluster: workers.cluster(),
            })
        }),
        Some(Command::Produce {
            config,
            fixture,
            rate,
        }) => load_job(&config).and_then(|job| {
            let started = std::time::Instant::now();
            let n = nudgeflow::feed::produce(&job, &fixture, rate)?;
            eprintln!(
                "produced {n} records from {} to {} in {:.2} s",
                fixture.display(),
                job.kafka.brokers,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }),
        Some(Command::Tail {
            config,
            topic,
            from_beginning,
            limit,
        }) => load_job(&config)
            .and_then(|job| nudgeflow::feed::tail(&job, &topic, from_beginning, limit)),
        Some(Command::Check { specs }) => {
            let mut bad = 0;
            for path in &specs {
                if let Some(result) = check_job(path) {
                    if let Err(e) = result {
                        bad += 1;
                        eprintln!("{e}");
                    }
                    continue;
                }
                match Spec::load(path) {
                    Ok(spec) if spec.rules.is_empty() => println!(
                        "{}: ok, but it has no [[rule]]: every event would be decided to nothing",
                        path.display()
                    ),
                    Ok(spec) => {
                        let n = spec.rules.len();
                        let s = if n == 1 { "" } else { "s" };
                        println!("{}: ok ({n} rule{s})", path.display());
                    }
                    Err(e) => {
                        bad += 1;
                        eprintln!("{e}");
                    }
                }
            }
            if bad > 0 {
                Err(anyhow::anyhow!(
                    "{bad} of {} file(s) are invalid",
                    specs.len()
                ))
            } else {
                Ok(())
            }
        }
        Some(Command::Gen {
            what:
                Some(GenWhat::Receipts {
                    dispatches,
                    out,
                    seed,
                    force,
                }),
            ..
        }) => gen_receipts(dispatches, out, seed, force),
        Some(Command::Gen {
            what:
                Some(GenWhat::Retention {
                    out,
                    users,
                    weeks,
                    cohorts,
                    holdout,
                    base,
                    uplift,
                    seed,
                    start,
                    force,
                }),
            ..
        }) => check_gen_out(&out, force).and_then(|()| {
            let opts = nudgeflow::r#gen::retention::RetentionOptions {
                out,
                users,
                weeks,
                cohorts,
                holdout,
                base,
                uplift,
                seed,
                start_ms: start,
            };
            let stats = nudgeflow::r#gen::retention::generate_retention(&opts)?;
            eprintln!(
                "wrote {} events ({} order.placed, {} page.viewed) for {} users, {} of them in the holdout, and spec.toml to {}",
                stats.events,
                stats.orders,
                stats.page_views,
                stats.users,
                stats.holdout_users,
                opts.out.display()
            );
            Ok(())
        }),
        Some(Command::Gen {
            what: None,
            users,
            events,
            seed,
            days,
            out,
            force,
        }) => gen_cmd(
            users,
            events,
            seed,
            days,
            out.expect("clap requires --out"),
            force,
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Checks a job config and the spec it names, printing "ok" with what it
/// runs; `None` when the file is not a job config (it is checked as a
/// spec).
fn check_job(path: &Path) -> Option<anyhow::Result<()>> {
    let text = std::fs::read_to_string(path).ok()?;
    if !nudgeflow::job::JobConfig::looks_like_job(&text) {
        return None;
    }
    Some((|| {
        let job = nudgeflow::job::JobConfig::parse(path, &text)?;
        let spec = Spec::load(&job.spec)?;
        println!(
            "{}: ok (job config: {} with {} rule(s), brokers {}, group {:?})",
            path.display(),
            job.spec.display(),
            spec.rules.len(),
            job.kafka.brokers,
            job.kafka.group
        );
        Ok(())
    })())
}

fn merge(dir: &Path) -> anyhow::Result<()> {
    let summary = nudgeflow::sink::files::merge(dir)?;
    eprintln!(
        "merged {} dispatches, {} suppressions and {} dead letters into {}/{{dispatches,suppressions,dead_letters}}.jsonl and summary.json",
        summary.dispatches,
        summary.suppressions,
        summary.dead_letters,
        dir.display()
    );
    Ok(())
}

/// Refuses to generate into a directory that holds anything, unless
/// `force`: gen overwrites its files, and would mix them with others.
fn check_gen_out(out: &Path, force: bool) -> anyhow::Result<()> {
    let mut entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) if out.exists() && !out.is_dir() => {
            anyhow::bail!("--out {} is a file, not a directory", out.display())
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read --out {}: {e}", out.display())),
    };
    if entries.next().is_some() && !force {
        anyhow::bail!(
            "--out {} is not empty; choose an empty or new directory, or pass --force to overwrite the files gen writes there",
            out.display()
        );
    }
    Ok(())
}

fn gen_cmd(
    users: u64,
    events: u64,
    seed: u64,
    days: u32,
    out: PathBuf,
    force: bool,
) -> anyhow::Result<()> {
    check_gen_out(&out, force)?;
    let opts = nudgeflow::r#gen::GenOptions {
        users,
        events,
        seed,
        days,
        out: out.clone(),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(events);
    bar.set_style(
        indicatif::ProgressStyle::with_template("generating {bar:40} {pos}/{len} events {per_sec}")
            .expect("a valid template"),
    );
    let stats = nudgeflow::r#gen::generate(&opts, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} events ({} re-sent duplicates), {} preference and {} consent records, {} erasures, {} MiB to {} in {:.2} s",
        stats.events,
        stats.duplicates,
        stats.preferences,
        stats.consent,
        stats.erasures,
        stats.bytes >> 20,
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn gen_receipts(
    dispatches: Vec<PathBuf>,
    out: PathBuf,
    seed: u64,
    force: bool,
) -> anyhow::Result<()> {
    let path = out.join("receipts.jsonl");
    if path.exists() && !force {
        anyhow::bail!("{} exists; pass --force to replace it", path.display());
    }
    let opts = nudgeflow::r#gen::receipts::ReceiptOptions {
        dispatches,
        out,
        seed,
    };
    let stats = nudgeflow::r#gen::receipts::generate_receipts(&opts)?;
    let by_status = stats
        .by_status
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "wrote {} receipts for {} dispatches to {} ({by_status}; {} dispatches without a receipt, {} receipts before their dispatch, {} for unknown ids)",
        stats.receipts,
        stats.dispatches,
        path.display(),
        stats.silent,
        stats.early,
        stats.unknown
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
