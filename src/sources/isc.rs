//! oc-mirror's ImageSetConfiguration (`mirror.openshift.io/v2alpha1`) as input.
//!
//! An ISC says *what* to mirror; where registries are and how to reach them is the job's
//! business. So an ISC is merged into a job: `prewarm plan job.yaml --isc isc.yaml`, a job
//! with `isc: isc.yaml`, or the ISC alone as the job file (detected by its `kind`; then every
//! registry is reached at its own name). Unknown fields are rejected with their path, as
//! oc-mirror does. What prewarm cannot do (helm charts, the graph-data image, KubeVirt
//! container disks) becomes a note in the plan, never a silent omission.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::job::{Job, Platform, Platforms};

use super::{ChannelSpec, OperatorSpec};

pub const KIND: &str = "ImageSetConfiguration";
pub const API_VERSION: &str = "mirror.openshift.io/v2alpha1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Isc {
    pub kind: String,
    pub api_version: String,
    /// Archive size in GiB: for oc-mirror's disk archives, nothing to do with a cache.
    #[serde(default)]
    pub archive_size: Option<u64>,
    #[serde(default)]
    pub mirror: Mirror,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mirror {
    #[serde(default)]
    pub platform: Option<PlatformSection>,
    #[serde(default)]
    pub operators: Vec<OperatorSpec>,
    #[serde(default)]
    pub additional_images: Vec<Named>,
    #[serde(default)]
    pub blocked_images: Vec<Named>,
    #[serde(default)]
    pub helm: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlatformSection {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub channels: Vec<ChannelSpec>,
    #[serde(default)]
    pub graph: bool,
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub kube_virt_container: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    pub name: String,
}

/// Parse ISC text; errors name the file and the field's path.
pub fn parse(text: &str, path: &Path) -> Result<Isc> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let isc: Isc = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_yaml_ng adds its own shorter path prefix: keep only the message.
        let inner = match inner.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains(' ') => rest.to_string(),
            _ => inner,
        };
        if at == "." || at.is_empty() {
            anyhow::anyhow!("{}: {inner}", path.display())
        } else {
            anyhow::anyhow!("{}: {at}: {inner}", path.display())
        }
    })?;
    if isc.kind != KIND {
        bail!("{}: kind: `{}` is not `{KIND}`", path.display(), isc.kind);
    }
    if isc.api_version != API_VERSION {
        bail!(
            "{}: apiVersion: `{}` is not `{API_VERSION}` (only v2alpha1 is read)",
            path.display(),
            isc.api_version
        );
    }
    Ok(isc)
}

/// Whether YAML text is an ISC (by its top-level `kind`).
pub fn is_isc(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Kind {
        #[serde(default)]
        kind: Option<String>,
    }
    serde_yaml_ng::from_str::<Kind>(text)
        .ok()
        .and_then(|k| k.kind)
        .is_some_and(|k| k == KIND)
}

/// Add the ISC's content to `job`; sections prewarm cannot act on become notes.
pub fn merge(job: &mut Job, isc: Isc, path: &Path) -> Result<()> {
    let file = path.display().to_string();
    let m = isc.mirror;
    if let Some(p) = m.platform {
        if !p.architectures.is_empty() {
            let mut list = Vec::new();
            let mut multi = false;
            for (i, a) in p.architectures.iter().enumerate() {
                match a.as_str() {
                    "multi" => multi = true,
                    "amd64" | "arm64" | "s390x" | "ppc64le" => list.push(Platform {
                        os: "linux".into(),
                        architecture: a.clone(),
                        variant: None,
                    }),
                    other => bail!("{file}: mirror.platform.architectures[{i}]: `{other}` is not amd64, arm64, s390x, ppc64le or multi"),
                }
            }
            job.platforms = if multi {
                Platforms::All
            } else {
                Platforms::List(list)
            };
        }
        job.channels
            .extend(p.channels.into_iter().enumerate().map(|(i, mut c)| {
                c.origin = Some(format!("{file}: mirror.platform.channels[{i}]"));
                c
            }));
        if let Some(r) = p.release {
            job.releases.push(r);
        }
        if p.graph {
            // The graph-data image with the default base and tarball, built by copy.
            let g = job.graph.get_or_insert_with(Default::default);
            g.image.get_or_insert_with(Default::default);
        }
        if p.kube_virt_container {
            job.notes.push(format!("{file}: mirror.platform.kubeVirtContainer: KubeVirt container disks are not supported by prewarm and are not planned"));
        }
    }
    for (i, mut op) in m.operators.into_iter().enumerate() {
        let origin = format!("{file}: mirror.operators[{i}]");
        super::fbc::validate(&op, &origin)?;
        op.origin = Some(origin);
        job.operators.push(op);
    }
    job.images
        .extend(m.additional_images.into_iter().map(|n| n.name));
    job.blocked_images
        .extend(m.blocked_images.into_iter().map(|n| n.name));
    if let Some(h) = m.helm {
        if !h.is_null() {
            let count = |k: &str| h.get(k).and_then(|v| v.as_sequence()).map_or(0, Vec::len);
            job.notes.push(format!(
                "{file}: mirror.helm: helm charts are not supported by prewarm; {} repositories and {} local charts are NOT planned",
                count("repositories"),
                count("local")
            ));
        }
    }
    Ok(())
}

/// Name the job's own channel and catalog entries by the job file (merged ISC entries are
/// named by theirs), and reject the catalog entries oc-mirror rejects.
fn own_origins(job: &mut Job) -> Result<()> {
    let file = job.path.display().to_string();
    for (i, c) in job.channels.iter_mut().enumerate() {
        c.origin = Some(format!("{file}: channels[{i}]"));
    }
    for (i, op) in job.operators.iter_mut().enumerate() {
        let origin = format!("{file}: operators[{i}]");
        super::fbc::validate(op, &origin)?;
        op.origin = Some(origin);
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read ImageSetConfiguration {}", path.display()))
}

/// Load a job file or, when its `kind` says so, an ISC used as the job; then merge the job's
/// own `isc:` and `--isc` (if any).
pub fn load_job(path: &Path, extra_isc: Option<&Path>) -> Result<Job> {
    let mut job = match std::fs::read_to_string(path) {
        Ok(text) if is_isc(&text) => {
            let mut job = Job::parse("{}", path)?;
            let isc = parse(&text, path)?;
            merge(&mut job, isc, path)?;
            job
        }
        _ => {
            let mut job = Job::load(path)?;
            own_origins(&mut job)?;
            job
        }
    };
    if let Some(own) = job.isc.clone() {
        let p = job.relative(&own);
        let isc = parse(&read(&p)?, &p)?;
        merge(&mut job, isc, &p)?;
    }
    if let Some(p) = extra_isc {
        let isc = parse(&read(p)?, p)?;
        merge(&mut job, isc, p)?;
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/isc.yaml");

    #[test]
    fn fixture_isc_translates_into_the_job() {
        let text = std::fs::read_to_string(FIXTURE).unwrap();
        assert!(is_isc(&text));
        let mut job = Job::parse("{}", Path::new("job.yaml")).unwrap();
        merge(
            &mut job,
            parse(&text, Path::new("isc.yaml")).unwrap(),
            Path::new("isc.yaml"),
        )
        .unwrap();
        assert_eq!(job.channels.len(), 2);
        assert_eq!(job.channels[0].min_version.as_deref(), Some("4.20.1"));
        assert!(job.channels[1].shortest_path);
        assert_eq!(job.operators.len(), 2);
        assert_eq!(job.operators[0].packages.len(), 3);
        assert_eq!(
            job.operators[0].packages[1].channels[0]
                .min_version
                .as_deref(),
            Some("1.47.1-5")
        );
        assert!(job.operators[1].full);
        assert_eq!(job.images, ["registry.redhat.io/ubi9/ubi:latest"]);
        assert_eq!(job.blocked_images, ["registry.redhat.io/ubi9/ubi-minimal"]);
        // graph: true builds the graph-data image from the defaults.
        assert_eq!(
            job.graph.and_then(|g| g.image),
            Some(crate::sources::GraphImageConfig::default())
        );
    }

    #[test]
    fn unknown_fields_and_helm_are_reported_with_their_path() {
        let bad = "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\nmirror:\n  operators:\n  - catalog: x\n    packages:\n    - name: p\n      chanels: []\n";
        let err = parse(bad, Path::new("isc.yaml")).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "isc.yaml: mirror.operators[0].packages[0].chanels: unknown field `chanels`"
            ),
            "{err}"
        );
        let bad = "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v1alpha2\n";
        let err = parse(bad, Path::new("isc.yaml")).unwrap_err().to_string();
        assert!(
            err.starts_with("isc.yaml: apiVersion: `mirror.openshift.io/v1alpha2`"),
            "{err}"
        );
        let helm = "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\nmirror:\n  helm:\n    repositories:\n    - name: podinfo\n      url: https://example.com\n";
        let mut job = Job::parse("{}", Path::new("job.yaml")).unwrap();
        merge(
            &mut job,
            parse(helm, Path::new("i.yaml")).unwrap(),
            Path::new("i.yaml"),
        )
        .unwrap();
        assert!(
            job.notes[0].contains("helm charts are not supported by prewarm; 1 repositories"),
            "{:?}",
            job.notes
        );
    }

    #[test]
    fn shipped_examples_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/image-lists");
        let job = load_job(Path::new(&format!("{dir}/ocp-4.20.16-job.yaml")), None).unwrap();
        assert_eq!(job.releases.len(), 1);
        assert!(job.operators[0].packages.len() >= 6);
        let isc = load_job(Path::new(&format!("{dir}/ocp-4.20-isc.yaml")), None).unwrap();
        assert_eq!(isc.channels.len(), 2);
        assert_eq!(isc.images, ["registry.redhat.io/ubi9/ubi:latest"]);
        let both = load_job(
            Path::new(&format!("{dir}/ocp-4.20.16-job.yaml")),
            Some(Path::new(&format!("{dir}/ocp-4.20-isc.yaml"))),
        )
        .unwrap();
        assert_eq!(both.operators.len(), 2);
    }
}
