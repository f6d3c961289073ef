//! The shapes of the Kubernetes objects prewarm writes, as their APIs define them (openshift/api
//! config/v1 and operator/v1alpha1), for tests to parse output back with unknown fields refused.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resource<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// openshift/api ImageDigestMirrors / ImageTagMirrors / RepositoryDigestMirrors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mirrors {
    pub source: String,
    pub mirrors: Vec<String>,
    pub mirror_source_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdmsSpec {
    pub image_digest_mirrors: Vec<Mirrors>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ItmsSpec {
    pub image_tag_mirrors: Vec<Mirrors>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IcspSpec {
    pub repository_digest_mirrors: Vec<Mirrors>,
}
