//! The cluster side of a mirror: what a disconnected cluster needs to use what prewarm placed.
//!
//! * [`mirror_config`]: `prewarm mirror-config`, the cache-org mapping as registries.conf,
//!   IDMS/ITMS/ICSP, MachineConfigs or the install-config snippet.
//! * [`resources`]: the `cluster-resources/` directory `copy`, `import` and `warm` write after
//!   a run — IDMS/ITMS for exactly the repositories placed, CatalogSource and ClusterCatalog per
//!   catalog, release-signature ConfigMaps, the UpdateService.
//! * [`catalog_image`], [`graph_image`] (on [`image`]): the filtered catalogs and the graph-data
//!   image, built in memory, pushed by `copy`; [`carry`]: the same carried by export → import.
//! * [`kube`]: the typed Kubernetes shapes both render; [`names`]: DNS-1123 names.

pub mod after_run;
pub mod carry;
pub mod catalog_filter;
pub mod catalog_image;
pub mod graph_image;
pub mod image;
pub mod kube;
pub mod mirror_config;
pub mod names;
pub mod prune;
pub mod prune_report;
pub mod resources;
