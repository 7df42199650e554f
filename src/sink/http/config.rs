//! The settings of an HTTP channel sink (DESIGN.md §9), as `[sinks.CHANNEL]`
//! with `kind = "http"` gives them: `job` reads and checks the table, this
//! is what it means.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::header::HeaderValue;

/// Whether a 2xx answer makes the sink write a `delivered` receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessReceipt {
    /// Write `{"status":"delivered"}` on a 2xx (the default).
    Delivered,
    /// Write nothing on a 2xx: the provider's own callbacks
    /// (`POST /v1/receipts`) report delivery. Failures are still written.
    None,
}

/// One channel's HTTP sink.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Where each dispatch is `POST`ed (http or https).
    pub url: reqwest::Url,
    /// The environment variable holding the whole `Authorization` header
    /// value (e.g. `Bearer …`), never the secret itself. Read at start.
    pub auth_env: Option<String>,
    /// The longest one request may take, connecting included.
    pub timeout: Duration,
    /// Requests per dispatch at most, the first included (≥ 1).
    pub max_attempts: u32,
    /// Requests per second at most, the job's total (split evenly among its
    /// processes); `None`: unlimited.
    pub rate: Option<f64>,
    /// Requests in flight at most, the job's total (split evenly among its
    /// processes, at least one each); at most [`MAX_CONCURRENCY`].
    pub concurrency: usize,
    pub success_receipt: SuccessReceipt,
    /// Dispatches the sink holds at most in each process (waiting, in flight
    /// or between attempts); one more is failed at once with the reason
    /// `queue full`.
    pub queue: usize,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
pub const DEFAULT_CONCURRENCY: usize = 64;
/// The most `concurrency` may be: the sink keeps a worker task per request
/// slot.
pub const MAX_CONCURRENCY: usize = 4096;
pub const DEFAULT_QUEUE: usize = 10_000;

impl HttpConfig {
    /// A sink of `url` with every other setting at its default.
    pub fn new(url: reqwest::Url) -> HttpConfig {
        HttpConfig {
            url,
            auth_env: None,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            rate: None,
            concurrency: DEFAULT_CONCURRENCY,
            success_receipt: SuccessReceipt::Delivered,
            queue: DEFAULT_QUEUE,
        }
    }

    /// The `Authorization` header value, read from `auth_env`; an error
    /// naming the variable when it is not set or not a valid header value.
    /// `place` names the table in the message (`job.toml: [sinks.webhook]`).
    pub fn authorization(&self, place: &str) -> anyhow::Result<Option<HeaderValue>> {
        let Some(var) = &self.auth_env else {
            return Ok(None);
        };
        let value = std::env::var(var).ok().with_context(|| {
            format!(
                "{place} auth_env: names {var:?}, which is not set: export {var} with the whole \
                 Authorization header value (e.g. \"Bearer …\"), or remove auth_env"
            )
        })?;
        let mut header = HeaderValue::from_str(&value).ok().with_context(|| {
            format!(
                "{place} auth_env: {var} holds characters a header cannot carry (a line break?): \
                 set it to the Authorization header value alone"
            )
        })?;
        header.set_sensitive(true);
        Ok(Some(header))
    }

    /// This process's share of a job-wide limit of `processes` processes.
    pub fn per_process(&self, processes: usize) -> HttpConfig {
        let n = processes.max(1);
        HttpConfig {
            rate: self.rate.map(|r| r / n as f64),
            concurrency: self.concurrency.div_ceil(n).max(1),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HttpConfig {
        HttpConfig::new("http://127.0.0.1:1/hook".parse().unwrap())
    }

    #[test]
    fn an_unset_auth_variable_is_an_error_naming_it() {
        let mut c = config();
        assert_eq!(c.authorization("x").unwrap(), None);
        c.auth_env = Some("NUDGEFLOW_TEST_SURELY_UNSET_VARIABLE".into());
        let e = c.authorization("job.toml: [sinks.webhook]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "job.toml: [sinks.webhook] auth_env: names \"NUDGEFLOW_TEST_SURELY_UNSET_VARIABLE\", \
             which is not set: export NUDGEFLOW_TEST_SURELY_UNSET_VARIABLE with the whole \
             Authorization header value (e.g. \"Bearer …\"), or remove auth_env"
        );
        // PATH is set in any test environment.
        c.auth_env = Some("PATH".into());
        let v = c.authorization("x").unwrap().unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v.to_str().unwrap(), std::env::var("PATH").unwrap());
    }

    #[test]
    fn limits_are_split_among_processes() {
        let mut c = config();
        c.rate = Some(100.0);
        c.concurrency = 5;
        let p = c.per_process(2);
        assert_eq!(p.rate, Some(50.0));
        assert_eq!(p.concurrency, 3);
        assert_eq!(c.per_process(8).concurrency, 1);
        assert_eq!(c.per_process(1), c);
    }
}
