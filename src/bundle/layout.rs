//! The small files of the OCI image layout inside a bundle, and the tar paths of blobs.

use serde_json::json;

use crate::reference::Digest;

pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `blobs/<algorithm>/<hex>`: where a blob lives in the layout.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

/// The digest of a `blobs/<algorithm>/<hex>` path, if it is one.
pub fn digest_of_path(path: &str) -> Option<Digest> {
    let rest = path.trim_start_matches("./").strip_prefix("blobs/")?;
    let (algorithm, hex) = rest.split_once('/')?;
    format!("{algorithm}:{hex}").parse().ok()
}

/// One `index.json` entry: a top manifest and the reference it was exported from.
pub struct IndexEntry<'a> {
    pub media_type: &'a str,
    pub digest: &'a Digest,
    pub size: u64,
    pub reference: &'a str,
}

/// The media type an `index.json` descriptor gives a top manifest. Docker schema 2 manifests
/// and lists get their OCI equivalents: containers/image (skopeo's `oci:` transport) skips
/// every descriptor of another type, so a Docker-typed entry could not be found by its ref
/// name. The manifest bytes (and so the digest) are untouched; `bundle.json` keeps the true
/// media type, and `import` pushes with that one.
pub fn descriptor_media_type(media_type: &str) -> &str {
    use crate::registry::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
    match media_type {
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_LIST => OCI_INDEX,
        other => other,
    }
}

/// `index.json`: every image of the bundle, found by its source reference.
pub fn index_json(entries: &[IndexEntry<'_>]) -> Vec<u8> {
    let manifests: Vec<_> = entries
        .iter()
        .map(|e| {
            json!({
                "mediaType": descriptor_media_type(e.media_type),
                "digest": e.digest,
                "size": e.size,
                "annotations": { REF_NAME: e.reference },
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .expect("index.json serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_round_trip() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(digest_of_path(&blob_path(&d)), Some(d.clone()));
        assert_eq!(digest_of_path(&format!("./{}", blob_path(&d))), Some(d));
        assert_eq!(digest_of_path("index.json"), None);
        assert_eq!(digest_of_path("blobs/sha256/zz"), None);
    }
}
