//! Deleting a manifest by digest (`DELETE /v2/<repository>/manifests/<digest>`), for
//! `prewarm prune`. Distribution removes every tag pointing at the manifest with it; it answers
//! 405 when the registry runs without `storage.delete.enabled`.

use reqwest::StatusCode;

use super::{Challenge, RegistryClient, RegistryError};
use crate::reference::Digest;

impl RegistryClient {
    /// Delete `digest` from `repository`: `true` when deleted, `false` when it was not there.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let what = self.what_manifest(repository, digest.as_str());
        let (base, challenge) = self.base().await?;
        let url = format!("{base}/v2/{repository}/manifests/{digest}");
        let auth = match challenge {
            Challenge::Bearer { realm, service } => {
                let scope = format!("repository:{repository}:delete");
                self.bearer(realm, service.as_deref(), &scope, false)
                    .await?
            }
            other => self.authorization(other, repository, false).await?,
        };
        let resp = self
            .send_raw(self.retry.attempts, || {
                let mut req = self.http.delete(&url);
                if let Some(a) = &auth {
                    req = req.header(reqwest::header::AUTHORIZATION, a.clone());
                }
                req
            })
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::METHOD_NOT_ALLOWED => Err(RegistryError::Status {
                host: self.host.clone(),
                what,
                status: 405,
                detail:
                    "the registry does not allow deletes (distribution: storage.delete.enabled)"
                        .into(),
            }),
            s if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN => {
                Err(RegistryError::Unauthorized {
                    host: self.host.clone(),
                    which: match &self.credentials {
                        Some(c) => format!(" for user `{}`", c.username),
                        None => " (no credentials found for it in the auth file)".to_string(),
                    },
                    status: s.as_u16(),
                    detail: super::body_detail(resp).await,
                })
            }
            _ => self.check(resp, &what).await.map(|_| true),
        }
    }
}
