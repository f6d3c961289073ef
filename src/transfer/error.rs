//! Why a blob or an image's manifests could not be moved: [`TransferError`], typed from the
//! transport and the sinks through the scheduler and [`ImageOutcomes`](super::ImageOutcomes),
//! and made text only where an image's report is built.

use std::path::PathBuf;
use std::sync::Arc;

use crate::reference::Digest;
use crate::registry::RegistryError;

/// One failure of one task or one image stage. Cheap to clone: the scheduler hands a failed
/// upload's error to every mount that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    /// The registry (source, cache or destination) refused, failed or did not answer as one.
    #[error(transparent)]
    Registry(Box<RegistryError>),
    /// A file of a bundle or layout could not be created, written or renamed: the OS error.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// `create`, `write`, `rename to`.
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Bytes read whole and verified, but not as many as the plan says.
    #[error("blob `{digest}` of `{from}`: {got} bytes instead of {expected}")]
    Size {
        digest: Digest,
        from: String,
        expected: u64,
        got: u64,
    },
    /// A manifest whose bytes hash to another digest.
    #[error("manifest `{expected}`: its bytes hash to {got}")]
    Digest { expected: Digest, got: Digest },
    /// The destination lacks a manifest it must hold.
    #[error("manifest `{digest}` is not in `{place}`")]
    Missing { digest: Digest, place: String },
    /// The bundle's stream broke while a blob was read from it (import).
    #[error("bundle: {0}")]
    Bundle(String),
    /// A file of an OCI image layout is missing, unreadable or not what its descriptor says.
    #[error("{}: {why}", path.display())]
    Layout { path: PathBuf, why: String },
    /// The bundle writer stopped (its own error aborts the export).
    #[error("the bundle writer stopped")]
    WriterStopped,
    /// Setting up where to read from failed (no client for a registry, the cache mapping).
    #[error("{0}")]
    Setup(String),
    /// A blob left out of the bundle could not be mounted from where the inventory said.
    #[error("{error} (left out of the bundle: the inventory said `{from}` holds it)")]
    LeftOut {
        error: Box<TransferError>,
        from: String,
    },
    /// A manifest left out of the bundle is not at the destination.
    #[error("manifest `{digest}` left out of the bundle is not at the destination: {error}")]
    LeftOutManifest {
        digest: Digest,
        error: Box<TransferError>,
    },
}

impl TransferError {
    /// A file error: `action` (`create`, `write`…) at `path`.
    pub fn file(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> TransferError {
        TransferError::File {
            action,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// The spent rate budget behind this failure, if that is what it is: refresh leaves such
    /// an image for the next run instead of failing it.
    pub fn budget_spent(&self) -> Option<&RegistryError> {
        match self {
            TransferError::Registry(e) if matches!(**e, RegistryError::BudgetSpent { .. }) => {
                Some(e)
            }
            TransferError::LeftOut { error, .. } | TransferError::LeftOutManifest { error, .. } => {
                error.budget_spent()
            }
            _ => None,
        }
    }
}

impl From<RegistryError> for TransferError {
    fn from(e: RegistryError) -> TransferError {
        TransferError::Registry(Box::new(e))
    }
}

impl From<anyhow::Error> for TransferError {
    /// A setup step's error (`anyhow`, with its context chain) as one line.
    fn from(e: anyhow::Error) -> TransferError {
        TransferError::Setup(format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, PlannedImage};
    use crate::report::ImageStatus;
    use crate::transfer::ImageOutcomes;

    fn image(name: &str) -> PlannedImage {
        PlannedImage {
            source: format!("example.com/{name}:1").parse().unwrap(),
            digest: Digest::sha256_of(name.as_bytes()),
            media_type: String::new(),
            origin: "test".into(),
            platforms: Vec::new(),
            manifests: Vec::new(),
            blobs: Vec::new(),
            bytes: 0,
        }
    }

    #[test]
    fn errors_stay_typed_until_the_report() {
        let spent = || {
            TransferError::from(RegistryError::BudgetSpent {
                host: "quay.io".into(),
                reason: "the job allows 5 requests per run".into(),
            })
        };
        let size = TransferError::Size {
            digest: Digest::sha256_of(b"x"),
            from: "example.com/a".into(),
            expected: 10,
            got: 7,
        };
        assert!(spent().budget_spent().is_some());
        let left_out = TransferError::LeftOut {
            error: Box::new(spent()),
            from: "r".into(),
        };
        assert!(left_out.budget_spent().is_some());
        assert!(size.budget_spent().is_none());
        // Words alone are not a spent budget.
        assert!(
            TransferError::Bundle("rate budget for registry `x` spent".into())
                .budget_spent()
                .is_none()
        );

        let spent_plan = anyhow::Error::new(RegistryError::BudgetSpent {
            host: "quay.io".into(),
            reason: "no more".into(),
        })
        .context("resolving quay.io/a/c:1");
        let worded = anyhow::anyhow!("rate budget for registry `quay.io` spent: no more");
        let plan = Plan {
            images: vec![image("a"), image("b")],
            failures: vec![
                crate::sources::PlanFailure::new("quay.io/a/c:1".into(), "o".into(), &spent_plan),
                crate::sources::PlanFailure::new("quay.io/a/d:1".into(), "o".into(), &worded),
            ],
            ..Plan::default()
        };
        let outcomes = ImageOutcomes::new(&plan);
        outcomes.fail(0, spent());
        outcomes.fail(0, spent());
        outcomes.fail(1, size.clone());
        let reports = outcomes.into_reports(&plan, |_| ImageStatus::Copied);
        assert_eq!(reports[0].status, ImageStatus::Failed);
        // The same failure twice is told once.
        assert_eq!(
            reports[0].error.as_deref(),
            Some("rate budget for registry `quay.io` spent: the job allows 5 requests per run")
        );
        assert!(reports[0].budget_spent.is_some());
        assert_eq!(reports[1].error, Some(size.to_string()));
        assert!(reports[1]
            .error
            .as_deref()
            .unwrap()
            .contains("7 bytes instead of 10"));
        assert!(reports[1].budget_spent.is_none());
        // A source the plan could not resolve for want of budget, told by type.
        assert!(reports[2].budget_spent.is_some());
        assert!(reports[3].budget_spent.is_none());
    }
}
