//! The HTTP channel sink (DESIGN.md §9) against a real local provider
//! (tests/common/provider.rs), without Kafka: what a request carries, which
//! answers are retried and how long the sink waits between attempts,
//! `Retry-After`, timeouts, refused connections, the rate limit, the
//! concurrency bound, and the queue that fails dispatches at once rather
//! than block when it is full.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::provider::{Provider, refused_url};
use nudgeflow::ops::Metrics;
use nudgeflow::sink::http::{
    Backoff, Driver, HttpConfig, HttpSink, Outcome, Request, Status, SuccessReceipt,
};
use reqwest::header::HeaderValue;

/// A driver and a sink of `url` for channel `webhook`, with `tweak`
/// applied to the default settings.
fn sink(url: &str, tweak: impl FnOnce(&mut HttpConfig)) -> (Driver, HttpSink, Metrics) {
    let driver = Driver::start().unwrap();
    let mut config = HttpConfig::new(url.parse().unwrap());
    tweak(&mut config);
    let metrics = Metrics::new();
    let sink = HttpSink::new(
        "webhook",
        &config,
        None,
        driver.handle().clone(),
        metrics.clone(),
    )
    .unwrap();
    (driver, sink, metrics)
}

/// A dispatch line as the dispatches topic holds it.
fn dispatch(id: &str, user: &str) -> Request {
    let line = format!(
        r#"{{"dispatch_id":"{id}","user":"{user}","rule":"r","template":"t","channel":"webhook","purpose":"transactional","priority":"normal","attempt":1,"event_key":"s/e-1","event_time":"2026-03-01T10:00:00.000Z","decision_time":"2026-03-01T10:00:00.000Z","locale":null,"vars":{{"n":1}}}}"#
    );
    Request {
        dispatch_id: id.to_string(),
        body: line.into(),
    }
}

/// Submits dispatches `ids` (user `user-ID`) and waits up to `timeout` for
/// every outcome; returns them by id order of arrival, with whether each
/// submission was accepted.
fn deliver(sink: &HttpSink, ids: &[String], timeout: Duration) -> (Vec<Outcome>, Vec<bool>) {
    let (tx, rx) = mpsc::channel();
    let accepted = ids
        .iter()
        .map(|id| {
            let tx = tx.clone();
            sink.submit(
                dispatch(id, &format!("user-{id}")),
                Box::new(move |o| tx.send(o).unwrap()),
            )
        })
        .collect();
    let deadline = Instant::now() + timeout;
    let mut outcomes = Vec::new();
    while outcomes.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(o) => outcomes.push(o),
            Err(_) => panic!(
                "{} of {} outcomes within {timeout:?}: {outcomes:#?}",
                outcomes.len(),
                ids.len()
            ),
        }
    }
    (outcomes, accepted)
}

fn deliver_one(sink: &HttpSink, id: &str) -> Outcome {
    deliver(sink, &[id.to_string()], Duration::from_secs(60))
        .0
        .pop()
        .unwrap()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn a_2xx_is_delivered_with_the_dispatch_as_body_and_its_id_as_idempotency_key() {
    let provider = Provider::start();
    let driver = Driver::start().unwrap();
    let metrics = Metrics::new();
    let config = HttpConfig::new(provider.url("ok").parse().unwrap());
    let sink = HttpSink::new(
        "push",
        &config,
        Some(HeaderValue::from_static("Bearer s3cret")),
        driver.handle().clone(),
        metrics.clone(),
    )
    .unwrap();
    let before = nudgeflow::time::now_ms();
    let outcome = deliver_one(&sink, "d-1");
    let after = nudgeflow::time::now_ms();
    assert_eq!(outcome.status, Status::Delivered);
    assert_eq!(outcome.reason, None);
    assert_eq!(outcome.attempts, 1);
    assert!((before..=after).contains(&outcome.time), "{outcome:?}");
    let requests = provider.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0];
    assert_eq!(seen.path, "/ok");
    assert_eq!(
        seen.body,
        std::str::from_utf8(&dispatch("d-1", "user-d-1").body).unwrap()
    );
    assert_eq!(seen.header("idempotency-key"), Some("d-1"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("authorization"), Some("Bearer s3cret"));
    // The receipt: §2's shape, the time when the sink learned the outcome.
    let receipt: serde_json::Value =
        serde_json::from_slice(&outcome.receipt().expect("a receipt")).unwrap();
    assert_eq!(
        receipt,
        serde_json::json!({
            "dispatch_id": "d-1",
            "status": "delivered",
            "time": nudgeflow::time::format_rfc3339(outcome.time),
        })
    );
    let text = metrics.encode();
    for line in [
        "nudgeflow_sink_requests_total{channel=\"push\",class=\"2xx\"} 1",
        "nudgeflow_sink_request_duration_seconds_count{channel=\"push\"} 1",
        "nudgeflow_sink_queue_depth{channel=\"push\"} 0",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[test]
fn success_receipt_none_writes_receipts_of_failures_only() {
    let provider = Provider::start();
    let (_d, ok, _) = sink(&provider.url("ok"), |c| {
        c.success_receipt = SuccessReceipt::None
    });
    let outcome = deliver_one(&ok, "d-1");
    assert_eq!(outcome.status, Status::Delivered);
    assert_eq!(outcome.receipt(), None);
    let (_d, bad, _) = sink(&provider.url("status/400"), |c| {
        c.success_receipt = SuccessReceipt::None
    });
    let outcome = deliver_one(&bad, "d-2");
    let receipt: serde_json::Value =
        serde_json::from_slice(&outcome.receipt().expect("a receipt of the failure")).unwrap();
    assert_eq!(receipt["status"], "failed");
    assert_eq!(receipt["reason"], "HTTP 400 Bad Request");
}

#[test]
fn a_5xx_is_retried_up_to_max_attempts_then_failed_with_the_last_status() {
    let provider = Provider::start();
    let (_d, sink, metrics) = sink(&provider.url("status/503"), |c| c.max_attempts = 3);
    let outcome = deliver_one(&sink, "d-1");
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(
        outcome.reason.as_deref(),
        Some("HTTP 503 Service Unavailable (after 3 attempts)")
    );
    assert_eq!(outcome.attempts, 3);
    let seen = provider.requests_for("d-1");
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.body == seen[0].body));
    let receipt: serde_json::Value = serde_json::from_slice(&outcome.receipt().unwrap()).unwrap();
    assert_eq!(receipt["status"], "failed");
    assert_eq!(
        receipt["reason"],
        "HTTP 503 Service Unavailable (after 3 attempts)"
    );
    let text = metrics.encode();
    assert!(
        text.contains("nudgeflow_sink_requests_total{channel=\"webhook\",class=\"5xx\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("nudgeflow_sink_retries_total{channel=\"webhook\"} 2"),
        "{text}"
    );
}

#[test]
fn a_flaky_provider_gets_the_same_request_again_and_processes_it_once() {
    let provider = Provider::start();
    let (_d, sink, _) = sink(&provider.url("flaky/2"), |_| {});
    let outcome = deliver_one(&sink, "d-1");
    assert_eq!(outcome.status, Status::Delivered);
    assert_eq!(outcome.attempts, 3);
    let seen = provider.requests_for("d-1");
    assert_eq!(
        seen.iter().map(|s| s.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    assert!(seen.iter().all(|s| s.body == seen[0].body));
    assert_eq!(provider.processed().len(), 1);
}

#[test]
fn other_4xx_and_3xx_fail_at_once_while_408_and_429_are_retried() {
    let provider = Provider::start();
    for (mode, reason) in [
        ("status/400", "HTTP 400 Bad Request"),
        ("status/401", "HTTP 401 Unauthorized"),
        ("status/404", "HTTP 404 Not Found"),
        ("status/422", "HTTP 422 Unprocessable Entity"),
        // Redirects are not followed: a POST must not turn into a GET.
        ("status/302", "HTTP 302 Found"),
    ] {
        let (_d, sink, _) = sink(&provider.url(mode), |_| {});
        let id = format!("once-{mode}");
        let outcome = deliver_one(&sink, &id);
        assert_eq!(outcome.status, Status::Failed, "{mode}");
        assert_eq!(outcome.reason.as_deref(), Some(reason), "{mode}");
        assert_eq!(provider.requests_for(&id).len(), 1, "{mode}");
    }
    for mode in ["status/408", "status/429"] {
        let (_d, sink, _) = sink(&provider.url(mode), |c| c.max_attempts = 2);
        let id = format!("again-{mode}");
        let outcome = deliver_one(&sink, &id);
        assert_eq!(outcome.status, Status::Failed, "{mode}");
        assert_eq!(provider.requests_for(&id).len(), 2, "{mode}");
    }
}

#[test]
fn retry_after_is_waited_for_in_seconds_and_as_an_http_date() {
    let provider = Provider::start();
    for (mode, at_least) in [
        ("retry-after/1", Duration::from_millis(950)),
        // An HTTP date has whole seconds: 2 s ahead is more than 1 s away.
        ("retry-after-date/2", Duration::from_millis(950)),
    ] {
        let (_d, sink, _) = sink(&provider.url(mode), |_| {});
        let id = format!("d-{mode}");
        let outcome = deliver_one(&sink, &id);
        assert_eq!(outcome.status, Status::Delivered, "{mode}");
        let seen = provider.requests_for(&id);
        assert_eq!(
            seen.iter().map(|s| s.answered).collect::<Vec<_>>(),
            [429, 200],
            "{mode}"
        );
        let waited = seen[1].at - seen[0].at;
        assert!(
            waited >= at_least && waited < Duration::from_secs(5),
            "{mode}: waited {waited:?}"
        );
    }
}

#[test]
fn a_retry_after_longer_than_the_backoff_cap_fails_at_once() {
    let provider = Provider::start();
    let (_d, sink, _) = sink(&provider.url("retry-after/120"), |_| {});
    let started = Instant::now();
    let outcome = deliver_one(&sink, "d-1");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(
        outcome.reason.as_deref(),
        Some("HTTP 429 Too Many Requests; Retry-After 120 s is longer than the sink waits (30 s)")
    );
    assert_eq!(provider.requests_for("d-1").len(), 1);
}

#[test]
fn a_provider_that_does_not_answer_in_time_is_a_timeout_retried() {
    let provider = Provider::start();
    let (_d, sink, metrics) = sink(&provider.url("hang"), |c| {
        c.timeout = Duration::from_millis(300);
        c.max_attempts = 2;
    });
    let started = Instant::now();
    let outcome = deliver_one(&sink, "d-1");
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(
        outcome.reason.as_deref(),
        Some("timeout: no answer within 300ms (after 2 attempts)")
    );
    assert!(provider.wait_for(Duration::from_secs(5), |r| r.len() == 2));
    assert!(
        metrics
            .encode()
            .contains("nudgeflow_sink_requests_total{channel=\"webhook\",class=\"timeout\"} 2")
    );
}

#[test]
fn a_refused_connection_is_retried_and_reported() {
    let (_d, sink, metrics) = sink(&refused_url(), |c| c.max_attempts = 3);
    let outcome = deliver_one(&sink, "d-1");
    assert_eq!(outcome.status, Status::Failed);
    let reason = outcome.reason.unwrap();
    assert!(
        reason.starts_with("connection failed: ") && reason.ends_with("(after 3 attempts)"),
        "{reason}"
    );
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
    assert!(
        metrics
            .encode()
            .contains("nudgeflow_sink_requests_total{channel=\"webhook\",class=\"connect\"} 3")
    );
}

#[test]
fn backoff_waits_are_jittered_within_their_doubling_ceilings() {
    let provider = Provider::start();
    // Five requests per dispatch: waits after failures 1 to 4, of at most
    // 100, 200, 400 and 800 ms.
    let (_d, sink, _) = sink(&provider.url("status/500"), |c| c.max_attempts = 5);
    let ids = ids("d", 20);
    let (outcomes, _) = deliver(&sink, &ids, Duration::from_secs(60));
    assert!(outcomes.iter().all(|o| o.attempts == 5));
    let backoff = Backoff::DEFAULT;
    let mut waits: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    for id in &ids {
        let seen = provider.requests_for(id);
        assert_eq!(seen.len(), 5);
        for (n, pair) in seen.windows(2).enumerate() {
            let wait = pair[1].at - pair[0].at;
            let ceiling = backoff.ceiling(n as u32 + 1);
            // More for the request itself on a busy machine.
            assert!(
                wait <= ceiling + Duration::from_millis(300),
                "{id}: wait {} {wait:?} over {ceiling:?}",
                n + 1
            );
            waits[n].push(wait);
        }
    }
    // Full jitter: uniform below the ceiling, so the mean is about half of
    // it (not 0: no backoff; not all of it: no jitter), give or take the
    // time of a request.
    for (n, w) in waits.iter().enumerate() {
        let mean = w.iter().sum::<Duration>() / w.len() as u32;
        let ceiling = backoff.ceiling(n as u32 + 1);
        assert!(
            mean > ceiling / 5 && mean < ceiling * 4 / 5 + Duration::from_millis(40),
            "after failure {}: mean wait {mean:?} of ceiling {ceiling:?}",
            n + 1
        );
    }
}

#[test]
fn the_rate_limit_spaces_requests() {
    let provider = Provider::start();
    let (_d, sink, _) = sink(&provider.url("ok"), |c| c.rate = Some(20.0));
    let started = Instant::now();
    deliver(&sink, &ids("d", 21), Duration::from_secs(30));
    let elapsed = started.elapsed();
    // 20 intervals of 50 ms: a burst of one, not of a second's worth (which
    // would send all 21 at once).
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert_eq!(provider.requests().len(), 21);
}

#[test]
fn concurrency_bounds_the_requests_in_flight() {
    let provider = Provider::start();
    let (_d, sink, _) = sink(&provider.url("slow/200"), |c| c.concurrency = 4);
    let started = Instant::now();
    let (outcomes, _) = deliver(&sink, &ids("d", 16), Duration::from_secs(30));
    assert!(outcomes.iter().all(|o| o.status == Status::Delivered));
    assert_eq!(provider.max_in_flight(), 4);
    // Four rounds of four.
    assert!(started.elapsed() >= Duration::from_millis(780));
}

#[test]
fn a_full_queue_fails_new_dispatches_at_once_and_accepts_again_once_drained() {
    let provider = Provider::start();
    let (_d, sink, metrics) = sink(&provider.url("slow/1500"), |c| c.queue = 3);
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let accepted: Vec<bool> = ids("d", 5)
        .iter()
        .map(|id| {
            let tx = tx.clone();
            sink.submit(dispatch(id, "u"), Box::new(move |o| tx.send(o).unwrap()))
        })
        .collect();
    // Never blocks: the provider takes 1.5 s per request.
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(accepted, [true, true, true, false, false]);
    assert_eq!(sink.depth(), 3);
    // The refused ones are settled already, failed, without a request.
    let refused: Vec<Outcome> = rx.try_iter().collect();
    assert_eq!(
        refused
            .iter()
            .map(|o| o.dispatch_id.as_str())
            .collect::<Vec<_>>(),
        ["d-3", "d-4"]
    );
    for o in &refused {
        assert_eq!(o.status, Status::Failed);
        assert_eq!(o.reason.as_deref(), Some("queue full"));
        assert_eq!(o.attempts, 0);
        let receipt: serde_json::Value = serde_json::from_slice(&o.receipt().unwrap()).unwrap();
        assert_eq!(receipt["reason"], "queue full");
    }
    let text = metrics.encode();
    assert!(
        text.contains("nudgeflow_sink_queue_full_total{channel=\"webhook\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("nudgeflow_sink_queue_depth{channel=\"webhook\"} 3"),
        "{text}"
    );
    for _ in 0..3 {
        let o = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(o.status, Status::Delivered);
    }
    assert!(provider.requests_for("d-3").is_empty());
    assert_eq!(sink.depth(), 0);
    let (outcomes, accepted) = deliver(&sink, &ids("e", 3), Duration::from_secs(10));
    assert_eq!(accepted, [true, true, true]);
    assert!(outcomes.iter().all(|o| o.status == Status::Delivered));
}

#[test]
fn a_hanging_provider_does_not_hold_back_another_sink() {
    let provider = Provider::start();
    let driver = Driver::start().unwrap();
    let make = |channel: &str, mode: &str| {
        let mut config = HttpConfig::new(provider.url(mode).parse().unwrap());
        config.concurrency = 2;
        config.timeout = Duration::from_secs(60);
        HttpSink::new(
            channel,
            &config,
            None,
            driver.handle().clone(),
            Metrics::new(),
        )
        .unwrap()
    };
    let stuck = make("sms", "hang");
    let fine = make("push", "ok");
    for id in ids("stuck", 20) {
        stuck.submit(dispatch(&id, "u"), Box::new(|_| {}));
    }
    let started = Instant::now();
    let (outcomes, _) = deliver(&fine, &ids("fine", 20), Duration::from_secs(10));
    assert!(outcomes.iter().all(|o| o.status == Status::Delivered));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stuck.depth(), 20);
}
