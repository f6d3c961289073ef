//! `lab`: start, seed and stop the local lab by hand (the tests start their own).
//!
//! ```text
//! cargo run -p prewarm-lab --bin lab -- up [--dir DIR]        # registries, proxies, nginx on 127.0.0.1
//! cargo run -p prewarm-lab --bin lab -- seed [--bench] [--large-layer BYTES] [--ocp]
//! cargo run -p prewarm-lab --bin lab -- stop-upstreams | start-upstreams | reset-cache | down
//! ```
//! `up` writes DIR/job.yaml and DIR/auth.json; `seed` writes DIR/images.txt.

use std::path::PathBuf;

use anyhow::{bail, Result};
use prewarm_lab::{Lab, Scale, SeedOptions};

fn usage() -> ! {
    eprintln!("usage: lab up|seed [--bench] [--large-layer BYTES] [--release-scale] [--ocp]|down|stop-upstreams|start-upstreams|reset-cache|env [--dir DIR]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| usage());
    let mut dir = std::env::var_os("PREWARM_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/prewarm-lab"));
    let mut scale = Scale::Test;
    let mut large = None;
    let mut release_scale = false;
    let mut ocp = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(args.next().unwrap_or_else(|| usage())),
            "--bench" => scale = Scale::Bench,
            "--release-scale" => release_scale = true,
            // Also the OCP releases and catalogs of lab::ocp_content, and a local graph.
            "--ocp" => ocp = true,
            "--large-layer" => large = Some(args.next().unwrap_or_else(|| usage()).parse()?),
            _ => usage(),
        }
    }
    match command.as_str() {
        "up" => {
            let lab = Lab::start(&dir, true)?;
            let job = lab.write_job()?;
            println!("lab up in {}: cache http://{} (orgs cache_quay_io, cache_registry_redhat_io), quay.io at {}, registry.redhat.io at https://{}", dir.display(), lab.front_addr(), lab.quay_addr(), lab.redhat_addr());
            println!(
                "job: {}  auth: {}",
                job.display(),
                dir.join("auth.json").display()
            );
        }
        "seed" if release_scale => {
            // The benchmark's release-scale set: ~190 components, 2 GiB+, by digest.
            let lab = Lab::load(&dir)?;
            let seed = prewarm_lab::release_scale::seed_release_scale(
                &lab.quay_target(),
                &Default::default(),
            )
            .await?;
            seed.write_list(&dir.join("images.txt"))?;
            seed.write_json(&dir.join("seed.json"))?;
            // A catalog of 3,000 bundles over those components, for planning time.
            let catalog = prewarm_lab::release_scale::seed_scale_catalog(
                &lab.redhat_target()?,
                &seed,
                300,
                10,
            )
            .await?;
            std::fs::write(dir.join("catalog.ref"), format!("{catalog}\n"))?;
            println!("catalog {catalog}: 300 packages, 3000 bundles");
            let unique = seed.unique_blobs();
            println!(
                "seeded {} images, {} unique blobs, {} bytes; list in {}",
                seed.images.len(),
                unique.len(),
                unique.values().sum::<u64>(),
                dir.join("images.txt").display()
            );
        }
        "seed" => {
            let lab = Lab::load(&dir)?;
            let seed = lab
                .seed(&SeedOptions {
                    scale,
                    large_layer_bytes: large,
                    work_dir: dir.join("seed-work"),
                })
                .await?;
            let unique = seed.unique_blobs();
            println!(
                "seeded {} images, {} unique blobs, {} bytes; list in {}",
                seed.images.len(),
                unique.len(),
                unique.values().sum::<u64>(),
                dir.join("images.txt").display()
            );
            if ocp {
                let content = lab.seed_ocp().await?;
                let graphs = dir.join("graphs");
                std::fs::create_dir_all(&graphs)?;
                std::fs::write(
                    graphs.join("graph-stable-4.20-amd64.json"),
                    content.graph_json(
                        "quay.io",
                        &[("4.20.1", "4.20.2"), ("4.20.2", "4.20.3")],
                        &[("4.20.1", "4.20.3")],
                    ),
                )?;
                println!(
                    "seeded OCP content: {} images (releases {}, catalogs registry.redhat.io/{}:v4.20 and registry.redhat.io/{}:v4.20); graph in {}",
                    content.images.len(),
                    content.releases.keys().cloned().collect::<Vec<_>>().join(", "),
                    prewarm_lab::ocp_content::CATALOG_REPOSITORY,
                    prewarm_lab::ocp_content::CERTIFIED_REPOSITORY,
                    graphs.display()
                );
            }
        }
        "down" => {
            Lab::load(&dir)?.stop();
            println!("lab in {} stopped", dir.display());
        }
        "stop-upstreams" => Lab::load(&dir)?.stop_upstreams(),
        "start-upstreams" => Lab::load(&dir)?.start_upstreams()?,
        "reset-cache" => Lab::load(&dir)?.reset_cache()?,
        "env" => {
            let lab = Lab::load(&dir)?;
            println!(
                "FRONT={}\nQUAY={}\nREDHAT={}\nCA={}",
                lab.front_addr(),
                lab.quay_addr(),
                lab.redhat_addr(),
                lab.ca_cert.display()
            );
        }
        other => bail!("unknown lab command `{other}`"),
    }
    Ok(())
}
