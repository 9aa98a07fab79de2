//! The bucket: an S3-compatible object store opened from `s3://BUCKET/PREFIX`, with
//! write-once puts.
//!
//! Credentials come only from the AWS environment/config chain, never from flags or the
//! shipper's config file: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`
//! first, then the static keys of the `AWS_PROFILE` profile in the shared files
//! (`~/.aws/credentials`, `~/.aws/config`; [`crate::profile`]), then what `object_store`
//! finds itself (web identity, ECS container credentials, EC2 instance metadata). The
//! endpoint, region and plain-HTTP switch (not secrets) may come from the config; the
//! region otherwise from `AWS_REGION`/`AWS_DEFAULT_REGION`, then the profile.
//!
//! Every object is written once: [`Bucket::put_once`] sends `If-None-Match: *`
//! (`PutMode::Create`), and when the object is already there it reads it back and accepts
//! it only if it holds the same bytes (a retried upload after a crash), so nothing shipped
//! is ever overwritten and Object Lock retention can hold every object.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};

/// What went wrong with the bucket.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("{0}: write it as s3://BUCKET/PREFIX (the prefix may be empty)")]
    Url(String),
    #[error("cannot open the bucket: {0}")]
    Open(String),
    // Not a `source`: object_store's message already holds its whole chain.
    #[error("{what} {path}: {}", brief(cause))]
    Store { what: &'static str, path: String, cause: object_store::Error },
    #[error(
        "{path} already exists with other contents ({existing} bytes, this upload {ours} bytes): objects are never overwritten; something else writes under this log's name, or the bucket was changed; run `ledgerctl fleet verify` and move the prefix aside if it is damaged"
    )]
    Conflict { path: String, existing: usize, ours: usize },
}

/// object_store's errors repeat their causes at every level; the innermost cause says it
/// once (e.g. "Server returned non-2xx status code: 404 Not Found: <Error>…"), and the S3
/// error code in it, if any, is what a person needs.
fn brief(e: &object_store::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    let code = text.split("<Code>").nth(1).and_then(|r| r.split("</Code>").next());
    let mut line = match code {
        Some(code) => format!("{}: S3 error {code}", text.split(": <?xml").next().unwrap_or(&text)),
        None => text,
    };
    if line.len() > 300 {
        let mut cut = 300;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

impl BucketError {
    /// Whether the object is missing (as opposed to the store failing).
    pub fn is_not_found(&self) -> bool {
        matches!(self, BucketError::Store { cause: object_store::Error::NotFound { .. }, .. })
    }
}

/// What a write-once put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// The object was already there with exactly these bytes (a retry).
    AlreadyThere,
}

/// Connection settings that are not secrets.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// e.g. `http://127.0.0.1:8333` for a local S3-compatible server; `None`: AWS, or
    /// `AWS_ENDPOINT_URL` from the environment.
    pub url: Option<String>,
    pub region: Option<String>,
    /// Allow `http://` endpoints.
    pub allow_http: bool,
}

/// An opened bucket and the prefix everything lives under.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    pub name: String,
    pub prefix: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.name, self.prefix)
    }
}

/// `(bucket, prefix)` of `s3://BUCKET/PREFIX`.
pub fn parse_url(url: &str) -> Result<(String, String), BucketError> {
    let rest =
        url.strip_prefix("s3://").ok_or_else(|| BucketError::Url(format!("{url:?} is not an s3:// URL")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(BucketError::Url(format!("{url:?} names no bucket")));
    }
    if prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(BucketError::Url(format!("{url:?}: the prefix may not hold `.` or `..`")));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl Bucket {
    /// Opens `s3://BUCKET/PREFIX` with credentials from the environment chain.
    pub fn open(url: &str, endpoint: &Endpoint) -> Result<Bucket, BucketError> {
        let (name, prefix) = parse_url(url)?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&name).with_retry(RetryConfig {
            // The shipper backs off on its own; a call gives up soon so that it can.
            max_retries: 2,
            retry_timeout: Duration::from_secs(15),
            ..RetryConfig::default()
        });
        // The shared files, for what the environment does not give (keys, region).
        let profile = crate::profile::resolve(&|k: &str| std::env::var(k).ok())
            .map_err(|e| BucketError::Open(e.to_string()))?;
        if let Some((id, secret, token)) = profile.keys {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = token {
                builder = builder.with_token(token);
            }
        }
        if let Some(region) = profile.region {
            builder = builder.with_region(region);
        }
        if let Some(url) = &endpoint.url {
            builder = builder.with_endpoint(url);
        }
        if let Some(region) = &endpoint.region {
            builder = builder.with_region(region);
        }
        if endpoint.allow_http {
            builder = builder.with_allow_http(true);
        }
        let store = builder.build().map_err(|e| BucketError::Open(e.to_string()))?;
        Ok(Bucket { store: Arc::new(store), name, prefix })
    }

    /// A bucket over a store built elsewhere (tests and tools with their own settings).
    pub fn from_store(store: Arc<dyn ObjectStore>, name: &str, prefix: &str) -> Bucket {
        Bucket { store, name: name.to_string(), prefix: prefix.trim_matches('/').to_string() }
    }

    /// Writes `bytes` at `path` unless an object is there; an object already there with the
    /// same bytes is a success ([`Put::AlreadyThere`]), with other bytes a [`BucketError::Conflict`].
    pub async fn put_once(&self, path: &Path, bytes: Bytes) -> Result<Put, BucketError> {
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.store.put_opts(path, PutPayload::from(bytes.clone()), opts).await {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                let existing = self.get(path).await?;
                if existing == bytes {
                    Ok(Put::AlreadyThere)
                } else {
                    Err(BucketError::Conflict {
                        path: path.to_string(),
                        existing: existing.len(),
                        ours: bytes.len(),
                    })
                }
            }
            Err(source) => {
                Err(BucketError::Store { what: "cannot write", path: path.to_string(), cause: source })
            }
        }
    }

    /// The whole object.
    pub async fn get(&self, path: &Path) -> Result<Bytes, BucketError> {
        let err = |source| BucketError::Store { what: "cannot read", path: path.to_string(), cause: source };
        self.store.get(path).await.map_err(err)?.bytes().await.map_err(err)
    }

    /// Every object under `dir` (recursively), in name order.
    pub async fn list(&self, dir: &Path) -> Result<Vec<ObjectMeta>, BucketError> {
        let mut all: Vec<ObjectMeta> = self.store.list(Some(dir)).try_collect().await.map_err(|source| {
            BucketError::Store { what: "cannot list", path: dir.to_string(), cause: source }
        })?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    /// Objects under `dir` whose names sort after `offset`, in name order.
    pub async fn list_after(&self, dir: &Path, offset: &Path) -> Result<Vec<ObjectMeta>, BucketError> {
        let mut all: Vec<ObjectMeta> =
            self.store.list_with_offset(Some(dir), offset).try_collect().await.map_err(|source| {
                BucketError::Store { what: "cannot list", path: dir.to_string(), cause: source }
            })?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    /// The names directly under `dir` that are "directories" (common prefixes).
    pub async fn subdirs(&self, dir: &Path) -> Result<Vec<Path>, BucketError> {
        let listing = self.store.list_with_delimiter(Some(dir)).await.map_err(|source| {
            BucketError::Store { what: "cannot list", path: dir.to_string(), cause: source }
        })?;
        Ok(listing.common_prefixes)
    }

    /// The raw store (tests and tools that tamper or inspect).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_what_is_wrong() {
        assert_eq!(parse_url("s3://b/x/y/").ok(), Some(("b".into(), "x/y".into())));
        assert_eq!(parse_url("s3://b").ok(), Some(("b".into(), String::new())));
        for bad in ["b/x", "s3:///x", "s3://b/../x", "file:///tmp"] {
            let e = parse_url(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("s3://BUCKET/PREFIX"), "{bad}: {e}");
        }
    }
}
