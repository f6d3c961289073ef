//! Release signatures: `signature-1…N` per release digest from the signature store (a base URL
//! or a local directory with the same layout), kept under the job's `signatures.output`
//! together with the ConfigMap the cluster reads them from; and cosign `sha256-<hex>.sig`
//! tags, carried as images where the release repository has them.
//!
//! The OpenPGP signatures are kept as fetched: verifying them needs Red Hat's public key, which
//! is the cluster's business (the ConfigMap is what it checks against).

use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;

use crate::job::Job;
use crate::reference::{Digest, Reference};
use crate::registry::Registries;

use super::SignatureConfig;

pub const DEFAULT_SIGNATURE_URL: &str =
    "https://mirror.openshift.com/pub/openshift-v4/signatures/openshift/release";

/// More signatures than any release has; stops a misbehaving server from looping us.
const MAX_SIGNATURES: usize = 16;

/// For each release, the cosign signature tag `sha256-<hex>.sig` in its repository, if it exists.
pub async fn cosign_tags(
    job: &Job,
    registries: &Registries,
    releases: &[(Reference, Digest)],
) -> Vec<(Reference, String)> {
    let mut out = Vec::new();
    for (r, digest) in releases {
        let tag = format!("{}-{}.sig", digest.algorithm(), digest.hex());
        let sig = Reference::new(r.registry(), r.repository(), Some(&tag), None);
        let via = match (job.resolve, job.cache.as_ref()) {
            (crate::job::ResolveVia::Cache, Some(cache)) => cache.cache_reference(&sig),
            _ => sig.clone(),
        };
        let Ok(client) = registries.client(via.registry()) else {
            continue;
        };
        match client.head_manifest(via.repository(), &tag).await {
            Ok(_) => out.push((
                sig,
                format!("cosign signature of {}@{digest}", r.repo_path()),
            )),
            Err(e) => tracing::debug!("no cosign signature {tag} for {r}: {e}"),
        }
    }
    out
}

/// Fetch every release's signatures into `cfg.output`, write the ConfigMap; one note per release.
pub async fn fetch_all(
    job: &Job,
    cfg: &SignatureConfig,
    releases: &[(Reference, Digest)],
) -> Result<Vec<String>> {
    let output = job.relative(&cfg.output);
    std::fs::create_dir_all(&output)
        .with_context(|| format!("cannot create signatures output {}", output.display()))?;
    let source = cfg
        .source
        .clone()
        .unwrap_or_else(|| DEFAULT_SIGNATURE_URL.to_string());
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let mut notes = Vec::new();
    let mut done = std::collections::HashSet::new();
    for (r, digest) in releases {
        if !done.insert(digest.clone()) {
            continue;
        }
        let mut sigs = Vec::new();
        for n in 1..=MAX_SIGNATURES {
            let name = format!("{}={}/signature-{n}", digest.algorithm(), digest.hex());
            let body = if source.starts_with("https://") || source.starts_with("http://") {
                let url = format!("{}/{name}", source.trim_end_matches('/'));
                let resp = http
                    .get(&url)
                    .send()
                    .await
                    .with_context(|| format!("signature {url}"))?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    None
                } else if !resp.status().is_success() {
                    bail!("signature {url}: HTTP {}", resp.status());
                } else {
                    Some(
                        resp.bytes()
                            .await
                            .with_context(|| format!("signature {url}"))?
                            .to_vec(),
                    )
                }
            } else {
                let path = job.relative(Path::new(&source)).join(&name);
                match std::fs::read(&path) {
                    Ok(b) => Some(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => bail!("cannot read signature {}: {e}", path.display()),
                }
            };
            match body {
                Some(b) if !b.is_empty() => sigs.push(b),
                _ => break,
            }
        }
        if sigs.is_empty() {
            notes.push(format!(
                "signatures: none found for {r} ({digest}) at {source}"
            ));
            continue;
        }
        for (i, s) in sigs.iter().enumerate() {
            let path = output.join(format!("{}-{}-{}", digest.algorithm(), digest.hex(), i + 1));
            crate::fsutil::write_atomically(&path, s)?;
        }
        let cm = configmap(digest, &sigs);
        let path = output.join(format!("{}-{}.yaml", digest.algorithm(), digest.hex()));
        crate::fsutil::write_atomically(&path, cm.as_bytes())?;
        notes.push(format!(
            "signatures: {} for {r} kept in {}",
            sigs.len(),
            path.display()
        ));
    }
    Ok(notes)
}

/// The ConfigMap that `openshift-config-managed` needs (FORMATS.md), as YAML.
pub fn configmap(digest: &Digest, sigs: &[Vec<u8>]) -> String {
    let mut data = serde_json::Map::new();
    for (i, s) in sigs.iter().enumerate() {
        data.insert(
            format!("{}-{}-{}", digest.algorithm(), digest.hex(), i + 1),
            base64::engine::general_purpose::STANDARD.encode(s).into(),
        );
    }
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": format!("{}-{}", digest.algorithm(), &digest.hex()[..16]),
            "namespace": "openshift-config-managed",
            "labels": {"release.openshift.io/verification-signatures": ""},
            "annotations": {"createdBy": concat!("prewarm ", env!("CARGO_PKG_VERSION"))},
        },
        "binaryData": data,
    });
    serde_yaml_ng::to_string(&cm).expect("a ConfigMap serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_has_the_fixture_shape() {
        let d: Digest = format!("sha256:{}", "1".repeat(64)).parse().unwrap();
        let y = configmap(&d, &[b"sig".to_vec()]);
        let v: serde_json::Value = serde_yaml_ng::from_str(&y).unwrap();
        let fx: serde_json::Value = serde_json::from_slice(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/signature-configmap.json"
            ))
            .unwrap(),
        )
        .unwrap();
        for k in ["kind", "apiVersion"] {
            assert_eq!(v[k], fx[k]);
        }
        assert_eq!(v["metadata"]["namespace"], fx["metadata"]["namespace"]);
        assert_eq!(v["metadata"]["labels"], fx["metadata"]["labels"]);
        let key = format!("sha256-{}-1", "1".repeat(64));
        assert!(fx["binaryData"].get(&key).is_some());
        assert_eq!(v["binaryData"][&key], "c2ln");
    }
}
