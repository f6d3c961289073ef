//! Peak memory of loading and selecting from a catalog the size of a real one.
//!
//! ```text
//! cargo run --release --example fbc_memory -- [PACKAGES] [BUNDLES_PER_PACKAGE] [CSV_BYTES]
//! ```
//! Writes a synthetic file-based catalog (each bundle with an `olm.bundle.object` of
//! CSV_BYTES, as real bundles carry their CSV) to a temp dir, loads it with prewarm's loader,
//! selects the channel heads, and prints the catalog size, time and the process's peak RSS.

use std::io::Write;
use std::time::Instant;

use base64::Engine;
use prewarm::sources::fbc::{self, Catalog};
use prewarm::sources::OperatorSpec;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let packages = *args.first().unwrap_or(&500);
    let per = *args.get(1).unwrap_or(&40);
    let csv = args.get(2).copied().unwrap_or(16 * 1024);
    let dir = std::env::temp_dir().join(format!("fbc-memory-{}", std::process::id()));
    let blob = base64::engine::general_purpose::STANDARD.encode(vec![7u8; csv * 3 / 4]);
    let mut bytes = 0u64;
    for p in 0..packages {
        let pkg = format!("package-{p}");
        std::fs::create_dir_all(dir.join(&pkg))?;
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join(&pkg).join("catalog.json"))?);
        let mut docs =
            vec![serde_json::json!({"schema":"olm.package","name":pkg,"defaultChannel":"stable"})];
        let entries: Vec<_> = (0..per)
            .map(|b| {
                let mut e = serde_json::json!({"name": format!("{pkg}.v1.{b}.0")});
                if b > 0 {
                    e["replaces"] = format!("{pkg}.v1.{}.0", b - 1).into();
                }
                e
            })
            .collect();
        docs.push(serde_json::json!({"schema":"olm.channel","name":"stable","package":pkg,"entries":entries}));
        for b in 0..per {
            let digest = format!("{:064x}", p * 100_000 + b);
            docs.push(serde_json::json!({
                "schema":"olm.bundle","name":format!("{pkg}.v1.{b}.0"),"package":pkg,
                "image":format!("registry.redhat.io/{pkg}/bundle@sha256:{digest}"),
                "properties":[{"type":"olm.package","value":{"packageName":pkg,"version":format!("1.{b}.0")}},
                              {"type":"olm.bundle.object","value":{"data":blob}}],
                "relatedImages":[{"name":"","image":format!("registry.redhat.io/{pkg}/bundle@sha256:{digest}")},
                                 {"name":"manager","image":format!("registry.redhat.io/{pkg}/operator@sha256:{digest}")}]
            }));
        }
        for d in docs {
            let s = serde_json::to_vec(&d)?;
            bytes += s.len() as u64 + 1;
            f.write_all(&s)?;
            f.write_all(b"\n")?;
        }
    }
    let before = peak_rss_kib();
    let started = Instant::now();
    let cat = Catalog::load(&dir, None, "configs")?;
    let op = OperatorSpec {
        catalog: "registry.redhat.io/redhat/redhat-operator-index:v4.20".into(),
        ..OperatorSpec::default()
    };
    let kept = fbc::select(&cat, &op, "operators[0]")?;
    println!(
        "catalog: {packages} packages x {per} bundles, {:.1} MiB of FBC JSON; load+select {:.1}s; {} heads; peak RSS {:.1} MiB (before loading {:.1} MiB)",
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        kept.len(),
        peak_rss_kib() as f64 / 1024.0,
        before as f64 / 1024.0
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
