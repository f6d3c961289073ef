//! Building an image on top of another without pulling it: new gzip tar layers made
//! deterministically (sorted entries, mtime 0, uid/gid 0, no gzip timestamp), so the same
//! content gives the same digests on every run; the base's manifest and config extended with
//! them into a [`Built`] image in memory, which any sink takes: [`push`] puts it into a
//! registry, the base's layers never moved (they are at the destination already, or mounted
//! from where they are); export carries it in a bundle beside the planned images.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::reference::Digest;
use crate::registry::manifest::Manifest;
use crate::registry::{ChunkStream, RegistryClient};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A compressed layer and its uncompressed digest (the config's `diff_id`).
#[derive(Debug, Clone)]
pub struct Layer {
    pub bytes: Bytes,
    pub digest: Digest,
    pub diff_id: Digest,
}

/// What goes into a layer: a directory, or a file with its mode.
#[derive(Debug, Clone)]
pub enum TarEntry {
    Dir(String),
    File(String, Vec<u8>, u32),
}

/// A gzip tar layer of `entries`, in the order given.
pub fn layer(entries: &[TarEntry]) -> Result<Layer> {
    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            TarEntry::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(
                    &mut h,
                    format!("{}/", path.trim_end_matches('/')),
                    std::io::empty(),
                )?;
            }
            TarEntry::File(path, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, data.as_slice())?;
            }
        }
    }
    let raw = tar.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)?;
    let bytes = Bytes::from(gz.finish()?);
    Ok(Layer {
        digest: Digest::sha256_of(&bytes),
        diff_id: Digest::sha256_of(&raw),
        bytes,
    })
}

/// The entries of `files` (paths relative to `root`, a directory inside the image) with every
/// parent directory before them, sorted.
pub fn tree(root: &str, files: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<TarEntry> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let mut add_dirs = |path: &str, out: &mut Vec<TarEntry>| {
        let mut acc = String::new();
        for part in path.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if dirs.insert(acc.clone()) {
                out.push(TarEntry::Dir(acc.clone()));
            }
        }
    };
    add_dirs(root, &mut out);
    for (rel, data) in files {
        let path = format!("{root}/{rel}");
        if let Some((parent, _)) = path.rsplit_once('/') {
            add_dirs(parent, &mut out);
        }
        out.push(TarEntry::File(path, data.clone(), 0o644));
    }
    out
}

/// A layer that deletes `path` (and everything under it) from the layers below: its parent
/// directory holding `.wh.<name>`.
pub fn whiteout(path: &str) -> Result<Layer> {
    let path = path.trim_matches('/');
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, path),
    };
    let mut entries = Vec::new();
    if let Some(p) = parent {
        entries.push(TarEntry::Dir(p.to_string()));
    }
    let wh = match parent {
        Some(p) => format!("{p}/.wh.{name}"),
        None => format!(".wh.{name}"),
    };
    entries.push(TarEntry::File(wh, Vec::new(), 0o644));
    layer(&entries)
}

/// An image manifest and config extended with `layers` on top; `cmd` replaces the config's
/// `Cmd`. Returns (config bytes, manifest bytes, manifest media type).
pub fn extend(
    manifest: &[u8],
    config: &[u8],
    layers: &[&Layer],
    cmd: Option<&[&str]>,
    created_by: &str,
) -> Result<(Bytes, Bytes, String)> {
    let mut m: Value = serde_json::from_slice(manifest).context("base manifest")?;
    let mut c: Value = serde_json::from_slice(config).context("base config")?;
    let media_type = m
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    if m.get("layers").and_then(Value::as_array).is_none() {
        bail!("base manifest ({media_type}) is not an image manifest");
    }
    let layer_type = if media_type == DOCKER_MANIFEST {
        DOCKER_LAYER
    } else {
        OCI_LAYER
    };
    let Some(diff_ids) = c
        .pointer_mut("/rootfs/diff_ids")
        .and_then(Value::as_array_mut)
    else {
        bail!("base config has no rootfs.diff_ids");
    };
    for l in layers {
        diff_ids.push(json!(l.diff_id.as_str()));
    }
    if let Some(history) = c.get_mut("history").and_then(Value::as_array_mut) {
        for _ in layers {
            history.push(json!({ "created_by": created_by }));
        }
    }
    if let Some(cmd) = cmd {
        if !c.get("config").is_some_and(Value::is_object) {
            c["config"] = json!({});
        }
        c["config"]["Cmd"] = json!(cmd);
    }
    let config = Bytes::from(serde_json::to_vec(&c)?);
    m["config"]["digest"] = json!(Digest::sha256_of(&config).as_str());
    m["config"]["size"] = json!(config.len());
    let list = m["layers"].as_array_mut().expect("checked above");
    for l in layers {
        list.push(json!({
            "mediaType": layer_type,
            "digest": l.digest.as_str(),
            "size": l.bytes.len(),
        }));
    }
    Ok((
        config,
        Bytes::from(serde_json::to_vec_pretty(&m)?),
        media_type,
    ))
}

fn one_chunk(bytes: Bytes) -> ChunkStream {
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

/// Push one in-memory blob into `repository` (nothing when it is there).
pub async fn push_bytes(client: &RegistryClient, repository: &str, bytes: &Bytes) -> Result<()> {
    let digest = Digest::sha256_of(bytes);
    let body = bytes.clone();
    client
        .push_blob(repository, &digest, bytes.len() as u64, None, move || {
            let body = body.clone();
            async move { Ok(one_chunk(body)) }
        })
        .await
        .with_context(|| format!("blob {digest} into `{}/{repository}`", client.host()))?;
    Ok(())
}

/// A base image (a manifest or an index, every platform) with `added` layers on top of each
/// platform's image and `cmd` as its command, built in memory.
pub struct OnTop<'a> {
    /// Where the base is read from.
    pub source: &'a RegistryClient,
    pub from: &'a str,
    pub top: &'a Digest,
    pub added: &'a [Layer],
    pub cmd: &'a [&'a str],
    pub created_by: &'a str,
}

/// An image built on top of a base, not yet anywhere: its manifests and the blobs it adds; the
/// base's layers it reuses stay where they are. Any sink takes it: a registry ([`push`]), a
/// bundle (export carries it like a planned image).
#[derive(Debug, Clone)]
pub struct Built {
    pub top: Digest,
    pub media_type: String,
    /// Digest, media type and bytes of every manifest: each platform's, then the top (the
    /// same as the last one for a single-platform image).
    pub manifests: Vec<(Digest, String, Bytes)>,
    /// The blobs it adds (new layers and configs) with their media types, once each.
    pub blobs: Vec<(Digest, String, Bytes)>,
    /// The base's layers it reuses (digest, size, media type), once each.
    pub base: Vec<(Digest, u64, String)>,
}

impl Built {
    /// Config and layer digests of every platform: the base's, then the added ones.
    pub fn blob_digests(&self) -> Vec<Digest> {
        self.base
            .iter()
            .map(|(d, _, _)| d.clone())
            .chain(self.blobs.iter().map(|(d, _, _)| d.clone()))
            .collect()
    }
}

/// Build in memory; nothing is written anywhere.
pub async fn build_on_top(o: &OnTop<'_>) -> Result<Built> {
    let top = o.source.get_manifest(o.from, o.top.as_str()).await?;
    let mut built = Built {
        top: o.top.clone(),
        media_type: String::new(),
        manifests: Vec::new(),
        blobs: Vec::new(),
        base: Vec::new(),
    };
    let (bytes, media_type) = match Manifest::parse(&top.bytes, Some(&top.media_type))? {
        Manifest::Image { .. } => child(o, &top.bytes, &mut built).await?,
        Manifest::Index { media_type, .. } => {
            let mut index: Value = serde_json::from_slice(&top.bytes)?;
            let mut kept = Vec::new();
            for d in index["manifests"].as_array().cloned().unwrap_or_default() {
                // Attestations describe the base's digests: they do not carry over.
                if d.pointer("/platform/os").and_then(Value::as_str) == Some("unknown") {
                    continue;
                }
                let digest = d["digest"].as_str().unwrap_or("");
                let fetched = o.source.get_manifest(o.from, digest).await?;
                let (bytes, child_type) = child(o, &fetched.bytes, &mut built).await?;
                let new = Digest::sha256_of(&bytes);
                built
                    .manifests
                    .push((new.clone(), child_type, bytes.clone()));
                let mut d = d.clone();
                d["digest"] = Value::from(new.as_str());
                d["size"] = Value::from(bytes.len());
                kept.push(d);
            }
            index["manifests"] = Value::Array(kept);
            (Bytes::from(serde_json::to_vec_pretty(&index)?), media_type)
        }
    };
    built.top = Digest::sha256_of(&bytes);
    built.media_type = media_type.clone();
    built.manifests.push((built.top.clone(), media_type, bytes));
    Ok(built)
}

/// One platform's image with the added layers; its new blobs and reused layers recorded in
/// `built`. Returns the new manifest's bytes and media type.
async fn child(o: &OnTop<'_>, manifest: &[u8], built: &mut Built) -> Result<(Bytes, String)> {
    let Manifest::Image { config, layers, .. } = Manifest::parse(manifest, None)? else {
        bail!("nested index in `{}`", o.from);
    };
    let mut sink = crate::sources::layers::MemorySink::default();
    o.source
        .fetch_blob(o.from, &config.digest, &mut sink, &|_| {})
        .await?;
    let added: Vec<&Layer> = o.added.iter().collect();
    let (new_config, bytes, media_type) =
        extend(manifest, &sink.0, &added, Some(o.cmd), o.created_by)?;
    for l in layers {
        if !built.base.iter().any(|(d, _, _)| d == &l.digest) {
            built.base.push((l.digest, l.size, l.media_type));
        }
    }
    let layer_type = if media_type == DOCKER_MANIFEST {
        DOCKER_LAYER
    } else {
        OCI_LAYER
    };
    let new = o
        .added
        .iter()
        .map(|l| (layer_type, &l.bytes))
        .chain([(config.media_type.as_str(), &new_config)]);
    for (blob_type, b) in new {
        let digest = Digest::sha256_of(b);
        if !built.blobs.iter().any(|(d, _, _)| d == &digest) {
            built.blobs.push((digest, blob_type.to_string(), b.clone()));
        }
    }
    Ok((bytes, media_type))
}

/// Push a built image into `repository` of `target`: the base's layers (proven there by a
/// HEAD, else mounted from `base_at`, the repository of `target` holding the base, else read
/// from there and uploaded — a mount is refused between a proxy org and a regular one), its new
/// blobs, its manifests by digest, the top under `tag`. Returns the top's digest.
pub async fn push(
    built: &Built,
    target: &Arc<RegistryClient>,
    repository: &str,
    tag: &str,
    base_at: &str,
) -> Result<Digest> {
    for (digest, size, _) in &built.base {
        target
            .push_blob(repository, digest, *size, Some(base_at), || async {
                Ok(crate::transfer::remote::resumable_body(
                    target.clone(),
                    base_at.to_string(),
                    digest.clone(),
                    *size,
                ))
            })
            .await
            .with_context(|| {
                format!(
                    "base layer {digest} from `{base_at}` into `{}/{repository}`",
                    target.host()
                )
            })?;
    }
    for (_, _, b) in &built.blobs {
        push_bytes(target, repository, b).await?;
    }
    for (digest, media_type, bytes) in &built.manifests {
        target
            .put_manifest(repository, digest.as_str(), media_type, bytes.clone())
            .await?;
    }
    target
        .put_manifest(
            repository,
            tag,
            &built.media_type,
            built.manifests.last().expect("the top").2.clone(),
        )
        .await?;
    Ok(built.top.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_deterministic_and_readable() {
        let files = [("a/b.json".to_string(), b"{}".to_vec())].into();
        let one = layer(&tree("configs", &files)).unwrap();
        let two = layer(&tree("configs", &files)).unwrap();
        assert_eq!(one.digest, two.digest);
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&one.bytes[..]));
        for e in ar.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(names, ["configs/", "configs/a/", "configs/a/b.json"]);
        let wh = whiteout("configs").unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&wh.bytes[..]));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, [".wh.configs"]);
    }

    #[test]
    fn extend_adds_layers_diff_ids_and_cmd() {
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Labels":{"x":"y"},"Entrypoint":["/bin/opm"],"Cmd":["serve","/configs","--cache-dir=/tmp/cache"]},"rootfs":{"type":"layers","diff_ids":["sha256:00"]},"history":[{"created_by":"base"}]}"#;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{}","size":1}},"layers":[{{"mediaType":"{DOCKER_LAYER}","digest":"sha256:{}","size":1}}]}}"#,
            "1".repeat(64),
            "2".repeat(64)
        );
        let l = layer(&[TarEntry::File("f".into(), b"x".to_vec(), 0o644)]).unwrap();
        let (c, m, mt) = extend(
            manifest.as_bytes(),
            config,
            &[&l],
            Some(&["serve", "/configs"]),
            "t",
        )
        .unwrap();
        assert_eq!(mt, DOCKER_MANIFEST);
        let c: Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(c["config"]["Cmd"], json!(["serve", "/configs"]));
        assert_eq!(c["config"]["Labels"]["x"], "y");
        assert_eq!(c["rootfs"]["diff_ids"][1], l.diff_id.as_str());
        assert_eq!(c["history"].as_array().unwrap().len(), 2);
        let m: Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(m["layers"][1]["digest"], l.digest.as_str());
        assert_eq!(m["layers"][1]["mediaType"], DOCKER_LAYER);
    }
}
