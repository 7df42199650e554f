//! The job config of `nudgeflow run` (DESIGN.md §7): the spec, the Kafka
//! cluster and topics, idleness, checkpoints and the HTTP endpoints.
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
use crate::spec::{SpecError, SpecProblem};

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

    #[test]
    fn job_configs_are_told_from_specs() {
        assert!(JobConfig::looks_like_job("spec = \"x\"\n"));
        assert!(JobConfig::looks_like_job("# c\n[kafka]\nbrokers = \"b\"\n"));
        assert!(!JobConfig::looks_like_job("[[rule]]\nname = \"spec\"\n"));
    }
}
