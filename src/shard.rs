//! Scale-out: `--shard I/N` keeps the part of a plan that process I of N warms, so N processes
//! (a Kubernetes Indexed Job, `--shard auto/N` reading `JOB_COMPLETION_INDEX`) together cover
//! the plan exactly once with no coordination.
//!
//! The split is deterministic and independent of order: an image (its manifests, by tag and by
//! digest) belongs to the shard of a hash of its source reference; a blob belongs to the shard
//! of its digest, and that shard fetches it through every cache repository that needs it. A
//! shard so also carries "blob carriers": images it does not own, pinned by digest with no
//! manifests, only so that the executor knows through which repositories to fetch its blobs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::plan::{Plan, PlannedImage};
use crate::reference::Digest;

/// Set on pods of a Kubernetes Indexed Job.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    /// `I/N` (0 ≤ I < N) or `auto/N` (I from `$JOB_COMPLETION_INDEX`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not `I/N` or `auto/N`"))?;
        let count: u64 = n
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("`{s}`: N must be a whole number of at least 1"))?;
        let index: u64 = if i == "auto" {
            let v = std::env::var(INDEX_ENV).map_err(|_| {
                format!("`{s}`: ${INDEX_ENV} is not set (it is on pods of an Indexed Job)")
            })?;
            v.trim()
                .parse()
                .map_err(|_| format!("`{s}`: ${INDEX_ENV} is `{v}`, not a number"))?
        } else {
            i.parse()
                .map_err(|_| format!("`{s}`: I must be a whole number or `auto`"))?
        };
        if index >= count {
            return Err(format!(
                "`{s}`: shard index {index} is not below the shard count {count}"
            ));
        }
        Ok(Shard { index, count })
    }
}

/// A stable 64-bit hash (sha256 prefix), the same in every process and version.
fn stable_hash(text: &str) -> u64 {
    let d = Digest::sha256_of(text.as_bytes());
    u64::from_str_radix(&d.hex()[..16], 16).expect("hex")
}

impl Shard {
    pub fn owns_image(&self, image: &PlannedImage) -> bool {
        self.owns_key(&image.source.to_string())
    }
    pub fn owns_key(&self, key: &str) -> bool {
        stable_hash(key) % self.count == self.index
    }
    pub fn owns_blob(&self, digest: &Digest) -> bool {
        // Digests are uniform already, but hashing the whole string keeps other algorithms safe.
        stable_hash(digest.as_str()) % self.count == self.index
    }
}

/// Whether a plan image is a blob carrier of a shard (see the module docs).
pub fn is_carrier(image: &PlannedImage) -> bool {
    image.manifests.is_empty()
}

/// The executor's reports of a sharded plan without its blob carriers, except failed ones (a
/// blob that failed is the carrier's only trace of the failure).
pub fn drop_carriers(
    plan: &Plan,
    reports: Vec<crate::report::ImageReport>,
) -> Vec<crate::report::ImageReport> {
    let n = plan.images.len();
    reports
        .into_iter()
        .enumerate()
        .filter(|(i, r)| {
            *i >= n
                || !is_carrier(&plan.images[*i])
                || r.status == crate::report::ImageStatus::Failed
        })
        .map(|(_, r)| r)
        .collect()
}

/// The part of `plan` shard `shard` does.
pub fn shard_plan(plan: &Plan, shard: Shard) -> Plan {
    let mut out = Plan::default();
    for image in &plan.images {
        let blobs: Vec<Digest> = image
            .blobs
            .iter()
            .filter(|d| shard.owns_blob(d))
            .cloned()
            .collect();
        if shard.owns_image(image) {
            out.images.push(PlannedImage {
                blobs,
                ..image.clone()
            });
        } else if !blobs.is_empty() {
            out.images.push(PlannedImage {
                // No tag: a carrier never pulls by tag, that is the owner's job.
                source: crate::reference::Reference::new(
                    image.source.registry(),
                    image.source.repository(),
                    None,
                    Some(image.digest.clone()),
                ),
                origin: format!("{} (blobs of shard {shard})", image.origin),
                platforms: Vec::new(),
                manifests: Vec::new(),
                bytes: 0,
                blobs,
                ..image.clone()
            });
        }
    }
    let owned_manifests: BTreeSet<(String, &Digest)> = out
        .images
        .iter()
        .flat_map(|i| i.manifests.iter().map(move |d| (i.source.repo_path(), d)))
        .collect();
    out.manifests = plan
        .manifests
        .iter()
        .filter(|m| owned_manifests.contains(&(m.repository.clone(), &m.digest)))
        .cloned()
        .collect();
    let used: BTreeMap<&Digest, ()> = out
        .images
        .iter()
        .flat_map(|i| i.blobs.iter().map(|d| (d, ())))
        .collect();
    out.blobs = plan
        .blobs
        .iter()
        .filter(|b| used.contains_key(&b.digest))
        .cloned()
        .collect();
    out.failures = plan
        .failures
        .iter()
        .filter(|f| shard.owns_key(&f.reference))
        .cloned()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        assert!("3/3".parse::<Shard>().unwrap_err().contains("not below"));
        assert!("1/0".parse::<Shard>().unwrap_err().contains("at least 1"));
        assert!("x".parse::<Shard>().unwrap_err().contains("I/N"));
    }
}
