//! Where each channel's dispatches go in the live job (DESIGN.md §9), as
//! the job config's `[sinks.CHANNEL]` tables say, made ready once per
//! process and shared by its workers' Kafka sinks.
//!
//! Every dispatch is first written to the dispatches topic, the record of
//! what was decided; its channel's route then delivers it in addition:
//! nothing more ([`Route::Record`], a `kafka` sink on the dispatches topic),
//! a copy on another topic ([`Route::Copy`]), a provider over HTTP
//! ([`Route::Http`]), or the in-app inbox ([`Route::Inbox`], which delivers
//! nothing yet).

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::job::{ChannelSink, JobConfig};
use crate::ops::Metrics;
use crate::sink::http::{Driver, HttpSink};
use crate::spec::Channel;

/// How one channel's dispatches are delivered.
pub enum Route {
    /// The dispatches topic is all.
    Record,
    /// A second copy on this topic, with the same key and headers.
    Copy(String),
    /// `POST`ed by this sink, the outcome written as a receipt.
    Http(HttpSink),
    /// Kept in the user's in-app inbox (not delivered yet: the inbox is to
    /// come).
    Inbox,
}

/// The route of every channel, and the runtime the HTTP sinks send on
/// (stopped when this is dropped).
pub struct ChannelSinks {
    routes: [Route; 5],
    _driver: Option<Driver>,
}

impl ChannelSinks {
    /// Every channel's route as `job` says, for one process of
    /// `processes` (each takes its share of the HTTP sinks' `rate` and
    /// `concurrency`). Fails, naming the table and the field, when an
    /// `auth_env` variable is not set.
    pub fn start(
        job: &JobConfig,
        processes: usize,
        metrics: &Metrics,
    ) -> anyhow::Result<ChannelSinks> {
        let needs_driver = job
            .sinks
            .iter()
            .any(|(_, s)| matches!(s, ChannelSink::Http(_)));
        let driver = if needs_driver {
            Some(Driver::start().context("cannot start the HTTP sinks' runtime")?)
        } else {
            None
        };
        let mut routes = Vec::with_capacity(5);
        for (channel, sink) in job.sinks.iter() {
            routes.push(match sink {
                ChannelSink::Kafka { topic } if *topic == job.topics.dispatches => Route::Record,
                ChannelSink::Kafka { topic } => Route::Copy(topic.clone()),
                ChannelSink::Inbox { .. } => Route::Inbox,
                ChannelSink::Http(config) => {
                    let place = format!("{}: [sinks.{}]", job.path.display(), channel.as_str());
                    let auth = config.authorization(&place)?;
                    let handle = driver.as_ref().expect("a driver").handle().clone();
                    let sink = HttpSink::new(
                        channel.as_str(),
                        &config.per_process(processes),
                        auth,
                        handle,
                        metrics.clone(),
                    )?;
                    tracing::info!(
                        channel = channel.as_str(),
                        url = %config.url,
                        "delivering over HTTP"
                    );
                    Route::Http(sink)
                }
            });
        }
        let routes: [Route; 5] = routes.try_into().ok().expect("a route per channel");
        Ok(ChannelSinks {
            routes,
            _driver: driver,
        })
    }

    /// Every channel only on the dispatches topic (as before sinks could be
    /// configured; for tests).
    pub fn record_only() -> ChannelSinks {
        ChannelSinks {
            routes: [const { Route::Record }; 5],
            _driver: None,
        }
    }

    pub fn route(&self, channel: Channel) -> &Route {
        &self.routes[channel as usize]
    }

    /// The topics copies go to, each once, in channel order.
    pub fn copy_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for route in &self.routes {
            if let Route::Copy(t) = route
                && !topics.contains(t)
            {
                topics.push(t.clone());
            }
        }
        topics
    }

    /// Whether any sink writes receipts.
    pub fn writes_receipts(&self) -> bool {
        self.routes.iter().any(|r| matches!(r, Route::Http(_)))
    }

    /// Checks that the topics the routes write to exist (the copies', and
    /// the receipts topic when a sink writes receipts), so that a misspelt
    /// one stops the job at its start.
    pub fn check_topics(&self, job: &JobConfig) -> anyhow::Result<()> {
        let mut topics = self.copy_topics();
        if self.writes_receipts() {
            topics.push(job.topics.receipts.clone());
        }
        if topics.is_empty() {
            return Ok(());
        }
        let consumer: BaseConsumer<crate::source::kafka::Logged> =
            crate::source::kafka::client_config(job)
                .create_with_context(crate::source::kafka::Logged)
                .context("cannot create a Kafka client")?;
        for topic in &topics {
            crate::source::kafka::check_topic(consumer.client(), topic)
                .with_context(|| format!("{}: [sinks]", job.path.display()))?;
        }
        Ok(())
    }
}
