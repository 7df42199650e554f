//! The answers of the query API (DESIGN.md §8) and the report, read from a
//! process's consolidated aggregates (`dataflow::aggregates`): retention
//! by cohort, segment and group, each user's churn risk, the users at
//! risk, delivery counts, and the report's uplift, P(alive) distribution
//! and at-risk series. Each answer reads the aggregates once, so it is
//! consistent as of their `as_of`.

use std::collections::BTreeMap;
use std::sync::Arc;

use compact_str::CompactString;
use serde::Serialize;

use super::bgnbd::{self, Summary};
use crate::dataflow::activity::{bucket_first_day, bucket_index, format_day};
use crate::dataflow::aggregates::{Aggregates, AtRiskUser, Fact, Outcome};
use crate::spec::{Bucket, Churn, Spec};
use crate::time::{Time, format_rfc3339};

/// Offsets a retention answer has by default (k = 0..=12).
pub const DEFAULT_K: u32 = 12;

/// `GET /v1/retention`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Retention {
    pub as_of: String,
    pub bucket: &'static str,
    pub rows: Vec<RetentionRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetentionRow {
    /// The cohort bucket's first day.
    pub cohort: String,
    pub segment: Option<CompactString>,
    pub group: &'static str,
    pub size: i64,
    /// k + 1 entries; `None` for a bucket after the as-of time's.
    pub retained: Vec<Option<i64>>,
}

/// The retention rows of `bucket` with offsets 0..=k, of one segment or
/// all: ordered by cohort, segment (null first, then by bytes), group.
pub fn retention(agg: &Aggregates, bucket: Bucket, k: u32, segment: Option<&str>) -> Retention {
    // (cohort, segment, treated) → counts by offset.
    let mut rows: BTreeMap<(i64, Option<&CompactString>, bool), BTreeMap<u32, i64>> =
        BTreeMap::new();
    for (fact, count) in &agg.counts {
        if let Fact::Retained {
            bucket: b,
            cohort,
            segment: s,
            holdout,
            k: offset,
        } = fact
            && *b == bucket
            && segment.is_none_or(|want| s.as_deref() == Some(want))
        {
            let row = rows.entry((*cohort, s.as_ref(), !holdout)).or_default();
            row.insert(*offset, *count);
        }
    }
    let last = bucket_index(bucket, bgnbd::day_of(agg.as_of));
    let rows = rows
        .into_iter()
        .filter_map(|((cohort, segment, treated), counts)| {
            let size = counts.get(&0).copied().unwrap_or(0);
            (size > 0).then(|| RetentionRow {
                cohort: format_day(bucket_first_day(bucket, cohort)),
                segment: segment.cloned(),
                group: if treated { "treated" } else { "holdout" },
                size,
                retained: (0..=k)
                    .map(|j| {
                        (cohort + j as i64 <= last).then(|| counts.get(&j).copied().unwrap_or(0))
                    })
                    .collect(),
            })
        })
        .collect();
    Retention {
        as_of: format_rfc3339(agg.as_of),
        bucket: bucket.as_str(),
        rows,
    }
}

/// `GET /v1/churn/users/{user}`, and a line of `churn.jsonl`.
#[allow(non_snake_case)]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChurnAnswer {
    pub as_of: String,
    pub user: CompactString,
    pub p_alive: f64,
    pub x: u32,
    pub t_x: f64,
    pub T: f64,
    pub first_active: String,
    pub last_active: String,
}

/// `as_of` and its text.
fn churn_answer(churn: &Churn, as_of: (Time, &str), user: &str, s: &Summary) -> ChurnAnswer {
    let e = bgnbd::evaluate(&churn.model, churn.unit, s, as_of.0);
    ChurnAnswer {
        as_of: as_of.1.to_owned(),
        user: user.into(),
        p_alive: e.p_alive,
        x: e.x,
        t_x: e.t_x,
        T: e.T,
        first_active: format_day(s.first_day),
        last_active: format_day(s.last_day),
    }
}

/// A user's churn risk; `None` for a user not active (since an erasure).
pub fn churn_user(churn: &Churn, agg: &Aggregates, user: &str) -> Option<ChurnAnswer> {
    let s = agg.users.get(user)?;
    let as_of = format_rfc3339(agg.as_of);
    Some(churn_answer(churn, (agg.as_of, &as_of), user, s))
}

/// Every active user's churn risk, ordered by user id.
pub fn churn_all(churn: &Churn, agg: &Aggregates) -> Vec<ChurnAnswer> {
    let mut users: Vec<(&CompactString, &Summary)> = agg.users.iter().collect();
    users.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let as_of = format_rfc3339(agg.as_of);
    users
        .into_iter()
        .map(|(user, s)| churn_answer(churn, (agg.as_of, &as_of), user, s))
        .collect()
}

/// The users whose P(alive) is below the threshold, lowest first (ties by
/// user id); computed once per as-of time.
pub fn at_risk(churn: &Churn, agg: &Aggregates) -> Arc<Vec<AtRiskUser>> {
    if let Some((t, list)) = agg.cache.read().unwrap_or_else(|e| e.into_inner()).as_ref()
        && *t == agg.as_of
    {
        return list.clone();
    }
    let mut list: Vec<AtRiskUser> = agg
        .users
        .iter()
        .filter_map(|(user, s)| {
            let p = bgnbd::evaluate(&churn.model, churn.unit, s, agg.as_of).p_alive;
            (p < churn.threshold).then(|| AtRiskUser {
                user: user.clone(),
                p_alive: p,
                last_day: s.last_day,
            })
        })
        .collect();
    list.sort_unstable_by(|a, b| {
        a.p_alive
            .total_cmp(&b.p_alive)
            .then_with(|| a.user.as_bytes().cmp(b.user.as_bytes()))
    });
    let list = Arc::new(list);
    *agg.cache.write().unwrap_or_else(|e| e.into_inner()) = Some((agg.as_of, list.clone()));
    list
}

/// `GET /v1/churn/at-risk`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtRisk {
    pub as_of: String,
    pub users: Vec<AtRiskEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtRiskEntry {
    pub user: CompactString,
    pub p_alive: f64,
    pub last_active: String,
}

pub fn at_risk_answer(churn: &Churn, agg: &Aggregates, limit: usize) -> AtRisk {
    let list = at_risk(churn, agg);
    AtRisk {
        as_of: format_rfc3339(agg.as_of),
        users: list
            .iter()
            .take(limit)
            .map(|u| AtRiskEntry {
                user: u.user.clone(),
                p_alive: u.p_alive,
                last_active: format_day(u.last_day),
            })
            .collect(),
    }
}

/// `GET /v1/delivery`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeliveryAnswer {
    pub as_of: String,
    pub channels: BTreeMap<&'static str, Counts>,
    pub rules: BTreeMap<String, Counts>,
    pub notifications: Notifications,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    pub dispatched: i64,
    pub delivered: i64,
    pub failed: i64,
    pub success_rate: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Notifications {
    pub total: i64,
    pub succeeded: i64,
}

pub fn delivery(spec: &Spec, agg: &Aggregates) -> DeliveryAnswer {
    let mut channels: BTreeMap<&'static str, Counts> = BTreeMap::new();
    let mut rules: BTreeMap<String, Counts> = BTreeMap::new();
    let mut notifications = Notifications::default();
    for (fact, &n) in &agg.counts {
        match fact {
            Fact::Delivery {
                rule,
                channel,
                outcome,
            } => {
                let name = spec.rules[*rule as usize].name.clone();
                for counts in [
                    channels.entry(channel.as_str()).or_default(),
                    rules.entry(name).or_default(),
                ] {
                    match outcome {
                        Outcome::Dispatched => counts.dispatched += n,
                        Outcome::Delivered => counts.delivered += n,
                        Outcome::Failed => counts.failed += n,
                    }
                }
            }
            Fact::Notification { succeeded: false } => notifications.total += n,
            Fact::Notification { succeeded: true } => notifications.succeeded += n,
            _ => {}
        }
    }
    for counts in channels.values_mut().chain(rules.values_mut()) {
        counts.success_rate = counts.delivered as f64 / counts.dispatched as f64;
    }
    channels.retain(|_, c| c.dispatched > 0);
    rules.retain(|_, c| c.dispatched > 0);
    DeliveryAnswer {
        as_of: format_rfc3339(agg.as_of),
        channels,
        rules,
        notifications,
    }
}

/// Treated against holdout retention at offset k, pooled over the cohorts
/// whose bucket k is not after the as-of time's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Uplift {
    pub segment: Option<CompactString>,
    pub k: u32,
    pub treated: Group,
    pub holdout: Group,
    /// Treated rate minus holdout rate, and its 95% confidence interval
    /// (normal approximation of a difference of proportions); `None` when
    /// a group has no users.
    pub uplift: Option<f64>,
    pub ci95: Option<[f64; 2]>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Group {
    pub users: i64,
    pub retained: i64,
    pub rate: Option<f64>,
}

/// The uplift per segment and offset 1..=k of a retention answer.
pub fn uplift(retention: &Retention, k: u32) -> Vec<Uplift> {
    let mut pooled: BTreeMap<(Option<CompactString>, u32), [Group; 2]> = BTreeMap::new();
    for row in &retention.rows {
        for j in 1..=k {
            let Some(Some(retained)) = row.retained.get(j as usize) else {
                continue;
            };
            let groups = pooled.entry((row.segment.clone(), j)).or_default();
            let g = &mut groups[(row.group == "holdout") as usize];
            g.users += row.size;
            g.retained += retained;
        }
    }
    pooled
        .into_iter()
        .map(|((segment, k), [mut treated, mut holdout])| {
            for g in [&mut treated, &mut holdout] {
                g.rate = (g.users > 0).then(|| g.retained as f64 / g.users as f64);
            }
            let (uplift, ci95) = match (treated.rate, holdout.rate) {
                (Some(t), Some(h)) => {
                    let se = (t * (1.0 - t) / treated.users as f64
                        + h * (1.0 - h) / holdout.users as f64)
                        .sqrt();
                    let d = t - h;
                    (Some(d), Some([d - 1.96 * se, d + 1.96 * se]))
                }
                _ => (None, None),
            };
            Uplift {
                segment,
                k,
                treated,
                holdout,
                uplift,
                ci95,
            }
        })
        .collect()
}

/// The data of the report page (`report.rs`).
#[derive(Clone, Debug, Serialize)]
pub struct ReportData {
    pub as_of: String,
    pub title: String,
    pub retention: Retention,
    pub uplift: Vec<Uplift>,
    pub p_alive: Option<Histogram>,
    pub at_risk: Option<Vec<AtRiskDay>>,
    pub delivery: DeliveryAnswer,
}

#[derive(Clone, Debug, Serialize)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AtRiskDay {
    pub day: String,
    pub users: i64,
}

/// Bins of the P(alive) histogram.
const BINS: usize = 20;

pub fn report(spec: &Spec, agg: &Aggregates, title: String) -> ReportData {
    let bucket = spec.analytics.as_ref().map_or(Bucket::Week, |a| a.bucket);
    let retention = retention(agg, bucket, DEFAULT_K, None);
    let uplift = uplift(&retention, DEFAULT_K);
    let churn = spec.analytics.as_ref().and_then(|a| a.churn.as_ref());
    let p_alive = churn.map(|churn| {
        let mut counts = vec![0u64; BINS];
        for s in agg.users.values() {
            let p = bgnbd::evaluate(&churn.model, churn.unit, s, agg.as_of).p_alive;
            counts[((p * BINS as f64) as usize).min(BINS - 1)] += 1;
        }
        Histogram {
            edges: (0..=BINS).map(|i| i as f64 / BINS as f64).collect(),
            counts,
        }
    });
    let at_risk = churn.map(|_| {
        let mut users = 0;
        agg.at_risk
            .iter()
            .map(|(day, change)| {
                users += change;
                AtRiskDay {
                    day: format_day(*day),
                    users,
                }
            })
            .collect()
    });
    ReportData {
        as_of: format_rfc3339(agg.as_of),
        title,
        retention,
        uplift,
        p_alive,
        at_risk,
        delivery: delivery(spec, agg),
    }
}

/// The files `replay --out` writes beside the decisions (§8), as
/// (name, bytes): `retention.json` (the spec's bucket), `delivery.json`
/// and, with a churn model, `churn.jsonl`.
pub fn files(spec: &Spec, agg: &Aggregates) -> Vec<(&'static str, Vec<u8>)> {
    let Some(analytics) = spec.analytics.as_ref() else {
        return Vec::new();
    };
    fn json<T: Serialize>(answer: &T) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(answer).expect("answers serialize");
        bytes.push(b'\n');
        bytes
    }
    let mut files = vec![
        (
            "retention.json",
            json(&retention(agg, analytics.bucket, DEFAULT_K, None)),
        ),
        ("delivery.json", json(&delivery(spec, agg))),
    ];
    if let Some(churn) = analytics.churn.as_ref() {
        let mut lines = Vec::new();
        for answer in churn_all(churn, agg) {
            lines.extend(json(&answer));
        }
        files.push(("churn.jsonl", lines));
    }
    files
}
