//! Typed shapes of the Kubernetes objects prewarm writes, serialised as openshift/api, OLM and
//! the OpenShift Update Service define them; field order is the struct order, so a rerun
//! writes the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Serialize)]
pub struct Metadata {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl Metadata {
    pub fn named(name: &str) -> Metadata {
        Metadata {
            name: name.to_string(),
            namespace: None,
            labels: None,
        }
    }

    pub fn in_namespace(name: &str, namespace: &str) -> Metadata {
        Metadata {
            namespace: Some(namespace.to_string()),
            ..Metadata::named(name)
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: Metadata,
    pub spec: S,
}

/// `mirrorSourcePolicy` of an IDMS/ITMS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum SourcePolicy {
    #[value(name = "never-contact-source")]
    NeverContactSource,
    #[value(name = "allow-contacting-source")]
    AllowContactingSource,
}

/// One `source` and its `mirrors` (ImageDigestMirrors, ImageTagMirrors,
/// RepositoryDigestMirrors and install-config `imageDigestSources` share the shape).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorEntry {
    pub source: String,
    pub mirrors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_source_policy: Option<SourcePolicy>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdmsSpec {
    image_digest_mirrors: Vec<MirrorEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItmsSpec {
    image_tag_mirrors: Vec<MirrorEntry>,
}

/// Which mirror set: digest pulls (IDMS) or tag pulls (ITMS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorSet {
    Digest,
    Tag,
}

pub fn yaml<T: Serialize>(value: &T) -> String {
    serde_yaml_ng::to_string(value).expect("plain structs serialise to YAML")
}

/// `config.openshift.io/v1` ImageDigestMirrorSet or ImageTagMirrorSet named `name`: the one
/// generator `mirror-config` and the cluster-resources directory both use.
pub fn mirror_set(kind: MirrorSet, name: &str, entries: Vec<MirrorEntry>) -> String {
    let metadata = Metadata::named(name);
    match kind {
        MirrorSet::Digest => yaml(&Resource {
            api_version: "config.openshift.io/v1",
            kind: "ImageDigestMirrorSet",
            metadata,
            spec: IdmsSpec {
                image_digest_mirrors: entries,
            },
        }),
        MirrorSet::Tag => yaml(&Resource {
            api_version: "config.openshift.io/v1",
            kind: "ImageTagMirrorSet",
            metadata,
            spec: ItmsSpec {
                image_tag_mirrors: entries,
            },
        }),
    }
}
