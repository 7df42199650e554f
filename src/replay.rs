//! `nudgeflow replay`: runs the decision dataflow over a fixture directory on
//! timely workers (threads and processes) and writes the output directory.
//!
//! In a cluster (`-n N`, N > 1) the processes connect first ([`connect`]),
//! with a deadline, before anything is written; process `I` then writes
//! its share into `--out/part-I/`, which `nudgeflow merge` joins.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::analytics::answers;
use crate::dataflow::aggregates::{self, AnalyticsView, Limit};
use crate::dataflow::{self, DecideStats};
use crate::record::output::DeadLetter;
use crate::sink::files::{
    Lines, OutputFiles, PartManifest, Rendered, Summary, dead_letter_lines, part_dir, render_lines,
};
use crate::source::Placement;
use crate::source::Report;
use crate::source::fixture::{FixturePlan, fixture_source};
use crate::spec::Spec;
use crate::time::Time;
use timely::CommunicationConfig;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::dataflow::operators::core::Map;

/// How long a cluster process waits for its peers by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run timely: threads per process and, for clusters, processes.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub workers: usize,
    pub processes: usize,
    pub process: usize,
    pub hostfile: Option<PathBuf>,
    /// How long to wait for every peer process to connect before giving up.
    pub connect_timeout: Duration,
}

impl Cluster {
    pub fn single(workers: usize) -> Cluster {
        Cluster {
            workers,
            processes: 1,
            process: 0,
            hostfile: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    fn timely_config(&self) -> anyhow::Result<timely::Config> {
        anyhow::ensure!(self.workers >= 1, "-w must be at least 1");
        anyhow::ensure!(
            self.process < self.processes,
            "-p {} is not below -n {}",
            self.process,
            self.processes
        );
        let mut args = vec![
            "nudgeflow".to_string(),
            "-w".into(),
            self.workers.to_string(),
        ];
        if self.processes > 1 {
            args.extend([
                "-n".into(),
                self.processes.to_string(),
                "-p".into(),
                self.process.to_string(),
            ]);
            if let Some(h) = &self.hostfile {
                args.extend(["-h".into(), h.display().to_string()]);
            }
        }
        timely::Config::from_args(args.into_iter().skip(1))
            .map_err(|e| anyhow::anyhow!("timely configuration: {e}"))
    }
}

pub struct ReplayOptions {
    pub spec: Arc<Spec>,
    pub fixture: PathBuf,
    pub cluster: Cluster,
    pub stripe_bytes: u64,
    pub stripes_per_step: usize,
    /// Report progress on stderr: the progress bar of a large replay and,
    /// in a cluster, the peers being waited for.
    pub progress: bool,
    /// The time the aggregates are as of (`--as-of`); `None`: 1 ms after
    /// the largest record time.
    pub as_of: Option<Time>,
}

/// What a replay decided (this process's share in a cluster).
pub struct ReplayOutput {
    /// Rendered dispatch and suppression lines, one sorted part per worker.
    pub dispatches: Vec<Lines>,
    pub suppressions: Vec<Lines>,
    pub churn_signals: Vec<Lines>,
    pub dead_letters: Vec<DeadLetter>,
    pub summary: Summary,
    /// The aggregates, when the spec has `[analytics]`.
    pub analytics: Option<AnalyticsView>,
    pub elapsed: Duration,
    /// The worker threads, waiting to exit until this is dropped.
    _workers: Workers,
}

/// What one worker hands over: its sorted dispatch, suppression and churn signal lines,
/// its dead letters and its summary.
type Part = (Lines, Lines, Lines, Vec<DeadLetter>, Summary);

/// The worker threads of a replay once they have handed over their output.
/// In a single process they wait here instead of exiting: a thread's exit
/// makes the allocator walk every page the thread used (its heap is
/// collected and abandoned), 20–25 ms of two threads at the end of the
/// 1M-event benchmark, which a process that ends next need not pay. Dropping
/// this releases and joins them; `nudgeflow replay` exits without doing so.
struct Workers {
    release: Arc<(Mutex<bool>, Condvar)>,
    guards: Option<timely::communication::WorkerGuards<()>>,
}

impl Workers {
    /// Blocks the calling worker thread until the replay releases it.
    fn wait(release: &(Mutex<bool>, Condvar)) {
        let (released, signal) = release;
        let mut go = released.lock().unwrap_or_else(|e| e.into_inner());
        while !*go {
            go = signal.wait(go).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Releases the threads and joins them; the first failure, if any.
    fn join(&mut self) -> Result<(), String> {
        let (released, signal) = &*self.release;
        *released.lock().unwrap_or_else(|e| e.into_inner()) = true;
        signal.notify_all();
        match self.guards.take() {
            Some(guards) => guards.join().into_iter().collect(),
            None => Ok(()),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Err(e) = self.join() {
            tracing::error!(error = %e, "a worker failed after handing over its output");
        }
    }
}

/// The first failure of any worker, and a flag the others poll: in one
/// process a worker that panics leaves the others waiting forever for its
/// part of the frontier (timely's in-process channels do not report a peer
/// that is gone), so they stop too when they see the flag.
#[derive(Default)]
struct Failure {
    failed: AtomicBool,
    first: Mutex<Option<String>>,
}

impl Failure {
    fn record(&self, payload: &(dyn std::any::Any + Send)) {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a worker panicked".into());
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(message);
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Panics (to unwind this worker) if another worker has failed.
    fn check(&self) {
        if self.failed.load(Ordering::Relaxed) {
            panic!("stopped because another worker failed");
        }
    }

    fn message(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Runs the dataflow over the fixture and gathers every worker's output.
pub fn run(opts: &ReplayOptions) -> anyhow::Result<ReplayOutput> {
    run_prepared(opts, prepare(opts)?)
}

/// A replay whose inputs are checked: its fixture's files found and mapped,
/// timely's configuration valid and its communication built (in a cluster:
/// every peer connected).
struct Prepared {
    plan: FixturePlan,
    worker: timely::WorkerConfig,
    builders: Vec<AllocatorBuilder>,
    /// What keeps the communication up (timely's network threads).
    others: Box<dyn std::any::Any + Send>,
    /// In a cluster, the share of the run this process writes.
    part: Option<PartManifest>,
}

fn prepare(opts: &ReplayOptions) -> anyhow::Result<Prepared> {
    let plan = FixturePlan::open(&opts.fixture, opts.stripe_bytes, opts.stripes_per_step)?;
    let Communication {
        worker,
        builders,
        others,
        part,
    } = communicate(&opts.cluster, opts.progress)?;
    Ok(Prepared {
        plan,
        worker,
        builders,
        others,
        part,
    })
}

/// Timely's communication for a cluster: its workers' allocators, what
/// keeps them up, and (with several processes) which part of the cluster
/// this process is.
pub(crate) struct Communication {
    pub worker: timely::WorkerConfig,
    pub builders: Vec<AllocatorBuilder>,
    pub others: Box<dyn std::any::Any + Send>,
    pub part: Option<PartManifest>,
}

/// Builds the communication of `cluster`; with several processes, first
/// connects to every peer (reporting the ones waited for when `progress`).
pub(crate) fn communicate(cluster: &Cluster, progress: bool) -> anyhow::Result<Communication> {
    let timely::Config {
        communication,
        worker,
    } = cluster.timely_config()?;
    let (builders, others, part) = match communication {
        CommunicationConfig::Cluster {
            threads,
            process,
            addresses,
            ..
        } => {
            let connected =
                crate::connect::connect(&addresses, process, cluster.connect_timeout, progress)?;
            let hooks = timely::communication::Hooks::default();
            let local = ProcessBuilder::new_typed_vector(
                threads,
                hooks.refill.clone(),
                hooks.spill.clone(),
            );
            let (builders, guard) = initialize_networking_from_sockets(
                local,
                connected.sockets,
                process,
                threads,
                hooks,
            )
            .context("cannot start timely's network threads")?;
            let part = PartManifest {
                run: connected.run,
                process,
                processes: addresses.len(),
            };
            let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
            (
                builders,
                Box::new(guard) as Box<dyn std::any::Any + Send>,
                Some(part),
            )
        }
        local => {
            let (builders, others) = local
                .try_build()
                .map_err(|e| anyhow::anyhow!("cannot start timely workers: {e}"))?;
            (builders, others, None)
        }
    };
    Ok(Communication {
        worker,
        builders,
        others,
        part,
    })
}

fn run_prepared(opts: &ReplayOptions, prepared: Prepared) -> anyhow::Result<ReplayOutput> {
    let started = Instant::now();
    let Prepared {
        plan,
        worker: worker_config,
        builders,
        others,
        part: _,
    } = prepared;
    let plan = Arc::new(plan);
    tracing::info!(
        fixture = %opts.fixture.display(),
        files = plan.files.len(),
        bytes = plan.total_bytes,
        workers = opts.cluster.workers,
        processes = opts.cluster.processes,
        process = opts.cluster.process,
        "replay starting"
    );
    let spec = opts.spec.clone();
    let cluster = opts.cluster.clone();
    let progress = opts.progress && plan.total_bytes >= 8 << 20;
    let worker_plan = plan.clone();
    let (parts, handed) = mpsc::channel::<(usize, Part)>();
    let release = Arc::new((Mutex::new(false), Condvar::new()));
    let worker_release = release.clone();
    let wait_for_release = cluster.processes == 1;
    let workers = cluster.workers;
    let failure = Arc::new(Failure::default());
    let worker_failure = failure.clone();
    let analytics = spec
        .analytics
        .is_some()
        .then(|| AnalyticsView::new(spec.clone(), format!("{}", opts.fixture.display())));
    let worker_analytics = analytics.clone();
    let limit = opts.as_of.map_or(Limit::AfterLatestRecord, Limit::Until);
    #[cfg(test)]
    let inject = tests::injected_failure(&opts.fixture);

    let guards = timely::execute::execute_from(builders, others, worker_config, move |worker| {
        let failure = &worker_failure;
        let work = std::panic::AssertUnwindSafe(|| {
            let placement = Placement {
                process: cluster.process,
                processes: cluster.processes,
                local_index: worker.index() % cluster.workers,
                local_workers: cluster.workers,
            };
            let operator_times = operator_times::register(worker);
            let rendered = Rc::new(RefCell::new(Rendered::new(&spec)));
            let stats = Rc::new(RefCell::new(DecideStats::default()));
            let probe = worker.dataflow::<Time, _, _>(|scope| {
                let source = fixture_source(scope, worker_plan.clone(), spec.clone(), placement);
                let decided = dataflow::build(
                    (source.arrivals, source.profile),
                    spec.clone(),
                    stats.clone(),
                );
                if let Some(view) = &worker_analytics {
                    // The first worker of each process keeps its view.
                    let leaders = (0..cluster.processes)
                        .map(|p| (p * cluster.workers) as u32)
                        .collect();
                    let mine = (placement.local_index == 0).then(|| view.clone());
                    let latest = source.reports.clone().flat_map(|r| match r {
                        Report::Counts { latest, .. } => Some(latest),
                        Report::DeadLetter(_) => None,
                    });
                    aggregates::view(decided.facts, latest, leaders, mine, limit);
                }
                render_lines(
                    decided.decisions,
                    source.reports,
                    spec.clone(),
                    rendered.clone(),
                )
            });
            let bar = (progress && worker.index() == 0).then(|| {
                let bar = indicatif::ProgressBar::new(worker_plan.total_bytes);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "replaying {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .expect("a valid template"),
                );
                bar
            });
            let mut last_tick = Instant::now();
            while !probe.done() {
                failure.check();
                #[cfg(test)]
                if inject == Some(worker.index()) {
                    panic!("injected failure");
                }
                worker.step();
                if let Some(bar) = &bar
                    && last_tick.elapsed() > Duration::from_millis(100)
                {
                    bar.set_position(worker_plan.bytes_done.load(Ordering::Relaxed));
                    last_tick = Instant::now();
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if let Some(times) = operator_times {
                times.report(worker.index());
            }
            // Let the dataflow finish, so that timely drops it and its state
            // (traces, per-user state, seen keys).
            while worker.step_or_park(Some(Duration::from_millis(1))) {
                failure.check();
            }
            let tail = Instant::now();
            let Rendered {
                mut dispatches,
                mut suppressions,
                mut churn_signals,
                tally,
                dead_letters,
                records,
                late,
            } = rendered.take();
            let stats = stats.take();
            let mut summary = Summary {
                records,
                late_events: late,
                events: stats.events,
                duplicates_dropped: stats.duplicates,
                candidates: stats.candidates,
                deferrals: stats.deferrals,
                ..Summary::default()
            };
            tally.add_to(&spec, &mut summary);
            tracing::info!(
                worker = worker.index(),
                records = summary.records,
                decisions = summary.dispatches + summary.suppressions,
                "worker done"
            );
            // Sorted here, in parallel; the writer merges the workers' parts.
            dispatches.sort();
            suppressions.sort();
            churn_signals.sort();
            tracing::debug!(
                worker = worker.index(),
                ms = tail.elapsed().as_secs_f64() * 1e3,
                "lines sorted"
            );
            (
                dispatches,
                suppressions,
                churn_signals,
                dead_letters,
                summary,
            )
        });
        let part = match std::panic::catch_unwind(work) {
            Ok(part) => part,
            Err(payload) => {
                failure.record(&*payload);
                std::panic::resume_unwind(payload);
            }
        };
        // The receiver lives until every part is in, or a worker failed.
        let _ = parts.send((worker.index() % cluster.workers, part));
        if wait_for_release {
            Workers::wait(&worker_release);
        }
    })
    .map_err(|e| anyhow::anyhow!("cannot start timely workers: {e}"))?;
    let mut threads = Workers {
        release,
        guards: Some(guards),
    };

    // In a cluster the workers shut their connections down as they exit: a
    // process that ended first would cut its peers' connections. They are
    // joined first (and every part is in the channel then).
    let joined = if wait_for_release {
        Ok(())
    } else {
        threads.join()
    };
    // A worker that ends without handing over its part has failed: the
    // others stop (see `Failure`) and are joined, and the failure is the
    // replay's.
    let ended = || match &threads.guards {
        Some(g) => g.guards().iter().map(|t| t.is_finished()).collect(),
        None => vec![true; workers],
    };
    let received = gather(&handed, workers, ended).filter(|_| joined.is_ok());
    let Some(received) = received else {
        let joined = threads.join().and(joined);
        let why = failure.message().or(joined.err());
        anyhow::bail!(
            "a worker failed: {}",
            why.unwrap_or_else(|| "it ended without its output".into())
        );
    };

    let mut out = ReplayOutput {
        dispatches: Vec::new(),
        suppressions: Vec::new(),
        churn_signals: Vec::new(),
        dead_letters: Vec::new(),
        summary: Summary::default(),
        analytics,
        elapsed: Duration::ZERO,
        _workers: threads,
    };
    for (dispatches, suppressions, churn_signals, dead_letters, summary) in received {
        out.dispatches.push(dispatches);
        out.suppressions.push(suppressions);
        out.churn_signals.push(churn_signals);
        out.dead_letters.extend(dead_letters);
        out.summary.absorb(summary);
    }
    out.summary.dead_letters = out.dead_letters.len() as u64;
    out.elapsed = started.elapsed();
    tracing::info!(
        records = out.summary.records,
        seconds = out.elapsed.as_secs_f64(),
        "replay done"
    );
    Ok(out)
}

/// Receives each of `workers` parts, tagged with their worker's index, and
/// returns them in worker order; `None` as soon as a worker has ended
/// (`ended`, per worker) without handing over its part.
fn gather<P>(
    handed: &mpsc::Receiver<(usize, P)>,
    workers: usize,
    ended: impl Fn() -> Vec<bool>,
) -> Option<Vec<P>> {
    let mut received: Vec<Option<P>> = (0..workers).map(|_| None).collect();
    let mut missing = workers;
    while missing > 0 {
        match handed.recv_timeout(Duration::from_millis(20)) {
            Ok((index, part)) => {
                received[index] = Some(part);
                missing -= 1;
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                let ended = ended();
                // A part sent before its thread ended is in the channel now.
                for (index, part) in handed.try_iter() {
                    received[index] = Some(part);
                    missing -= 1;
                }
                if ended.iter().zip(&received).any(|(&e, p)| e && p.is_none()) {
                    return None;
                }
            }
        }
    }
    received.into_iter().collect()
}

/// Refuses an `--out` that exists and is not a directory.
pub fn check_out_dir(out: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.is_file() => anyhow::bail!("--out {} is a file, not a directory", out.display()),
        Ok(_) => anyhow::bail!("--out {} is not a directory", out.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read --out {}", out.display())),
    }
}

/// Where a replay into `out` writes: `out` itself, or in a cluster of
/// several processes `out/part-I` (see `sink::files::merge`).
pub fn output_dir(cluster: &Cluster, out: &Path) -> PathBuf {
    if cluster.processes > 1 {
        part_dir(out, cluster.process)
    } else {
        out.to_path_buf()
    }
}

/// Runs and writes `out_dir` ([`output_dir`]: in a cluster, this process's
/// part of it). Its files are opened first (an unwritable directory fails
/// before the run) and emptied while the dataflow runs, so a run that fails
/// leaves them empty rather than holding an older run's lines.
pub fn run_to_dir(opts: &ReplayOptions, out_dir: &Path) -> anyhow::Result<ReplayOutput> {
    // `out_dir`, the fixture and the worker flags are checked, and a
    // cluster connected, before `out_dir` is touched: a replay that cannot
    // start leaves an earlier run's outputs.
    check_out_dir(out_dir)?;
    let prepared = prepare(opts)?;
    let part = prepared.part.clone();
    let dir = output_dir(&opts.cluster, out_dir);
    let mut files = OutputFiles::open(&dir)?;
    let (out, emptied) = std::thread::scope(|s| {
        let emptying = s.spawn(|| files.empty());
        let out = run_prepared(opts, prepared);
        (out, emptying.join().expect("emptying files does not panic"))
    });
    let out = out?;
    emptied?;
    let writing = Instant::now();
    files
        .write(
            &out.dispatches,
            &out.suppressions,
            &out.churn_signals,
            &dead_letter_lines(&out.dead_letters),
            &out.summary,
        )
        .with_context(|| format!("writing {}", dir.display()))?;
    // Every process holds all the aggregates: the first writes them.
    if let Some(view) = &out.analytics
        && part.as_ref().is_none_or(|p| p.process == 0)
    {
        for (name, bytes) in answers::files(&opts.spec, &view.read()) {
            let path = dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(part) = &part {
        files.write_manifest(part)?;
    }
    tracing::debug!(
        ms = writing.elapsed().as_secs_f64() * 1e3,
        "outputs written"
    );
    Ok(out)
}

/// Time spent in each operator, per worker, logged at the end of a replay
/// when `NUDGEFLOW_LOG` enables `debug` for `nudgeflow::replay` (from
/// timely's schedule events; nothing is registered otherwise). For
/// profiling: `NUDGEFLOW_LOG=nudgeflow::replay=debug nudgeflow replay ...`.
mod operator_times {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;
    use std::time::Duration;

    use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};

    #[derive(Default)]
    struct Times {
        names: BTreeMap<usize, String>,
        started: BTreeMap<usize, Duration>,
        /// Operator id → (time scheduled, times scheduled).
        spent: BTreeMap<usize, (Duration, u64)>,
    }

    pub struct OperatorTimes(Rc<RefCell<Times>>);

    /// Starts recording, if debug logging is on for this module.
    pub fn register(worker: &mut timely::worker::Worker) -> Option<OperatorTimes> {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return None;
        }
        let times = Rc::new(RefCell::new(Times::default()));
        let sink = times.clone();
        worker
            .log_register()?
            .insert::<TimelyEventBuilder, _>("timely", move |_, data| {
                let Some(data) = data else { return };
                let mut t = sink.borrow_mut();
                for (at, event) in data.iter() {
                    match event {
                        TimelyEvent::Operates(o) => {
                            t.names.insert(o.id, o.name.clone());
                        }
                        TimelyEvent::Schedule(s) if s.start_stop == StartStop::Start => {
                            t.started.insert(s.id, *at);
                        }
                        TimelyEvent::Schedule(s) => {
                            if let Some(start) = t.started.remove(&s.id) {
                                let spent = t.spent.entry(s.id).or_default();
                                spent.0 += at.saturating_sub(start);
                                spent.1 += 1;
                            }
                        }
                        _ => {}
                    }
                }
            });
        Some(OperatorTimes(times))
    }

    impl OperatorTimes {
        pub fn report(&self, worker: usize) {
            let t = self.0.borrow();
            for (id, (spent, calls)) in &t.spent {
                let operator = t.names.get(id).map_or("?", String::as_str);
                let ms = spent.as_secs_f64() * 1e3;
                tracing::debug!(worker, operator, id, ms, calls, "operator time");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture directory whose replay has a worker fail, and which one.
    static INJECT: Mutex<Option<(PathBuf, usize)>> = Mutex::new(None);

    pub(super) fn injected_failure(fixture: &std::path::Path) -> Option<usize> {
        let inject = INJECT.lock().unwrap();
        inject
            .as_ref()
            .filter(|(f, _)| f == fixture)
            .map(|(_, w)| *w)
    }

    /// A replay that cannot start (no such fixture, bad worker flags)
    /// leaves an earlier run's outputs as they were.
    #[test]
    fn a_replay_that_cannot_start_keeps_the_outputs() {
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("dispatches.jsonl"), "{\"kept\":1}\n").unwrap();
        std::fs::write(out.path().join("summary.json"), "{}\n").unwrap();
        let spec = Spec::parse("t.toml", "").unwrap();
        let mut opts = ReplayOptions {
            spec: Arc::new(spec),
            fixture: out.path().join("no-such-fixture"),
            cluster: Cluster::single(1),
            stripe_bytes: 1 << 10,
            stripes_per_step: 1,
            progress: false,
            as_of: None,
        };
        assert!(run_to_dir(&opts, out.path()).is_err());
        opts.fixture = out.path().to_path_buf();
        opts.cluster = Cluster::single(0);
        std::fs::write(out.path().join("events.jsonl"), "").unwrap();
        assert!(run_to_dir(&opts, out.path()).is_err());
        let read = |n: &str| std::fs::read_to_string(out.path().join(n)).unwrap();
        assert_eq!(read("dispatches.jsonl"), "{\"kept\":1}\n");
        assert_eq!(read("summary.json"), "{}\n");
    }

    /// A worker that fails in the middle of the dataflow fails the replay,
    /// with its own message: the other workers, which would wait forever
    /// for its share of the frontier, stop too.
    #[test]
    fn a_failing_worker_fails_the_replay_instead_of_hanging_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut events = String::new();
        for i in 0..200 {
            events += &format!(
                "{{\"id\":\"e-{i}\",\"source\":\"s\",\"type\":\"t\",\"time\":\"2026-04-01T10:00:00Z\",\"subject\":\"u-{i}\"}}\n"
            );
        }
        std::fs::write(dir.path().join("events.jsonl"), events).unwrap();
        let spec = Spec::parse(
            "t.toml",
            "[[rule]]\nname = \"n\"\non = \"t\"\npurpose = \"transactional\"\nchannels = [\"push\"]\n",
        )
        .unwrap();
        let opts = ReplayOptions {
            spec: Arc::new(spec),
            fixture: dir.path().to_path_buf(),
            cluster: Cluster::single(3),
            stripe_bytes: 1 << 10,
            stripes_per_step: 1,
            progress: false,
            as_of: None,
        };
        assert!(run(&opts).is_ok());
        *INJECT.lock().unwrap() = Some((dir.path().to_path_buf(), 1));
        // In a thread: a hang fails the test instead of stalling the suite.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(run(&opts).err().map(|e| e.to_string())));
        let failed = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the replay ends")
            .expect("the replay fails");
        assert!(failed.to_string().contains("injected failure"), "{failed}");
    }

    /// Parts come back in worker order whatever order they arrive in, and
    /// a worker that dies without its part ends the wait instead of
    /// hanging it.
    #[test]
    fn gathering_parts_ends_when_a_worker_fails() {
        let (tx, rx) = mpsc::channel();
        let threads: Vec<_> = [2, 0, 1]
            .into_iter()
            .map(|i| {
                let tx = tx.clone();
                std::thread::spawn(move || tx.send((i, i * 10)).unwrap())
            })
            .collect();
        let ended = || threads.iter().map(|t| t.is_finished()).collect();
        assert_eq!(gather(&rx, 3, ended), Some(vec![0, 10, 20]));

        let sent = {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send((0, 7)).unwrap())
        };
        let failed = std::thread::spawn(|| panic!("a worker fails"));
        let threads = [sent, failed];
        let ended = || threads.iter().map(|t| t.is_finished()).collect();
        assert_eq!(gather(&rx, 2, ended), None);
    }
}
