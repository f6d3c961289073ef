//! Talking to registries: one [`RegistryClient`] per logical host, built from the job's
//! endpoint settings and the auth file, shared by every stage of a run.

pub mod budget;
pub mod client;
pub mod manifest;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

pub use client::{verified_body, BodyFailure, ChunkStream, Mount, Pushed};
pub use client::{
    BlobSink, Discard, FetchedManifest, RegistryClient, RegistryError, RetryPolicy, Stats,
};

use crate::auth::AuthStore;
use crate::job::Job;

/// The clients of one run, created on first use.
pub struct Registries {
    job: Arc<Job>,
    auth: AuthStore,
    retry: RetryPolicy,
    clients: Mutex<HashMap<String, Arc<RegistryClient>>>,
    pub stats: Arc<Stats>,
}

impl Registries {
    pub fn new(job: Arc<Job>, auth: AuthStore, retry: RetryPolicy) -> Registries {
        Registries {
            job,
            auth,
            retry,
            clients: Mutex::new(HashMap::new()),
            stats: Arc::new(Stats::default()),
        }
    }

    /// The client for logical host `host` (`quay.io`, or the cache's `host:port`).
    pub fn client(&self, host: &str) -> Result<Arc<RegistryClient>> {
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let endpoint = self.job.endpoint(host);
        // Pull secrets name logical hosts; a lab or mirror may only be known by its address.
        let credentials = self
            .auth
            .get(host, None)
            .or_else(|| self.auth.get(&endpoint.address, None))
            .cloned();
        let limit = self.job.rate_limits.get(host).cloned().unwrap_or_default();
        let client = Arc::new(
            RegistryClient::new(host, endpoint, credentials, self.retry, self.stats.clone())?
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
