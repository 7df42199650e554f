//! The job config of `nudgeflow run` (DESIGN.md §7): the spec, the Kafka
//! cluster and topics, idleness, checkpoints, the HTTP endpoints and where
//! each channel's dispatches are delivered (`[sinks.CHANNEL]`, §9).
//!
//! Every key is checked: an unknown key, a value of the wrong type, a bad
//! duration or address is an error naming the file, the line and what to
//! write instead. Paths (the spec, a checkpoint directory) are relative to
//! the config file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::record::StreamKind;
use crate::sink::http::config::MAX_CONCURRENCY;
use crate::sink::http::{HttpConfig, SuccessReceipt};
use crate::spec::{Channel, SpecError, SpecProblem};

/// librdkafka properties nudgeflow sets itself, because its guarantees
/// depend on them: each with the key of the job config to use instead, or
/// why it cannot be changed.
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set [kafka] brokers instead"),
    ("metadata.broker.list", "set [kafka] brokers instead"),
    ("group.id", "set [kafka] group instead"),
    ("auto.offset.reset", "set [kafka] start instead"),
    (
        "enable.auto.commit",
        "nudgeflow commits offsets itself, once every output before them is acknowledged",
    ),
    (
        "enable.auto.offset.store",
        "nudgeflow commits offsets itself, once every output before them is acknowledged",
    ),
    (
        "enable.idempotence",
        "the producer is always idempotent (§7), so that retries never duplicate an output",
    ),
    ("acks", "outputs are always produced with acks=all (§7)"),
    (
        "transactional.id",
        "nudgeflow does not use transactions; outputs are idempotent and keyed by dispatch id",
    ),
];

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

impl Start {
    /// The librdkafka `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Earliest => "earliest",
            Start::Latest => "latest",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Kafka {
    pub brokers: String,
    pub group: String,
    pub start: Start,
    /// Passed through to librdkafka, for the consumers and the producer.
    pub properties: Vec<(String, String)>,
}

/// The topic of each input and output stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub events: String,
    pub preferences: String,
    pub consent: String,
    pub receipts: String,
    pub erasures: String,
    pub dispatches: String,
    pub suppressions: String,
    pub dead_letters: String,
    pub churn_signals: String,
}

impl Default for Topics {
    fn default() -> Topics {
        let t = |s: &str| format!("nudgeflow.{s}");
        Topics {
            events: t("events"),
            preferences: t("preferences"),
            consent: t("consent"),
            receipts: t("receipts"),
            erasures: t("erasures"),
            dispatches: t("dispatches"),
            suppressions: t("suppressions"),
            dead_letters: t("dead-letters"),
            churn_signals: t("churn-signals"),
        }
    }
}

impl Topics {
    /// The topic an input stream is read from.
    pub fn input(&self, kind: StreamKind) -> &str {
        match kind {
            StreamKind::Events => &self.events,
            StreamKind::Preferences => &self.preferences,
            StreamKind::Consent => &self.consent,
            StreamKind::Receipts => &self.receipts,
            StreamKind::Erasures => &self.erasures,
        }
    }

    /// The input topics with their streams, in stream order.
    pub fn inputs(&self) -> Vec<(StreamKind, &str)> {
        StreamKind::ALL
            .iter()
            .map(|&k| (k, self.input(k)))
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// A directory (relative to the config file) or an object-store URL.
    pub url: String,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Http {
    pub listen: SocketAddr,
    /// The environment variable holding the bearer token, if any.
    pub token_env: Option<String>,
}

/// Where one channel's dispatches are delivered, besides the record of
/// every dispatch on the dispatches topic (§9).
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSink {
    /// `kind = "kafka"`: a copy on `topic`; when that is the dispatches
    /// topic (the default), the record there is all there is.
    Kafka { topic: String },
    /// `kind = "http"`: `POST`ed to a provider.
    Http(HttpConfig),
    /// `kind = "inbox"`: kept in the user's in-app inbox for `ttl` (only
    /// `in_app`; its default).
    Inbox { ttl: Duration },
}

/// The default inbox retention (`inbox_ttl`).
pub const DEFAULT_INBOX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The sink of every channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Sinks([ChannelSink; 5]);

impl Sinks {
    /// Every channel's default: `in_app` to the inbox, every other channel
    /// to the dispatches topic only.
    pub fn defaults(topics: &Topics) -> Sinks {
        Sinks(Channel::ALL.map(|c| default_sink(c, topics)))
    }

    pub fn get(&self, channel: Channel) -> &ChannelSink {
        &self.0[channel as usize]
    }

    /// Each channel with its sink, in channel order.
    pub fn iter(&self) -> impl Iterator<Item = (Channel, &ChannelSink)> {
        Channel::ALL.into_iter().zip(self.0.iter())
    }
}

fn default_sink(channel: Channel, topics: &Topics) -> ChannelSink {
    if channel == Channel::InApp {
        ChannelSink::Inbox {
            ttl: DEFAULT_INBOX_TTL,
        }
    } else {
        ChannelSink::Kafka {
            topic: topics.dispatches.clone(),
        }
    }
}

/// A validated job config.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The config file, as given.
    pub path: PathBuf,
    /// The spec, resolved against the config file's directory.
    pub spec: PathBuf,
    pub kafka: Kafka,
    pub topics: Topics,
    /// How long a caught-up partition may be silent before it is idle.
    pub idle_timeout: Duration,
    pub checkpoint: Checkpoint,
    pub http: Http,
    /// Where each channel's dispatches are delivered.
    pub sinks: Sinks,
}

// The file as written; `JobConfig` is what it means.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    spec: String,
    kafka: RawKafka,
    #[serde(default)]
    topics: Topics,
    #[serde(default)]
    time: RawTime,
    #[serde(default)]
    checkpoint: RawCheckpoint,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    sinks: RawSinks,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: String,
    #[serde(default = "default_group")]
    group: String,
    #[serde(default = "default_start")]
    start: toml::Spanned<String>,
    #[serde(default)]
    properties: BTreeMap<String, toml::Spanned<toml::Value>>,
}

fn default_group() -> String {
    "nudgeflow".into()
}

fn default_start() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, "earliest".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTime {
    idle_timeout: toml::Spanned<String>,
}

impl Default for RawTime {
    fn default() -> RawTime {
        RawTime {
            idle_timeout: toml::Spanned::new(0..0, "200ms".into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCheckpoint {
    url: String,
    interval: toml::Spanned<String>,
}

impl Default for RawCheckpoint {
    fn default() -> RawCheckpoint {
        RawCheckpoint {
            url: "nudgeflow-state".into(),
            interval: toml::Spanned::new(0..0, "10s".into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    listen: toml::Spanned<String>,
    token_env: String,
}

impl Default for RawHttp {
    fn default() -> RawHttp {
        RawHttp {
            listen: toml::Spanned::new(0..0, "127.0.0.1:9464".into()),
            token_env: String::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSinks {
    push: Option<toml::Spanned<RawSink>>,
    email: Option<toml::Spanned<RawSink>>,
    sms: Option<toml::Spanned<RawSink>>,
    in_app: Option<toml::Spanned<RawSink>>,
    webhook: Option<toml::Spanned<RawSink>>,
}

/// A `[sinks.CHANNEL]` table: every key of every kind, checked against its
/// kind after reading.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    kind: Option<toml::Spanned<String>>,
    topic: Option<toml::Spanned<String>>,
    url: Option<toml::Spanned<String>>,
    auth_env: Option<toml::Spanned<String>>,
    timeout: Option<toml::Spanned<String>>,
    max_attempts: Option<toml::Spanned<i64>>,
    rate: Option<toml::Spanned<f64>>,
    concurrency: Option<toml::Spanned<i64>>,
    success_receipt: Option<toml::Spanned<String>>,
    queue: Option<toml::Spanned<i64>>,
    inbox_ttl: Option<toml::Spanned<String>>,
}

/// The keys each sink kind takes, besides `kind`.
const KAFKA_KEYS: &[&str] = &["topic"];
const HTTP_KEYS: &[&str] = &[
    "url",
    "auth_env",
    "timeout",
    "max_attempts",
    "rate",
    "concurrency",
    "success_receipt",
    "queue",
];
const INBOX_KEYS: &[&str] = &["inbox_ttl"];

impl RawSink {
    /// The keys given, besides `kind`, with their spans.
    fn given(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        fn span<T>(v: &Option<toml::Spanned<T>>) -> Option<std::ops::Range<usize>> {
            v.as_ref().map(toml::Spanned::span)
        }
        [
            ("topic", span(&self.topic)),
            ("url", span(&self.url)),
            ("auth_env", span(&self.auth_env)),
            ("timeout", span(&self.timeout)),
            ("max_attempts", span(&self.max_attempts)),
            ("rate", span(&self.rate)),
            ("concurrency", span(&self.concurrency)),
            ("success_receipt", span(&self.success_receipt)),
            ("queue", span(&self.queue)),
            ("inbox_ttl", span(&self.inbox_ttl)),
        ]
        .into_iter()
        .filter_map(|(k, s)| Some((k, s?)))
        .collect()
    }
}

/// Every known key of each table, for "did you mean".
const KEYS: &[&str] = &[
    "spec",
    "kafka",
    "topics",
    "time",
    "checkpoint",
    "http",
    "brokers",
    "group",
    "start",
    "properties",
    "events",
    "preferences",
    "consent",
    "receipts",
    "erasures",
    "dispatches",
    "suppressions",
    "dead_letters",
    "churn_signals",
    "idle_timeout",
    "url",
    "interval",
    "listen",
    "token_env",
    "sinks",
    "push",
    "email",
    "sms",
    "in_app",
    "webhook",
    "kind",
    "topic",
    "auth_env",
    "timeout",
    "max_attempts",
    "rate",
    "concurrency",
    "success_receipt",
    "queue",
    "inbox_ttl",
];

struct Problems<'a> {
    file: &'a str,
    text: &'a str,
    found: Vec<SpecProblem>,
}

impl Problems<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    /// A problem at a span; an empty span (a default value) is the whole
    /// file.
    fn at(&mut self, span: std::ops::Range<usize>, field: &str, message: String) {
        let line = if span.is_empty() && span.start == 0 {
            0
        } else {
            self.line_of(span.start)
        };
        self.found.push(SpecProblem {
            file: self.file.to_string(),
            line,
            field: field.to_string(),
            message,
        });
    }

    fn finish(self) -> Result<(), SpecError> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(SpecError {
                problems: self.found,
                more: 0,
            })
        }
    }
}

/// Turns serde's "unknown field `x`, expected one of …" into a message
/// that says what `x` most likely should be.
fn explain_toml_error(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, expected)) = rest.split_once('`')
    {
        let expected: Vec<&str> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|k| KEYS.contains(k))
            .collect();
        let hint = crate::spec::suggest(key, expected.iter().copied())
            .map(|k| format!("; did you mean `{k}`?"))
            .unwrap_or_else(|| {
                format!(
                    "; this table takes {}",
                    expected
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        return format!("unknown key `{key}`{hint}");
    }
    message.to_string()
}

fn duration(p: &mut Problems<'_>, v: &toml::Spanned<String>, field: &str) -> Option<Duration> {
    match crate::time::parse_duration(v.get_ref()) {
        Ok(0) => {
            p.at(v.span(), field, "must be longer than 0ms".into());
            None
        }
        Ok(ms) => Some(Duration::from_millis(ms as u64)),
        Err(e) => {
            p.at(v.span(), field, e);
            None
        }
    }
}

/// A whole number of at least `min` for `field`.
fn count(p: &mut Problems<'_>, v: &toml::Spanned<i64>, field: &str, min: i64) -> Option<i64> {
    let n = *v.get_ref();
    if n < min {
        p.at(
            v.span(),
            field,
            format!("is {n}; write a whole number of at least {min}"),
        );
        return None;
    }
    Some(n)
}

/// Whether `name` can be an environment variable's name (what `auth_env`
/// holds), rather than the secret itself.
fn env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks the `[sinks.CHANNEL]` tables against their kinds (§9).
fn sinks(p: &mut Problems<'_>, raw: RawSinks, topics: &Topics) -> Sinks {
    let mut out = Sinks::defaults(topics);
    let tables = [
        (Channel::Push, raw.push),
        (Channel::Email, raw.email),
        (Channel::Sms, raw.sms),
        (Channel::InApp, raw.in_app),
        (Channel::Webhook, raw.webhook),
    ];
    for (channel, table) in tables {
        let Some(table) = table else { continue };
        let span = table.span();
        let raw = table.into_inner();
        let name = channel.as_str();
        let field = |key: &str| format!("sinks.{name}: {key}");
        let kind = match &raw.kind {
            None if channel == Channel::InApp => "inbox",
            None => "kafka",
            Some(k) => match k.get_ref().as_str() {
                "inbox" if channel != Channel::InApp => {
                    p.at(
                        k.span(),
                        &field("kind"),
                        format!(
                            "the inbox holds in_app dispatches only; write kind = \"kafka\" or kind = \"http\" for {name}"
                        ),
                    );
                    continue;
                }
                k @ ("kafka" | "http" | "inbox") => k,
                other => {
                    p.at(
                        k.span(),
                        &field("kind"),
                        format!(
                            "is {other:?}; write kind = \"kafka\" (a topic), \"http\" (a provider){}",
                            if channel == Channel::InApp {
                                " or \"inbox\" (the in-app inbox)"
                            } else {
                                ""
                            }
                        ),
                    );
                    continue;
                }
            },
        };
        let takes = match kind {
            "kafka" => KAFKA_KEYS,
            "http" => HTTP_KEYS,
            _ => INBOX_KEYS,
        };
        let mut wrong = false;
        for (key, at) in raw.given() {
            if takes.contains(&key) {
                continue;
            }
            wrong = true;
            let fix = if HTTP_KEYS.contains(&key) {
                ", or write kind = \"http\""
            } else if KAFKA_KEYS.contains(&key) {
                ", or write kind = \"kafka\""
            } else if channel == Channel::InApp {
                ", or write kind = \"inbox\""
            } else {
                " (only the in_app inbox keeps dispatches for a time)"
            };
            p.at(
                at,
                &field(key),
                format!(
                    "is not a key of {} {kind} sink, which takes {}; remove it{fix}",
                    if kind == "inbox" { "an" } else { "a" },
                    takes
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if wrong {
            continue;
        }
        let sink = match kind {
            "kafka" => {
                let topic = match &raw.topic {
                    None => topics.dispatches.clone(),
                    Some(t) => {
                        let topic = t.get_ref().trim().to_string();
                        let taken = [
                            ("events", &topics.events),
                            ("preferences", &topics.preferences),
                            ("consent", &topics.consent),
                            ("receipts", &topics.receipts),
                            ("erasures", &topics.erasures),
                            ("suppressions", &topics.suppressions),
                            ("dead_letters", &topics.dead_letters),
                            ("churn_signals", &topics.churn_signals),
                        ];
                        if topic.is_empty() {
                            p.at(
                                t.span(),
                                &field("topic"),
                                "is empty; write the topic the copies go to, or leave topic out for the dispatches topic".into(),
                            );
                            continue;
                        }
                        if let Some((stream, _)) = taken.iter().find(|(_, x)| **x == topic) {
                            p.at(
                                t.span(),
                                &field("topic"),
                                format!(
                                    "{topic:?} is the job's {stream} topic; copies of dispatches need a topic of their own"
                                ),
                            );
                            continue;
                        }
                        topic
                    }
                };
                ChannelSink::Kafka { topic }
            }
            "inbox" => {
                let ttl = match &raw.inbox_ttl {
                    None => Some(DEFAULT_INBOX_TTL),
                    Some(v) => duration(p, v, &field("inbox_ttl")),
                };
                let Some(ttl) = ttl else { continue };
                ChannelSink::Inbox { ttl }
            }
            _ => match http_sink(p, &raw, span, &field) {
                Some(config) => ChannelSink::Http(config),
                None => continue,
            },
        };
        out.0[channel as usize] = sink;
    }
    out
}

/// The settings of a `kind = "http"` table, or `None` once a problem is
/// reported.
fn http_sink(
    p: &mut Problems<'_>,
    raw: &RawSink,
    table: std::ops::Range<usize>,
    field: &dyn Fn(&str) -> String,
) -> Option<HttpConfig> {
    let found = p.found.len();
    let url = match &raw.url {
        None => {
            p.at(
                table,
                &field("url"),
                "is missing; an http sink needs the provider's address, e.g. url = \"https://push.example.com/v1/send\"".into(),
            );
            None
        }
        Some(u) => match reqwest::Url::parse(u.get_ref()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            Ok(url) => {
                p.at(
                    u.span(),
                    &field("url"),
                    format!(
                        "{:?} is not an http or https address with a host; write e.g. url = \"https://push.example.com/v1/send\"",
                        url.as_str()
                    ),
                );
                None
            }
            Err(e) => {
                p.at(
                    u.span(),
                    &field("url"),
                    format!(
                        "{:?} is not a URL ({e}); write e.g. url = \"https://push.example.com/v1/send\"",
                        u.get_ref()
                    ),
                );
                None
            }
        },
    };
    let mut config = HttpConfig::new(url.unwrap_or_else(|| "http://unset".parse().expect("a URL")));
    if let Some(v) = &raw.auth_env {
        let name = v.get_ref().trim();
        if env_name(name) {
            config.auth_env = Some(name.to_string());
        } else {
            p.at(
                v.span(),
                &field("auth_env"),
                "names the environment variable that holds the Authorization header value, not the value itself: write e.g. auth_env = \"WEBHOOK_AUTH\" and export WEBHOOK_AUTH=\"Bearer …\"".into(),
            );
        }
    }
    if let Some(v) = &raw.timeout
        && let Some(t) = duration(p, v, &field("timeout"))
    {
        config.timeout = t;
    }
    if let Some(v) = &raw.max_attempts
        && let Some(n) = count(p, v, &field("max_attempts"), 1)
    {
        config.max_attempts = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(v) = &raw.rate {
        let r = *v.get_ref();
        if r.is_finite() && r > 0.0 {
            config.rate = Some(r);
        } else {
            p.at(
                v.span(),
                &field("rate"),
                format!(
                    "is {r}; write the most requests per second, a number above 0 (e.g. rate = 50 or rate = 0.5), or leave rate out for no limit"
                ),
            );
        }
    }
    if let Some(v) = &raw.concurrency
        && let Some(n) = count(p, v, &field("concurrency"), 1)
    {
        if n > MAX_CONCURRENCY as i64 {
            p.at(
                v.span(),
                &field("concurrency"),
                format!("is {n}; write at most {MAX_CONCURRENCY} requests in flight"),
            );
        }
        config.concurrency = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(v) = &raw.queue
        && let Some(n) = count(p, v, &field("queue"), 1)
    {
        config.queue = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(v) = &raw.success_receipt {
        match v.get_ref().as_str() {
            "delivered" => config.success_receipt = SuccessReceipt::Delivered,
            "none" => config.success_receipt = SuccessReceipt::None,
            other => p.at(
                v.span(),
                &field("success_receipt"),
                format!(
                    "is {other:?}; write success_receipt = \"delivered\" (a 2xx writes a delivered receipt) or \"none\" (the provider's callbacks report delivery)"
                ),
            ),
        }
    }
    (p.found.len() == found).then_some(config)
}

impl JobConfig {
    /// Reads and validates a job config file.
    pub fn load(path: &Path) -> Result<JobConfig, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            problems: vec![SpecProblem {
                file: file.clone(),
                line: 0,
                field: String::new(),
                message: format!("cannot read the job config: {e}"),
            }],
            more: 0,
        })?;
        JobConfig::parse(path, &text)
    }

    /// Parses and validates job config text; `path` names it in errors
    /// and anchors its relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<JobConfig, SpecError> {
        let file = path.display().to_string();
        let mut p = Problems {
            file: &file,
            text,
            found: Vec::new(),
        };
        let raw: RawJob = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = explain_toml_error(e.message());
                p.at(span, "", message);
                p.finish()?;
                unreachable!("a problem was reported")
            }
        };
        let base = path.parent().unwrap_or(Path::new(""));
        let start = match raw.kafka.start.get_ref().as_str() {
            "earliest" => Start::Earliest,
            "latest" => Start::Latest,
            other => {
                p.at(
                    raw.kafka.start.span(),
                    "kafka: start",
                    format!("is {other:?}; write start = \"earliest\" or start = \"latest\""),
                );
                Start::Earliest
            }
        };
        let mut properties = Vec::new();
        for (key, value) in &raw.kafka.properties {
            if let Some((_, why)) = OWNED_PROPERTIES.iter().find(|(k, _)| k == key) {
                p.at(
                    value.span(),
                    &format!("kafka.properties: {key}"),
                    format!("is set by nudgeflow: {why}"),
                );
                continue;
            }
            let text = match value.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => {
                    p.at(
                        value.span(),
                        &format!("kafka.properties: {key}"),
                        "is not a string, number or boolean; librdkafka properties are scalars, e.g. \"security.protocol\" = \"SASL_SSL\"".into(),
                    );
                    continue;
                }
            };
            properties.push((key.clone(), text));
        }
        if raw.kafka.brokers.trim().is_empty() {
            p.at(
                0..0,
                "kafka: brokers",
                "is empty; write brokers = \"host:port\" (a comma-separated list for several)"
                    .into(),
            );
        }
        let idle_timeout = duration(&mut p, &raw.time.idle_timeout, "time: idle_timeout");
        let interval = duration(&mut p, &raw.checkpoint.interval, "checkpoint: interval");
        let listen = match raw.http.listen.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                p.at(
                    raw.http.listen.span(),
                    "http: listen",
                    format!(
                        "{:?} is not an address; write ip:port, e.g. listen = \"127.0.0.1:9464\"",
                        raw.http.listen.get_ref()
                    ),
                );
                None
            }
        };
        let mut topics: Vec<(&str, &str)> = vec![
            ("events", &raw.topics.events),
            ("preferences", &raw.topics.preferences),
            ("consent", &raw.topics.consent),
            ("receipts", &raw.topics.receipts),
            ("erasures", &raw.topics.erasures),
            ("dispatches", &raw.topics.dispatches),
            ("suppressions", &raw.topics.suppressions),
            ("dead_letters", &raw.topics.dead_letters),
            ("churn_signals", &raw.topics.churn_signals),
        ];
        topics.sort_by_key(|&(_, t)| t);
        for w in topics.windows(2) {
            if w[0].1 == w[1].1 {
                p.at(
                    0..0,
                    "",
                    format!(
                        "[topics] {} and {} are the same topic {:?}; every stream needs its own topic",
                        w[0].0, w[1].0, w[0].1
                    ),
                );
            }
        }
        let sinks = sinks(&mut p, raw.sinks, &raw.topics);
        p.finish()?;
        let token_env = Some(raw.http.token_env).filter(|t| !t.is_empty());
        let (Some(idle_timeout), Some(interval), Some(listen)) = (idle_timeout, interval, listen)
        else {
            unreachable!("a problem was reported")
        };
        Ok(JobConfig {
            path: path.to_path_buf(),
            spec: base.join(&raw.spec),
            kafka: Kafka {
                brokers: raw.kafka.brokers,
                group: raw.kafka.group,
                start,
                properties,
            },
            topics: raw.topics,
            idle_timeout,
            checkpoint: Checkpoint {
                url: raw.checkpoint.url,
                interval,
            },
            http: Http { listen, token_env },
            sinks,
        })
    }

    /// Whether TOML text is a job config rather than a spec: it names a
    /// spec or a Kafka cluster.
    pub fn looks_like_job(text: &str) -> bool {
        text.lines().any(|l| {
            let l = l.trim();
            l == "[kafka]" || l.starts_with("spec =") || l.starts_with("spec=")
        })
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobConfig, String> {
        JobConfig::parse(Path::new("conf/job.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_those_of_the_design() {
        let job =
            parse("spec = \"../dataflows/core.toml\"\n[kafka]\nbrokers = \"b:9092\"\n").unwrap();
        assert_eq!(job.spec, Path::new("conf/../dataflows/core.toml"));
        assert_eq!(job.kafka.group, "nudgeflow");
        assert_eq!(job.kafka.start, Start::Earliest);
        assert_eq!(job.topics.dead_letters, "nudgeflow.dead-letters");
        assert_eq!(job.topics.input(StreamKind::Consent), "nudgeflow.consent");
        assert_eq!(job.idle_timeout, Duration::from_millis(200));
        assert_eq!(job.checkpoint.interval, Duration::from_secs(10));
        assert_eq!(job.checkpoint.url, "nudgeflow-state");
        assert_eq!(job.http.listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(job.http.token_env, None);
    }

    #[test]
    fn every_key_is_read() {
        let job = parse(
            "spec = \"s.toml\"\n[kafka]\nbrokers = \"a:1,b:2\"\ngroup = \"g\"\nstart = \"latest\"\n\
             properties = { \"security.protocol\" = \"SASL_SSL\", \"fetch.wait.max.ms\" = 10 }\n\
             [topics]\nevents = \"e\"\n[time]\nidle_timeout = \"1s\"\n\
             [checkpoint]\nurl = \"s3://b/p\"\ninterval = \"1m\"\n\
             [http]\nlisten = \"0.0.0.0:80\"\ntoken_env = \"TOKEN\"\n",
        )
        .unwrap();
        assert_eq!(job.kafka.start, Start::Latest);
        assert_eq!(
            job.kafka.properties,
            vec![
                ("fetch.wait.max.ms".to_string(), "10".to_string()),
                ("security.protocol".to_string(), "SASL_SSL".to_string())
            ]
        );
        assert_eq!(job.topics.events, "e");
        assert_eq!(job.topics.consent, "nudgeflow.consent");
        assert_eq!(job.idle_timeout, Duration::from_secs(1));
        assert_eq!(job.checkpoint.interval, Duration::from_secs(60));
        assert_eq!(job.http.token_env.as_deref(), Some("TOKEN"));
    }

    #[test]
    fn an_unknown_key_names_its_line_and_the_key_meant() {
        let e = parse("spec = \"s.toml\"\n[kafka]\nbrokers = \"b:1\"\ngrop = \"g\"\n").unwrap_err();
        assert!(
            e.starts_with("conf/job.toml:4: unknown key `grop`; did you mean `group`?"),
            "{e}"
        );
        let e = parse("spec = \"s.toml\"\n[kafka]\nbrokers = \"b:1\"\n[tme]\n").unwrap_err();
        assert!(e.contains("conf/job.toml:4: unknown key `tme`"), "{e}");
        assert!(e.contains("did you mean `time`?"), "{e}");
    }

    #[test]
    fn missing_and_bad_values_say_what_to_write() {
        let e = parse("[kafka]\nbrokers = \"b:1\"\n").unwrap_err();
        assert!(e.contains("missing field `spec`"), "{e}");
        let e = parse(
            "spec = \"s\"\n[kafka]\nbrokers = \"b:1\"\nstart = \"begin\"\n\
             properties = { \"group.id\" = \"x\" }\n[time]\nidle_timeout = \"soon\"\n\
             [http]\nlisten = \"localhost\"\n[topics]\ndispatches = \"nudgeflow.events\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("conf/job.toml:4: kafka: start: is \"begin\""),
            "{e}"
        );
        assert!(
            e.contains("conf/job.toml:5: kafka.properties: group.id: is set by nudgeflow: set [kafka] group instead"),
            "{e}"
        );
        assert!(
            e.contains("conf/job.toml:7: time: idle_timeout: \"soon\" is not a duration"),
            "{e}"
        );
        assert!(
            e.contains("conf/job.toml:9: http: listen: \"localhost\" is not an address"),
            "{e}"
        );
        assert!(
            e.contains("conf/job.toml: [topics] events and dispatches are the same topic"),
            "{e}"
        );
    }

    const HEAD: &str = "spec = \"s.toml\"\n[kafka]\nbrokers = \"b:1\"\n";

    #[test]
    fn every_channel_has_a_default_sink() {
        let job = parse(HEAD).unwrap();
        for (channel, sink) in job.sinks.iter() {
            let expected = if channel == Channel::InApp {
                ChannelSink::Inbox {
                    ttl: Duration::from_secs(30 * 86400),
                }
            } else {
                ChannelSink::Kafka {
                    topic: "nudgeflow.dispatches".into(),
                }
            };
            assert_eq!(*sink, expected, "{channel:?}");
        }
    }

    #[test]
    fn sink_tables_are_read_by_kind() {
        let job = parse(&format!(
            "{HEAD}[sinks.push]\nkind = \"http\"\nurl = \"https://push.example.com/v1/send\"\n\
             auth_env = \"PUSH_AUTH\"\ntimeout = \"2s\"\nmax_attempts = 3\nrate = 0.5\n\
             concurrency = 8\nsuccess_receipt = \"none\"\nqueue = 100\n\
             [sinks.webhook]\nkind = \"http\"\nurl = \"http://127.0.0.1:8080/hook\"\nrate = 20\n\
             [sinks.sms]\nkind = \"kafka\"\ntopic = \"sms-gateway\"\n\
             [sinks.email]\nkind = \"kafka\"\n\
             [sinks.in_app]\ninbox_ttl = \"7d\"\n"
        ))
        .unwrap();
        let ChannelSink::Http(push) = job.sinks.get(Channel::Push) else {
            panic!("{:?}", job.sinks)
        };
        assert_eq!(push.url.as_str(), "https://push.example.com/v1/send");
        assert_eq!(push.auth_env.as_deref(), Some("PUSH_AUTH"));
        assert_eq!(push.timeout, Duration::from_secs(2));
        assert_eq!(push.max_attempts, 3);
        assert_eq!(push.rate, Some(0.5));
        assert_eq!(push.concurrency, 8);
        assert_eq!(push.success_receipt, SuccessReceipt::None);
        assert_eq!(push.queue, 100);
        let ChannelSink::Http(webhook) = job.sinks.get(Channel::Webhook) else {
            panic!("{:?}", job.sinks)
        };
        // The defaults of §9.
        let mut expected = HttpConfig::new("http://127.0.0.1:8080/hook".parse().unwrap());
        expected.rate = Some(20.0);
        assert_eq!(*webhook, expected);
        assert_eq!(expected.timeout, Duration::from_secs(10));
        assert_eq!(expected.max_attempts, 6);
        assert_eq!(expected.concurrency, 64);
        assert_eq!(expected.success_receipt, SuccessReceipt::Delivered);
        assert_eq!(
            *job.sinks.get(Channel::Sms),
            ChannelSink::Kafka {
                topic: "sms-gateway".into()
            }
        );
        assert_eq!(
            *job.sinks.get(Channel::Email),
            ChannelSink::Kafka {
                topic: "nudgeflow.dispatches".into()
            }
        );
        assert_eq!(
            *job.sinks.get(Channel::InApp),
            ChannelSink::Inbox {
                ttl: Duration::from_secs(7 * 86400)
            }
        );
    }

    #[test]
    fn unknown_channels_kinds_and_keys_name_their_line_and_fix() {
        let e = parse(&format!("{HEAD}[sinks.pussh]\nkind = \"kafka\"\n")).unwrap_err();
        assert!(
            e.contains("conf/job.toml:4: unknown key `pussh`; did you mean `push`?"),
            "{e}"
        );
        let e = parse(&format!("{HEAD}[sinks.fax]\nkind = \"kafka\"\n")).unwrap_err();
        assert!(
            e.contains(
                "unknown key `fax`; this table takes `push`, `email`, `sms`, `in_app`, `webhook`"
            ),
            "{e}"
        );
        let e = parse(&format!(
            "{HEAD}[sinks.sms]\nkind = \"smtp\"\n[sinks.push]\nkind = \"inbox\"\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("conf/job.toml:5: sinks.sms: kind: is \"smtp\"; write kind = \"kafka\" (a topic), \"http\" (a provider)"),
            "{e}"
        );
        assert!(
            e.contains("conf/job.toml:7: sinks.push: kind: the inbox holds in_app dispatches only"),
            "{e}"
        );
        let e = parse(&format!(
            "{HEAD}[sinks.sms]\nkind = \"kafka\"\nurl = \"http://x\"\n\
             [sinks.in_app]\ntimeout = \"1s\"\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("conf/job.toml:6: sinks.sms: url: is not a key of a kafka sink, which takes `topic`; remove it, or write kind = \"http\""),
            "{e}"
        );
        assert!(
            e.contains("conf/job.toml:8: sinks.in_app: timeout: is not a key of an inbox sink, which takes `inbox_ttl`; remove it, or write kind = \"http\""),
            "{e}"
        );
        let e = parse(&format!(
            "{HEAD}[sinks.webhook]\nkind = \"http\"\nurl = \"http://x\"\ntimout = \"1s\"\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("conf/job.toml:7: unknown key `timout`; did you mean `timeout`?"),
            "{e}"
        );
    }

    #[test]
    fn bad_http_settings_say_what_to_write() {
        let e = parse(&format!(
            "{HEAD}[sinks.webhook]\nkind = \"http\"\nauth_env = \"Bearer abc\"\n\
             timeout = \"0s\"\nmax_attempts = 0\nrate = -1\nconcurrency = 0\n\
             success_receipt = \"always\"\nqueue = 0\n\
             [sinks.push]\nkind = \"http\"\nurl = \"ftp://example.com/x\"\n\
             [sinks.email]\nkind = \"http\"\nurl = \"not a url\"\n\
             [sinks.sms]\ntopic = \"nudgeflow.events\"\n\
             [sinks.in_app]\nkind = \"http\"\nurl = \"http://x\"\nconcurrency = 5000\n"
        ))
        .unwrap_err();
        for wanted in [
            "conf/job.toml:4: sinks.webhook: url: is missing; an http sink needs the provider's address",
            "conf/job.toml:6: sinks.webhook: auth_env: names the environment variable that holds the Authorization header value, not the value itself",
            "conf/job.toml:7: sinks.webhook: timeout: must be longer than 0ms",
            "conf/job.toml:8: sinks.webhook: max_attempts: is 0; write a whole number of at least 1",
            "conf/job.toml:9: sinks.webhook: rate: is -1; write the most requests per second",
            "conf/job.toml:10: sinks.webhook: concurrency: is 0; write a whole number of at least 1",
            "conf/job.toml:24: sinks.in_app: concurrency: is 5000; write at most 4096 requests in flight",
            "conf/job.toml:11: sinks.webhook: success_receipt: is \"always\"; write success_receipt = \"delivered\"",
            "conf/job.toml:12: sinks.webhook: queue: is 0; write a whole number of at least 1",
            "conf/job.toml:15: sinks.push: url: \"ftp://example.com/x\" is not an http or https address",
            "conf/job.toml:18: sinks.email: url: \"not a url\" is not a URL",
            "conf/job.toml:20: sinks.sms: topic: \"nudgeflow.events\" is the job's events topic",
        ] {
            assert!(e.contains(wanted), "{wanted}\nin\n{e}");
        }
    }

    #[test]
    fn job_configs_are_told_from_specs() {
        assert!(JobConfig::looks_like_job("spec = \"x\"\n"));
        assert!(JobConfig::looks_like_job("# c\n[kafka]\nbrokers = \"b\"\n"));
        assert!(!JobConfig::looks_like_job("[[rule]]\nname = \"spec\"\n"));
    }
}
