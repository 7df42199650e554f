//! The HTTP sink itself (DESIGN.md §9): each dispatch handed to it is
//! `POST`ed to the provider, tried again while that is worth it, and its
//! outcome handed back once it is settled.
//!
//! - A bounded queue: the sink holds at most `queue` dispatches at once
//!   (waiting for a request slot, in flight, or waiting to try again). One
//!   more is not waited for: it is failed at once with the reason `queue
//!   full`, so that a slow or dead provider never stalls the dataflow, other
//!   channels, or the job's memory; its `failed` receipt drives fallback to
//!   the rule's next channel like any failure.
//! - Bounded concurrency: at most `concurrency` requests in flight (a
//!   semaphore, taken per request, not held while waiting to retry).
//!   `concurrency` workers take dispatches from the queue in turn, as a
//!   client loop does; a dispatch to be tried again is handed to a task of
//!   its own, so that waiting to retry never holds a worker.
//! - A rate limit: requests are spaced at least 1/`rate` apart (governor,
//!   a burst of one), counted after a request slot is taken, so that the
//!   provider sees the rate however the slots come free.
//! - Retries: connection errors, timeouts, 408, 429 and 5xx are tried again
//!   up to `max_attempts` requests, after exponential backoff with full
//!   jitter ([`Backoff`]) or the provider's `Retry-After`; a `Retry-After`
//!   longer than the backoff's cap (30 s) is not waited for: the dispatch
//!   fails at once, so that one provider's long pause cannot hold back the
//!   job's checkpoints. Any other answer but a 2xx fails at once. Redirects
//!   are not followed (a 3xx fails): a `POST` must not become a `GET`.
//!
//! Requests run on a tokio runtime of their own ([`Driver`]), one thread
//! for every HTTP sink of the process; timely workers only hand dispatches
//! over ([`HttpSink::submit`]) and are told the outcome through a callback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::SeedableRng;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use super::config::{HttpConfig, SuccessReceipt};
use super::encode::{Receipt, Status};
use super::retry::{Backoff, Verdict, judge_error, judge_status};
use crate::ops::Metrics;
use crate::ops::metrics::{RequestClass, SinkMetrics};
use crate::time::Time;

/// The tokio runtime the HTTP sinks of a process send on: one thread of
/// its own, stopped (its requests dropped) when the driver is dropped.
pub struct Driver {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Driver {
    pub fn start() -> std::io::Result<Driver> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("nudgeflow-delivery".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Driver {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A dispatch to deliver: its id (the `Idempotency-Key`) and its JSON line,
/// exactly as on the dispatches topic (the body).
#[derive(Debug, Clone)]
pub struct Request {
    pub dispatch_id: String,
    pub body: Bytes,
}

/// How a dispatch's delivery ended, and when the sink learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub dispatch_id: String,
    pub status: Status,
    /// The last status or error of a failure (`HTTP 400 Bad Request`,
    /// `timeout: …`, `connection failed: …`, `queue full`), with the number
    /// of requests when there were several.
    pub reason: Option<String>,
    /// Wall clock, milliseconds since the epoch.
    pub time: Time,
    /// Requests made (0 when the queue was full).
    pub attempts: u32,
    /// Whether the outcome is written as a receipt: always for a failure;
    /// for a success unless `success_receipt = "none"`.
    pub write_receipt: bool,
}

impl Outcome {
    /// The receipt line to write, if any.
    pub fn receipt(&self) -> Option<Vec<u8>> {
        self.write_receipt.then(|| {
            Receipt::new(
                &self.dispatch_id,
                self.status,
                self.time,
                self.reason.as_deref(),
            )
            .to_json()
        })
    }
}

/// Called once with a dispatch's outcome, on the sink's runtime thread (or
/// at once, inside [`HttpSink::submit`], when the queue is full).
pub type Done = Box<dyn FnOnce(Outcome) + Send + 'static>;

/// One channel's HTTP sink; clones share it (its queue, limits and
/// connections).
#[derive(Clone)]
pub struct HttpSink(Arc<Inner>);

struct Inner {
    /// The channel, for metrics and logs.
    channel: String,
    url: reqwest::Url,
    client: reqwest::Client,
    timeout: Duration,
    max_attempts: u32,
    success_receipt: SuccessReceipt,
    backoff: Backoff,
    queue: usize,
    /// Dispatches held: submitted and not yet settled.
    depth: AtomicUsize,
    /// Whether the last submission found the queue full, and how many have
    /// been refused since it last accepted one (for the log).
    spilling: AtomicBool,
    refused: AtomicU64,
    permits: Semaphore,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The queue the sink's workers take dispatches from: a batch handed
    /// over wakes the runtime once.
    submissions: tokio::sync::mpsc::UnboundedSender<(Request, Done)>,
    metrics: SinkMetrics,
}

impl HttpSink {
    /// A sink for `channel` as `config` says, with this `Authorization`
    /// value (read from `auth_env` by [`HttpConfig::authorization`]),
    /// sending on `handle` (a [`Driver`]'s).
    pub fn new(
        channel: &str,
        config: &HttpConfig,
        authorization: Option<HeaderValue>,
        handle: tokio::runtime::Handle,
        metrics: Metrics,
    ) -> anyhow::Result<HttpSink> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(auth) = authorization {
            headers.insert(header::AUTHORIZATION, auth);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("nudgeflow/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(config.concurrency)
            .build()
            .with_context(|| format!("cannot make the HTTP client of the {channel} sink"))?;
        let limiter = config
            .rate
            .and_then(|r| Quota::with_period(Duration::from_secs_f64(1.0 / r)))
            .map(RateLimiter::direct);
        let (submissions, submitted) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            channel: channel.to_string(),
            url: config.url.clone(),
            client,
            timeout: config.timeout,
            max_attempts: config.max_attempts.max(1),
            success_receipt: config.success_receipt,
            backoff: Backoff::DEFAULT,
            queue: config.queue.max(1),
            depth: AtomicUsize::new(0),
            spilling: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            permits: Semaphore::new(config.concurrency.clamp(1, Semaphore::MAX_PERMITS)),
            limiter,
            submissions,
            metrics: metrics.sink(channel),
        });
        // `concurrency` workers take dispatches from the queue in turn, as
        // a client loop would, and hand a dispatch to a task of its own only
        // when it is to be tried again. They hold the sink weakly: they end
        // once every handle is dropped.
        let queue = Arc::new(tokio::sync::Mutex::new(submitted));
        for _ in 0..config.concurrency.clamp(1, super::config::MAX_CONCURRENCY) {
            let (sink, queue) = (Arc::downgrade(&inner), queue.clone());
            handle.spawn(async move {
                loop {
                    let next = queue.lock().await.recv().await;
                    let (Some((request, done)), Some(sink)) = (next, sink.upgrade()) else {
                        return;
                    };
                    sink.deliver(request, done).await;
                }
            });
        }
        Ok(HttpSink(inner))
    }

    /// Hands a dispatch over; `done` is called once with its outcome
    /// (never, once the sink's runtime has stopped). Returns false when the
    /// queue was full: the dispatch is then failed at once (reason `queue
    /// full`, no request made) and `done` has already been called. Never
    /// blocks.
    pub fn submit(&self, request: Request, done: Done) -> bool {
        let inner = &self.0;
        let channel = inner.channel.as_str();
        if inner.depth.fetch_add(1, Ordering::SeqCst) >= inner.queue {
            inner.depth.fetch_sub(1, Ordering::SeqCst);
            inner.metrics.queue_full();
            inner.refused.fetch_add(1, Ordering::Relaxed);
            if !inner.spilling.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    channel,
                    queue = inner.queue,
                    "HTTP sink queue full: failing new dispatches at once until it drains"
                );
            }
            done(Outcome {
                dispatch_id: request.dispatch_id,
                status: Status::Failed,
                reason: Some("queue full".into()),
                time: crate::time::now_ms(),
                attempts: 0,
                write_receipt: true,
            });
            return false;
        }
        if inner.spilling.swap(false, Ordering::Relaxed) {
            tracing::info!(
                channel,
                refused = inner.refused.swap(0, Ordering::Relaxed),
                "HTTP sink queue accepts dispatches again"
            );
        }
        inner.metrics.queue_depth(1);
        if let Err(e) = inner.submissions.send((request, done)) {
            // The runtime is gone (the job is stopping): the dispatch stays
            // unsettled, so its offsets are not committed.
            inner.depth.fetch_sub(1, Ordering::SeqCst);
            inner.metrics.queue_depth(-1);
            tracing::debug!(
                channel,
                dispatch_id = (e.0).0.dispatch_id,
                "HTTP sink stopped"
            );
        }
        true
    }

    /// Dispatches held now: submitted and not yet settled.
    pub fn depth(&self) -> usize {
        self.0.depth.load(Ordering::SeqCst)
    }

    pub fn channel(&self) -> &str {
        &self.0.channel
    }
}

impl Inner {
    /// A dispatch's first request, on a worker; if it is to be tried
    /// again, a task of its own takes it over, so that the worker goes on.
    async fn deliver(self: Arc<Self>, request: Request, done: Done) {
        match self.attempt(&request).await {
            Verdict::Delivered => self.settle(request, done, 1, Status::Delivered, None),
            Verdict::Fail { reason } => self.settle(request, done, 1, Status::Failed, Some(reason)),
            Verdict::Retry {
                reason,
                retry_after,
            } => {
                tokio::spawn(self.retry(request, done, reason, retry_after));
            }
        }
    }

    /// Tries a dispatch again, after its first request failed with
    /// `reason`, until it is settled.
    async fn retry(
        self: Arc<Self>,
        request: Request,
        done: Done,
        mut reason: String,
        mut retry_after: Option<Duration>,
    ) {
        let seed = xxhash_rust::xxh3::xxh3_64(request.dispatch_id.as_bytes())
            ^ SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
        // Requests made so far, all failed with a retryable `reason`.
        let mut attempts = 1;
        loop {
            if attempts >= self.max_attempts {
                return self.settle(request, done, attempts, Status::Failed, Some(reason));
            }
            let wait = match retry_after {
                Some(wait) if wait > self.backoff.cap => {
                    let reason = format!(
                        "{reason}; Retry-After {} s is longer than the sink waits ({} s)",
                        wait.as_secs(),
                        self.backoff.cap.as_secs()
                    );
                    return self.settle(request, done, attempts, Status::Failed, Some(reason));
                }
                Some(wait) => wait,
                None => self.backoff.delay(attempts, &mut rng),
            };
            self.metrics.retry();
            tracing::debug!(
                channel = self.channel,
                dispatch_id = request.dispatch_id,
                attempts,
                %reason,
                wait_ms = wait.as_millis() as u64,
                "trying again"
            );
            tokio::time::sleep(wait).await;
            attempts += 1;
            match self.attempt(&request).await {
                Verdict::Delivered => {
                    return self.settle(request, done, attempts, Status::Delivered, None);
                }
                Verdict::Fail { reason } => {
                    return self.settle(request, done, attempts, Status::Failed, Some(reason));
                }
                Verdict::Retry {
                    reason: r,
                    retry_after: a,
                } => (reason, retry_after) = (r, a),
            }
        }
    }

    /// Hands the outcome over: the dispatch leaves the queue.
    fn settle(
        &self,
        request: Request,
        done: Done,
        attempts: u32,
        status: Status,
        reason: Option<String>,
    ) {
        let reason = reason.map(|r| {
            if attempts > 1 {
                format!("{r} (after {attempts} attempts)")
            } else {
                r
            }
        });
        if let Some(reason) = &reason {
            tracing::debug!(
                channel = self.channel,
                dispatch_id = request.dispatch_id,
                reason,
                "not delivered"
            );
        }
        let outcome = Outcome {
            dispatch_id: request.dispatch_id,
            status,
            reason,
            time: crate::time::now_ms(),
            attempts,
            write_receipt: status == Status::Failed
                || self.success_receipt == SuccessReceipt::Delivered,
        };
        self.depth.fetch_sub(1, Ordering::SeqCst);
        self.metrics.queue_depth(-1);
        done(outcome);
    }

    /// One request: a slot, the rate limit, then the `POST`.
    async fn attempt(&self, request: &Request) -> Verdict {
        let _slot = self.permits.acquire().await.expect("never closed");
        if let Some(limiter) = &self.limiter {
            while let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                tokio::time::sleep(wait).await;
            }
        }
        let started = Instant::now();
        let sent = self
            .client
            .post(self.url.clone())
            .header("idempotency-key", request.dispatch_id.as_str())
            .body(request.body.clone())
            .send()
            .await;
        let (verdict, class) = match sent {
            Ok(response) => {
                let status = response.status();
                let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
                // Read the answer, so that its connection can carry the
                // next request.
                let _ = response.bytes().await;
                (
                    judge_status(status, retry_after.as_ref(), SystemTime::now()),
                    RequestClass::of_status(status.as_u16()),
                )
            }
            Err(e) => {
                let class = if e.is_timeout() {
                    RequestClass::Timeout
                } else if e.is_connect() {
                    RequestClass::Connect
                } else {
                    RequestClass::Error
                };
                (judge_error(&e, self.timeout), class)
            }
        };
        self.metrics.request(class, started.elapsed().as_secs_f64());
        verdict
    }
}
