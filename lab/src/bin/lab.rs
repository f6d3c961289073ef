//! `lab`: start, seed and stop the local lab by hand (the tests start their own).
//!
//! ```text
//! cargo run -p prewarm-lab --bin lab -- up [--dir DIR]        # registries, proxies, nginx on 127.0.0.1
//! cargo run -p prewarm-lab --bin lab -- seed [--bench] [--large-layer BYTES] [--ocp]
//! cargo run -p prewarm-lab --bin lab -- seed --release-scale [--components N] [--large-layers N]
//! cargo run -p prewarm-lab --bin lab -- seed --scale IMAGES [--repos N] [--direct]   # bench/scale.sh
//! cargo run -p prewarm-lab --bin lab -- stop-upstreams | start-upstreams | reset-cache | down
//! cargo run -p prewarm-lab --bin lab -- shape --listen ADDR --upstream ADDR [--latency-ms MS]
//!     [--rate BYTES_PER_SEC] [--total-rate BYTES_PER_SEC]                # bench/wan.sh
//! ```
//! `up` writes DIR/job.yaml and DIR/auth.json; `seed` writes DIR/images.txt. `shape` prints
//! the address it listens on and runs until its parent goes away or it gets SIGTERM.

use std::path::PathBuf;

use anyhow::{bail, Result};
use prewarm_lab::{Lab, Scale, SeedOptions};

fn usage() -> ! {
    eprintln!("usage: lab up|seed [--bench] [--large-layer BYTES] [--release-scale [--components N] [--large-layers N]] [--scale IMAGES [--repos N] [--direct]] [--ocp]|down|stop-upstreams|start-upstreams|reset-cache|env [--dir DIR]");
    eprintln!("       lab shape --listen ADDR --upstream ADDR [--latency-ms MS] [--rate BYTES_PER_SEC] [--total-rate BYTES_PER_SEC]");
    std::process::exit(2)
}

/// The value after `flag`, parsed; a missing or bad one is a usage error (exit 2).
fn value<T: std::str::FromStr>(args: &mut impl Iterator<Item = String>, flag: &str) -> T {
    let Some(text) = args.next() else { usage() };
    text.parse().unwrap_or_else(|_| {
        eprintln!("lab: {flag} {text}: not a valid value");
        std::process::exit(2)
    })
}

/// The line every seed ends with.
fn print_seeded(seed: &prewarm_lab::Seed, dir: &std::path::Path) {
    let unique = seed.unique_blobs();
    println!(
        "seeded {} images, {} unique blobs, {} bytes; list in {}",
        seed.images.len(),
        unique.len(),
        unique.values().sum::<u64>(),
        dir.join("images.txt").display()
    );
}

/// `lab shape`: the WAN-shaping proxy of `prewarm_lab::shaper`, in the foreground.
async fn shape(mut args: impl Iterator<Item = String>) -> Result<()> {
    let (mut listen, mut upstream) = (None, None);
    let (mut latency_ms, mut rate, mut total_rate) = (0u64, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = Some(value(&mut args, &a)),
            "--upstream" => upstream = Some(value(&mut args, &a)),
            "--latency-ms" => latency_ms = value(&mut args, &a),
            "--rate" => rate = Some(value(&mut args, &a)),
            "--total-rate" => total_rate = Some(value(&mut args, &a)),
            _ => usage(),
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        usage()
    };
    let options = prewarm_lab::shaper::ShapeOptions {
        upstream,
        latency: std::time::Duration::from_millis(latency_ms),
        rate,
        total_rate,
    };
    let listener = match prewarm_lab::shaper::bind(listen, &options).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("lab shape: {e:#}");
            std::process::exit(2)
        }
    };
    prewarm_lab::shaper::exit_when_orphaned();
    println!(
        "shaping {} -> {upstream}: +{latency_ms} ms per request, {} B/s per connection, {} B/s in all",
        listener.local_addr()?,
        rate.map_or("unlimited".into(), |r: u64| r.to_string()),
        total_rate.map_or("unlimited".into(), |r: u64| r.to_string()),
    );
    prewarm_lab::shaper::serve(listener, options).await
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| usage());
    if command == "shape" {
        return shape(args).await;
    }
    let mut dir = std::env::var_os("PREWARM_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/prewarm-lab"));
    let mut scale = Scale::Test;
    let mut large = None;
    let mut release_scale = false;
    let mut ocp = false;
    let mut scale_images: Option<usize> = None;
    let mut scale_repos: Option<usize> = None;
    let mut direct = false;
    let mut release = prewarm_lab::release_scale::ReleaseScaleOptions::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(args.next().unwrap_or_else(|| usage())),
            "--bench" => scale = Scale::Bench,
            "--release-scale" => release_scale = true,
            // Also the OCP releases and catalogs of lab::ocp_content, and a local graph.
            "--ocp" => ocp = true,
            // The scale benchmark's set: IMAGES small images in IMAGES/10 repositories.
            "--scale" => scale_images = Some(value(&mut args, &a)),
            "--repos" => scale_repos = Some(value(&mut args, &a)),
            // Write it into the stopped upstream's storage instead of pushing (seconds, not an hour).
            "--direct" => direct = true,
            // A smaller release-scale set, for a trial run of bench/wan.sh.
            "--components" => release.components = value(&mut args, &a),
            "--large-layers" => release.large_layers = value(&mut args, &a),
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
            // The benchmark's release-scale set: ~190 components, 2 GiB+, by digest (fewer
            // with --components and --large-layers).
            let lab = Lab::load(&dir)?;
            let seed = prewarm_lab::release_scale::seed_release_scale(&lab.quay_target(), &release)
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
            print_seeded(&seed, &dir);
        }
        "seed" if scale_images.is_some() => {
            let lab = Lab::load(&dir)?;
            let mut options =
                prewarm_lab::scale::ScaleOptions::new(scale_images.unwrap_or_default());
            if let Some(repos) = scale_repos {
                options.repositories = repos;
            }
            let seed = if direct {
                // Straight into the stopped upstream's storage, then start it again.
                let mut lab = lab;
                lab.stop_upstreams();
                let seed = prewarm_lab::scale::write_scale(&lab.quay_storage, "quay.io", &options);
                lab.start_upstreams()?;
                seed?
            } else {
                prewarm_lab::scale::seed_scale(&lab.quay_target(), &options).await?
            };
            seed.write_list(&dir.join("images.txt"))?;
            seed.write_json(&dir.join("seed.json"))?;
            print_seeded(&seed, &dir);
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
            print_seeded(&seed, &dir);
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
