//! An OCI image layout directory as a source (`import DIR` when DIR holds an `oci-layout`
//! file), as the OCI image-layout spec describes it: `oci-layout`, `index.json`, and every
//! manifest and blob under `blobs/<algorithm>/<hex>`.
//!
//! Each `index.json` entry is one image. Its name comes from the entry's
//! `org.opencontainers.image.ref.name`: a full reference (`HOST/PATH[:TAG][@DIGEST]`, what
//! `export --format oci-dir` writes) is the image's source reference; a bare tag (what
//! `skopeo copy … oci:DIR:TAG` writes) or no name at all needs `--repository HOST/PATH`, the
//! source repository such images are taken to come from (`HOST/PATH:TAG`, or
//! `HOST/PATH@DIGEST` when unnamed). Either way `--to` maps the source repository to the
//! destination one, as for copy and bundles, and cluster resources map it back.
//!
//! Manifests are read when the layout is opened — each file's size and sha256 checked against
//! its descriptor, indexes followed to any depth — and kept in memory (they are small): an
//! image one of whose manifests is missing or corrupt is a plan failure naming the file, and
//! the others go on. Blobs are streamed from their files at upload time through a verifying
//! body (size and sha256; the last chunk is held back until both are right, so a registry
//! never completes an upload of wrong bytes); a missing or corrupt blob fails the images that
//! need it, naming the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::bundle::layout::{self, REF_NAME};
use crate::plan::{Plan, PlanFailure, PlannedBlob, PlannedImage, PlannedManifest};
use crate::reference::{Digest, Reference};
use crate::registry::manifest::{Descriptor, Manifest};
use crate::registry::{verified_body, ChunkStream};
use crate::transfer::TransferError;

/// The file that marks a directory as an OCI image layout.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// Largest manifest accepted (distribution's own limit is 4 MiB).
const MAX_MANIFEST: u64 = 16 << 20;
/// Deepest nesting of indexes followed.
const MAX_DEPTH: usize = 8;
const CHUNK: usize = 256 << 10;

/// Whether `dir` is an OCI image layout (it has an `oci-layout` file).
pub fn is_layout(dir: &Path) -> bool {
    dir.join(OCI_LAYOUT_FILE).is_file()
}

#[derive(Deserialize)]
struct LayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

#[derive(Deserialize)]
struct IndexFile {
    #[serde(default)]
    manifests: Vec<IndexDescriptor>,
}

#[derive(Deserialize)]
struct IndexDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A manifest read from the layout: its exact bytes and media type.
#[derive(Clone)]
pub struct Held {
    pub bytes: Bytes,
    pub media_type: String,
}

pub struct LayoutSource {
    dir: PathBuf,
    manifests: BTreeMap<Digest, Held>,
}

impl LayoutSource {
    /// Open the layout at `dir` and plan its images: bad input (no or a wrong `oci-layout`,
    /// an unreadable `index.json`, an entry that cannot be named) is an error naming the
    /// file and entry; a missing or corrupt manifest fails its image in the plan.
    /// `repository` names the images whose `ref.name` is a bare tag or absent.
    pub fn open(dir: &Path, repository: Option<&str>) -> Result<(LayoutSource, Plan)> {
        let repository = repository.map(parse_repository).transpose()?;
        let (index_path, index) = read_index(dir)?;
        let mut source = LayoutSource {
            dir: dir.to_path_buf(),
            manifests: BTreeMap::new(),
        };
        let mut planner = Planner::default();
        let mut named: BTreeMap<String, (usize, Digest)> = BTreeMap::new();
        for (n, entry) in index.manifests.iter().enumerate() {
            let origin = format!("{}: manifests[{n}]", index_path.display());
            let reference = name_of(entry, repository.as_ref())
                .map_err(|e| anyhow::anyhow!("{origin} ({}): {e}", entry.digest))?;
            let key = reference.to_string();
            match named.get(&key) {
                Some((_, d)) if d == &entry.digest => continue,
                Some((m, d)) => bail!(
                    "{origin}: `{key}` names {} here and {d} in manifests[{m}]",
                    entry.digest
                ),
                None => {
                    named.insert(key.clone(), (n, entry.digest.clone()));
                }
            }
            let top = Descriptor {
                media_type: entry.media_type.clone(),
                digest: entry.digest.clone(),
                size: entry.size,
                platform: None,
            };
            let mut walk = Walk::default();
            match source.walk(&top, 0, &mut walk) {
                Ok(media_type) => planner.add(reference, &entry.digest, media_type, origin, walk),
                Err(error) => planner.plan.failures.push(PlanFailure {
                    reference: key,
                    origin,
                    error,
                    budget_spent: None,
                }),
            }
        }
        Ok((source, planner.finish()))
    }

    /// Where the layout keeps `digest`.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(layout::blob_path(digest))
    }

    /// A manifest read (and verified) when the layout was opened.
    pub fn manifest(&self, digest: &Digest) -> Option<&Held> {
        self.manifests.get(digest)
    }

    /// A blob's bytes as a stream for an upload, ending in an error unless they are `size`
    /// long and hash to `digest`; what went wrong, naming the file, is left in `failure`.
    pub fn blob(
        &self,
        digest: &Digest,
        size: u64,
        failure: &Arc<Mutex<Option<TransferError>>>,
    ) -> Result<ChunkStream, TransferError> {
        let path = self.path(digest);
        let fail = |why: String| {
            let error = TransferError::Layout {
                path: path.clone(),
                why,
            };
            *failure.lock().expect("failure lock") = Some(error.clone());
            error
        };
        if digest.algorithm() != "sha256" {
            return Err(fail(format!(
                "blob `{digest}`: only sha256 digests are supported"
            )));
        }
        let file = std::fs::File::open(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| fail(format!("cannot read: {e}")))?
            .len();
        if len != size {
            return Err(fail(format!(
                "blob `{digest}` is {len} bytes, its descriptor says {size}"
            )));
        }
        let file = tokio::fs::File::from_std(file);
        let raw = futures::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        let (body, verdict) = verified_body(digest.clone(), size, Box::pin(raw), None);
        // The verifier's word, with the file's name, once the body fails.
        let failure = failure.clone();
        Ok(Box::pin(futures::StreamExt::inspect(body, move |item| {
            if item.is_err() {
                if let Some(why) = verdict.lock().expect("verdict lock").clone() {
                    *failure.lock().expect("failure lock") = Some(TransferError::Layout {
                        path: path.clone(),
                        why,
                    });
                }
            }
        })))
    }

    /// Read, verify and keep the manifest `d` and, for an index, its children (to
    /// `MAX_DEPTH`); its media type.
    fn walk(&mut self, d: &Descriptor, depth: usize, walk: &mut Walk) -> Result<String, String> {
        let path = self.path(&d.digest);
        let held = match self.manifests.get(&d.digest) {
            Some(h) => h.clone(),
            None => {
                let held = self.read_manifest(d, &path)?;
                self.manifests.insert(d.digest.clone(), held.clone());
                held
            }
        };
        let parsed = Manifest::parse(&held.bytes, Some(&held.media_type))
            .map_err(|e| format!("{}: manifest `{}`: {e:#}", path.display(), d.digest))?;
        match parsed {
            Manifest::Index { manifests, .. } => {
                if depth >= MAX_DEPTH {
                    return Err(format!(
                        "{}: indexes nested more than {MAX_DEPTH} deep",
                        path.display()
                    ));
                }
                for child in &manifests {
                    if let Some(p) = &child.platform {
                        if depth == 0 {
                            walk.platforms.push(p.to_string());
                        }
                    }
                    if walk.seen.insert(child.digest.clone()) {
                        self.walk(child, depth + 1, walk)?;
                    }
                }
            }
            Manifest::Image { config, layers, .. } => {
                for blob in std::iter::once(config).chain(layers) {
                    if walk.blob_seen.insert(blob.digest.clone()) {
                        walk.blobs.push(blob);
                    }
                }
            }
        }
        // Post-order: every child is listed before the index that names it.
        walk.manifests
            .push((d.digest.clone(), held.media_type.clone(), d.size));
        Ok(held.media_type)
    }

    /// A manifest file, checked against its descriptor (size, sha256), with its media type
    /// (the one inside the bytes; `index.json` may name a Docker manifest by its OCI type).
    fn read_manifest(&self, d: &Descriptor, path: &Path) -> Result<Held, String> {
        let shown = path.display();
        if d.digest.algorithm() != "sha256" {
            return Err(format!(
                "{shown}: manifest `{}`: only sha256 digests are supported",
                d.digest
            ));
        }
        if d.size > MAX_MANIFEST {
            return Err(format!(
                "{shown}: manifest `{}` is {} bytes, more than a manifest can be",
                d.digest, d.size
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
        if bytes.len() as u64 != d.size {
            return Err(format!(
                "{shown}: manifest `{}` is {} bytes, its descriptor says {}",
                d.digest,
                bytes.len(),
                d.size
            ));
        }
        let actual = Digest::sha256_of(&bytes);
        if actual != d.digest {
            return Err(format!(
                "{shown}: manifest `{}`: its bytes hash to {actual}",
                d.digest
            ));
        }
        let hint = (!d.media_type.is_empty()).then_some(d.media_type.as_str());
        let media_type = Manifest::parse(&bytes, hint)
            .map_err(|e| format!("{shown}: manifest `{}`: {e:#}", d.digest))?
            .media_type()
            .to_string();
        Ok(Held {
            bytes: Bytes::from(bytes),
            media_type,
        })
    }
}

/// What one image's walk found.
#[derive(Default)]
struct Walk {
    /// (digest, media type, size), children before their index, the top last.
    manifests: Vec<(Digest, String, u64)>,
    seen: BTreeSet<Digest>,
    blobs: Vec<Descriptor>,
    blob_seen: BTreeSet<Digest>,
    platforms: Vec<String>,
}

/// `oci-layout` checked, then `index.json` read: its path and entries.
fn read_index(dir: &Path) -> Result<(PathBuf, IndexFile)> {
    let marker = dir.join(OCI_LAYOUT_FILE);
    let text = std::fs::read(&marker)
        .with_context(|| format!("{}: not an OCI image layout", marker.display()))?;
    let version: LayoutFile =
        serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{}: {e}", marker.display()))?;
    if !version.image_layout_version.starts_with("1.") {
        bail!(
            "{}: imageLayoutVersion `{}` is not 1.x",
            marker.display(),
            version.image_layout_version
        );
    }
    let path = dir.join("index.json");
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    let index = serde_path_to_error::deserialize(de)
        .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
    Ok((path, index))
}

/// The plan of a layout's images, built entry by entry.
#[derive(Default)]
struct Planner {
    plan: Plan,
    blobs: BTreeMap<Digest, PlannedBlob>,
    manifests: BTreeMap<(String, Digest), PlannedManifest>,
}

impl Planner {
    /// One image, from the walk of its top manifest `digest`.
    fn add(
        &mut self,
        source: Reference,
        digest: &Digest,
        media_type: String,
        origin: String,
        walk: Walk,
    ) {
        let repo_path = source.repo_path();
        for (d, media_type, size) in &walk.manifests {
            self.manifests
                .entry((repo_path.clone(), d.clone()))
                .or_insert_with(|| PlannedManifest {
                    repository: repo_path.clone(),
                    digest: d.clone(),
                    media_type: media_type.clone(),
                    size: *size,
                });
        }
        for d in &walk.blobs {
            self.blobs
                .entry(d.digest.clone())
                .or_insert_with(|| PlannedBlob {
                    digest: d.digest.clone(),
                    size: d.size,
                    media_type: d.media_type.clone(),
                    repositories: BTreeSet::new(),
                })
                .repositories
                .insert(repo_path.clone());
        }
        // The top first, then its children deepest first: pushed in that order, the top last.
        let mut manifests = vec![digest.clone()];
        manifests.extend(
            walk.manifests
                .into_iter()
                .map(|(d, _, _)| d)
                .filter(|d| d != digest),
        );
        self.plan.images.push(PlannedImage {
            source,
            digest: digest.clone(),
            media_type,
            origin,
            platforms: walk.platforms,
            manifests,
            bytes: walk.blobs.iter().map(|d| d.size).sum(),
            blobs: walk.blobs.into_iter().map(|d| d.digest).collect(),
        });
    }

    fn finish(mut self) -> Plan {
        self.plan.manifests = self.manifests.into_values().collect();
        self.plan.blobs = self.blobs.into_values().collect();
        self.plan
            .blobs
            .sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
        self.plan
    }
}

/// `--repository`: a source repository, `HOST/PATH` without a tag or digest.
fn parse_repository(text: &str) -> Result<Reference> {
    let r: Reference = text
        .parse()
        .with_context(|| format!("--repository `{text}`"))?;
    let last = text.rsplit('/').next().unwrap_or(text);
    if r.digest().is_some() || last.contains(':') || !has_host(text) {
        bail!("--repository `{text}`: give a source repository HOST/PATH, without tag or digest");
    }
    Ok(Reference::new(r.registry(), r.repository(), None, None))
}

/// Whether a reference names its registry host (`quay.io/…`, `localhost:5000/…`): only then
/// is a `ref.name` taken as a full reference rather than a tag.
fn has_host(text: &str) -> bool {
    text.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    })
}

/// The source reference of one `index.json` entry.
fn name_of(entry: &IndexDescriptor, repository: Option<&Reference>) -> Result<Reference, String> {
    let name = entry
        .annotations
        .get(REF_NAME)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    let tag = match name {
        Some(name) if has_host(name) => {
            let r: Reference = name.parse().map_err(|e| format!("{REF_NAME}: {e}"))?;
            return match r.digest() {
                Some(d) if d != &entry.digest => Err(format!(
                    "{REF_NAME} `{name}` names another digest than the entry's"
                )),
                _ => Ok(r),
            };
        }
        Some(name) => {
            let as_tag = format!("localhost/x:{name}").parse::<Reference>();
            if as_tag
                .ok()
                .and_then(|r| r.tag().map(str::to_string))
                .as_deref()
                != Some(name)
            {
                return Err(format!(
                    "{REF_NAME} `{name}` is neither a full reference (HOST/PATH[:TAG]) nor a tag"
                ));
            }
            Some(name)
        }
        None => None,
    };
    match repository {
        // Unnamed: by its digest only.
        Some(r) => Ok(Reference::new(
            r.registry(),
            r.repository(),
            tag,
            tag.is_none().then(|| entry.digest.clone()),
        )),
        None => Err(format!(
            "{}: give --repository HOST/PATH, the source repository of images named by a tag only or not at all",
            match tag {
                Some(t) => format!("{REF_NAME} `{t}` is a tag only"),
                None => format!("no {REF_NAME}"),
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A layout in a temp dir: `blobs` written under their digests, `index.json` of `entries`.
    struct Fixture {
        dir: PathBuf,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let dir = std::env::temp_dir().join(format!(
                "prewarm-layout-source-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
            std::fs::write(dir.join(OCI_LAYOUT_FILE), layout::OCI_LAYOUT).unwrap();
            Fixture { dir }
        }
        fn blob(&self, bytes: &[u8]) -> serde_json::Value {
            let d = Digest::sha256_of(bytes);
            std::fs::write(self.dir.join(layout::blob_path(&d)), bytes).unwrap();
            json!({"mediaType": "application/octet-stream", "digest": d, "size": bytes.len()})
        }
        fn manifest(&self, media_type: &str, body: serde_json::Value) -> serde_json::Value {
            let bytes = serde_json::to_vec(&body).unwrap();
            let mut d = self.blob(&bytes);
            d["mediaType"] = json!(media_type);
            d
        }
        fn index(&self, entries: Vec<serde_json::Value>) {
            let index = json!({"schemaVersion": 2, "manifests": entries});
            std::fs::write(
                self.dir.join("index.json"),
                serde_json::to_vec(&index).unwrap(),
            )
            .unwrap();
        }
        fn named(d: &serde_json::Value, name: &str) -> serde_json::Value {
            let mut d = d.clone();
            d["annotations"] = json!({ REF_NAME: name });
            d
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn image(f: &Fixture, layer: &[u8]) -> serde_json::Value {
        use crate::registry::manifest::OCI_MANIFEST;
        let config = f.blob(format!("config of {}", layer.len()).as_bytes());
        let layer = f.blob(layer);
        f.manifest(
            OCI_MANIFEST,
            json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
        )
    }

    #[test]
    fn nested_indexes_are_followed_children_first() {
        use crate::registry::manifest::OCI_INDEX;
        let f = Fixture::new("nested");
        let (a, b) = (image(&f, b"layer a"), image(&f, b"layer bb"));
        let inner = f.manifest(OCI_INDEX, json!({"schemaVersion": 2, "manifests": [a, b]}));
        let outer = f.manifest(OCI_INDEX, json!({"schemaVersion": 2, "manifests": [inner]}));
        f.index(vec![
            Fixture::named(&outer, "quay.io/acme/app:1.0"),
            Fixture::named(&a, "v1"),
        ]);
        let (source, plan) = LayoutSource::open(&f.dir, Some("quay.io/acme/other")).unwrap();
        assert!(plan.failures.is_empty(), "{:?}", plan.failures);
        let digest =
            |v: &serde_json::Value| -> Digest { v["digest"].as_str().unwrap().parse().unwrap() };
        let top = &plan.images[0];
        assert_eq!(top.source.to_string(), "quay.io/acme/app:1.0");
        assert_eq!(
            top.manifests,
            vec![digest(&outer), digest(&a), digest(&b), digest(&inner)]
        );
        assert_eq!(top.blobs.len(), 4);
        assert_eq!(top.media_type, OCI_INDEX);
        let tagged = &plan.images[1];
        assert_eq!(tagged.source.to_string(), "quay.io/acme/other:v1");
        assert_eq!(tagged.manifests, vec![digest(&a)]);
        assert_eq!(plan.blobs.len(), 4);
        assert!(source.manifest(&digest(&inner)).is_some());
    }

    #[test]
    fn naming_needs_a_full_reference_or_repository() {
        let f = Fixture::new("naming");
        let a = image(&f, b"layer");
        f.index(vec![Fixture::named(&a, "latest")]);
        let e = LayoutSource::open(&f.dir, None).err().unwrap().to_string();
        assert!(
            e.contains("manifests[0]") && e.contains("--repository"),
            "{e}"
        );
        let e = LayoutSource::open(&f.dir, Some("quay.io/acme/app:1"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("without tag or digest"), "{e}");
        // Unnamed: by digest only.
        f.index(vec![a.clone()]);
        let (_, plan) = LayoutSource::open(&f.dir, Some("quay.io/acme/app")).unwrap();
        assert_eq!(plan.images[0].source.tag(), None);
        assert_eq!(
            plan.images[0].source.digest().map(|d| d.to_string()),
            a["digest"].as_str().map(str::to_string)
        );
        // Two names for one reference.
        let b = image(&f, b"other layer");
        f.index(vec![Fixture::named(&a, "x"), Fixture::named(&b, "x")]);
        let e = LayoutSource::open(&f.dir, Some("quay.io/acme/app"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("manifests[0]"), "{e}");
    }

    #[tokio::test]
    async fn blob_bodies_are_verified_and_name_their_file() {
        use futures::StreamExt;
        let f = Fixture::new("blobs");
        let a = image(&f, b"layer a");
        f.index(vec![Fixture::named(&a, "quay.io/acme/a:1")]);
        let (source, _) = LayoutSource::open(&f.dir, None).unwrap();
        let bytes = b"some layer bytes".repeat(1000);
        let d: Digest = f.blob(&bytes)["digest"].as_str().unwrap().parse().unwrap();
        let path = source.path(&d).display().to_string();
        let (source, d) = (&source, &d);
        let read = |size: u64| async move {
            let failure = Arc::new(Mutex::new(None));
            let body = match source.blob(d, size, &failure) {
                Ok(body) => body,
                Err(e) => return (Vec::new(), Some(e.to_string())),
            };
            let chunks: Vec<_> = body.collect().await;
            let ok: Vec<u8> = chunks.iter().flatten().flatten().copied().collect();
            let why = failure.lock().unwrap().clone();
            (ok, why.map(|e: TransferError| e.to_string()))
        };
        let (got, why) = read(bytes.len() as u64).await;
        assert_eq!((got, why), (bytes.clone(), None));
        let (_, why) = read(5).await;
        assert!(why.unwrap().starts_with(&path));
        // One bit flipped: the stream ends in an error naming the file, short of its end.
        let mut bad = bytes.clone();
        bad[7] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let (got, why) = read(bytes.len() as u64).await;
        assert!(got.len() < bytes.len());
        let why = why.unwrap();
        assert!(
            why.starts_with(&path) && why.contains("digest mismatch"),
            "{why}"
        );
        std::fs::remove_file(&path).unwrap();
        let (_, why) = read(bytes.len() as u64).await;
        assert!(why.unwrap().contains("cannot read"));
    }

    #[test]
    fn a_missing_or_corrupt_manifest_fails_only_its_image_naming_the_file() {
        let f = Fixture::new("corrupt");
        let (a, b) = (image(&f, b"layer a"), image(&f, b"layer b"));
        f.index(vec![
            Fixture::named(&a, "quay.io/acme/a:1"),
            Fixture::named(&b, "quay.io/acme/b:1"),
        ]);
        let b_digest: Digest = b["digest"].as_str().unwrap().parse().unwrap();
        let path = f.dir.join(layout::blob_path(&b_digest));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let (_, plan) = LayoutSource::open(&f.dir, None).unwrap();
        assert_eq!(plan.images.len(), 1);
        assert_eq!(plan.failures.len(), 1);
        assert_eq!(plan.failures[0].reference, "quay.io/acme/b:1");
        assert!(plan.failures[0].error.contains(&path.display().to_string()));
        std::fs::remove_file(&path).unwrap();
        let (_, plan) = LayoutSource::open(&f.dir, None).unwrap();
        assert!(
            plan.failures[0].error.contains("cannot read"),
            "{:?}",
            plan.failures
        );
    }
}
