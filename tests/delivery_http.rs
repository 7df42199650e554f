//! `nudgeflow run` delivering dispatches (DESIGN.md §9) against a real
//! Tansu broker and a real local provider (tests/common/provider.rs): HTTP
//! channels are `POST`ed and their receipts written to the receipts topic, a
//! `kafka` channel gets a copy on its topic, and a job killed while a
//! request hangs sends that request again after its restart, with the same
//! `Idempotency-Key`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::kafka::{
    Broker, Engine, Job, Received, job_config, produce_fixture, producer, read_topic,
    read_topic_until, send, sorted_lines, sorted_values, topics,
};
use common::provider::Provider;
use common::{http, read, repo};
use nudgeflow::record::output::dispatch_id;
use nudgeflow::time;

/// The environment variable the jobs' HTTP sinks read their Authorization
/// value from.
const AUTH_ENV: &str = "NUDGEFLOW_TEST_PROVIDER_AUTH";
const AUTH: &str = "Bearer live-test-secret";

/// Topics of `prefix`, of one partition each, plus `extra`.
fn one_partition_topics(prefix: &str, extra: &[&str]) -> Vec<String> {
    topics(prefix)
        .into_iter()
        .chain(extra.iter().map(|t| t.to_string()))
        .map(|t| format!("{t}:1"))
        .collect()
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// The receipts read, by dispatch id.
fn receipts_by_id(received: &[Received]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for m in received {
        let r = json(&m.value);
        let id = r["dispatch_id"].as_str().unwrap().to_string();
        assert_eq!(
            m.key.as_deref(),
            Some(id.as_str()),
            "a receipt's key is its dispatch id"
        );
        out.entry(id).or_default().push(r);
    }
    out
}

/// The saas fixture (every dispatch of its replay, on email, push, in_app
/// and webhook): email over HTTP to a provider that fails each key's first
/// request, webhook over HTTP to one that refuses every request (400), push
/// copied to a topic of its own, in_app over HTTP without success receipts
/// (so that only its acknowledgement lets the job stop cleanly).
#[test]
fn the_job_delivers_every_dispatch_over_http_and_writes_its_receipt() {
    let case = repo().join("fixtures/saas-scenario");
    let expected = sorted_lines(&read(&case.join("expected/dispatches.jsonl")));
    let by_channel = |channel: &str| -> Vec<String> {
        expected
            .iter()
            .filter(|l| json(l)["channel"] == channel)
            .cloned()
            .collect()
    };
    let (email, webhook, push, in_app) = (
        by_channel("email"),
        by_channel("webhook"),
        by_channel("push"),
        by_channel("in_app"),
    );
    assert!(!email.is_empty() && !webhook.is_empty() && !push.is_empty() && !in_app.is_empty());
    let id_of = |line: &String| json(line)["dispatch_id"].as_str().unwrap().to_string();

    let broker = Broker::start(
        Engine::Memory,
        1,
        &one_partition_topics("s", &["s.push-copy"]),
    );
    let provider = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[sinks.email]\nkind = \"http\"\nurl = {:?}\nauth_env = {AUTH_ENV:?}\n\
         [sinks.webhook]\nkind = \"http\"\nurl = {:?}\nauth_env = {AUTH_ENV:?}\n\
         [sinks.push]\nkind = \"kafka\"\ntopic = \"s.push-copy\"\n\
         [sinks.in_app]\nkind = \"http\"\nurl = {:?}\nsuccess_receipt = \"none\"\n",
        provider.url("flaky/1"),
        provider.url("status/400"),
        provider.url("ok"),
    );
    let config = job_config(
        dir.path(),
        &broker.brokers,
        &case.join("spec.toml"),
        "s",
        &sinks,
    );
    produce_fixture(&config, &case);
    let mut job = Job::start_with_env(&config, &[], &[(AUTH_ENV, AUTH)]);
    let started = time::now_ms();

    let receipts = read_topic(
        &broker.brokers,
        "s.receipts",
        email.len() + webhook.len(),
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
    let dispatches = read_topic(
        &broker.brokers,
        "s.dispatches",
        expected.len(),
        Duration::from_millis(200),
        Duration::from_secs(30),
    );
    let copies = read_topic(
        &broker.brokers,
        "s.push-copy",
        push.len(),
        Duration::from_millis(200),
        Duration::from_secs(30),
    );
    let metrics = http::get(&job.http_addr(), "/metrics", &[]).body;
    let status = job.stop();
    assert!(
        status.success(),
        "the job exited with {status}:\n{}",
        job_log(&dir)
    );

    // Every dispatch is on the dispatches topic, whatever its channel.
    assert_eq!(sorted_values(&dispatches), expected);

    // Email: each dispatch POSTed twice (the provider failed the first),
    // with the dispatch line as body and its id as key, processed once.
    let processed = provider.processed();
    assert_eq!(
        processed.keys().cloned().collect::<BTreeSet<_>>(),
        email
            .iter()
            .chain(&in_app)
            .map(id_of)
            .collect::<BTreeSet<_>>(),
        "the keys the provider processed"
    );
    for line in &email {
        let id = id_of(line);
        let seen = provider.requests_for(&id);
        assert_eq!(
            seen.iter().map(|s| s.answered).collect::<Vec<_>>(),
            [500, 200],
            "{id}"
        );
        for s in &seen {
            assert_eq!(s.path, "/flaky/1");
            assert_eq!(&s.body, line, "the body is the dispatch line");
            assert_eq!(s.header("content-type"), Some("application/json"));
            assert_eq!(s.header("authorization"), Some(AUTH));
        }
    }
    // Webhook: refused once each (a 400 is not tried again).
    for line in &webhook {
        let seen = provider.requests_for(&id_of(line));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].answered, 400);
        assert_eq!(&seen[0].body, line);
    }
    // In-app: once each, answered 200, no receipt.
    for line in &in_app {
        let seen = provider.requests_for(&id_of(line));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].answered, 200);
        assert_eq!(&seen[0].body, line);
    }
    // Nothing else was requested (push is copied).
    assert_eq!(
        provider.requests().len(),
        2 * email.len() + webhook.len() + in_app.len(),
        "requests: {:#?}",
        provider.requests()
    );

    // The receipts: delivered for email, failed with the status for
    // webhook, at the wall-clock time the job learned it.
    let receipts = receipts_by_id(&receipts);
    assert_eq!(receipts.len(), email.len() + webhook.len(), "{receipts:#?}");
    let now = time::now_ms();
    for (lines, status, reason) in [
        (&email, "delivered", None),
        (&webhook, "failed", Some("HTTP 400 Bad Request")),
    ] {
        for line in lines {
            let id = id_of(line);
            let got = &receipts[&id];
            assert_eq!(got.len(), 1, "{id}: {got:?}");
            let r = &got[0];
            assert_eq!(r["status"], status, "{r}");
            assert_eq!(r["reason"].as_str(), reason, "{r}");
            let t = time::parse_rfc3339(r["time"].as_str().unwrap()).unwrap();
            assert_eq!(r["time"], time::format_rfc3339(t), "RFC 3339 UTC with ms");
            assert!((started..=now).contains(&t), "{r}");
        }
    }

    // Push: a second copy on its topic, with the same key and headers.
    assert_eq!(sorted_values(&copies), push);
    for copy in &copies {
        let original = dispatches
            .iter()
            .find(|d| d.value == copy.value)
            .expect("its dispatch");
        assert_eq!(copy.key, original.key);
        assert_eq!(copy.headers, original.headers);
        assert!(
            copy.headers
                .contains(&("idempotency-key".into(), id_of(&copy.value))),
            "{:?}",
            copy.headers
        );
    }

    for line in [
        format!(
            "nudgeflow_sink_receipts_total{{channel=\"email\",status=\"delivered\"}} {}",
            email.len()
        ),
        format!(
            "nudgeflow_sink_receipts_total{{channel=\"webhook\",status=\"failed\"}} {}",
            webhook.len()
        ),
        format!(
            "nudgeflow_sink_requests_total{{channel=\"email\",class=\"5xx\"}} {}",
            email.len()
        ),
        format!(
            "nudgeflow_sink_retries_total{{channel=\"email\"}} {}",
            email.len()
        ),
        format!(
            "nudgeflow_records_out_total{{topic=\"s.push-copy\"}} {}",
            push.len()
        ),
        "nudgeflow_sink_queue_depth{channel=\"email\"} 0".to_string(),
    ] {
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

fn job_log(dir: &tempfile::TempDir) -> String {
    let mut logs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.iter().map(|p| read(p)).collect::<Vec<_>>().join("\n")
}

/// An event of `kind` for `user`, timed now.
fn event(id: &str, kind: &str, user: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"t","type":"{kind}","time":"{}","subject":"{user}"}}"#,
        time::format_rfc3339(time::now_ms())
    )
}

/// Offsets and checkpoints cover delivery: while a provider holds a request
/// unanswered, the job goes on deciding and delivering on other channels,
/// but a `kill -9` then loses nothing: the restarted job sends the request
/// again, with the same key, and writes its receipt.
#[test]
fn a_request_in_flight_at_a_crash_is_sent_again_with_its_key() {
    let broker = Broker::start(Engine::Sqlite, 1, &one_partition_topics("c", &[]));
    let provider = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "allowed_lateness = \"1s\"\n\
         [[rule]]\nname = \"ping\"\non = \"ping\"\npurpose = \"transactional\"\nchannels = [\"webhook\"]\n\
         [[rule]]\nname = \"pong\"\non = \"pong\"\npurpose = \"transactional\"\nchannels = [\"push\"]\n",
    )
    .unwrap();
    // Checkpoints every second: without delivery in the acknowledgement,
    // one past the hanging request would be complete long before the kill.
    let extra = format!(
        "[checkpoint]\ninterval = \"1s\"\n\
         [sinks.webhook]\nkind = \"http\"\nurl = {:?}\ntimeout = \"60s\"\n\
         [sinks.push]\nkind = \"http\"\nurl = {:?}\n",
        provider.url("hang-once"),
        provider.url("ok"),
    );
    let config = job_config(dir.path(), &broker.brokers, &spec, "c", &extra);
    let mut job = Job::start(&config, &[]);
    job.wait_ready();
    let kafka = producer(&broker.brokers);
    send(
        &kafka,
        "c.events",
        Some("u-1"),
        Some(event("e-1", "ping", "u-1").as_bytes()),
        &[],
    );
    let ping = dispatch_id("u-1", "t/e-1", "ping", 1).to_string();
    assert!(
        provider.wait_for(Duration::from_secs(60), |r| r
            .iter()
            .any(|s| s.key.as_deref() == Some(ping.as_str()))),
        "the ping dispatch is requested:\n{}",
        job.log()
    );

    // The request hangs; decisions and other channels go on.
    send(
        &kafka,
        "c.events",
        Some("u-2"),
        Some(event("e-2", "pong", "u-2").as_bytes()),
        &[],
    );
    let pong = dispatch_id("u-2", "t/e-2", "pong", 1).to_string();
    let receipts = read_topic_until(
        &broker.brokers,
        "c.receipts",
        Duration::from_secs(60),
        |r, _| r.iter().any(|m| m.key.as_deref() == Some(pong.as_str())),
    );
    assert!(
        receipts
            .iter()
            .any(|m| m.key.as_deref() == Some(pong.as_str())),
        "pong is delivered while ping hangs:\n{}",
        job.log()
    );
    assert!(
        receipts
            .iter()
            .all(|m| m.key.as_deref() != Some(ping.as_str())),
        "{receipts:?}"
    );
    // Several checkpoint intervals with the request unanswered.
    std::thread::sleep(Duration::from_secs(3));
    job.assert_running();
    drop(job); // kill -9

    let killed_at = Instant::now();
    let job = Job::start(&config, &[]);
    let receipts = read_topic_until(
        &broker.brokers,
        "c.receipts",
        Duration::from_secs(90),
        |r, _| r.iter().any(|m| m.key.as_deref() == Some(ping.as_str())),
    );
    let got = receipts_by_id(&receipts);
    assert!(
        got.contains_key(&ping),
        "no receipt of {ping} after the restart ({:?} since the kill); requests: {:#?}\n{}",
        killed_at.elapsed(),
        provider.requests_for(&ping),
        job.log()
    );
    assert!(got[&ping].iter().all(|r| r["status"] == "delivered"));
    let seen = provider.requests_for(&ping);
    assert_eq!(
        seen.iter().map(|s| s.answered).collect::<Vec<_>>(),
        [0, 200],
        "the first request never answered, the second processed"
    );
    assert_eq!(seen[0].body, seen[1].body, "the same dispatch line");
    assert!(provider.processed().contains_key(&ping));
    let status = job.stop();
    assert!(
        status.success(),
        "the job exited with {status}:\n{}",
        job_log(&dir)
    );
}

/// An `auth_env` that names an unset variable stops the job at its start,
/// before it asks the broker anything, naming the table and the field.
#[test]
fn an_unset_auth_env_stops_the_job_at_its_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = job_config(
        dir.path(),
        // Nothing listens there: the job must not get as far as the broker.
        "127.0.0.1:1",
        &repo().join("dataflows/core.toml"),
        "u",
        "[sinks.webhook]\nkind = \"http\"\nurl = \"http://127.0.0.1:1/hook\"\nauth_env = \"NUDGEFLOW_TEST_UNSET_AUTH\"\n",
    );
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nudgeflow"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("NUDGEFLOW_TEST_UNSET_AUTH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: [sinks.webhook] auth_env: names \"NUDGEFLOW_TEST_UNSET_AUTH\", which is not set",
            config.display()
        )),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
}

/// A provider's refusal drives channel fallback (§4, §9): the webhook
/// provider answers 400, the sink writes a `failed` receipt to the
/// receipts topic, the job reads it back and makes attempt 2 on email at
/// the receipt's time, whose provider answers 2xx: `delivered`.
#[test]
fn a_refused_request_falls_back_to_the_next_channel() {
    let broker = Broker::start(Engine::Memory, 1, &one_partition_topics("f", &[]));
    let provider = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "allowed_lateness = \"2s\"\n[[rule]]\nname = \"alert\"\non = \"t\"\n\
         purpose = \"transactional\"\nchannels = [\"webhook\", \"email\"]\nfallback_after = \"1h\"\n",
    )
    .unwrap();
    let sinks = format!(
        "[sinks.webhook]\nkind = \"http\"\nurl = {:?}\n[sinks.email]\nkind = \"http\"\nurl = {:?}\n",
        provider.url("status/400"),
        provider.url("ok"),
    );
    let config = job_config(dir.path(), &broker.brokers, &spec, "f", &sinks);
    let mut job = Job::start(&config, &[]);
    job.wait_ready();
    let t = time::now_ms();
    let event = format!(
        r#"{{"specversion":"1.0","id":"e-1","source":"test","type":"t","time":"{}","subject":"u-1"}}"#,
        time::format_rfc3339(t)
    );
    send(
        &producer(&broker.brokers),
        "f.events",
        Some("u-1"),
        Some(event.as_bytes()),
        &[],
    );

    let dispatches = read_topic(
        &broker.brokers,
        "f.dispatches",
        2,
        Duration::ZERO,
        Duration::from_secs(30),
    );
    assert_eq!(dispatches.len(), 2, "no attempt 2:\n{}", job_log(&dir));
    let receipts = read_topic(
        &broker.brokers,
        "f.receipts",
        2,
        Duration::ZERO,
        Duration::from_secs(30),
    );
    assert!(job.stop().success(), "{}", job_log(&dir));

    let attempts: Vec<serde_json::Value> = dispatches.iter().map(|m| json(&m.value)).collect();
    let (first, second) = (&attempts[0], &attempts[1]);
    assert_eq!(
        (first["channel"].as_str(), first["attempt"].as_i64()),
        (Some("webhook"), Some(1))
    );
    assert_eq!(
        (second["channel"].as_str(), second["attempt"].as_i64()),
        (Some("email"), Some(2))
    );
    let by_id = receipts_by_id(&receipts);
    let id = |d: &serde_json::Value| d["dispatch_id"].as_str().unwrap().to_string();
    let failed = &by_id[&id(first)][0];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "HTTP 400 Bad Request");
    // Attempt 2 is made at the failure's time, as the receipt says.
    assert_eq!(second["decision_time"], failed["time"]);
    assert_eq!(by_id[&id(second)][0]["status"], "delivered");
    // The email provider processed attempt 2, under its own key.
    let processed = provider.processed();
    assert!(processed.contains_key(&id(second)), "{processed:?}");
    assert!(!processed.contains_key(&id(first)));
}
