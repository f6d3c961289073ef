//! The OpenShift Update Service's graph-data image, as the OSUS documentation builds it: the
//! graph-data tarball unpacked under `/var/lib/cincinnati-graph-data` in one layer on top of a
//! base image (UBI by default, planned and mirrored like any image), whose command copies it
//! to `/var/lib/cincinnati/graph-data` where the update service's init container expects it.
//!
//! The tarball comes from `graph.image.data` (a URL, default the public graph-data, or a file
//! relative to the job). The layer is made deterministically, so the same tarball gives the same
//! digest. `copy` pushes the image beside the base at the destination, as
//! `<the base's destination org or prefix>/openshift/graph-image:latest`, the base's layers
//! mounted from where the run put them; `warm` pushes it into the cache host's regular org
//! (`cache.built_org`), the base's layers mounted or copied from its cache org; export carries
//! it in the bundle ([`carry`](super::carry)).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};

use super::catalog_image::Target;
use super::image::{self, Layer, TarEntry};
use super::resources::{is_release_origin, Placed, PlacedGraph};
use crate::job::Job;
use crate::reference::{Digest, Reference};
use crate::registry::RegistryClient;
use crate::sources::GraphImageConfig;

/// Where the layer puts the graph data.
pub const DATA_DIR: &str = "var/lib/cincinnati-graph-data";

/// The command: copy the data where the update service reads it.
pub const COMMAND: [&str; 3] = [
    "/bin/bash",
    "-c",
    "exec cp -rp /var/lib/cincinnati-graph-data/* /var/lib/cincinnati/graph-data",
];

/// The repository (under the base's destination org or prefix) and tag of the image.
pub const REPOSITORY: &str = "openshift/graph-image";
pub const TAG: &str = "latest";

/// The tarball's bytes: fetched from a URL or read from a file (relative to the job).
pub async fn read_data(job: &Job, data: &str) -> Result<Vec<u8>> {
    if data.starts_with("https://") || data.starts_with("http://") {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(300))
            .build()?;
        let resp = http
            .get(data)
            .send()
            .await
            .with_context(|| format!("graph data {data}"))?;
        if !resp.status().is_success() {
            bail!("graph data {data}: HTTP {}", resp.status());
        }
        Ok(resp
            .bytes()
            .await
            .with_context(|| format!("graph data {data}"))?
            .to_vec())
    } else {
        let path = job.relative(Path::new(data));
        std::fs::read(&path).with_context(|| format!("cannot read graph data {}", path.display()))
    }
}

/// The layer: every directory and regular file of the tarball (gzip or plain) under
/// [`DATA_DIR`], sorted; links and devices are left out, and so is any path leaving the root.
pub fn data_layer(tarball: &[u8], what: &str) -> Result<Layer> {
    let reader = crate::sources::layers::decompress(std::io::Cursor::new(tarball.to_vec()))
        .with_context(|| format!("{what}: not a tarball"))?;
    let mut archive = tar::Archive::new(reader);
    let mut files: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    let mut dirs = std::collections::BTreeSet::new();
    for entry in archive
        .entries()
        .with_context(|| format!("{what}: not a tarball"))?
    {
        let mut entry = entry.with_context(|| format!("{what}: not a tarball"))?;
        let path = crate::sources::layers::entry_path(&entry)?;
        let path = path.trim_end_matches('/').to_string();
        if path.is_empty()
            || !Path::new(&path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            dirs.insert(path);
        } else if kind.is_file() {
            let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .with_context(|| format!("{what}: {path}"))?;
            files.insert(path, (data, mode | 0o444));
        }
    }
    if files.is_empty() {
        bail!("{what}: the tarball holds no file");
    }
    let mut entries = image::tree(DATA_DIR, &BTreeMap::new());
    let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let all: std::collections::BTreeSet<String> = dirs
        .into_iter()
        .chain(
            files
                .keys()
                .filter_map(|f| f.rsplit_once('/').map(|(d, _)| d.to_string())),
        )
        .collect();
    for d in all {
        let mut acc = String::new();
        for part in d.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if seen.insert(acc.clone()) {
                entries.push(TarEntry::Dir(format!("{DATA_DIR}/{acc}")));
            }
        }
    }
    entries.sort_by(|a, b| path_of(a).cmp(path_of(b)));
    for (path, (data, mode)) in files {
        entries.push(TarEntry::File(format!("{DATA_DIR}/{path}"), data, mode));
    }
    image::layer(&entries)
}

fn path_of(e: &TarEntry) -> &str {
    match e {
        TarEntry::Dir(p) | TarEntry::File(p, _, _) => p,
    }
}

/// The base the job names for the graph image.
pub fn base_of(job: &Job, config: &GraphImageConfig) -> Result<Reference> {
    config
        .base
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: graph.image.base: {e}", job.path.display()))
}

/// The image in memory: the graph-data layer on the base at `from` (a client and repository
/// holding it) by `digest`.
pub async fn build_image(
    job: &Job,
    config: &GraphImageConfig,
    from: (&RegistryClient, &str),
    digest: &Digest,
) -> Result<image::Built> {
    let data = read_data(job, &config.data).await?;
    let layer = data_layer(&data, &format!("graph data {}", config.data))?;
    image::build_on_top(&image::OnTop {
        source: from.0,
        from: from.1,
        top: digest,
        added: std::slice::from_ref(&layer),
        cmd: &COMMAND,
        created_by: "prewarm: graph data",
    })
    .await
    .context("graph image")
}

/// Where the graph image goes for a base: `<the base's registry>/openshift/graph-image:latest`
/// as a source reference, so that every mapping puts it beside the base's org or prefix.
pub fn reference_for(base: &Reference) -> Reference {
    format!("{}/{REPOSITORY}:{TAG}", base.registry())
        .parse()
        .expect("a valid reference")
}

/// The release repository at the mirror, for the UpdateService: where the first placed release
/// went, else where the public release repository would.
pub fn releases_at(images: &[Placed], mirror_of: &dyn Fn(&Reference) -> String) -> String {
    images
        .iter()
        .find(|p| is_release_origin(&p.origin))
        .map(|p| p.mirror.clone())
        .unwrap_or_else(|| {
            mirror_of(
                &"quay.io/openshift-release-dev/ocp-release:x"
                    .parse()
                    .expect("a valid reference"),
            )
        })
}

/// Build the image on the placed base and push it; `None` (with the reason) when the base
/// was not placed.
pub async fn build(
    job: &Job,
    config: &GraphImageConfig,
    images: &[Placed],
    target: &Target<'_>,
) -> Result<Option<PlacedGraph>> {
    let base = base_of(job, config)?;
    let Some(placed) = images
        .iter()
        .find(|p| p.source.repo_path() == base.repo_path() && p.source.tag() == base.tag())
    else {
        eprintln!("note: graph image: its base {base} was not placed; no graph image is built");
        return Ok(None);
    };
    let base_repository = (target.placed_at)(&base);
    let built = build_image(
        job,
        config,
        (&target.client, &base_repository),
        &placed.digest,
    )
    .await?;
    let repository = (target.repository_of)(&reference_for(&base));
    let digest = image::push(&built, &target.client, &repository, TAG, &base_repository)
        .await
        .context("graph image")?;
    let host_of = |r: &Reference| format!("{}/{}", target.host, (target.repository_of)(r));
    let image = format!("{}/{repository}@{digest}", target.host).parse()?;
    eprintln!("graph image: {image}");
    Ok(Some(PlacedGraph {
        image,
        releases: releases_at(images, &host_of),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            (
                "channels/stable-4.20.yaml",
                &b"name: stable-4.20\nversions: [4.20.1]\n"[..],
            ),
            ("blocked-edges/4.20.2.yaml", b"to: 4.20.2\nfrom: .*\n"),
            ("../escape", b"x"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            // `append_data` refuses `..`; write the name into the header directly.
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        let raw = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn the_layer_holds_the_tarballs_files_under_the_data_dir() {
        let layer = data_layer(&tarball(), "t").unwrap();
        assert_eq!(layer.digest, data_layer(&tarball(), "t").unwrap().digest);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&layer.bytes[..]));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "var/",
                "var/lib/",
                "var/lib/cincinnati-graph-data/",
                "var/lib/cincinnati-graph-data/blocked-edges/",
                "var/lib/cincinnati-graph-data/channels/",
                "var/lib/cincinnati-graph-data/blocked-edges/4.20.2.yaml",
                "var/lib/cincinnati-graph-data/channels/stable-4.20.yaml",
            ]
        );
        assert!(data_layer(b"not a tarball at all", "t").is_err());
    }
}
