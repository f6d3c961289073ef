//! The test lab: real registries on loopback standing in for quay.io and registry.redhat.io,
//! a distribution pull-through proxy per upstream, nginx in front so the cache looks like one
//! Quay host with `cache_<host>` orgs ([`servers`]), and a seeder that pushes OCP-shaped
//! content with real digests ([`seed`]). Used by the integration tests, the `lab` binary
//! (`examples/lab/lab.sh`) and the benchmarks. It is a crate of its own (`publish = false`) so
//! the `prewarm` binary compiles none of it, and it does not depend on `prewarm`: the lab must
//! write what prewarm reads without sharing prewarm's code (an independent client pushes).

pub mod servers;

pub use servers::{ExtraRegistry, Lab, Server, BUILT_ORG};
pub mod ocp_content;
pub mod release_scale;
pub mod scale;
pub mod seed;
pub mod shaper;
pub mod storage;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use seed::{Scale, Seed, SeedOptions, Target};

impl Lab {
    /// The quay.io stand-in as a push target (plain HTTP, anonymous).
    pub fn quay_target(&self) -> Target {
        Target {
            host: "quay.io".into(),
            endpoint: self.quay_addr(),
            https: false,
            ca_pem: None,
            credentials: None,
        }
    }

    /// The registry.redhat.io stand-in as a push target (TLS with the lab CA, Basic auth).
    pub fn redhat_target(&self) -> Result<Target> {
        let ca = std::fs::read(&self.ca_cert)
            .with_context(|| format!("cannot read {}", self.ca_cert.display()))?;
        Ok(Target {
            host: "registry.redhat.io".into(),
            endpoint: self.redhat_addr(),
            https: true,
            ca_pem: Some(ca),
            credentials: Some((self.user.clone(), self.password.clone())),
        })
    }

    /// Push the lab content into both upstreams; write `images.txt` and `seed.json` beside
    /// the job.
    pub async fn seed(&self, options: &SeedOptions) -> Result<Seed> {
        let seed = seed::seed(&self.quay_target(), &self.redhat_target()?, options).await?;
        seed.write_list(&self.dir.join("images.txt"))?;
        seed.write_json(&self.dir.join("seed.json"))?;
        Ok(seed)
    }

    /// A job for this lab: the nginx front as the cache, each logical upstream served from
    /// its loopback endpoint, sources from `images.txt`. Returns its path.
    pub fn write_job(&self) -> Result<PathBuf> {
        let path = self.dir.join("job.yaml");
        let text = format!(
            "# prewarm job for the local lab in {dir}\n\
             cache:\n  host: {front}\n  insecure: true\n\
             registries:\n  quay.io:\n    endpoint: {quay}\n    insecure: true\n  registry.redhat.io:\n    endpoint: {redhat}\n    ca: {ca}\n\
             platforms: [linux/amd64, linux/arm64]\n\
             concurrency: 8\n\
             image_lists: [images.txt]\n",
            dir = self.dir.display(),
            front = self.front_addr(),
            quay = self.quay_addr(),
            redhat = self.redhat_addr(),
            ca = self.ca_cert.display(),
        );
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        self.write_auth_file(&self.dir.join("auth.json"), &self.password.clone())?;
        Ok(path)
    }
}

/// Where a test's lab lives: a fresh directory under the system temp dir.
pub fn scratch_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("prewarm-{name}-{}-{}", std::process::id(), now()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Seconds since the epoch: unique enough for scratch directory names.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The storage file of blob `digest` (`sha256:<hex>`, anything that prints so) under a
/// distribution registry's root.
pub fn blob_data_path(storage: &Path, digest: impl std::fmt::Display) -> PathBuf {
    let digest = digest.to_string();
    let (algorithm, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("blob_data_path: `{digest}` is not algorithm:hex"));
    storage.join(format!(
        "docker/registry/v2/blobs/{algorithm}/{}/{hex}/data",
        &hex[..2.min(hex.len())]
    ))
}
