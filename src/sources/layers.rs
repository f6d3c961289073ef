//! Reading inside images without holding them: resolve an image to one platform's manifest,
//! read its (small) config, and stream a layer through a tar reader on a blocking thread.
//!
//! A layer is fetched with [`RegistryClient::fetch_blob`] (retries, Range resume, digest
//! verification) into a [`BlobSink`] that hands each chunk over a bounded channel to a
//! blocking thread running gzip/zstd/plain detection and the `tar` crate. At most
//! [`CHANNEL_CHUNKS`] chunks are in flight, so a layer of any size costs a few MiB. What the
//! visitor found is only returned once the whole blob has been read and its digest checked.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use anyhow::{bail, Context, Result};

use crate::job::{Job, ResolveVia};
use crate::reference::{Digest, Reference};
use crate::registry::manifest::{is_index, Descriptor, Manifest};
use crate::registry::{BlobSink, Registries, RegistryClient, RegistryError};

/// Chunks buffered between the network and the tar reader.
const CHANNEL_CHUNKS: usize = 16;

/// Configs are small JSON documents; a bigger one is not an image config.
const MAX_CONFIG: usize = 8 << 20;

/// One platform's image, resolved: the top digest (what the plan keeps) and the image
/// manifest whose layers are read.
pub struct ResolvedImage {
    pub client: std::sync::Arc<RegistryClient>,
    pub repository: String,
    pub top: Digest,
    pub top_is_index: bool,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Resolve `source` against its registry; for an index pick the first wanted platform.
pub async fn resolve(
    job: &Job,
    registries: &Registries,
    source: &Reference,
) -> Result<ResolvedImage> {
    // Read where the plan reads: the source, or the cache for sites that only reach it.
    let via = match job.resolve {
        ResolveVia::Source => source.clone(),
        ResolveVia::Cache => job.cache()?.cache_reference(source),
    };
    let client = registries.client(via.registry())?;
    let repository = via.repository().to_string();
    let top = client
        .get_manifest(&repository, &source.manifest_key())
        .await?;
    let mut manifest = Manifest::parse(&top.bytes, Some(&top.media_type))
        .with_context(|| format!("manifest of `{source}`"))?;
    let top_is_index = matches!(manifest, Manifest::Index { .. });
    if let Manifest::Index { manifests, .. } = &manifest {
        let child = manifests
            .iter()
            .find(|m| {
                !is_index(&m.media_type)
                    && m.platform.as_ref().is_some_and(|p| {
                        p.os != "unknown"
                            && job
                                .platforms
                                .wants(&p.os, &p.architecture, p.variant.as_deref())
                    })
            })
            .with_context(|| format!("`{source}`: no image for the wanted platforms"))?;
        let fetched = client
            .get_manifest(&repository, child.digest.as_str())
            .await?;
        manifest = Manifest::parse(&fetched.bytes, Some(&fetched.media_type))
            .with_context(|| format!("manifest `{}@{}`", source.repo_path(), child.digest))?;
    }
    let Manifest::Image { config, layers, .. } = manifest else {
        bail!("`{source}`: nested index");
    };
    let mut sink = MemorySink::default();
    client
        .fetch_blob(&repository, &config.digest, &mut sink, &|_| {})
        .await?;
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        config: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "Labels", default)]
        labels: Option<std::collections::BTreeMap<String, String>>,
    }
    let parsed: Config = serde_json::from_slice(&sink.0).with_context(|| {
        format!(
            "`{source}`: config {} is not an image config",
            config.digest
        )
    })?;
    Ok(ResolvedImage {
        client,
        repository,
        top: top.digest,
        top_is_index,
        config,
        layers,
        labels: parsed.config.and_then(|c| c.labels).unwrap_or_default(),
    })
}

/// A small blob (an image config) in memory; more than 8 MiB is refused.
#[derive(Default)]
pub(crate) struct MemorySink(pub(crate) Vec<u8>);

impl BlobSink for MemorySink {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.0.len() + chunk.len() > MAX_CONFIG {
            return Err(std::io::Error::other("config larger than 8 MiB"));
        }
        self.0.extend_from_slice(chunk);
        Ok(())
    }
    fn restart(&mut self) -> std::io::Result<()> {
        self.0.clear();
        Ok(())
    }
}

/// The layer reader took no more bytes (it gave up on a bad archive, or was closed): a
/// fetch failing with this is a consequence, and the reader's own error is the one to tell.
#[derive(Debug)]
struct ReaderGone;

impl std::fmt::Display for ReaderGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("layer reader stopped")
    }
}

impl std::error::Error for ReaderGone {}

/// Whether a fetch failed only because the layer reader stopped taking its bytes.
fn reader_gone(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Write { source, .. }
        if source.get_ref().is_some_and(|inner| inner.is::<ReaderGone>()))
}

/// Feeds chunks to the reader thread; blocks while the reader is [`CHANNEL_CHUNKS`] behind.
struct ChannelSink(Option<SyncSender<Vec<u8>>>);

impl BlobSink for ChannelSink {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let tx = self
            .0
            .as_ref()
            .ok_or_else(|| std::io::Error::other(ReaderGone))?;
        tx.send(chunk.to_vec())
            .map_err(|_| std::io::Error::other(ReaderGone))
    }
    fn restart(&mut self) -> std::io::Result<()> {
        // The tar reader has consumed what it was given; a restart from byte 0 would feed
        // it the start again. The caller retries the whole layer instead.
        Err(std::io::Error::other(
            "the registry could not resume the layer",
        ))
    }
}

struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The decompressed tar stream of a layer: gzip and zstd are recognised by their magic
/// bytes (media types lie often enough), anything else is read as a plain tar.
pub fn decompress<R: Read + Send + 'static>(r: R) -> std::io::Result<Box<dyn Read + Send>> {
    let mut r = BufReader::with_capacity(64 << 10, r);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// A layer entry's path without a leading `./` or `/`.
pub fn entry_path(entry: &tar::Entry<'_, impl Read>) -> std::io::Result<String> {
    let p = entry.path()?;
    let s = p.to_string_lossy();
    Ok(s.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string())
}

/// Stream layer `layer` of `repository` through `visit` (run on a blocking thread with the
/// layer's tar archive). The result is returned only when the whole blob was read and its
/// digest verified; the rest of the archive is drained after `visit` returns.
pub async fn with_layer<T, F>(
    client: &RegistryClient,
    repository: &str,
    layer: &Digest,
    visit: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut tar::Archive<Box<dyn Read + Send>>) -> Result<T> + Send + 'static,
{
    let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let reader = ChannelReader {
        rx,
        buf: Vec::new(),
        pos: 0,
    };
    let worker = tokio::task::spawn_blocking(move || -> Result<T> {
        let mut archive = tar::Archive::new(decompress(reader)?);
        let found = visit(&mut archive);
        // Keep reading so the whole blob is hashed (and the sender never blocks forever).
        let mut rest = archive.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink())?;
        found
    });
    let mut sink = ChannelSink(Some(tx));
    let fetched = client
        .fetch_blob(repository, layer, &mut sink, &|_| {})
        .await;
    // Closing the channel ends the reader's input.
    drop(sink);
    let found = worker.await.context("layer reader panicked")?;
    match (fetched, found) {
        (Ok(_), Ok(v)) => Ok(v),
        (Ok(_), Err(e)) => Err(e.context(format!("layer {layer}"))),
        // The reader gave up first (bad archive): its error is the one that explains.
        (Err(e), Err(v)) if reader_gone(&e) => Err(v.context(format!("layer {layer}"))),
        (Err(e), _) => Err(anyhow::Error::new(e).context(format!("layer {layer}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_reader_is_told_by_type_not_by_text() {
        let write = |e: std::io::Error| RegistryError::Write {
            what: "blob".into(),
            source: std::sync::Arc::new(e),
        };
        let mut sink = ChannelSink(None);
        let gone = sink.write(b"x").unwrap_err();
        assert!(reader_gone(&write(gone)));
        // The same words from elsewhere (a disk, a proxy) are not the reader stopping.
        assert!(!reader_gone(&write(std::io::Error::other(
            "layer reader stopped"
        ))));
        assert!(!reader_gone(&RegistryError::BodySpent {
            what: "layer reader".into()
        }));
    }
}
