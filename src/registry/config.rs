//! What the transport is built from: how each logical host is reached (the endpoint table),
//! the credentials store, the request policy and the per-registry rate limits. A job converts
//! into it (`Job::transport`); commands without a job (import, inventory) build one from
//! their flags. The transport never sees a job: this module depends on nothing above it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::budget::RateLimit;
use crate::auth::AuthStore;

/// How every request of a run is retried and timed out, source and destination alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts per request before an error is final (`--retries`): connection errors, a
    /// stall, 5xx and 429. At least 1.
    pub attempts: u32,
    /// First backoff delay; doubled on each retry up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` waited (`--retry-after-cap`). A registry asking for longer is
    /// waited this long and the log says so; then the request is tried again.
    pub retry_after_cap: Duration,
    /// `--timeout`: a request that makes no progress this long (no response headers while
    /// nothing of its body is being sent, or no body bytes while reading) is abandoned and
    /// retried.
    pub timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
        }
    }
}

impl Policy {
    /// The exponential backoff of this policy, as the retry crate runs it.
    pub(crate) fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.attempts.max(1) as usize - 1)
    }

    /// The wait before the next attempt: the registry's Retry-After when it sent one (capped
    /// by `retry_after_cap`, logged when the cap applies), else the backoff's delay.
    pub(crate) fn wait(
        &self,
        host: &str,
        retry_after: Option<Duration>,
        backoff: Duration,
    ) -> Duration {
        match retry_after {
            Some(asked) if asked > self.retry_after_cap => {
                tracing::warn!(
                    "registry `{host}` asked to wait {}s (Retry-After); waiting the cap of {}s (--retry-after-cap) before trying again",
                    asked.as_secs(),
                    self.retry_after_cap.as_secs()
                );
                self.retry_after_cap
            }
            Some(asked) => asked,
            None => backoff,
        }
    }
}

/// Everything a [`super::Registries`] needs, and nothing more.
#[derive(Debug, Clone, Default)]
pub struct TransportConfig {
    /// Logical host (`quay.io`, the cache's `host:port`) → how it is reached. A host not in
    /// the table is reached at its own name over verified TLS.
    pub endpoints: BTreeMap<String, Endpoint>,
    pub auth: AuthStore,
    pub policy: Policy,
    /// Logical host → its request budget (`rate_limits` of a job).
    pub rate_limits: BTreeMap<String, RateLimit>,
}

impl TransportConfig {
    pub fn new(auth: AuthStore, policy: Policy) -> TransportConfig {
        TransportConfig {
            auth,
            policy,
            ..TransportConfig::default()
        }
    }

    /// This config with `host` reached at `endpoint` (a destination given on the command line).
    pub fn with_endpoint(mut self, host: &str, endpoint: Endpoint) -> TransportConfig {
        self.endpoints.insert(host.to_string(), endpoint);
        self
    }

    /// How `host` is reached.
    pub fn endpoint(&self, host: &str) -> Endpoint {
        self.endpoints
            .get(host)
            .cloned()
            .unwrap_or_else(|| Endpoint {
                address: host.to_string(),
                insecure: false,
                ca: None,
            })
    }
}

/// How a registry is actually reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` to connect to.
    pub address: String,
    /// Plain HTTP and no TLS verification.
    pub insecure: bool,
    pub ca: Option<PathBuf>,
}
