//! The HTTP side of `scripts/bench-http.sh`: the webhook sink
//! (`nudgeflow::sink::http::HttpSink`) against a fast local provider (an
//! axum server answering 200 at once, on a thread of its own), beside a
//! bare reqwest client loop with the same concurrency against the same
//! server (the limit).
//!
//! ```text
//! http_sink_bench [REQUESTS] [CONCURRENCY] [ROUNDS]
//! ```
//!
//! Each round runs, against the same server:
//! - `bare loop`: CONCURRENCY tasks sending REQUESTS requests in a loop,
//!   each timed from `send` to the answer read;
//! - `sink burst`: REQUESTS dispatches submitted to the sink at once, as a
//!   burst of decisions reaches it in `run`; the sink keeps CONCURRENCY
//!   requests in flight. Its rate is the sink's throughput (its latencies,
//!   from submission, are mostly time in the queue);
//! - `sink loop`: CONCURRENCY dispatches outstanding, a new one submitted
//!   for each outcome back, each timed from `submit` on the caller's
//!   thread (as a timely worker calls it) to its outcome back on that
//!   thread: the hand-over to the sink's runtime thread and back included.
//!   The caller takes every outcome come back whenever it wakes, and
//!   submits as many, as the Kafka sink's operator does. Its latencies
//!   compare with the bare loop's.
//!
//! Rounds follow a warm-up of each. Prints requests/s, latency percentiles
//! and the process's CPU time per request (the server's included) of
//! every run, and the best burst rate against the floor: at least 80% of
//! the best bare loop rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nudgeflow::ops::Metrics;
use nudgeflow::sink::http::{Driver, HttpConfig, HttpSink, Request, Status};

/// Outcomes come back into a list; the caller waits on the condition.
type Settled<T> = (Mutex<Vec<T>>, Condvar);

/// What one round measured.
struct Round {
    requests: usize,
    elapsed: Duration,
    /// CPU time of the whole process (the provider's included), if known.
    cpu: Option<f64>,
    /// Every request's latency, sorted.
    latencies: Vec<Duration>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1]
    }

    fn line(&self, name: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let cpu = self.cpu.map_or(String::new(), |c| {
            format!("  CPU {:.0} µs/request", c * 1e6 / self.requests as f64)
        });
        format!(
            "{name:<10} {:>9.0} requests/s   latency p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms{cpu}  ({} requests in {:.2} s)",
            self.rate(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            ms(self.percentile(0.999)),
            self.requests,
            self.elapsed.as_secs_f64(),
        )
    }
}

/// The process's CPU time so far (user and system, every thread), from
/// /proc/self/stat, in seconds (clock ticks of 10 ms).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A dispatch line of the usual size.
fn body(i: usize) -> Bytes {
    format!(
        r#"{{"dispatch_id":"00000000-0000-5000-8000-{i:012}","user":"u-{i}","rule":"webhook-audit","template":"webhook-audit","channel":"webhook","purpose":"transactional","priority":"normal","attempt":1,"event_key":"auth-service/s-{i}","event_time":"2026-09-07T10:00:00.000Z","decision_time":"2026-09-07T10:00:00.000Z","locale":"en-GB","vars":{{"device":"new","ip":"203.0.113.7","country":"DE"}}}}"#
    )
    .into()
}

/// The provider: 200 to every request, on a thread of its own.
fn serve() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::thread::Builder::new()
        .name("provider".into())
        .spawn(move || {
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(|_body: Bytes| async { "" });
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            })
        })
        .unwrap();
    addr
}

/// The limit: a reqwest client made as the sink makes its own, on a
/// current-thread runtime as the sink's, CONCURRENCY tasks sending in a
/// loop.
fn bare(url: &str, requests: usize, concurrency: usize) -> Round {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let url: reqwest::Url = url.parse().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = cpu_seconds();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, next) = (client.clone(), url.clone(), next.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests {
                            return mine;
                        }
                        let id = format!("00000000-0000-5000-8000-{i:012}");
                        let t = Instant::now();
                        let response = client
                            .post(url.clone())
                            .header("content-type", "application/json")
                            .header("idempotency-key", id)
                            .body(body(i))
                            .send()
                            .await
                            .expect("the provider answers");
                        assert!(response.status().is_success());
                        let _ = response.bytes().await;
                        mine.push(t.elapsed());
                    }
                })
            })
            .collect();
        let mut all = Vec::with_capacity(requests);
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed();
    latencies.sort();
    Round {
        requests,
        elapsed,
        cpu: cpu.zip(cpu_seconds()).map(|(a, b)| b - a),
        latencies,
    }
}

/// The webhook sink: CONCURRENCY dispatches outstanding, each new one
/// submitted from this thread as an outcome comes back.
fn sink(sink: &HttpSink, requests: usize, concurrency: usize) -> Round {
    // Outcomes are gathered as the Kafka sink gathers them: pushed to a
    // list, the caller woken when the list was empty.
    let settled: Arc<Settled<(usize, Status)>> = Arc::default();
    let mut submitted_at = vec![Instant::now(); requests];
    let mut latencies = Vec::with_capacity(requests);
    let submit = |i: usize, at: &mut Vec<Instant>| {
        at[i] = Instant::now();
        let settled = settled.clone();
        let request = Request {
            dispatch_id: format!("00000000-0000-5000-8000-{i:012}"),
            body: body(i),
        };
        let done = move |o: nudgeflow::sink::http::Outcome| {
            let mut list = settled.0.lock().unwrap();
            list.push((i, o.status));
            if list.len() == 1 {
                settled.1.notify_one();
            }
        };
        assert!(sink.submit(request, Box::new(done)));
    };
    let cpu = cpu_seconds();
    let started = Instant::now();
    let mut next = 0;
    while next < concurrency.min(requests) {
        submit(next, &mut submitted_at);
        next += 1;
    }
    while latencies.len() < requests {
        // As a timely worker does when woken: every outcome come back,
        // then as many new dispatches.
        let batch = {
            let mut list = settled.0.lock().unwrap();
            while list.is_empty() {
                list = settled.1.wait(list).unwrap();
            }
            std::mem::take(&mut *list)
        };
        for (i, status) in batch {
            assert_eq!(status, Status::Delivered);
            latencies.push(submitted_at[i].elapsed());
            if next < requests {
                submit(next, &mut submitted_at);
                next += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Round {
        requests,
        elapsed,
        cpu: cpu.zip(cpu_seconds()).map(|(a, b)| b - a),
        latencies,
    }
}

/// The webhook sink's capacity: REQUESTS dispatches submitted at once (a
/// burst, as a campaign decides them), the sink keeping CONCURRENCY in
/// flight, until every outcome is back. Latencies are from submission,
/// so mostly time in the queue.
fn burst(sink: &HttpSink, requests: usize) -> Round {
    let settled: Arc<Settled<Instant>> = Arc::default();
    let cpu = cpu_seconds();
    let started = Instant::now();
    for i in 0..requests {
        let settled = settled.clone();
        let request = Request {
            dispatch_id: format!("00000000-0000-5000-8000-{i:012}"),
            body: body(i),
        };
        let done = move |o: nudgeflow::sink::http::Outcome| {
            assert_eq!(o.status, Status::Delivered);
            let mut list = settled.0.lock().unwrap();
            list.push(Instant::now());
            if list.len() == requests {
                settled.1.notify_one();
            }
        };
        assert!(sink.submit(request, Box::new(done)));
    }
    let mut list = settled.0.lock().unwrap();
    while list.len() < requests {
        list = settled.1.wait(list).unwrap();
    }
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = list.iter().map(|t| *t - started).collect();
    latencies.sort();
    Round {
        requests,
        elapsed,
        cpu: cpu.zip(cpu_seconds()).map(|(a, b)| b - a),
        latencies,
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: REQUESTS CONCURRENCY ROUNDS"))
        .collect();
    let requests = args.first().copied().unwrap_or(100_000);
    let concurrency = args.get(1).copied().unwrap_or(64);
    let rounds = args.get(2).copied().unwrap_or(3);
    let addr = serve();
    let url = format!("http://{addr}/hook");
    let driver = Driver::start().unwrap();
    let mut config = HttpConfig::new(url.parse().unwrap());
    config.concurrency = concurrency;
    config.queue = requests.max(1);
    let webhook = HttpSink::new(
        "webhook",
        &config,
        None,
        driver.handle().clone(),
        Metrics::new(),
    )
    .unwrap();
    println!(
        "{requests} requests per round, {concurrency} outstanding, {rounds} rounds alternated, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm-up: connections, allocator, caches.
    bare(&url, requests / 10, concurrency);
    burst(&webhook, requests / 10);
    sink(&webhook, requests / 10, concurrency);
    let mut best_bare = 0f64;
    let mut best_sink = 0f64;
    // HTTP_BENCH_ONLY=bare, =burst or =loop runs one (to profile it).
    let only = std::env::var("HTTP_BENCH_ONLY").unwrap_or_default();
    let runs = |name: &str| only.is_empty() || only == name;
    for round in 1..=rounds {
        if runs("bare") {
            let b = bare(&url, requests, concurrency);
            println!("round {round}: {}", b.line("bare loop"));
            best_bare = best_bare.max(b.rate());
        }
        if runs("burst") {
            let s = burst(&webhook, requests);
            println!("round {round}: {}", s.line("sink burst"));
            best_sink = best_sink.max(s.rate());
        }
        if runs("loop") {
            let s = sink(&webhook, requests, concurrency);
            println!("round {round}: {}", s.line("sink loop"));
        }
    }
    if !only.is_empty() {
        return;
    }
    let ratio = best_sink / best_bare;
    println!(
        "best: sink burst {best_sink:.0} requests/s, bare loop {best_bare:.0} requests/s: {:.0}% (floor 80%): {}",
        ratio * 100.0,
        if ratio >= 0.8 {
            "ok"
        } else {
            "BELOW THE FLOOR"
        }
    );
    if ratio < 0.8 {
        std::process::exit(1);
    }
}
