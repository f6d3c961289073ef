//! The test lab: real registries on loopback standing in for quay.io and registry.redhat.io,
//! a distribution pull-through proxy per upstream, nginx in front so the cache looks like one
//! Quay host with `cache_<host>` orgs ([`servers`]), and a seeder that pushes OCP-shaped
//! content with real digests ([`seed`]). Used by the integration tests, the `lab` example
//! and the benchmark; shipped in the library so they share one definition.

pub mod servers;

pub use servers::{Lab, Server};
