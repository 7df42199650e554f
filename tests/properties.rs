//! Property tests over random small fixtures: invariants that must hold for
//! any input (docs/semantics.md).
//!
//! - determinism: one worker with whole-file stripes and three workers with
//!   tiny stripes give byte-identical outputs;
//! - no marketing dispatch without consent as of its decision time (consent
//!   recomputed here from the input, independently of the engine);
//! - no non-critical dispatch beyond a cap, in any window (first attempts:
//!   channel fallback's further attempts count toward no cap);
//! - every candidate ends exactly once (dispatched or suppressed);
//! - every further attempt follows the attempt before it, on another
//!   channel, within that attempt's `fallback_after` window;
//! - the aggregates (DESIGN.md §5) are the same for any number of workers;
//!   each channel's attempts are the dispatch lines before the as-of time
//!   of users not erased since; every active user is in one cohort, and no
//!   bucket retains more users than the cohort has.

mod common;

use std::path::Path;
use std::sync::Arc;

use nudgeflow::spec::Spec;
use nudgeflow::time::{format_rfc3339, parse_rfc3339};
use proptest::prelude::*;
use serde_json::{Value, json};

const SPEC: &str = r#"
dedup_horizon = "6h"
holdout = 0.3

[[rule]]
name = "cart"
on = "cart.abandoned"
purpose = "marketing"
channels = ["push", "email", "sms"]
delay = "20m"
cancel_on = ["order.placed"]
fallback_after = "10m"

[[rule]]
name = "promo"
on = "promo.*"
purpose = "marketing"
channels = ["sms", "email"]
dedup = { window = "2h", key = "item" }

[[rule]]
name = "payment"
on = "payment.failed"
purpose = "transactional"
priority = "high"
channels = ["email", "sms"]
fallback_after = "10m"

[[rule]]
name = "security"
on = "login.new_device"
purpose = "transactional"
priority = "critical"
channels = ["sms", "push"]
fallback_after = "10m"

[[cap]]
purpose = "marketing"
max = 2
per = "1h"

[[cap]]
channel = "sms"
max = 1
per = "30m"

[analytics]
activity = ["order.placed", "cart.abandoned", "page.viewed"]
segment = "item"
bucket = "day"

[analytics.churn]
r = 0.243
alpha = 4.414
a = 0.793
b = 2.426
unit = "day"
threshold = 0.9
"#;

const T0: &str = "2026-03-28T18:00:00Z";
const USERS: [&str; 3] = ["u-a", "u-b", "u-c"];
const TYPES: [&str; 6] = [
    "cart.abandoned",
    "promo.flash",
    "payment.failed",
    "login.new_device",
    "order.placed",
    "page.viewed",
];
const CHANNELS: [&str; 4] = ["push", "email", "sms", "*"];
const ZONES: [&str; 3] = ["UTC", "Europe/Berlin", "America/New_York"];
const RULES: [&str; 4] = ["cart", "promo", "payment", "security"];
const STATUSES: [&str; 6] = [
    "delivered",
    "failed",
    "bounced",
    "opened",
    "clicked",
    "complained",
];
/// The `fallback_after` of the spec's rules that have one.
const WINDOW: i64 = 600_000;

#[derive(Clone, Debug)]
enum Rec {
    Event {
        user: usize,
        minute: i64,
        kind: usize,
        id: u8,
        item: u8,
    },
    Consent {
        user: usize,
        minute: i64,
        channel: usize,
        marketing: bool,
        granted: bool,
    },
    Prefs {
        user: usize,
        minute: i64,
        channels: Option<Vec<usize>>,
        quiet: Option<(u8, u8, usize)>,
    },
    Erasure {
        user: usize,
        minute: i64,
    },
    /// A receipt for the dispatch the event `e-{id}` of `user` may have
    /// made by `rule`, attempt `attempt` (most name no dispatch made).
    Receipt {
        user: usize,
        minute: i64,
        id: u8,
        rule: usize,
        attempt: u8,
        status: usize,
    },
}

fn rec() -> impl Strategy<Value = Rec> {
    let minute = 0i64..(36 * 60);
    prop_oneof![
        6 => (0..3usize, minute.clone(), 0..6usize, 0..12u8, 0..3u8).prop_map(|(user, minute, kind, id, item)| Rec::Event { user, minute, kind, id, item }),
        3 => (0..3usize, minute.clone(), 0..4usize, any::<bool>(), prop::bool::weighted(0.8)).prop_map(|(user, minute, channel, marketing, granted)| Rec::Consent { user, minute, channel, marketing, granted }),
        1 => (0..3usize, minute.clone(), prop::option::of(prop::collection::vec(0..3usize, 0..3)), prop::option::of((0..24u8, 0..24u8, 0..3usize)))
            .prop_map(|(user, minute, channels, quiet)| Rec::Prefs { user, minute, channels, quiet }),
        1 => (0..3usize, minute.clone()).prop_map(|(user, minute)| Rec::Erasure { user, minute }),
        3 => (0..3usize, minute, 0..12u8, 0..4usize, 1..3u8, 0..6usize)
            .prop_map(|(user, minute, id, rule, attempt, status)| Rec::Receipt { user, minute, id, rule, attempt, status }),
    ]
}

fn at(minute: i64) -> String {
    format_rfc3339(parse_rfc3339(T0).unwrap() + minute * 60_000)
}

/// Writes the records as a fixture (each file sorted by time: no late records).
fn write_fixture(dir: &Path, recs: &[Rec]) {
    let mut files: [Vec<(i64, String)>; 5] = Default::default();
    for r in recs {
        match r {
            Rec::Event { user, minute, kind, id, item } => files[0].push((*minute, json!({"id": format!("e-{id}"), "source": "s", "type": TYPES[*kind], "time": at(*minute), "subject": USERS[*user], "data": {"item": item}}).to_string())),
            Rec::Consent { user, minute, channel, marketing, granted } => files[1].push((*minute, json!({"user": USERS[*user], "channel": CHANNELS[*channel], "purpose": if *marketing { "marketing" } else { "transactional" }, "granted": granted, "time": at(*minute)}).to_string())),
            Rec::Prefs { user, minute, channels, quiet } => {
                let mut p = json!({"user": USERS[*user], "time": at(*minute)});
                if let Some(c) = channels {
                    p["channels"] = json!(c.iter().map(|i| CHANNELS[*i]).collect::<Vec<_>>());
                }
                if let Some((s, e, z)) = quiet {
                    p["quiet_hours"] = json!({"start": format!("{s:02}:00"), "end": format!("{e:02}:30"), "tz": ZONES[*z]});
                }
                files[2].push((*minute, p.to_string()));
            }
            Rec::Erasure { user, minute } => files[3].push((*minute, json!({"user": USERS[*user], "time": at(*minute)}).to_string())),
            Rec::Receipt { user, minute, id, rule, attempt, status } => {
                let name = format!("nudgeflow:dispatch:{}:s/e-{id}:{}:{attempt}", USERS[*user], RULES[*rule]);
                let dispatch_id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes());
                files[4].push((*minute, json!({"dispatch_id": dispatch_id.to_string(), "status": STATUSES[*status], "time": at(*minute)}).to_string()));
            }
        }
    }
    for (name, mut lines) in [
        "events.jsonl",
        "consent.jsonl",
        "preferences.jsonl",
        "erasures.jsonl",
        "receipts.jsonl",
    ]
    .into_iter()
    .zip(files)
    {
        lines.sort_by_key(|(m, _)| *m);
        let text: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn lines(path: &Path) -> Vec<Value> {
    common::read(path)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Marketing consent of (user, channel) as of `t`, straight from the input.
fn marketing_consent(recs: &[Rec], user: usize, channel: &str, t: i64) -> bool {
    let mut best: Option<(i64, u8, usize, bool)> = None; // (minute, rank, position, granted)
    let mut consent_pos = 0;
    for r in recs {
        match r {
            Rec::Consent {
                user: u,
                minute,
                channel: c,
                marketing: true,
                granted,
            } if *u == user
                && *minute * 60_000 <= t
                && (CHANNELS[*c] == channel || CHANNELS[*c] == "*") =>
            {
                best = best.max(Some((*minute, 1, consent_pos, *granted)));
            }
            Rec::Erasure { user: u, minute } if *u == user && *minute * 60_000 <= t => {
                best = best.max(Some((*minute, 0, 0, false)));
            }
            _ => {}
        }
        if matches!(r, Rec::Consent { .. }) {
            consent_pos += 1;
        }
    }
    best.is_some_and(|b| b.3)
}

fn check(recs: Vec<Rec>) -> Result<(), TestCaseError> {
    let spec = Arc::new(Spec::parse("properties.toml", SPEC).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let fixture = tmp.path().join("in");
    std::fs::create_dir(&fixture).unwrap();
    // Stable stream positions for the consent oracle: sort like the file.
    let mut recs = recs;
    recs.sort_by_key(|r| match r {
        Rec::Event { minute, .. }
        | Rec::Consent { minute, .. }
        | Rec::Prefs { minute, .. }
        | Rec::Erasure { minute, .. }
        | Rec::Receipt { minute, .. } => *minute,
    });
    write_fixture(&fixture, &recs);
    let (one, three) = (tmp.path().join("w1"), tmp.path().join("w3"));
    common::replay(&spec, &fixture, &one, 1, 1 << 20);
    common::replay(&spec, &fixture, &three, 3, 61);
    for f in [
        "dispatches.jsonl",
        "suppressions.jsonl",
        "dead_letters.jsonl",
        "summary.json",
        "retention.json",
        "delivery.json",
        "churn.jsonl",
    ] {
        prop_assert_eq!(
            common::read(&one.join(f)),
            common::read(&three.join(f)),
            "{} differs between -w 1 and -w 3",
            f
        );
    }

    let t0 = parse_rfc3339(T0).unwrap();
    let dispatches = lines(&one.join("dispatches.jsonl"));
    for d in &dispatches {
        let t = parse_rfc3339(d["decision_time"].as_str().unwrap()).unwrap();
        let user = USERS.iter().position(|u| *u == d["user"]).unwrap();
        if d["purpose"] == "marketing" {
            prop_assert!(
                marketing_consent(&recs, user, d["channel"].as_str().unwrap(), t - t0),
                "marketing dispatch without consent: {}",
                d
            );
        }
        if d["attempt"] != 1 {
            // Channel fallback: attempt k − 1 of the same candidate came
            // before it, on another channel, and k falls in its window (an
            // event key re-sent after the dedup horizon is a second
            // candidate with the same attempts: any of them will do).
            let follows = dispatches.iter().any(|o| {
                let made = parse_rfc3339(o["decision_time"].as_str().unwrap()).unwrap();
                o["user"] == d["user"]
                    && o["event_key"] == d["event_key"]
                    && o["rule"] == d["rule"]
                    && o["attempt"].as_u64().unwrap() + 1 == d["attempt"].as_u64().unwrap()
                    && o["channel"] != d["channel"]
                    && made <= t
                    && t <= made + WINDOW
            });
            prop_assert!(follows, "attempt without the one before it: {}", d);
        }
        if d["priority"] != "critical" && d["attempt"] == 1 {
            let last_erasure = recs
                .iter()
                .filter_map(|r| match r {
                    Rec::Erasure { user: u, minute } if *u == user && t0 + minute * 60_000 <= t => {
                        Some(t0 + minute * 60_000)
                    }
                    _ => None,
                })
                .max()
                .unwrap_or(i64::MIN);
            // Dispatches decided up to `d` (inclusive): at one instant,
            // candidates are decided in order of (decision time, event
            // time, event key, rule order), so a critical dispatch decided
            // just after `d` at the same instant is not in `d`'s window.
            let order = |o: &Value| {
                let time = |f: &str| parse_rfc3339(o[f].as_str().unwrap()).unwrap();
                let rule = spec.rules.iter().position(|r| o["rule"] == r.name.as_str());
                (
                    time("decision_time"),
                    time("event_time"),
                    o["event_key"].as_str().unwrap().to_owned(),
                    rule,
                )
            };
            let window = |per: i64, pred: &dyn Fn(&Value) -> bool| {
                dispatches
                    .iter()
                    .filter(|o| {
                        let ot = parse_rfc3339(o["decision_time"].as_str().unwrap()).unwrap();
                        o["user"] == d["user"]
                            && ot > t - per
                            && order(o) <= order(d)
                            && ot >= last_erasure
                            && o["attempt"] == 1
                            && pred(o)
                    })
                    .count()
            };
            if d["purpose"] == "marketing" {
                prop_assert!(
                    window(3_600_000, &|o| o["purpose"] == "marketing") <= 2,
                    "marketing cap exceeded at {}",
                    d
                );
            }
            if d["channel"] == "sms" {
                prop_assert!(
                    window(1_800_000, &|o| o["channel"] == "sms") <= 1,
                    "sms cap exceeded at {}",
                    d
                );
            }
        }
    }
    check_aggregates(&recs, &dispatches, &one)?;
    let summary: Value = serde_json::from_str(&common::read(&one.join("summary.json"))).unwrap();
    // A candidate ends with its first attempt, or a suppression other
    // than `undeliverable` (which ends a dispatched candidate's attempts).
    let first_attempts = dispatches.iter().filter(|d| d["attempt"] == 1).count() as u64;
    let undeliverable = lines(&one.join("suppressions.jsonl"))
        .iter()
        .filter(|s| s["reason"] == "undeliverable")
        .count() as u64;
    let ended = first_attempts + summary["suppressions"].as_u64().unwrap()
        - undeliverable
        - summary["late_events"].as_u64().unwrap();
    prop_assert_eq!(
        summary["candidates"].as_u64().unwrap(),
        ended,
        "every candidate ends exactly once"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn invariants_hold(recs in prop::collection::vec(rec(), 0..60)) {
        check(recs)?;
    }
}

/// The aggregates against the decisions and the input.
fn check_aggregates(recs: &[Rec], dispatches: &[Value], out: &Path) -> Result<(), TestCaseError> {
    let t0 = parse_rfc3339(T0).unwrap();
    let minute = |r: &Rec| match r {
        Rec::Event { minute, .. }
        | Rec::Consent { minute, .. }
        | Rec::Prefs { minute, .. }
        | Rec::Erasure { minute, .. }
        | Rec::Receipt { minute, .. } => *minute,
    };
    let Some(last) = recs.iter().map(minute).max() else {
        return Ok(());
    };
    let as_of = t0 + last * 60_000 + 1;
    let delivery: Value = serde_json::from_str(&common::read(&out.join("delivery.json"))).unwrap();
    prop_assert_eq!(delivery["as_of"].as_str().unwrap(), format_rfc3339(as_of));
    // An attempt counts unless its user was erased after it, before as_of.
    let erased_since = |user: &Value, t: i64| {
        recs.iter().any(|r| {
            matches!(r, Rec::Erasure { user: u, minute }
                if USERS[*u] == *user && t0 + minute * 60_000 > t && t0 + minute * 60_000 < as_of)
        })
    };
    for channel in ["push", "email", "sms"] {
        let made = dispatches
            .iter()
            .filter(|d| d["channel"] == channel)
            .filter(|d| {
                let t = parse_rfc3339(d["decision_time"].as_str().unwrap()).unwrap();
                t < as_of && !erased_since(&d["user"], t)
            })
            .count() as i64;
        let counted = delivery["channels"][channel]["dispatched"]
            .as_i64()
            .unwrap_or(0);
        prop_assert_eq!(counted, made, "{} attempts: {}", channel, delivery);
        let c = &delivery["channels"][channel];
        if made > 0 {
            let (delivered, failed) = (
                c["delivered"].as_i64().unwrap(),
                c["failed"].as_i64().unwrap(),
            );
            prop_assert!(
                delivered >= 0 && failed >= 0 && delivered + failed <= made,
                "{}",
                c
            );
        }
    }
    let retention: Value =
        serde_json::from_str(&common::read(&out.join("retention.json"))).unwrap();
    let mut members = 0;
    for row in retention["rows"].as_array().unwrap() {
        let size = row["size"].as_i64().unwrap();
        let retained = row["retained"].as_array().unwrap();
        prop_assert_eq!(retained[0].as_i64(), Some(size), "{}", row);
        for r in retained.iter().filter_map(Value::as_i64) {
            prop_assert!((0..=size).contains(&r), "{}", row);
        }
        members += size;
    }
    let active = common::read(&out.join("churn.jsonl")).lines().count() as i64;
    prop_assert_eq!(members, active, "every active user is in one cohort");
    Ok(())
}
