//! Deleting a manifest by digest (`DELETE /v2/<repository>/manifests/<digest>`), for
//! `prewarm prune`, on the one request path (auth, retries, budget, stats). Distribution removes
//! every tag pointing at the manifest with it; it answers 405 when the registry runs without
//! `storage.delete.enabled`.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

use super::{Body, Call, RegistryClient, RegistryError, Scope};
use crate::reference::Digest;

impl RegistryClient {
    /// Delete `digest` from `repository`: `true` when deleted, `false` when it was not there.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let what = self.what_manifest(repository, digest.as_str());
        let call = Call {
            method: Method::DELETE,
            url: self
                .url(&format!("/v2/{repository}/manifests/{digest}"))
                .await?,
            scope: Scope::Delete(repository),
            headers: HeaderMap::new(),
            body: Body::Empty,
        };
        let resp = self.request(&what, call).await?;
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Err(RegistryError::Status {
                host: self.host.clone(),
                what,
                status: 405,
                detail:
                    "the registry does not allow deletes (distribution: storage.delete.enabled)"
                        .into(),
            });
        }
        match self.check(resp, &what).await {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
