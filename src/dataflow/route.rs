//! Route: the first stage after a source. Splits parsed records into the
//! three inputs of the decision dataflow and evaluates rule matching where
//! the data is, before any exchange.
//!
//! - input: `Sourced` records (any order within the source's capability).
//! - output 0, arrivals: events (with the rules they trigger and cancel),
//!   erasures and late events, for `decide`, keyed by user.
//! - output 1, consent upserts `(ConsentKey, Option<ConsentVal>, t)`.
//! - output 2, preference upserts `(user, Option<PrefsVal>, t)`.
//!
//! An erasure at t also upserts "absent" for every consent key and the
//! preferences of its user: the upsert arrangement prefers a present value
//! at equal times, which is exactly "erasure ranks before consent and
//! preferences at the same instant" (DESIGN.md §4 "Order").
//!
//! Times are unchanged: every record keeps its exact millisecond time.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::UserKey;
use super::consent::{ConsentKey, ConsentUpsert, ConsentVal};
use super::preferences::{PrefsUpsert, PrefsVal};
use crate::record::Record;
use crate::source::Sourced;
use crate::spec::{Channel, Purpose, Spec};
use crate::time::Time;

/// A rule an event triggered: the candidate it creates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fire {
    pub rule: u16,
    pub decision: Time,
    /// Per-rule dedup key (canonical text); `None` if the rule has no dedup.
    pub dedup_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventArrival {
    pub user: UserKey,
    pub key: String,
    pub time: Time,
    pub seq: u64,
    pub fires: Vec<Fire>,
    /// Bit `i` set: rule `i`'s `cancel_on` matches this event's type.
    pub cancels: u64,
    /// Raw `data`, kept only when some rule fired (it becomes `vars`).
    pub data: Option<Box<str>>,
}

/// What `decide` consumes, keyed by user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arrival {
    Event(EventArrival),
    Erasure {
        user: UserKey,
        time: Time,
    },
    /// An event older than its partition's watermark: reported, no effect.
    Late {
        user: UserKey,
        event_key: String,
        time: Time,
    },
}

impl Arrival {
    pub fn user(&self) -> &UserKey {
        match self {
            Arrival::Event(e) => &e.user,
            Arrival::Erasure { user, .. } | Arrival::Late { user, .. } => user,
        }
    }
    pub fn time(&self) -> Time {
        match self {
            Arrival::Event(e) => e.time,
            Arrival::Erasure { time, .. } | Arrival::Late { time, .. } => *time,
        }
    }
}

/// Rule evaluation for one event: which rules fire (with decision times and
/// dedup keys) and which rules' pending candidates it cancels.
pub fn evaluate(spec: &Spec, kind: &str, time: Time, data: Option<&str>) -> (Vec<Fire>, u64) {
    let mut fires = Vec::new();
    let mut cancels = 0u64;
    let mut parsed: Option<Value> = None;
    for (i, rule) in spec.rules.iter().enumerate() {
        if rule.cancelled_by(kind) {
            cancels |= 1 << i;
        }
        if !rule.triggers_on(kind) {
            continue;
        }
        let data = if rule.reads_data() {
            parsed.get_or_insert_with(|| {
                data.and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or(Value::Null)
            })
        } else {
            &Value::Null
        };
        if let Some(decision) = rule.decision_time(time, data) {
            fires.push(Fire {
                rule: i as u16,
                decision,
                dedup_key: rule.dedup_key(data),
            });
        }
    }
    (fires, cancels)
}

/// The three outputs of `route`: arrivals, consent upserts, preference upserts.
pub type Routed<'s> = (
    Stream<'s, Time, Vec<Arrival>>,
    Stream<'s, Time, Vec<ConsentUpsert>>,
    Stream<'s, Time, Vec<PrefsUpsert>>,
);

/// Builds the route stage.
pub fn route<'s>(records: Stream<'s, Time, Vec<Sourced>>, spec: Arc<Spec>) -> Routed<'s> {
    let mut builder = OperatorBuilder::new("Route".to_owned(), records.scope());
    let mut input = builder.new_input(records, Pipeline);
    let (arrivals_out, arrivals) = builder.new_output::<Vec<Arrival>>();
    let (consent_out, consent) = builder.new_output::<Vec<ConsentUpsert>>();
    let (prefs_out, prefs) = builder.new_output::<Vec<PrefsUpsert>>();
    let mut arrivals_out = OutputBuilder::from(arrivals_out);
    let mut consent_out = OutputBuilder::from(consent_out);
    let mut prefs_out = OutputBuilder::from(prefs_out);

    builder.build(move |_capabilities| {
        let mut arrival_buf = Vec::new();
        let mut consent_buf = Vec::new();
        let mut prefs_buf = Vec::new();
        move |_frontiers| {
            let mut arrivals_out = arrivals_out.activate();
            let mut consent_out = consent_out.activate();
            let mut prefs_out = prefs_out.activate();
            input.for_each(|cap, data| {
                for Sourced { record, seq, late } in data.drain(..) {
                    match record {
                        Record::Event(e) if late => {
                            arrival_buf.push(Arrival::Late {
                                user: UserKey::new(e.user),
                                event_key: e.key,
                                time: e.time,
                            });
                        }
                        Record::Event(e) => {
                            let (fires, cancels) =
                                evaluate(&spec, &e.kind, e.time, e.data.as_deref());
                            let data = if fires.is_empty() { None } else { e.data };
                            arrival_buf.push(Arrival::Event(EventArrival {
                                user: UserKey::new(e.user),
                                key: e.key,
                                time: e.time,
                                seq,
                                fires,
                                cancels,
                                data,
                            }));
                        }
                        Record::Erasure(r) => {
                            let user = UserKey::new(r.user);
                            for channel in std::iter::once(None).chain(Channel::ALL.map(Some)) {
                                for purpose in [Purpose::Marketing, Purpose::Transactional] {
                                    consent_buf.push((
                                        ConsentKey {
                                            user: user.clone(),
                                            channel,
                                            purpose,
                                        },
                                        None,
                                        r.time,
                                    ));
                                }
                            }
                            prefs_buf.push((user.clone(), None, r.time));
                            arrival_buf.push(Arrival::Erasure { user, time: r.time });
                        }
                        Record::Consent(c) => {
                            let key = ConsentKey {
                                user: UserKey::new(c.user),
                                channel: c.channel,
                                purpose: c.purpose,
                            };
                            consent_buf.push((
                                key,
                                Some(ConsentVal {
                                    time: c.time,
                                    seq,
                                    granted: c.granted,
                                }),
                                c.time,
                            ));
                        }
                        Record::Prefs(p) => {
                            prefs_buf.push((
                                UserKey::new(p.user),
                                Some(PrefsVal {
                                    seq,
                                    prefs: p.prefs,
                                }),
                                p.time,
                            ));
                        }
                        // Receipts drive channel fallback, which is not built yet.
                        Record::Receipt(_) => {}
                    }
                }
                if !arrival_buf.is_empty() {
                    let cap = cap.retain_least(0).expect("a message has a time");
                    arrivals_out.session(&cap).give_container(&mut arrival_buf);
                }
                if !consent_buf.is_empty() {
                    let cap = cap.retain_least(1).expect("a message has a time");
                    consent_out.session(&cap).give_container(&mut consent_buf);
                }
                if !prefs_buf.is_empty() {
                    let cap = cap.retain_least(2).expect("a message has a time");
                    prefs_out.session(&cap).give_container(&mut prefs_buf);
                }
            });
        }
    });
    (arrivals, consent, prefs)
}
