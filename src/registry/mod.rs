//! Talking to registries: one [`RegistryClient`] per logical host, built from a
//! [`TransportConfig`] (endpoints, credentials, policy, rate limits), shared by every stage of
//! a run — the sources read and the destinations written alike, so every request of a run
//! has the same retries, timeout, budget and auth (see `client` for the one request path).
//!
//! oci-client (named in the design) is not the transport: see `client` for why and where it
//! is used.

pub mod budget;
pub mod client;
pub mod config;
pub mod manifest;
pub mod presence;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

pub use client::{verified_body, BodyFailure, ChunkStream, Mount, Pushed};
pub use client::{BlobSink, Discard, FetchedManifest, RegistryClient, RegistryError, Stats};
pub use config::{Policy, TransportConfig};
pub use presence::Presence;

/// The clients of one run, created on first use.
pub struct Registries {
    config: TransportConfig,
    clients: Mutex<HashMap<String, Arc<RegistryClient>>>,
    pub stats: Arc<Stats>,
}

impl Registries {
    pub fn new(config: TransportConfig) -> Registries {
        Registries {
            config,
            clients: Mutex::new(HashMap::new()),
            stats: Arc::new(Stats::default()),
        }
    }

    /// These registries with `host` reached at `endpoint` (a destination named on the command
    /// line); before its first client only.
    pub fn with_endpoint(mut self, host: &str, endpoint: config::Endpoint) -> Registries {
        self.config = self.config.with_endpoint(host, endpoint);
        self
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// The client for logical host `host` (`quay.io`, the cache's or a destination's
    /// `host:port`).
    pub fn client(&self, host: &str) -> Result<Arc<RegistryClient>> {
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let limit = self
            .config
            .rate_limits
            .get(host)
            .cloned()
            .unwrap_or_default();
        let client = Arc::new(
            RegistryClient::new(
                host,
                self.config.endpoint(host),
                self.config.auth.clone(),
                self.config.policy,
                self.stats.clone(),
            )?
            .with_budget(budget::Budget::new(limit)),
        );
        clients.insert(host.to_string(), client.clone());
        Ok(client)
    }

    /// Registries whose request budget is spent this run, with the reason.
    pub fn budgets_spent(&self) -> Vec<(String, String)> {
        let clients = self.clients.lock().expect("clients lock");
        let mut spent: Vec<(String, String)> = clients
            .iter()
            .filter_map(|(host, c)| c.budget().spent().map(|r| (host.clone(), r)))
            .collect();
        spent.sort();
        spent
    }
}
