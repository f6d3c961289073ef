//! Command-line arguments (clap derive). Doc comments here are the `--help` text.

use clap::{Parser, Subcommand};

pub use crate::args::{
    parse_jobs, parse_segment_size, parse_size, BundleCommand, CopyArgs, DestinationArgs,
    ExportArgs, ExportFormat, ImportArgs, InventoryArgs, ShippedArgs,
};
pub use crate::args::{Global, Output, PlanArgs, RefreshArgs, RunArgs};

/// Warm a pull-through registry cache (Quay cache orgs) with everything an OpenShift cluster
/// will pull, and prove the cache holds it.
#[derive(Debug, Parser)]
#[command(name = "prewarm", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve every source to digests and print the plan: images, manifests, unique blobs.
    #[command(
        after_help = "Example:\n  prewarm plan job.yaml\n  prewarm plan job.yaml -o json > plan.json"
    )]
    Plan(PlanArgs),
    /// Pull every manifest and blob of the plan through the cache orgs so the cache holds them.
    #[command(
        after_help = "Example:\n  prewarm warm job.yaml --jobs 16 --report warm.json\n\nExit status: 0 when every image is warm, 1 when any image failed (each is named), 2 on bad input."
    )]
    Warm(RunArgs),
    /// Ask the cache for every manifest and blob of the plan; list what it does not hold.
    #[command(
        after_help = "Example:\n  prewarm verify job.yaml --resolve cache --report verify.json\n\nA pull-through cache that can reach its upstream fetches what it lacks when asked: run verify\nwith the upstream unreachable to prove the cache alone holds everything.\n\nExit status: 0 when everything is present, 1 when anything is missing or failed, 2 on bad input."
    )]
    Verify(RunArgs),
    /// Re-resolve tags with HEAD only and warm what changed upstream or went stale (for cron).
    #[command(
        after_help = "Example:\n  prewarm refresh job.yaml --stale-after 12h --report refresh.json --metrics /var/lib/node_exporter/textfile/prewarm.prom\n\nReferences by digest and tags matching the job's `refresh.immutable` rules are never re-checked.\nReleases and catalogs by tag get one HEAD each; channels' graphs are read again; what moved is\nread again and only its new images are warmed. Prints each change as `changed  REF  OLD → NEW`,\nand `catalog C: package P: OLD → NEW` / `channel C ARCH: release V entered the range`. Exit status: 0 when nothing failed (a spent\nrate budget stops cleanly and is not a failure), 1 when any image failed, 2 on bad input."
    )]
    Refresh(RefreshArgs),
    /// Set up the cache on Quay: cache orgs and proxy-cache configs, upstream credentials,
    /// pull access for the cluster, quota. The Quay token comes from --token-file or
    /// $PREWARM_QUAY_TOKEN, never the command line.
    #[command(
        after_help = "Example:\n  export PREWARM_QUAY_TOKEN=$(cat quay-token)\n  prewarm quay orgs create --quay mirror.example:8443\n  prewarm quay credentials --quay mirror.example:8443 --pull-secret pull-secret.json\n  prewarm quay orgs status --job job.yaml"
    )]
    Quay(crate::quay::QuayArgs),
    /// Print the cluster's mirror configuration for the cache orgs: registries.conf, IDMS,
    /// ITMS, ICSP, MachineConfigs or the install-config snippet.
    #[command(
        after_help = "Example:\n  prewarm mirror-config --quay mirror.example:8443 --format registries.conf\n  prewarm mirror-config --job job.yaml --format idms --source-policy never-contact-source -o idms.yaml\n  prewarm mirror-config --quay mirror.example:8443 --format machineconfig | oc apply -f -\n\nThe upstreams are the hosts of --domain-list (default image-lists/mirror.domain.list) or of\neverything the job's plan would fetch; each maps to its cache org as the job's `cache.orgs` / `cache_<host>` rule says."
    )]
    MirrorConfig(crate::cluster::mirror_config::MirrorConfigArgs),
    /// Push every image of the plan into a registry's repositories, digests unchanged.
    #[command(
        after_help = "Example:\n  prewarm copy job.yaml --to mirror.example:8443/ocp --report copy.json\n\nExit status: 0 when every image is at the destination, 1 when any image failed, 2 on bad input."
    )]
    Copy(CopyArgs),
    /// Write every image of the plan into a bundle (an OCI layout as zstd-compressed tar
    /// segments) for a site with no network.
    #[command(
        after_help = "Example:\n  prewarm export job.yaml -o /media/usb/bundle --segment-size 4095M\n  prewarm export job.yaml -o bundle-2 --have far-site-inventory.json\n\nExit status: 0 when every image is in the bundle, 1 when any image failed, 2 on bad input."
    )]
    Export(ExportArgs),
    /// Verify a bundle, then stream it into a registry without unpacking it; or push the images
    /// of an OCI image layout directory.
    #[command(
        after_help = "Example:\n  prewarm import /media/usb/bundle --to mirror.local:8443\n  prewarm import ./oci --to mirror.local:8443/mirror                 # from export --format oci-dir\n  prewarm import ./app-oci --to mirror.local:8443 --repository quay.io/acme/app   # skopeo's oci:DIR:TAG\n\nAn OCI layout is recognised by its oci-layout file. Each index.json entry is one image, named by its org.opencontainers.image.ref.name: a full reference (HOST/PATH[:TAG][@DIGEST]) names itself; a bare tag or no name needs --repository HOST/PATH (the source repository; --to maps it as for copy).\n\nRerun after an interruption: finished blobs are found with a HEAD and not pushed again.\n\nExit status: 0 when every image is at the destination, 1 when any image failed, 2 on bad input (or a bad segment)."
    )]
    Import(ImportArgs),
    /// List the digests a registry already holds, for `export --have`.
    #[command(
        after_help = "Example:\n  prewarm inventory --registry mirror.local:8443 --job job.yaml -o inventory.json"
    )]
    Inventory(InventoryArgs),
    /// List what a registry holds under the job's mapping that the job no longer plans
    /// (older releases, dropped bundles); delete it by digest with --yes. With --quay, the
    /// tags of the job's cache orgs on a Quay, through Quay's REST API.
    #[command(
        after_help = "Example:\n  prewarm prune job.yaml --to mirror.example:8443/ocp\n  prewarm prune job.yaml --to mirror.example:8443/ocp --yes\n  PREWARM_QUAY_TOKEN=$(cat token) prewarm prune job.yaml --quay mirror.example:8443\n  prewarm prune job.yaml --quay mirror.example:8443 --token-file token --yes --report prune.json\n\nWith --quay: the tags of the job's cache orgs, through Quay's REST API; Quay garbage-collects\nthe manifests and blobs of deleted tags itself (after the org's time-machine window).\n\nExit status: 0 when everything listed was deleted (or only listed), 1 when a delete failed, 2 on bad input or an incomplete plan."
    )]
    Prune(crate::cluster::prune::PruneArgs),
    /// Bundle tools.
    #[command(subcommand)]
    Bundle(BundleCommand),
}
