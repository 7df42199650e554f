//! `nudgeflow run`: the live job (DESIGN.md §7). The same decision
//! dataflow as `replay`, between the Kafka source (`source::kafka`) and the
//! Kafka sink (`sink::kafka`), on timely workers in one or many processes,
//! until SIGTERM or SIGINT.
//!
//! Each channel's dispatches are also delivered as the job config's
//! `[sinks.CHANNEL]` tables say (`sink::channels`): the HTTP sinks of a
//! process send on one runtime thread of their own, shared by its workers.
//!
//! Each process serves `/metrics`, `/healthz` and `/readyz` (`ops`). The
//! job takes checkpoints (`checkpoint`) and starts from the newest
//! complete one, its state split among the workers it has now. On a stop
//! signal every worker stops reading, the job takes a last checkpoint at
//! the time all sources have released, and once it is complete, every
//! output before it acknowledged and its offsets committed, the process
//! exits 0. Decisions still pending (a delay not yet due) are in it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::probe::Handle;

use crate::checkpoint::clock::clock;
use crate::checkpoint::positions::SourcePositions;
use crate::checkpoint::state::WorkerState;
use crate::checkpoint::store::Store;
use crate::checkpoint::write::write;
use crate::dataflow::aggregates::{self, AnalyticsView, Limit};
use crate::dataflow::inbox::InboxView;
use crate::dataflow::{self, DecideStats};
use crate::job::JobConfig;
use crate::ops::{Health, Metrics};
use crate::replay::{Cluster, Communication, communicate};
use crate::sink::channels::ChannelSinks;
use crate::sink::kafka::kafka_sink;
use crate::source::kafka::{Control, SourceLinks, kafka_source};
use crate::spec::Spec;
use crate::time::Time;
use timely::dataflow::operators::core::Map as _;
use timely::dataflow::operators::vec::Broadcast;

pub struct RunOptions {
    pub job: JobConfig,
    pub cluster: Cluster,
}

/// The HTTP address of process `process`: the configured port plus the
/// process index, so that the processes of one host do not collide (port 0
/// stays 0: any free port).
fn listen_address(job: &JobConfig, process: usize) -> SocketAddr {
    let mut addr = job.http.listen;
    if addr.port() != 0 {
        addr.set_port(addr.port() + process as u16);
    }
    addr
}

/// Blocks until SIGTERM or SIGINT (`replay --serve`).
pub fn wait_for_stop_signal() -> anyhow::Result<()> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot install the signal handlers")?;
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// Runs the job until a stop signal; returns once every worker has
/// committed what it could.
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let RunOptions { job, cluster } = opts;
    let spec = Arc::new(Spec::load(&job.spec).map_err(|e| anyhow::anyhow!("bad spec: {e}"))?);
    let token = match &job.http.token_env {
        None => None,
        Some(var) => Some(std::env::var(var).with_context(|| {
            format!(
                "{}: [http] token_env names {var:?}, which is not set: export it or leave token_env empty",
                job.path.display()
            )
        })?),
    };
    let metrics = Metrics::new();
    // Before the broker is asked anything: an unset `auth_env` is a
    // configuration error, reported at once.
    let channels = Arc::new(ChannelSinks::start(&job, cluster.processes, &metrics)?);
    let churn = spec.analytics.as_ref().is_some_and(|a| a.churn.is_some());
    crate::source::kafka::check_outputs(&job, churn)?;
    channels.check_topics(&job)?;
    let health = Health::new();
    let listen = listen_address(&job, cluster.process);
    let receipts = crate::ops::callbacks::ReceiptsTopic::new(&job)?;
    // With `in_app` to the inbox (its default), every process serves every
    // user's inbox (`dataflow::inbox`).
    let inbox_ttl = match job.sinks.get(crate::spec::Channel::InApp) {
        crate::job::ChannelSink::Inbox { ttl } => Some(ttl.as_millis() as Time),
        _ => None,
    };
    let inbox = inbox_ttl.map(|ttl| InboxView::new(spec.clone(), ttl));
    // With `[analytics]`, every process answers every query (`dataflow::aggregates`).
    let analytics = spec.analytics.is_some().then(|| {
        let title = format!("{}", job.path.display());
        AnalyticsView::new(spec.clone(), title)
    });
    let server = crate::ops::spawn(
        listen,
        token,
        metrics.clone(),
        health.clone(),
        Some(receipts),
        crate::ops::Views {
            inbox: inbox.clone(),
            analytics: analytics.clone(),
        },
    )
    .with_context(|| format!("cannot serve HTTP on {listen}"))?;
    tracing::info!(addr = %server.addr, "serving /metrics, /healthz, /readyz and the API");
    eprintln!("nudgeflow: http on {}", server.addr);

    // Checkpoints: the store, and the newest complete checkpoint to go on from.
    let base = job.path.parent().unwrap_or(std::path::Path::new("."));
    let store = Arc::new(Store::open(&job.checkpoint.url, base)?);
    let spec_text = std::fs::read(&job.spec)
        .with_context(|| format!("cannot read the spec {}", job.spec.display()))?;
    let fingerprint = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&spec_text));
    let template = crate::checkpoint::template(&spec, &fingerprint);
    let recovered = crate::checkpoint::recover(
        &store,
        &spec,
        cluster.process,
        cluster.processes,
        cluster.workers,
    )?;
    let resume = recovered.resume.clone();
    let first_id = recovered.next_id;
    let states: Arc<Mutex<Vec<Option<WorkerState>>>> = Arc::new(Mutex::new(
        recovered.workers.into_iter().map(Some).collect(),
    ));

    let control = Arc::new(Control::new(cluster.workers, metrics.clone(), health));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, control.stop.clone())
            .context("cannot install the signal handlers")?;
    }
    let Communication {
        worker: worker_config,
        builders,
        others,
        ..
    } = communicate(&cluster, true)?;
    let job = Arc::new(job);
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let worker_failure = failure.clone();
    let workers = cluster.workers;
    let control_after = control.clone();
    tracing::info!(
        brokers = %job.kafka.brokers,
        group = %job.kafka.group,
        workers,
        processes = cluster.processes,
        process = cluster.process,
        "run starting"
    );
    let guards = timely::execute::execute_from(builders, others, worker_config, move |worker| {
        let acked = Handle::<Time>::new();
        let running = Handle::<Time>::new();
        let checkpointed = Handle::<Time>::new();
        let positions = SourcePositions::default();
        let restore = states.lock().unwrap_or_else(|e| e.into_inner())[worker.index() % workers]
            .take()
            .unwrap_or_default();
        let built = worker.dataflow::<Time, _, _>(|scope| -> anyhow::Result<()> {
            let links = SourceLinks {
                acked: acked.clone(),
                running_everywhere: running.clone(),
                positions: positions.clone(),
            };
            let (source, released) = kafka_source(
                scope,
                job.clone(),
                spec.clone(),
                links,
                resume.clone(),
                control.clone(),
            )?;
            let requests = clock(
                released,
                job.checkpoint.interval,
                first_id,
                control.stop.clone(),
            )
            .broadcast();
            let stats = Rc::new(RefCell::new(DecideStats::default()));
            let decided = dataflow::build_checkpointed(
                (source.arrivals, source.profile),
                requests,
                restore,
                spec.clone(),
                stats,
                inbox_ttl,
            );
            // The first worker of each process keeps its process's view.
            let leaders: Vec<u32> = (0..cluster.processes)
                .map(|p| (p * workers) as u32)
                .collect();
            let view = inbox.clone().filter(|_| scope.index() % workers == 0);
            dataflow::inbox::view(decided.inbox, leaders.clone(), view);
            if let Some(view) = &analytics {
                let mine = (scope.index() % workers == 0).then(|| view.clone());
                // Live answers are as of the frontier: no latest-time feed.
                let latest = source.reports.clone().flat_map(|_| None::<Time>);
                aggregates::view(decided.facts, latest, leaders, mine, Limit::Frontier);
            }
            let decisions = decided.decisions;
            write(
                decided.snapshots,
                store.clone(),
                positions.clone(),
                acked.clone(),
                template.clone(),
                control.metrics.clone(),
            )
            .probe_with(&checkpointed);
            kafka_sink(
                decisions,
                source.reports,
                spec.clone(),
                &job,
                channels.clone(),
                control.metrics.clone(),
                control.stop.clone(),
                &acked,
            )
        });
        if let Err(e) = built {
            tracing::error!(worker = worker.index(), error = %format!("{e:#}"), "cannot start");
            worker_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(format!("{e:#}"));
            control.stop.store(true, Ordering::SeqCst);
            control.finished.fetch_add(1, Ordering::SeqCst);
            return;
        }
        while !(control.stop.load(Ordering::Relaxed)
            && control.finished.load(Ordering::SeqCst) >= workers
            && running.done())
        {
            worker.step_or_park(Some(Duration::from_millis(100)));
        }
        // The sources hold their capabilities (what is pending stays
        // undecided), so the dataflow never completes: drop it.
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
    })
    .map_err(|e| anyhow::anyhow!("cannot start timely workers: {e}"))?;
    let joined: Result<Vec<()>, String> = guards.join().into_iter().collect();
    drop(server);
    if let Some(e) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        anyhow::bail!(e);
    }
    joined.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
    if control_after.unclean.load(Ordering::SeqCst) {
        anyhow::bail!(
            "stopped without every output acknowledged or every offset committed (see the log):              a restart reads again from the last committed offsets"
        );
    }
    tracing::info!("stopped: outputs acknowledged and offsets committed");
    Ok(())
}
