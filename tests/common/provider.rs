//! A notification provider for tests: a real HTTP server (axum, on a
//! tokio runtime thread of its own, on a free loopback port) that records
//! every request and answers as its URL path says:
//!
//! | path | answer |
//! |---|---|
//! | `/ok` | 200 |
//! | `/status/CODE` | CODE, every time |
//! | `/flaky/N` | 500 to a key's first N requests, then 200 |
//! | `/retry-after/S` | 429 with `Retry-After: S` (seconds) to a key's first request, then 200 |
//! | `/retry-after-date/S` | the same with an HTTP date S seconds ahead |
//! | `/hang` | no answer for an hour |
//! | `/hang-once` | no answer for an hour to a key's first request, then 200 |
//! | `/slow/MS` | 200 after MS milliseconds |
//! | `/by-user` | as the path the dispatch's `user` names before its first `:`, dots for slashes (user `flaky.1:u-7` is `/flaky/1`) |
//!
//! Like a real provider it deduplicates by `Idempotency-Key`: a key is
//! processed once, at its first 2xx; later requests of the key are
//! answered 200 and counted, not processed again.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// One request as the provider saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The `Idempotency-Key` header.
    pub key: Option<String>,
    /// Every header, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When it arrived.
    pub at: Instant,
    /// The status answered (0 when the request was never answered).
    pub answered: u16,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Log {
    /// Every request, in arrival order.
    requests: Vec<Seen>,
    /// Requests per key.
    per_key: HashMap<String, usize>,
    /// Each key's processed request (its first 2xx).
    processed: HashMap<String, Seen>,
}

#[derive(Default)]
struct State {
    log: Mutex<Log>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The running provider; stopped when dropped.
pub struct Provider {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counts a request in flight until dropped (also when the client goes
/// away while it hangs).
struct InFlight(Arc<State>);

impl InFlight {
    fn new(state: Arc<State>) -> InFlight {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(state: Arc<State>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let _guard = InFlight::new(state.clone());
    let body = String::from_utf8_lossy(&body).into_owned();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut path = uri.path().to_string();
    if path == "/by-user" {
        let user = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("user")?.as_str().map(str::to_string))
            .unwrap_or_default();
        path = format!(
            "/{}",
            user.split(':').next().unwrap_or("").replace('.', "/")
        );
    }
    let seen = Seen {
        path: uri.path().to_string(),
        key: key.clone(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at: Instant::now(),
        answered: 0,
    };
    // The request's place in the log, and its number among its key's.
    let (index, nth, processed) = {
        let mut log = state.log.lock().unwrap();
        let nth = key.as_ref().map_or(1, |k| {
            let n = log.per_key.entry(k.clone()).or_insert(0);
            *n += 1;
            *n
        });
        log.requests.push(seen.clone());
        let processed = key.as_ref().is_some_and(|k| log.processed.contains_key(k));
        (log.requests.len() - 1, nth, processed)
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let arg = |i: usize| {
        parts
            .get(i)
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hang = || tokio::time::sleep(Duration::from_secs(3600));
    let (status, retry_after) = if processed {
        // Already processed: the same answer, nothing done again.
        (StatusCode::OK, None)
    } else {
        match parts[0] {
            "ok" => (StatusCode::OK, None),
            "status" => (
                StatusCode::from_u16(arg(1) as u16).unwrap_or(StatusCode::IM_A_TEAPOT),
                None,
            ),
            "flaky" if nth as u64 <= arg(1) => (StatusCode::INTERNAL_SERVER_ERROR, None),
            "flaky" => (StatusCode::OK, None),
            "retry-after" if nth == 1 => (StatusCode::TOO_MANY_REQUESTS, Some(arg(1).to_string())),
            "retry-after-date" if nth == 1 => (
                StatusCode::TOO_MANY_REQUESTS,
                Some(httpdate::fmt_http_date(
                    SystemTime::now() + Duration::from_secs(arg(1)),
                )),
            ),
            "retry-after" | "retry-after-date" => (StatusCode::OK, None),
            "hang" => {
                hang().await;
                (StatusCode::OK, None)
            }
            "hang-once" if nth == 1 => {
                hang().await;
                (StatusCode::OK, None)
            }
            "hang-once" => (StatusCode::OK, None),
            "slow" => {
                tokio::time::sleep(Duration::from_millis(arg(1))).await;
                (StatusCode::OK, None)
            }
            _ => (StatusCode::NOT_FOUND, None),
        }
    };
    {
        let mut log = state.log.lock().unwrap();
        log.requests[index].answered = status.as_u16();
        if status.is_success()
            && !processed
            && let Some(k) = &key
        {
            let mut first = log.requests[index].clone();
            first.answered = status.as_u16();
            log.processed.entry(k.clone()).or_insert(first);
        }
    }
    match retry_after {
        Some(v) => (status, [(header::RETRY_AFTER, v)], "").into_response(),
        None => (status, "").into_response(),
    }
}

impl Provider {
    pub fn start() -> Provider {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let app_state = state.clone();
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            answer(app_state.clone(), uri, headers, body)
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let thread = std::thread::Builder::new()
            .name("test-provider".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .unwrap();
                });
                // Requests still hanging are dropped with the runtime.
            })
            .unwrap();
        Provider {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The URL of a mode: `url("flaky/2")`.
    pub fn url(&self, mode: &str) -> String {
        format!("http://{}/{mode}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.log.lock().unwrap().requests.clone()
    }

    /// The requests of one key, in arrival order.
    pub fn requests_for(&self, key: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| s.key.as_deref() == Some(key))
            .collect()
    }

    /// Each processed key's request.
    pub fn processed(&self) -> HashMap<String, Seen> {
        self.state.log.lock().unwrap().processed.clone()
    }

    /// The most requests it has had in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Polls until `done(requests)` holds; false after `timeout`.
    pub fn wait_for(&self, timeout: Duration, mut done: impl FnMut(&[Seen]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.requests()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // A hanging request would hold a graceful shutdown for an hour: the
        // thread is left to end with the test process instead.
        drop(self.thread.take());
    }
}

/// A URL on a loopback port nothing listens on: connections are refused.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/refused")
}
