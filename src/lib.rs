//! prewarm: read what an OpenShift cluster needs, resolve it to digests, and warm a
//! pull-through cache (Quay cache orgs) with every manifest and blob — or prove it holds them.
//!
//! The data flows one way: sources ([`job`]) → [`plan`] (images, manifests, unique blobs) →
//! the transfer engine ([`transfer`]: warm, verify, copy, export, import on one scheduler) →
//! [`report`]. [`registry`] is the one transport every stage uses; [`progress`] is the only
//! place that draws.

pub mod args;
pub mod auth;
pub mod bundle;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod destination;
pub mod duration;
pub mod fsutil;
pub mod history;
pub mod immutable;
pub mod job;
pub mod load;
pub mod lock;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod quay;
pub mod reference;
pub mod refresh;
pub mod registry;
pub mod report;
pub mod run;
pub mod shard;
pub mod sources;
pub mod specs;
pub mod state;
pub mod transfer;
pub mod upstreams;
