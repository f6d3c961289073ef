//! Lab content seeder: pushes deterministic, OpenShift-shaped images with real digests into
//! the local upstream registries that stand in for quay.io and registry.redhat.io.
//!
//! Tests and benchmarks need content that looks like what prewarm meets in the field —
//! component images pushed by digest only, base layers shared across dozens of images, Docker
//! schema2 beside OCI, gzip beside zstd and plain tar, multi-arch indexes — and whose digests
//! are known exactly, so a test can say precisely what a cache must hold afterwards.
//!
//! Everything is built from seeded pseudo-random bytes (they neither compress away nor change
//! between runs: the same [`SeedOptions`] give the same digests every time), serialised once,
//! and pushed as those exact bytes with oci-client. The digest recorded for a manifest is the
//! sha256 of the bytes sent, never of a re-serialisation.
//!
//! The building blocks ([`tar_layer`], [`ImageSpec`], [`build_image`], [`Pusher`]) are public
//! so that later content (release images carrying `release-manifests/`, catalog index images,
//! re-tagging a tag to new content) can be added without touching this module's internals.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, ensure, Context, Result};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

/// Docker v2 schema2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 manifest list (the Docker multi-arch index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config blob.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer (accepted by containers/image; rare in the field).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config blob.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Where the seeded component images live on the quay stand-in (as in real OCP releases).
pub const COMPONENT_REPOSITORY: &str = "openshift-release-dev/ocp-v4.0-art-dev";

/// Bumped whenever generated content changes, so a cached large layer file from an older
/// generator is never reused under a name that promises the new content.
const GENERATOR_VERSION: u32 = 1;

/// Images pushed at once: enough to hide loopback latency, few enough not to swamp a
/// two-core machine that also runs the registries.
const PUSH_CONCURRENCY: usize = 8;

/// Read size when streaming a file-backed blob: large enough to keep syscalls rare, small
/// enough that a 1 GiB layer never sits in memory.
const STREAM_CHUNK: usize = 1 << 20;

/// Fixed creation time: a real timestamp would change every digest on every run.
const EPOCH: &str = "1970-01-01T00:00:00Z";

const KIB: usize = 1024;

/// OCP component names (real ones), one component image each.
const COMPONENTS: [&str; 36] = [
    "cli",
    "cluster-version-operator",
    "etcd",
    "hyperkube",
    "machine-config-operator",
    "cluster-kube-apiserver-operator",
    "cluster-network-operator",
    "ovn-kubernetes",
    "coredns",
    "haproxy-router",
    "oauth-server",
    "console",
    "console-operator",
    "cluster-monitoring-operator",
    "prometheus",
    "prometheus-operator",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "kube-state-metrics",
    "cluster-ingress-operator",
    "cluster-dns-operator",
    "cluster-authentication-operator",
    "cluster-etcd-operator",
    "cluster-kube-controller-manager-operator",
    "cluster-kube-scheduler-operator",
    "cluster-openshift-apiserver-operator",
    "openshift-apiserver",
    "cluster-image-registry-operator",
    "docker-registry",
    "installer",
    "must-gather",
    "tools",
    "pod",
    "cli-artifacts",
    "multus-cni",
    "insights-operator",
];

/// How much content to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Small (~10 MiB unique): every integration test seeds this, so it must stay fast.
    Test,
    /// The same shapes with layers about 8× larger, for benchmarks.
    Bench,
}

impl Scale {
    fn factor(self) -> usize {
        match self {
            Scale::Test => 1,
            Scale::Bench => 8,
        }
    }
}

/// What [`seed`] generates.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Size of every generated layer.
    pub scale: Scale,
    /// Adds one component image ("big-layer") whose own layer is an uncompressed tar of about
    /// this many bytes, written to and streamed from a file under `work_dir` so it is never held
    /// in memory. Honoured at either scale (a test may use a few MiB to cover the file path).
    pub large_layer_bytes: Option<u64>,
    /// Scratch directory for file-backed blobs; the large layer file is kept there and reused by
    /// later runs with the same options (it is deterministic, and regenerating 1 GiB is slow).
    pub work_dir: PathBuf,
}

/// Where and how to push: `host` is the logical name recorded in references (e.g. "quay.io"),
/// `endpoint` the real "127.0.0.1:PORT".
///
/// The split lets the lab publish content that users and job files name by its real host while
/// the bytes go to a loopback registry.
#[derive(Clone)]
pub struct Target {
    /// Logical registry host written into [`SeededImage::reference`].
    pub host: String,
    /// `HOST:PORT` actually contacted.
    pub endpoint: String,
    /// Use TLS (otherwise plain HTTP).
    pub https: bool,
    /// Extra trusted CA (PEM) for a test CA; system roots are trusted as well.
    pub ca_pem: Option<Vec<u8>>,
    /// Basic-auth user and password; `None` pushes anonymously.
    pub credentials: Option<(String, String)>,
}

/// Redacts the password: targets end up in test logs and error messages.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("endpoint", &self.endpoint)
            .field("https", &self.https)
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .finish()
    }
}

/// One image as pushed, with everything a test needs to check a cache or a mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeededImage {
    /// Logical reference as a user writes it:
    /// "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:…" or
    /// "registry.redhat.io/ubi9/ubi:latest".
    pub reference: String,
    /// Repository path without host, e.g. "openshift-release-dev/ocp-v4.0-art-dev".
    pub repository: String,
    /// "sha256:…" of the top manifest bytes.
    pub digest: String,
    /// Media type of the top manifest.
    pub media_type: String,
    /// "linux/amd64", … (one entry for a single-arch image).
    pub platforms: Vec<String>,
    /// Every manifest pushed for it, top first, then children: (digest, media type, size).
    pub manifests: Vec<(String, String, u64)>,
    /// Every config and layer blob of every platform, each once: (digest, size).
    pub blobs: Vec<(String, u64)>,
    /// The config and layer blobs of each platform: "os/arch[/variant]" → (digest, size).
    pub platform_blobs: BTreeMap<String, Vec<(String, u64)>>,
}

impl SeededImage {
    /// The blobs a client keeping `platforms` pulls: all of a single-platform image (its
    /// platform is not asked), the wanted children's of an index.
    pub fn blobs_for(&self, platforms: &[&str]) -> BTreeMap<String, u64> {
        let single = self.manifests.len() == 1;
        self.platform_blobs
            .iter()
            .filter(|(p, _)| single || platforms.contains(&p.as_str()))
            .flat_map(|(_, blobs)| blobs.iter().cloned())
            .collect()
    }
}

/// Everything [`seed`] pushed, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    /// The seeded images, quay stand-in first.
    pub images: Vec<SeededImage>,
}

impl Seed {
    /// Every distinct blob across all images with its size: what a complete cache must hold.
    pub fn unique_blobs(&self) -> BTreeMap<String, u64> {
        self.images
            .iter()
            .flat_map(|image| image.blobs.iter().cloned())
            .collect()
    }

    /// The logical references of all images, in seeding order.
    pub fn references(&self) -> Vec<String> {
        self.images
            .iter()
            .map(|image| image.reference.clone())
            .collect()
    }

    /// One reference per line with a header comment: the "image list file" format (`#`
    /// comments allowed), so tests can feed the seed straight to prewarm.
    pub fn write_list(&self, path: &Path) -> Result<()> {
        let unique = self.unique_blobs();
        let mut text = format!(
            "# prewarm lab seed: {} images, {} unique blobs, {} bytes\n\
             # one image reference per line; lines starting with # are comments\n",
            self.images.len(),
            unique.len(),
            unique.values().sum::<u64>()
        );
        for reference in self.references() {
            text.push_str(&reference);
            text.push('\n');
        }
        fs::write(path, text).with_context(|| format!("writing image list `{}`", path.display()))
    }

    /// The whole seed as pretty JSON, for tests in other processes and for humans.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        fs::write(path, json).with_context(|| format!("writing seed JSON `{}`", path.display()))
    }
}

/// How a layer tar is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar: the blob digest equals the diff_id.
    None,
    /// gzip via flate2, fast level (random bytes don't shrink anyway).
    Gzip,
    /// zstd level 1.
    Zstd,
}

/// Manifest family of an image or index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Docker v2 schema2 manifest / manifest list.
    Docker,
    /// OCI image manifest / image index.
    Oci,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobData {
    /// Small blobs: cheap to clone (`Bytes` is reference counted).
    Memory(Bytes),
    /// Large blobs: streamed from this file when pushed.
    File(PathBuf),
}

/// A config or layer blob, ready to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// "sha256:…" of the stored (compressed) bytes.
    pub digest: String,
    /// For layers the OCI media type; [`build_image`] maps it to the Docker one for Docker
    /// images, so one blob can serve both kinds of manifest (as in real registries).
    pub media_type: String,
    /// Size of the stored bytes.
    pub size: u64,
    /// The bytes, in memory or in a file.
    pub data: BlobData,
    /// "sha256:…" of the uncompressed tar, for layers; `None` for configs.
    pub diff_id: Option<String>,
}

impl Blob {
    /// A blob held in memory; digest and size are computed here so they can't disagree.
    pub fn from_bytes(media_type: &str, bytes: impl Into<Bytes>, diff_id: Option<String>) -> Self {
        let bytes = bytes.into();
        Blob {
            digest: sha256_digest(&bytes),
            media_type: media_type.to_string(),
            size: bytes.len() as u64,
            data: BlobData::Memory(bytes),
            diff_id,
        }
    }
}

/// "sha256:<hex>" of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A stable 64-bit seed from a name, so content is addressed by what it is ("base:rhel-a")
/// rather than by the order it happens to be generated in.
pub fn name_seed(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// `len` pseudo-random bytes from a seeded xorshift64* generator: incompressible (so layer
/// sizes are what they say) and identical for the same seed on every run and platform.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    RandomReader::new(seed, len as u64)
        .read_exact(&mut bytes)
        .expect("the generator yields exactly `len` bytes");
    bytes
}

/// The generator behind [`random_bytes`] as a reader, so a large layer can be produced without
/// materialising it. The byte stream does not depend on the caller's buffer sizes.
struct RandomReader {
    state: u64,
    remaining: u64,
    pending: [u8; 8],
    pending_len: usize,
}

impl RandomReader {
    fn new(seed: u64, len: u64) -> Self {
        // splitmix64 spreads nearby seeds apart; xorshift needs a non-zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        RandomReader {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
            remaining: len,
            pending: [0; 8],
            pending_len: 0,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes()
    }
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let out = &mut buf[..n];
        let mut filled = 0;
        while filled < n && self.pending_len > 0 {
            out[filled] = self.pending[8 - self.pending_len];
            self.pending_len -= 1;
            filled += 1;
        }
        let mut words = out[filled..].chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next_word());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            self.pending = self.next_word();
            self.pending_len = 8;
            for byte in rest {
                *byte = self.pending[8 - self.pending_len];
                self.pending_len -= 1;
            }
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A deterministic tar header (mtime 0, uid/gid 0, fixed mode): real timestamps or owners
/// would change the digest from run to run.
fn tar_header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// A real tar layer holding `files` in the given order, compressed as asked.
///
/// A name ending in `/` becomes a directory entry (written without the slash, mode 0755, as
/// `oc adm release new` writes `release-manifests`); every other entry is a regular file with
/// mode 0644. The returned blob carries the OCI media type for its compression; Docker images
/// get the Docker type at manifest time.
///
/// # Panics
/// On a name the tar format refuses (absolute, or containing `..`): content here is written by
/// the lab's own code, so that is a programming error.
pub fn tar_layer(files: &[(&str, Vec<u8>)], compression: Compression) -> Blob {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let appended = match name.strip_suffix('/') {
            Some(dir) => builder.append_data(
                &mut tar_header(tar::EntryType::Directory, 0o755, 0),
                dir,
                io::empty(),
            ),
            None => builder.append_data(
                &mut tar_header(tar::EntryType::Regular, 0o644, data.len() as u64),
                name,
                data.as_slice(),
            ),
        };
        appended.unwrap_or_else(|err| panic!("tar entry `{name}`: {err}"));
    }
    let tar = builder
        .into_inner()
        .expect("writing a tar into memory cannot fail");
    let diff_id = sha256_digest(&tar);
    let (bytes, media_type) = match compression {
        Compression::None => (tar, OCI_LAYER_TAR),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(tar.len() + tar.len() / 64 + 64),
                flate2::Compression::fast(),
            );
            encoder
                .write_all(&tar)
                .and_then(|()| encoder.finish())
                .map(|gz| (gz, OCI_LAYER_GZIP))
                .expect("gzip into memory cannot fail")
        }
        Compression::Zstd => (
            zstd::stream::encode_all(tar.as_slice(), 1).expect("zstd into memory cannot fail"),
            OCI_LAYER_ZSTD,
        ),
    };
    Blob::from_bytes(media_type, bytes, Some(diff_id))
}

/// A single-file uncompressed tar layer of exactly `blob_size` bytes (rounded down to a
/// multiple of 512, at least 1536), written to a file under `work_dir` while it is hashed, so
/// a 1 GiB layer costs no memory. Uncompressed because compressing random bytes is slow and
/// gains nothing; the blob digest is then also its diff_id.
///
/// The file is named after its content parameters and reused on later runs (its digest is kept
/// in a `.sha256` file beside it); both are written to temporary names and renamed, so an
/// interrupted run never leaves a wrong file under a right name.
pub fn large_tar_layer(
    work_dir: &Path,
    entry_name: &str,
    blob_size: u64,
    seed: u64,
) -> Result<Blob> {
    // One 512-byte header, the content (a multiple of 512, so no padding), 1024 bytes of end
    // marker written by tar::Builder::finish.
    let content_len = blob_size.saturating_sub(1536) / 512 * 512;
    let size = content_len + 1536;
    let key = name_seed(&format!(
        "{GENERATOR_VERSION}:{entry_name}:{content_len}:{seed}"
    ));
    let path = work_dir.join(format!("seed-large-layer-{size}-{key:016x}.tar"));
    let digest_path = path.with_extension("sha256");

    let cached = fs::metadata(&path)
        .ok()
        .filter(|meta| meta.len() == size)
        .and_then(|_| {
            let digest = fs::read_to_string(&digest_path).ok()?;
            let digest = digest.trim();
            (digest.len() == 71 && digest.starts_with("sha256:")).then(|| digest.to_string())
        });
    let digest = match cached {
        Some(digest) => digest,
        None => {
            fs::create_dir_all(work_dir)
                .with_context(|| format!("creating work dir `{}`", work_dir.display()))?;
            let partial = path.with_extension("tar.partial");
            let file = fs::File::create(&partial)
                .with_context(|| format!("creating `{}`", partial.display()))?;
            let writer = HashingWriter {
                inner: io::BufWriter::with_capacity(STREAM_CHUNK, file),
                hasher: Sha256::new(),
            };
            let mut builder = tar::Builder::new(writer);
            builder
                .append_data(
                    &mut tar_header(tar::EntryType::Regular, 0o644, content_len),
                    entry_name,
                    RandomReader::new(seed, content_len),
                )
                .and_then(|()| builder.into_inner())
                .and_then(|writer| {
                    let digest = format!("sha256:{}", hex::encode(writer.hasher.finalize()));
                    let file = writer.inner.into_inner().map_err(|err| err.into_error())?;
                    file.sync_all()?;
                    Ok(digest)
                })
                .and_then(|digest| {
                    fs::rename(&partial, &path)?;
                    let digest_partial = digest_path.with_extension("sha256.partial");
                    fs::write(&digest_partial, format!("{digest}\n"))?;
                    fs::rename(&digest_partial, &digest_path)?;
                    Ok(digest)
                })
                .with_context(|| format!("writing large layer `{}`", path.display()))?
        }
    };
    Ok(Blob {
        diff_id: Some(digest.clone()),
        digest,
        media_type: OCI_LAYER_TAR.to_string(),
        size,
        data: BlobData::File(path),
    })
}

/// Hashes everything written through it, so a file-backed blob is digested in the same pass
/// that writes it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What one single-platform image is made of; the config and manifest are derived from it.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Docker schema2 or OCI manifest.
    pub format: Format,
    /// Platform OS, e.g. "linux".
    pub os: String,
    /// Platform architecture in Go terms, e.g. "amd64".
    pub arch: String,
    /// Platform variant, e.g. "v8".
    pub variant: Option<String>,
    /// Config labels; these are what make otherwise identical images differ.
    pub labels: BTreeMap<String, String>,
    /// Layers bottom first.
    pub layers: Vec<Blob>,
}

impl ImageSpec {
    /// A linux image with no variant, the common case.
    pub fn linux(
        format: Format,
        arch: &str,
        labels: BTreeMap<String, String>,
        layers: Vec<Blob>,
    ) -> Self {
        ImageSpec {
            format,
            os: "linux".to_string(),
            arch: arch.to_string(),
            variant: None,
            labels,
            layers,
        }
    }

    /// "os/arch" or "os/arch/variant", as platform filters spell it.
    pub fn platform(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{}/{}/{}", self.os, self.arch, variant),
            None => format!("{}/{}", self.os, self.arch),
        }
    }
}

/// Manifest bytes exactly as pushed, with their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// sha256 of `bytes`.
    pub digest: String,
    /// Sent as the Content-Type of the PUT.
    pub media_type: String,
    /// The exact bytes pushed.
    pub bytes: Bytes,
}

impl Manifest {
    /// Serialises once and digests those bytes: the only way the recorded digest and the
    /// served bytes can't drift apart.
    fn from_value(media_type: &str, value: &impl Serialize) -> Result<Self> {
        let bytes = Bytes::from(serde_json::to_vec(value)?);
        Ok(Manifest {
            digest: sha256_digest(&bytes),
            media_type: media_type.to_string(),
            bytes,
        })
    }
}

/// A single-platform image with its config and manifest built, not yet pushed.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The image manifest.
    pub manifest: Manifest,
    /// The config blob.
    pub config: Blob,
    /// The layers, as in the spec.
    pub layers: Vec<Blob>,
    /// Format, for the index entry's checks.
    pub format: Format,
    /// "os/arch[/variant]".
    pub platform: String,
    platform_fields: PlatformJson,
}

// The JSON documents below are structs rather than `serde_json::Value`s so that field order
// is fixed by the code, whatever serde_json features the rest of the build turns on.

#[derive(Serialize)]
struct ImageConfigJson<'a> {
    created: &'static str,
    architecture: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    os: &'a str,
    config: ContainerConfigJson<'a>,
    rootfs: RootFsJson,
    history: Vec<HistoryJson>,
}

#[derive(Serialize)]
struct ContainerConfigJson<'a> {
    #[serde(rename = "Env")]
    env: [&'static str; 1],
    #[serde(rename = "Cmd")]
    cmd: [&'static str; 1],
    #[serde(rename = "Labels")]
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootFsJson {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct HistoryJson {
    created: &'static str,
    created_by: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifestJson {
    schema_version: u32,
    media_type: &'static str,
    config: DescriptorJson,
    layers: Vec<DescriptorJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<DescriptorJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorJson {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformJson>,
}

#[derive(Debug, Clone, Serialize)]
struct PlatformJson {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

/// The layer media type a manifest of `format` uses for a blob that carries the OCI type.
fn layer_media_type(format: Format, blob: &Blob) -> Result<String> {
    Ok(match (format, blob.media_type.as_str()) {
        (Format::Oci, _) => blob.media_type.clone(),
        (Format::Docker, OCI_LAYER_GZIP) => DOCKER_LAYER_GZIP.to_string(),
        (Format::Docker, OCI_LAYER_TAR) => DOCKER_LAYER_TAR.to_string(),
        (Format::Docker, OCI_LAYER_ZSTD) => {
            bail!(
                "layer {}: Docker schema2 has no zstd layer type; use an OCI image",
                blob.digest
            )
        }
        (Format::Docker, other) => other.to_string(),
    })
}

/// Builds the config blob and the manifest for one image, without pushing anything: tests can
/// predict digests, and later content can be assembled from the pieces.
pub fn build_image(spec: &ImageSpec) -> Result<BuiltImage> {
    let diff_ids = spec
        .layers
        .iter()
        .map(|layer| {
            layer
                .diff_id
                .clone()
                .with_context(|| format!("layer {} has no diff_id", layer.digest))
        })
        .collect::<Result<Vec<_>>>()?;
    let history = (0..spec.layers.len())
        .map(|index| HistoryJson {
            created: EPOCH,
            created_by: format!("prewarm lab seed: layer {index}"),
        })
        .collect();
    let config_json = ImageConfigJson {
        created: EPOCH,
        architecture: &spec.arch,
        variant: spec.variant.as_deref(),
        os: &spec.os,
        config: ContainerConfigJson {
            env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            cmd: ["/bin/bash"],
            labels: &spec.labels,
        },
        rootfs: RootFsJson {
            kind: "layers",
            diff_ids,
        },
        history,
    };
    let (manifest_type, config_type) = match spec.format {
        Format::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        Format::Oci => (OCI_MANIFEST, OCI_CONFIG),
    };
    let config = Blob::from_bytes(config_type, serde_json::to_vec(&config_json)?, None);
    let layers = spec
        .layers
        .iter()
        .map(|layer| {
            Ok(DescriptorJson {
                media_type: layer_media_type(spec.format, layer)?,
                digest: layer.digest.clone(),
                size: layer.size,
                platform: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = Manifest::from_value(
        manifest_type,
        &ImageManifestJson {
            schema_version: 2,
            media_type: manifest_type,
            config: DescriptorJson {
                media_type: config.media_type.clone(),
                digest: config.digest.clone(),
                size: config.size,
                platform: None,
            },
            layers,
        },
    )?;
    Ok(BuiltImage {
        manifest,
        config,
        layers: spec.layers.clone(),
        format: spec.format,
        platform: spec.platform(),
        platform_fields: PlatformJson {
            architecture: spec.arch.clone(),
            os: spec.os.clone(),
            variant: spec.variant.clone(),
        },
    })
}

/// Builds a Docker manifest list or OCI index over already built children (which must be of
/// the same format: a Docker list cannot point at OCI manifests).
pub fn build_index(format: Format, children: &[BuiltImage]) -> Result<Manifest> {
    ensure!(!children.is_empty(), "an index needs at least one child");
    let media_type = match format {
        Format::Docker => DOCKER_MANIFEST_LIST,
        Format::Oci => OCI_INDEX,
    };
    let manifests = children
        .iter()
        .map(|child| {
            ensure!(
                child.format == format,
                "child {} ({}) is {:?} but the index is {:?}",
                child.manifest.digest,
                child.platform,
                child.format,
                format
            );
            Ok(DescriptorJson {
                media_type: child.manifest.media_type.clone(),
                digest: child.manifest.digest.clone(),
                size: child.manifest.bytes.len() as u64,
                platform: Some(child.platform_fields.clone()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Manifest::from_value(
        media_type,
        &IndexJson {
            schema_version: 2,
            media_type,
            manifests,
        },
    )
}

/// Pushes images to one target with oci-client, each blob at most once per repository.
pub struct Pusher {
    client: Client,
    target: Target,
    /// One cell per "repo@digest": concurrent images sharing a base layer wait for one upload
    /// instead of racing to send it twice. A failed upload leaves the cell empty for a retry.
    blobs: Mutex<HashMap<String, Arc<OnceCell<()>>>>,
}

impl Pusher {
    /// Connects to the target and checks that it answers (and accepts the credentials), so a
    /// lab mistake fails here with the target's name rather than deep inside a push.
    pub async fn new(target: &Target) -> Result<Self> {
        let config = ClientConfig {
            protocol: if target.https {
                ClientProtocol::Https
            } else {
                ClientProtocol::Http
            },
            extra_root_certificates: target
                .ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            // One POST + one PUT per blob instead of 4 MiB PATCH chunks: fewer round trips, and
            // the only way oci-client streams a file with a Content-Length.
            use_monolithic_push: true,
            platform_resolver: None,
            ..Default::default()
        };
        // `Client::new` silently falls back to a default (HTTPS, no extra CA) client when the
        // config is rejected, e.g. for a bad PEM; `try_from` reports it instead.
        let client = Client::try_from(config)
            .with_context(|| format!("building a registry client for {}", describe(target)))?;
        // Anonymous auth is deliberately not stored: oci-client would then re-probe `/v2/`
        // before every request. Basic credentials are stored and cached per repository.
        if let Some((user, password)) = &target.credentials {
            client
                .store_auth_if_needed(
                    &target.endpoint,
                    &RegistryAuth::Basic(user.clone(), password.clone()),
                )
                .await;
        }
        let pusher = Pusher {
            client,
            target: target.clone(),
            blobs: Mutex::new(HashMap::new()),
        };
        let probe = pusher.endpoint_reference("prewarm-seed/probe", None, &sha256_digest(b""));
        pusher
            .client
            .blob_exists(&probe, &sha256_digest(b""))
            .await
            .with_context(|| format!("cannot reach {}", describe(target)))?;
        Ok(pusher)
    }

    /// The target this pusher writes to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Pushes one single-platform image: its blobs, then its manifest by tag (or by digest when
    /// `tag` is `None`). Pushing a new spec to an existing tag re-tags it to the new content.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: Option<&str>,
        spec: &ImageSpec,
    ) -> Result<SeededImage> {
        let built = build_image(spec)?;
        self.push_blobs(repo, &built).await?;
        self.push_manifest(repo, tag, &built.manifest).await?;
        Ok(self.seeded(repo, tag, &built.manifest, std::slice::from_ref(&built)))
    }

    /// Pushes a multi-arch image: every child by digest (blobs first), then the index by tag
    /// (or by digest when `tag` is `None`), so the registry never holds a dangling index.
    pub async fn push_index(
        &self,
        repo: &str,
        tag: Option<&str>,
        format: Format,
        children: &[ImageSpec],
    ) -> Result<SeededImage> {
        let built = children
            .iter()
            .map(build_image)
            .collect::<Result<Vec<_>>>()?;
        let index = build_index(format, &built)?;
        for child in &built {
            self.push_blobs(repo, child).await?;
            self.push_manifest(repo, None, &child.manifest).await?;
        }
        self.push_manifest(repo, tag, &index).await?;
        Ok(self.seeded(repo, tag, &index, &built))
    }

    /// Pushes manifest bytes as they are, by tag or (when `tag` is `None`) by digest, and
    /// checks that the registry stored them under the digest we computed.
    pub async fn push_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        manifest: &Manifest,
    ) -> Result<()> {
        let reference = self.endpoint_reference(repo, tag, &manifest.digest);
        let what = || {
            format!(
                "pushing manifest {} to {}",
                manifest.digest,
                self.logical_reference(repo, tag, &manifest.digest)
            )
        };
        let content_type = manifest.media_type.parse().with_context(what)?;
        let location = self
            .client
            .push_manifest_raw(&reference, manifest.bytes.clone(), content_type)
            .await
            .with_context(what)?;
        // Distribution answers with the manifest's digest in Location; another digest would mean
        // the registry rewrote our bytes, and every recorded digest would be a lie.
        if let Some(at) = location.rfind("sha256:") {
            ensure!(
                location[at..].starts_with(&manifest.digest),
                "{}: the registry stored it as {}",
                what(),
                &location[at..]
            );
        }
        Ok(())
    }

    /// Pushes one blob to `repo` unless this pusher already did or the registry has it.
    pub async fn push_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        let cell = self
            .blobs
            .lock()
            .expect("blob map lock poisoned")
            .entry(format!("{repo}@{}", blob.digest))
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.upload_blob(repo, blob))
            .await
            .with_context(|| {
                format!(
                    "pushing blob {} ({} bytes) to {}/{repo} at {}",
                    blob.digest, blob.size, self.target.host, self.target.endpoint
                )
            })?;
        Ok(())
    }

    async fn upload_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        let reference = self.endpoint_reference(repo, None, &blob.digest);
        if self.client.blob_exists(&reference, &blob.digest).await? {
            return Ok(());
        }
        match &blob.data {
            BlobData::Memory(bytes) => {
                self.client
                    .push_blob(&reference, bytes.clone(), &blob.digest)
                    .await?;
            }
            BlobData::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("opening `{}`", path.display()))?;
                let chunks = futures::stream::try_unfold(file, |mut file| async move {
                    let mut chunk = BytesMut::with_capacity(STREAM_CHUNK);
                    let read = file
                        .read_buf(&mut chunk)
                        .await
                        .map_err(OciDistributionError::IoError)?;
                    Ok((read > 0).then(|| (chunk.freeze(), file)))
                });
                self.client
                    .push_blob_stream(&reference, chunks, &blob.digest, Some(blob.size))
                    .await?;
            }
        }
        Ok(())
    }

    async fn push_blobs(&self, repo: &str, image: &BuiltImage) -> Result<()> {
        for layer in &image.layers {
            self.push_blob(repo, layer).await?;
        }
        self.push_blob(repo, &image.config).await
    }

    /// The reference oci-client talks to: the real endpoint, and a tag or a digest (never both:
    /// oci-client would use the digest and the tag would not be written).
    fn endpoint_reference(&self, repo: &str, tag: Option<&str>, digest: &str) -> Reference {
        let (registry, repo) = (self.target.endpoint.clone(), repo.to_string());
        match tag {
            Some(tag) => Reference::with_tag(registry, repo, tag.to_string()),
            None => Reference::with_digest(registry, repo, digest.to_string()),
        }
    }

    /// The reference as a user writes it, with the logical host.
    fn logical_reference(&self, repo: &str, tag: Option<&str>, digest: &str) -> String {
        logical_reference(&self.target.host, repo, tag, digest)
    }

    fn seeded(
        &self,
        repo: &str,
        tag: Option<&str>,
        top: &Manifest,
        images: &[BuiltImage],
    ) -> SeededImage {
        seeded_image(&self.target.host, repo, tag, top, images)
    }
}

/// What a test needs to know of an image stored as `top` in `repo` of registry `host`, by
/// `tag` or (when `tag` is `None`) by digest; `images` are the single-platform images under it.
pub fn seeded_image(
    host: &str,
    repo: &str,
    tag: Option<&str>,
    top: &Manifest,
    images: &[BuiltImage],
) -> SeededImage {
    // A single image's own manifest is the top one; an index lists its children after it.
    let children = images
        .iter()
        .map(|image| &image.manifest)
        .filter(|manifest| manifest.digest != top.digest);
    let manifests = std::iter::once(top)
        .chain(children)
        .map(|m| (m.digest.clone(), m.media_type.clone(), m.bytes.len() as u64))
        .collect();
    let mut seen = BTreeSet::new();
    let blobs = images
        .iter()
        .flat_map(|image| std::iter::once(&image.config).chain(&image.layers))
        .filter(|blob| seen.insert(blob.digest.clone()))
        .map(|blob| (blob.digest.clone(), blob.size))
        .collect();
    let platform_blobs = images
        .iter()
        .map(|image| {
            let blobs = std::iter::once(&image.config)
                .chain(&image.layers)
                .map(|blob| (blob.digest.clone(), blob.size))
                .collect();
            (image.platform.clone(), blobs)
        })
        .collect();
    SeededImage {
        reference: logical_reference(host, repo, tag, &top.digest),
        repository: repo.to_string(),
        digest: top.digest.clone(),
        media_type: top.media_type.clone(),
        platforms: images.iter().map(|image| image.platform.clone()).collect(),
        manifests,
        blobs,
        platform_blobs,
    }
}

/// `host/repo:tag`, or `host/repo@digest` without a tag: the reference as a user writes it.
fn logical_reference(host: &str, repo: &str, tag: Option<&str>, digest: &str) -> String {
    match tag {
        Some(tag) => format!("{host}/{repo}:{tag}"),
        None => format!("{host}/{repo}@{digest}"),
    }
}

fn describe(target: &Target) -> String {
    format!(
        "{} at {}://{}",
        target.host,
        if target.https { "https" } else { "http" },
        target.endpoint
    )
}

/// Which stand-in an image goes to.
#[derive(Clone, Copy)]
enum Upstream {
    Quay,
    RedHat,
}

enum Content {
    Image(ImageSpec),
    Index(Format, Vec<ImageSpec>),
}

struct Job {
    upstream: Upstream,
    repo: &'static str,
    tag: Option<&'static str>,
    content: Content,
}

impl Job {
    async fn push(&self, pusher: &Pusher) -> Result<SeededImage> {
        match &self.content {
            Content::Image(spec) => pusher.push_image(self.repo, self.tag, spec).await,
            Content::Index(format, children) => {
                pusher
                    .push_index(self.repo, self.tag, *format, children)
                    .await
            }
        }
    }
}

/// A one-file gzip-or-other layer of `len` random bytes seeded by `name`.
fn random_layer(name: &str, path: &str, len: usize, compression: Compression) -> Blob {
    tar_layer(&[(path, random_bytes(name_seed(name), len))], compression)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn component_labels(component: &str) -> BTreeMap<String, String> {
    labels(&[
        ("io.openshift.build.component", component),
        ("io.openshift.release.version", "4.20.0"),
        ("vendor", "Red Hat, Inc."),
    ])
}

/// The generated content of one scale, plus the shared base layers the large-layer image
/// reuses.
struct Planned {
    jobs: Vec<Job>,
    rhel_base: [Blob; 2],
}

/// Generated content per scale, kept for the life of the process: every integration test
/// seeds, and hashing and compressing ~10 MiB dominates seeding in an unoptimised build. `Bytes`
/// are shared, so each seed costs no copy. (The large layer is not kept here: it lives in a
/// file under a work dir that a test may delete.)
static PLANNED: Mutex<Vec<(Scale, Arc<Planned>)>> = Mutex::new(Vec::new());

fn planned(scale: Scale) -> Arc<Planned> {
    // Held while generating, so tests seeding in parallel wait for one generation.
    let mut cache = PLANNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, planned)) = cache.iter().find(|(cached, _)| *cached == scale) {
        return planned.clone();
    }
    let planned = Arc::new(plan(scale));
    cache.push((scale, planned.clone()));
    planned
}

/// The whole content set of one scale, generated (CPU-bound; run it off the async runtime).
fn plan(scale: Scale) -> Planned {
    let k = scale.factor();
    let gzip = Compression::Gzip;
    // The "rhel base" every OCP image starts from: ~1.5 MiB and ~512 KiB.
    let base_a = tar_layer(
        &[
            ("usr/", Vec::new()),
            ("usr/lib64/", Vec::new()),
            (
                "usr/lib64/librhel-base.so.9",
                random_bytes(name_seed("base:rhel-a:lib"), 1024 * KIB * k),
            ),
            (
                "usr/lib64/librhel-crypto.so.9",
                random_bytes(name_seed("base:rhel-a:crypto"), 512 * KIB * k),
            ),
        ],
        gzip,
    );
    let base_b = random_layer(
        "base:rhel-b",
        "usr/share/rhel/base.dat",
        512 * KIB * k,
        gzip,
    );
    let middles: Vec<Blob> = (0..COMPONENTS.len().div_ceil(6))
        .map(|group| {
            random_layer(
                &format!("middle:{group}"),
                &format!("usr/share/openshift/group-{group}.dat"),
                256 * KIB * k,
                gzip,
            )
        })
        .collect();

    let mut jobs = Vec::new();
    for (index, component) in COMPONENTS.iter().enumerate() {
        let format = if index % 2 == 0 {
            Format::Docker
        } else {
            Format::Oci
        };
        // Docker schema2 has gzip only; a few OCI images get zstd, one a plain tar.
        let own_compression = match (format, index) {
            (Format::Docker, _) => gzip,
            (Format::Oci, 33) => Compression::None,
            (Format::Oci, index) if index % 8 == 3 => Compression::Zstd,
            (Format::Oci, _) => gzip,
        };
        let mut layers = vec![base_a.clone(), base_b.clone(), middles[index / 6].clone()];
        layers.push(random_layer(
            &format!("own:{component}:bin"),
            &format!("usr/bin/{component}"),
            16 * KIB * k * (1 + index * 5 % 8),
            own_compression,
        ));
        if index % 3 == 1 {
            layers.push(random_layer(
                &format!("own:{component}:etc"),
                &format!("etc/{component}/config.dat"),
                16 * KIB * k * (1 + index % 4),
                gzip,
            ));
        }
        jobs.push(Job {
            upstream: Upstream::Quay,
            repo: COMPONENT_REPOSITORY,
            tag: None,
            content: Content::Image(ImageSpec::linux(
                format,
                "amd64",
                component_labels(component),
                layers,
            )),
        });
    }
    jobs.push(Job {
        upstream: Upstream::Quay,
        repo: "openshift/origin-cli",
        tag: Some("4.20"),
        content: Content::Image(ImageSpec::linux(
            Format::Docker,
            "amd64",
            component_labels("origin-cli"),
            vec![
                base_a.clone(),
                base_b.clone(),
                random_layer("own:origin-cli", "usr/bin/oc", 96 * KIB * k, gzip),
            ],
        )),
    });
    let release_children = ["amd64", "arm64", "s390x"]
        .iter()
        .map(|arch| {
            ImageSpec::linux(
                Format::Oci,
                arch,
                component_labels("ocp-release"),
                vec![
                    random_layer(
                        &format!("release:{arch}:base"),
                        "usr/lib64/librhel-base.so.9",
                        256 * KIB * k,
                        gzip,
                    ),
                    random_layer(
                        &format!("release:{arch}:cvo"),
                        "usr/bin/cluster-version-operator",
                        64 * KIB * k,
                        gzip,
                    ),
                ],
            )
        })
        .collect();
    jobs.push(Job {
        upstream: Upstream::Quay,
        repo: "openshift-release-dev/ocp-release",
        tag: Some("4.20.0-multi"),
        content: Content::Index(Format::Oci, release_children),
    });

    let ubi_labels = |component: &str| {
        labels(&[
            ("com.redhat.component", component),
            ("name", component),
            ("vendor", "Red Hat, Inc."),
        ])
    };
    let ubi_base = |arch: &str| {
        random_layer(
            &format!("ubi9:{arch}:base"),
            "usr/lib64/libubi9-base.so",
            384 * KIB * k,
            gzip,
        )
    };
    let ubi_children = ["amd64", "arm64", "ppc64le"]
        .iter()
        .map(|arch| {
            ImageSpec::linux(
                Format::Docker,
                arch,
                ubi_labels("ubi9-container"),
                vec![
                    ubi_base(arch),
                    random_layer(
                        &format!("ubi9:{arch}:release"),
                        "etc/ubi9-release.dat",
                        16 * KIB * k,
                        gzip,
                    ),
                ],
            )
        })
        .collect();
    jobs.push(Job {
        upstream: Upstream::RedHat,
        repo: "ubi9/ubi",
        tag: Some("latest"),
        content: Content::Index(Format::Docker, ubi_children),
    });
    jobs.push(Job {
        upstream: Upstream::RedHat,
        repo: "ubi9/ubi-minimal",
        tag: Some("latest"),
        content: Content::Image(ImageSpec::linux(
            Format::Oci,
            "amd64",
            ubi_labels("ubi9-minimal-container"),
            vec![random_layer(
                "ubi9-minimal:base",
                "usr/lib64/libubi9-minimal.so",
                192 * KIB * k,
                gzip,
            )],
        )),
    });
    jobs.push(Job {
        upstream: Upstream::RedHat,
        repo: "rhel9/support-tools",
        tag: Some("latest"),
        content: Content::Image(ImageSpec::linux(
            Format::Docker,
            "amd64",
            ubi_labels("support-tools-container"),
            vec![
                ubi_base("amd64"),
                random_layer("support-tools", "usr/bin/sos", 64 * KIB * k, gzip),
            ],
        )),
    });
    jobs.push(Job {
        upstream: Upstream::RedHat,
        repo: "openshift4/ose-cli",
        tag: Some("v4.20"),
        content: Content::Image(ImageSpec::linux(
            Format::Oci,
            "amd64",
            ubi_labels("ose-cli-container"),
            vec![
                ubi_base("amd64"),
                random_layer("ose-cli", "usr/bin/oc", 96 * KIB * k, gzip),
            ],
        )),
    });
    Planned {
        jobs,
        rhel_base: [base_a, base_b],
    }
}

/// The "big-layer" component: the rhel base plus one file-backed layer of about `bytes`.
fn large_layer_job(work_dir: &Path, bytes: u64, rhel_base: &[Blob; 2]) -> Result<Job> {
    let large = large_tar_layer(
        work_dir,
        "usr/share/big-layer/blob.dat",
        bytes,
        name_seed("large:big-layer"),
    )?;
    let [base_a, base_b] = rhel_base.clone();
    Ok(Job {
        upstream: Upstream::Quay,
        repo: COMPONENT_REPOSITORY,
        tag: None,
        content: Content::Image(ImageSpec::linux(
            Format::Oci,
            "amd64",
            component_labels("big-layer"),
            vec![base_a, base_b, large],
        )),
    })
}

/// Seeds both stand-ins with the content set for `opts` and returns what was pushed.
///
/// Same options → same digests on every run. Pushing into registries that already hold the
/// content is cheap (blobs are checked with HEAD first) and changes nothing.
pub async fn seed(quay: &Target, redhat: &Target, opts: &SeedOptions) -> Result<Seed> {
    // Connect first: a wrong port or password should not wait for content generation.
    let quay_pusher = Pusher::new(quay).await?;
    let redhat_pusher = Pusher::new(redhat).await?;
    let scale = opts.scale;
    let planned = tokio::task::spawn_blocking(move || planned(scale))
        .await
        .context("content generation panicked")?;
    let large = match opts.large_layer_bytes {
        Some(bytes) => {
            let (work_dir, planned) = (opts.work_dir.clone(), planned.clone());
            let job = tokio::task::spawn_blocking(move || {
                large_layer_job(&work_dir, bytes, &planned.rhel_base)
            });
            Some(job.await.context("large layer generation panicked")??)
        }
        None => None,
    };
    let images = futures::stream::iter(planned.jobs.iter().chain(&large))
        .map(|job| match job.upstream {
            Upstream::Quay => job.push(&quay_pusher),
            Upstream::RedHat => job.push(&redhat_pusher),
        })
        .buffered(PUSH_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(Seed { images })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untar(tar: &[u8]) -> Vec<(String, tar::Header, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                (path, entry.header().clone(), data)
            })
            .collect()
    }

    fn memory(blob: &Blob) -> &Bytes {
        match &blob.data {
            BlobData::Memory(bytes) => bytes,
            BlobData::File(path) => panic!("expected memory blob, got {}", path.display()),
        }
    }

    #[test]
    fn random_bytes_are_deterministic_and_independent_of_read_sizes() {
        assert_eq!(random_bytes(7, 1000), random_bytes(7, 1000));
        assert_ne!(random_bytes(7, 64), random_bytes(8, 64));
        // A prefix of a longer stream: the large-layer reader and random_bytes must agree.
        assert_eq!(random_bytes(7, 13), random_bytes(7, 1000)[..13]);
        let mut reader = RandomReader::new(7, 1000);
        let mut odd = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            odd.extend_from_slice(&buf[..n]);
        }
        assert_eq!(odd, random_bytes(7, 1000));
    }

    #[test]
    fn tar_layers_are_deterministic_real_archives() {
        let files = [
            ("release-manifests/", Vec::new()),
            ("release-manifests/image-references", b"{}".to_vec()),
            ("usr/bin/x", random_bytes(1, 5000)),
        ];
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let blob = tar_layer(&files, compression);
            assert_eq!(blob, tar_layer(&files, compression));
            let bytes = memory(&blob);
            assert_eq!(blob.digest, sha256_digest(bytes));
            assert_eq!(blob.size, bytes.len() as u64);
            let tar = match compression {
                Compression::None => bytes.to_vec(),
                Compression::Gzip => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                }
                Compression::Zstd => zstd::stream::decode_all(&bytes[..]).unwrap(),
            };
            assert_eq!(blob.diff_id.as_deref(), Some(sha256_digest(&tar).as_str()));
            let entries = untar(&tar);
            let names: Vec<&str> = entries.iter().map(|(name, _, _)| name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "release-manifests",
                    "release-manifests/image-references",
                    "usr/bin/x"
                ]
            );
            assert_eq!(entries[0].1.entry_type(), tar::EntryType::Directory);
            assert_eq!(entries[2].2, random_bytes(1, 5000));
            for (_, header, _) in &entries[1..] {
                assert_eq!(header.mtime().unwrap(), 0);
                assert_eq!(header.uid().unwrap(), 0);
                assert_eq!(header.mode().unwrap(), 0o644);
            }
        }
        assert_eq!(
            tar_layer(&files, Compression::Gzip).media_type,
            OCI_LAYER_GZIP
        );
        assert_eq!(
            tar_layer(&files, Compression::Zstd).media_type,
            OCI_LAYER_ZSTD
        );
        assert_eq!(
            tar_layer(&files, Compression::None).media_type,
            OCI_LAYER_TAR
        );
    }

    #[test]
    fn manifests_digest_their_exact_bytes_and_reference_real_blobs() {
        let layer = tar_layer(&[("a", random_bytes(2, 100))], Compression::Gzip);
        let spec = ImageSpec::linux(
            Format::Docker,
            "arm64",
            component_labels("cli"),
            vec![layer.clone()],
        );
        let built = build_image(&spec).unwrap();
        assert_eq!(built.manifest.digest, sha256_digest(&built.manifest.bytes));
        let manifest: serde_json::Value = serde_json::from_slice(&built.manifest.bytes).unwrap();
        assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
        assert_eq!(manifest["config"]["digest"], built.config.digest.as_str());
        assert_eq!(manifest["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);
        assert_eq!(manifest["layers"][0]["size"], layer.size);
        let config: serde_json::Value =
            serde_json::from_slice(memory(&built.config).as_ref()).unwrap();
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(
            config["config"]["Labels"]["io.openshift.build.component"],
            "cli"
        );
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            layer.diff_id.clone().unwrap()
        );
        assert_eq!(build_image(&spec).unwrap().manifest, built.manifest);

        let mut zstd_docker = spec.clone();
        zstd_docker.layers = vec![tar_layer(&[("a", vec![1])], Compression::Zstd)];
        assert!(build_image(&zstd_docker).is_err());

        let index = build_index(Format::Docker, std::slice::from_ref(&built)).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
        assert_eq!(parsed["mediaType"], DOCKER_MANIFEST_LIST);
        assert_eq!(parsed["manifests"][0]["platform"]["architecture"], "arm64");
        assert_eq!(
            parsed["manifests"][0]["size"],
            built.manifest.bytes.len() as u64
        );
        assert!(build_index(Format::Oci, &[built]).is_err());
    }

    #[test]
    fn large_layer_is_exact_sized_streamed_and_reused() {
        let dir = std::env::temp_dir().join(format!("seed-test-{}", std::process::id()));
        let blob = large_tar_layer(&dir, "big.dat", 3 * 1024 * 1024 + 100, 9).unwrap();
        let BlobData::File(path) = &blob.data else {
            panic!("expected a file blob")
        };
        let bytes = fs::read(path).unwrap();
        assert_eq!(blob.size, 3 * 1024 * 1024);
        assert_eq!(bytes.len() as u64, blob.size);
        assert_eq!(blob.digest, sha256_digest(&bytes));
        assert_eq!(blob.diff_id.as_deref(), Some(blob.digest.as_str()));
        let entries = untar(&bytes);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].2, random_bytes(9, entries[0].2.len()));
        // Reused, and identical to a fresh generation.
        assert_eq!(
            large_tar_layer(&dir, "big.dat", 3 * 1024 * 1024 + 100, 9).unwrap(),
            blob
        );
        fs::remove_dir_all(&dir).unwrap();
        let fresh = large_tar_layer(&dir, "big.dat", 3 * 1024 * 1024 + 100, 9).unwrap();
        assert_eq!(fresh.digest, blob.digest);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_scale_plan_has_the_promised_shape() {
        let jobs = plan(Scale::Test).jobs;
        assert_eq!(jobs.len(), 42);
        let components = jobs
            .iter()
            .filter(|job| job.repo == COMPONENT_REPOSITORY && job.tag.is_none())
            .count();
        assert_eq!(components, 36);
        let digests: BTreeSet<String> = jobs
            .iter()
            .filter_map(|job| match &job.content {
                Content::Image(spec) => Some(build_image(spec).unwrap().manifest.digest),
                Content::Index(..) => None,
            })
            .collect();
        assert_eq!(digests.len(), 36 + 4);
    }

    #[test]
    fn target_debug_hides_the_password() {
        let target = Target {
            host: "registry.redhat.io".into(),
            endpoint: "127.0.0.1:1".into(),
            https: true,
            ca_pem: None,
            credentials: Some(("labuser".into(), "lab:pass:word".into())),
        };
        let shown = format!("{target:?}");
        assert!(shown.contains("labuser") && !shown.contains("lab:pass:word"));
    }
}
