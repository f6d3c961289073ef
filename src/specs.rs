//! What a job (or an ISC) asks of the OpenShift sources: update-graph channels, where the graph
//! comes from, operator catalogs and their packages, release signatures. Plain configuration,
//! below the job that holds it and the sources that read it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An update-graph channel to take releases from (the job's `channels:`, an ISC's
/// `mirror.platform.channels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChannelSpec {
    pub name: String,
    /// `ocp` (the default) or `okd`; only `ocp` payload names are known to prewarm.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
    #[serde(default)]
    pub full: bool,
    #[serde(default)]
    pub shortest_path: bool,
    /// Where the entry was written (`isc.yaml: mirror.platform.channels[0]`), for messages.
    #[serde(skip)]
    pub origin: Option<String>,
}

/// Where the update graph comes from: the update service (`url`, default the public one), one
/// local graph JSON for every channel (`file`), or a directory holding
/// `graph-<channel>-<arch>.json` files (`dir`) for offline sites.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Build the update service's graph-data image (see `cluster::graph_image`).
    #[serde(default)]
    pub image: Option<GraphImageConfig>,
}

/// The graph-data image: the graph-data tarball (`data`: a URL or a local file) unpacked on top
/// of a base image (`base`, planned and mirrored like any image).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphImageConfig {
    #[serde(default = "default_graph_base")]
    pub base: String,
    #[serde(default = "default_graph_data")]
    pub data: String,
}

impl Default for GraphImageConfig {
    fn default() -> Self {
        GraphImageConfig {
            base: default_graph_base(),
            data: default_graph_data(),
        }
    }
}

/// UBI 9 (also served as registry.access.redhat.com/ubi9/ubi), as the OSUS docs build on.
fn default_graph_base() -> String {
    "registry.redhat.io/ubi9/ubi:latest".into()
}

fn default_graph_data() -> String {
    "https://api.openshift.com/api/upgrades_info/graph-data".into()
}

/// An operator catalog (the job's `operators:`, an ISC's `mirror.operators`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OperatorSpec {
    pub catalog: String,
    #[serde(default)]
    pub full: bool,
    #[serde(default)]
    pub packages: Vec<PackageSpec>,
    /// Accepted for oc-mirror compatibility; a cache keeps the catalog under its own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_catalog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tag: Option<String>,
    #[serde(default)]
    pub skip_dependencies: bool,
    /// Where the entry was written (`isc.yaml: mirror.operators[0]`), for messages.
    #[serde(skip)]
    pub origin: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageSpec {
    pub name: String,
    #[serde(default)]
    pub channels: Vec<PackageChannelSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
    /// Only changes the default channel of a rebuilt catalog; no image depends on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_channel: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageChannelSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
}

/// Release signatures: where to read them (`source`: a base URL, or a local directory laid
/// out like it: `<dir>/sha256=<hex>/signature-N`) and where to keep them (`output`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    #[serde(default)]
    pub source: Option<String>,
    pub output: PathBuf,
}
