//! Arguments of the commands that move content into a registry's orgs or into bundles:
//! `copy`, `export`, `import`, `inventory`, `bundle verify`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ResolveVia;

/// How to reach the destination registry of `copy` and `import`.
#[derive(Debug, Args)]
pub struct DestinationArgs {
    /// The destination: `REGISTRY` (repositories by the cache-org mapping, `cache_<host>/…`
    /// or the job's `cache.orgs`) or `REGISTRY/PREFIX` (repositories `PREFIX/<source path>`).
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    pub to: String,
    /// A CA certificate (PEM) the destination's TLS certificate is signed by.
    #[arg(long, value_name = "FILE")]
    pub to_ca: Option<PathBuf>,
    /// Talk to the destination over plain HTTP, or HTTPS without verification.
    #[arg(long)]
    pub to_insecure: bool,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The job file (YAML).
    pub job: PathBuf,
    #[command(flatten)]
    pub destination: DestinationArgs,
    /// Transfers at once (default: the job's `concurrency`).
    #[arg(long, short, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write Prometheus text metrics here, atomically (node_exporter's textfile collector).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Resolve tags against the source registries or through the cache.
    #[arg(long, value_enum, value_name = "VIA")]
    pub resolve: Option<ResolveVia>,
    /// Write the cluster resources (IDMS, ITMS, CatalogSource, ClusterCatalog, signature
    /// ConfigMaps, UpdateService) for what this run placed into DIR. Default:
    /// `cluster-resources/` beside `--report`; with neither, none are written.
    #[arg(long, value_name = "DIR")]
    pub cluster_resources: Option<PathBuf>,
    #[command(flatten)]
    pub shipped: ShippedArgs,
}

/// Where copy, export and import record what they shipped.
#[derive(Debug, Args)]
pub struct ShippedArgs {
    /// The site name what this run ships is recorded under in the state's `shipped` table
    /// (default for copy and import: the `--to` value; export records only with a site).
    #[arg(long, value_name = "NAME")]
    pub site: Option<String>,
    /// The state database. Default: $XDG_STATE_HOME/prewarm/state.db.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// A bundle: `bundle.json` and zstd-compressed tar segments (for `import`).
    Bundle,
    /// An OCI image layout directory (`skopeo copy oci:DIR:REFERENCE …` reads it).
    OciDir,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The job file (YAML).
    pub job: PathBuf,
    /// The directory to write (created; for a bundle it must not hold one already; an OCI
    /// layout is added to, keeping what is there).
    #[arg(long, short, value_name = "DIR")]
    pub output: PathBuf,
    /// What to write.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = ExportFormat::Bundle)]
    pub format: ExportFormat,
    /// Blob transfers at once (default: the job's `concurrency`).
    #[arg(long, short, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// Largest segment file, at least 1M, e.g. `4G`, `700M`, `4095MiB` (default: one
    /// segment; bundles only).
    #[arg(long, value_name = "SIZE", value_parser = parse_segment_size)]
    pub segment_size: Option<u64>,
    /// An inventory written by `prewarm inventory` at the far site: what it holds is left out
    /// (bundles only).
    #[arg(long, value_name = "INVENTORY", conflicts_with = "since_last")]
    pub have: Option<PathBuf>,
    /// Leave out what earlier bundles recorded for SITE carried (the state's `shipped`
    /// table); `bundle.json` names the last of them as its base. Records this bundle for SITE.
    #[arg(long, value_name = "SITE", conflicts_with = "site")]
    pub since_last: Option<String>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write Prometheus text metrics here, atomically (node_exporter's textfile collector).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Resolve tags against the source registries or through the cache.
    #[arg(long, value_enum, value_name = "VIA")]
    pub resolve: Option<ResolveVia>,
    #[command(flatten)]
    pub shipped: ShippedArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A bundle directory (bundle.json and its segments), or an OCI image layout directory
    /// (oci-layout, index.json, blobs/), e.g. from `export --format oci-dir` or skopeo's
    /// `oci:DIR:TAG`.
    pub dir: PathBuf,
    #[command(flatten)]
    pub destination: DestinationArgs,
    /// OCI layout only: the source repository (HOST/PATH) of the images whose
    /// `org.opencontainers.image.ref.name` is a bare tag (as `skopeo copy … oci:DIR:TAG`
    /// writes) or absent; they are imported as HOST/PATH:TAG (or by digest only) and land
    /// where `--to` maps HOST/PATH. A full reference in `ref.name` (as `export --format
    /// oci-dir` writes) names its image itself.
    #[arg(long, value_name = "HOST/PATH")]
    pub repository: Option<String>,
    /// Blob transfers at once (uploads, mounts), and manifest pushes at once.
    #[arg(long, short, value_name = "N", default_value_t = 8, value_parser = parse_jobs)]
    pub jobs: usize,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write Prometheus text metrics here, atomically (node_exporter's textfile collector).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Write the cluster resources (IDMS, ITMS, CatalogSource, ClusterCatalog, signature
    /// ConfigMaps, UpdateService) for what this run placed into DIR. Default:
    /// `cluster-resources/` beside `--report`; with neither, none are written.
    #[arg(long, value_name = "DIR")]
    pub cluster_resources: Option<PathBuf>,
    #[command(flatten)]
    pub shipped: ShippedArgs,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// The registry to list: `REGISTRY` or `REGISTRY/PREFIX` (as given to `import --to`).
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    pub registry: String,
    /// Repositories to walk by their tags (comma-separated or repeated), without `--job` or
    /// `--bundle`. Default: the registry's `_catalog`.
    #[arg(long, value_delimiter = ',', value_name = "REPO", conflicts_with_all = ["job", "bundle"])]
    pub repos: Vec<String>,
    /// A job: its plan's every manifest and blob is asked for by digest, in the repository
    /// `import --to` puts each image in (the job's sources must be reachable to plan it).
    #[arg(long, value_name = "JOB", conflicts_with = "bundle")]
    pub job: Option<PathBuf>,
    /// A bundle directory: its own image list is asked for by digest (no source needed).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Requests at once.
    #[arg(long, short, value_name = "N", default_value_t = 8, value_parser = parse_jobs)]
    pub jobs: usize,
    /// Write the inventory here (default: stdout).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// A CA certificate (PEM) the registry's TLS certificate is signed by.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Plain HTTP, or HTTPS without verification.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Check every segment's size and sha256 against bundle.json; name each missing,
    /// truncated or corrupted segment.
    #[command(
        after_help = "Example:\n  prewarm bundle verify /media/usb/bundle\n\nExit status: 0 when every segment is whole, 1 when any is not, 2 on bad input."
    )]
    Verify {
        /// The bundle directory.
        dir: PathBuf,
    },
}

/// `--jobs N`: at least 1, as a job's `concurrency` must be.
pub fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => {
            Err("must be at least 1 (0 would run nothing; `concurrency: 0` is refused too)".into())
        }
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// `--segment-size`: a size of at least 1 MiB.
pub fn parse_segment_size(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    let min = crate::bundle::segments::MIN_SEGMENT_SIZE;
    if v < min {
        return Err(format!(
            "`{s}` is {v} bytes: a segment must be at least 1M ({min} bytes)"
        ));
    }
    Ok(v)
}

/// `123`, `700M`, `4G`, `4095MiB`, `1.5GB`: binary multiples (K = 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 700M, 4G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use K, M, G or T)")),
    };
    let v = (n * mult as f64) as u64;
    if v == 0 {
        return Err(format!("`{s}`: a segment must be at least 1 byte"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::{parse_jobs, parse_segment_size, parse_size};

    #[test]
    fn jobs_and_segment_sizes_have_minimums() {
        assert!(parse_jobs("0").unwrap_err().contains("at least 1"));
        assert_eq!(parse_jobs("16").unwrap(), 16);
        assert!(parse_jobs("x").is_err());
        assert!(parse_segment_size("1").unwrap_err().contains("at least 1M"));
        assert!(parse_segment_size("1023K").is_err());
        assert_eq!(parse_segment_size("1M").unwrap(), 1 << 20);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("700M").unwrap(), 700 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4095MiB").unwrap(), 4095 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("x").is_err());
        assert!(parse_size("3Q").is_err());
        assert!(parse_size("0").is_err());
    }
}
