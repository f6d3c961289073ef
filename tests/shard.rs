//! `--shard I/N`: a property test over random plans (every image's manifests in exactly one
//! shard, every (repository, blob) pair in exactly one shard, nothing else), and a sharded warm
//! of the lab by three concurrent processes that leaves the cache complete.

mod common;
#[path = "support/prom.rs"]
mod prom;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use prewarm::plan::{Plan, PlanFailure, PlannedBlob, PlannedImage, PlannedManifest};
use prewarm::reference::{Digest, Reference};
use prewarm::shard::{is_carrier, shard_plan, Shard};

/// xorshift64*: a seeded generator, so a failure names a reproducible seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_plan(rng: &mut Rng) -> Plan {
    let pool: Vec<(Digest, u64)> = (0..1 + rng.below(60))
        .map(|i| {
            (
                Digest::sha256_of(format!("blob {i} {}", rng.next()).as_bytes()),
                rng.below(1 << 20),
            )
        })
        .collect();
    let repos = [
        "quay.io/a/x",
        "quay.io/a/y",
        "registry.redhat.io/b/z",
        "quay.io/c",
    ];
    let mut plan = Plan::default();
    let mut blobs: BTreeMap<Digest, PlannedBlob> = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    for i in 0..rng.below(40) {
        let repo = repos[rng.below(repos.len() as u64) as usize];
        let (registry, repository) = repo.split_once('/').unwrap();
        let digest = Digest::sha256_of(format!("image {i} {}", rng.next()).as_bytes());
        let tag = (rng.below(2) == 0).then(|| format!("t{i}"));
        let source = Reference::new(
            registry,
            repository,
            tag.as_deref(),
            tag.is_none().then(|| digest.clone()),
        );
        let mut image_manifests = vec![digest.clone()];
        for c in 0..rng.below(3) {
            image_manifests.push(Digest::sha256_of(format!("child {i} {c}").as_bytes()));
        }
        for m in &image_manifests {
            manifests.insert(
                (repo.to_string(), m.clone()),
                PlannedManifest {
                    repository: repo.to_string(),
                    digest: m.clone(),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    size: 500,
                },
            );
        }
        let mut image_blobs = BTreeSet::new();
        for _ in 0..1 + rng.below(8) {
            let (d, size) = &pool[rng.below(pool.len() as u64) as usize];
            image_blobs.insert(d.clone());
            blobs
                .entry(d.clone())
                .or_insert_with(|| PlannedBlob {
                    digest: d.clone(),
                    size: *size,
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    repositories: BTreeSet::new(),
                })
                .repositories
                .insert(repo.to_string());
        }
        plan.images.push(PlannedImage {
            source,
            digest,
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            origin: format!("images.txt:{i}"),
            platforms: Vec::new(),
            manifests: image_manifests,
            blobs: image_blobs.into_iter().collect(),
            bytes: 0,
        });
    }
    for f in 0..rng.below(4) {
        plan.failures.push(PlanFailure {
            reference: format!("quay.io/broken/f:{f}"),
            origin: "job".into(),
            error: "not found".into(),
            budget_spent: None,
        });
    }
    plan.manifests = manifests.into_values().collect();
    plan.blobs = blobs.into_values().collect();
    plan
}

/// Every (source repository, blob) pair a plan makes the warm executor fetch.
fn pairs(plan: &Plan) -> BTreeSet<(String, Digest)> {
    plan.images
        .iter()
        .flat_map(|i| {
            i.blobs
                .iter()
                .map(move |d| (i.source.repo_path(), d.clone()))
        })
        .collect()
}

#[test]
fn shards_of_random_plans_cover_each_one_exactly_once() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let plan = random_plan(&mut rng);
        let n = 1 + rng.below(7);
        let shards: Vec<Plan> = (0..n)
            .map(|index| shard_plan(&plan, Shard { index, count: n }))
            .collect();
        let ctx = format!("seed {seed}, {n} shards, {} images", plan.images.len());

        // Images (their manifests, pulled by tag and digest): each in exactly one shard, whole.
        let mut owned: Vec<(String, Vec<Digest>)> = shards
            .iter()
            .flat_map(|s| s.images.iter().filter(|i| !is_carrier(i)))
            .map(|i| (i.source.to_string(), i.manifests.clone()))
            .collect();
        owned.sort();
        let mut expected: Vec<(String, Vec<Digest>)> = plan
            .images
            .iter()
            .map(|i| (i.source.to_string(), i.manifests.clone()))
            .collect();
        expected.sort();
        assert_eq!(owned, expected, "{ctx}");
        // Carriers pull nothing by tag and no manifest.
        for s in &shards {
            for c in s.images.iter().filter(|i| is_carrier(i)) {
                assert!(
                    c.source.tag().is_none() && c.source.digest().is_some(),
                    "{ctx}"
                );
            }
        }

        // (repository, blob) pairs: disjoint between shards, together the plan's.
        let all = pairs(&plan);
        let mut seen = BTreeSet::new();
        for s in &shards {
            for p in pairs(s) {
                assert!(seen.insert(p.clone()), "{ctx}: {p:?} in two shards");
            }
            // Its blob list is exactly the blobs its images need, sizes kept.
            let used: BTreeSet<&Digest> = s.images.iter().flat_map(|i| &i.blobs).collect();
            let listed: BTreeSet<&Digest> = s.blobs.iter().map(|b| &b.digest).collect();
            assert_eq!(used, listed, "{ctx}");
            for b in &s.blobs {
                let orig = plan.blobs.iter().find(|o| o.digest == b.digest).unwrap();
                assert_eq!(b.size, orig.size, "{ctx}");
            }
        }
        assert_eq!(seen, all, "{ctx}");

        // Failures reported by exactly one shard; the split is deterministic.
        let failures: usize = shards.iter().map(|s| s.failures.len()).sum();
        assert_eq!(failures, plan.failures.len(), "{ctx}");
        let again = shard_plan(&plan, Shard { index: 0, count: n });
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&shards[0]).unwrap(),
            "{ctx}"
        );
    }
}

#[test]
fn three_concurrent_shards_warm_the_whole_lab() {
    let env = common::lab("shard-warm");
    let job = env.job.to_str().unwrap();
    let children: Vec<_> = (0..3)
        .map(|i| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_prewarm"));
            cmd.args(["warm", job, "--no-state", "--quiet", "--shard", "auto/3"])
                .args(["--report", &env.path(&format!("shard{i}.json"))])
                .args(["--metrics", &env.path(&format!("shard{i}.prom"))])
                .arg("--authfile")
                .arg(&env.auth)
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .stdout(Stdio::null());
            cmd.spawn().unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    // Every image reported (warmed) by exactly one shard.
    let mut reported = Vec::new();
    for i in 0..3 {
        let r = common::read_report(&env.dir.join(format!("shard{i}.json")));
        assert_eq!(r["summary"]["failed"], 0, "{r:#}");
        for image in r["images"].as_array().unwrap() {
            // A shard's status for an image counts only that image's blobs in the shard:
            // one whose blobs all belong to other shards shows `cached` (manifests only).
            assert!(
                ["warmed", "cached"].contains(&image["status"].as_str().unwrap()),
                "{image}"
            );
            reported.push(image["reference"].as_str().unwrap().to_string());
        }
        let text = std::fs::read_to_string(env.dir.join(format!("shard{i}.prom"))).unwrap();
        let samples = prom::parse_prometheus(&text);
        let warmed = samples
            .iter()
            .find(|(n, l, _)| n == "prewarm_images_warmed" && l["command"] == "warm")
            .unwrap()
            .2;
        assert_eq!(warmed, r["summary"]["warmed"].as_f64().unwrap());
    }
    reported.sort();
    let mut expected = env.seed.references();
    expected.sort();
    assert_eq!(reported, expected);

    // The cache holds every planned (repository, blob) pair, by its own storage.
    env.settled_upstream_blob_gets();
    for image in &env.seed.images {
        let cache_repo = env
            .cache_path(&image.reference)
            .split_once('/')
            .unwrap()
            .1
            .to_string();
        for digest in image.blobs_for(&["linux/amd64", "linux/arm64"]).keys() {
            assert!(
                env.proxy_holds(&cache_repo, digest),
                "{cache_repo} lacks {digest}"
            );
        }
    }
}
