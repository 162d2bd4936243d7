//! tandem-backup-store: the real object store of `tandem_backup_core::ObjectStore`, over the
//! `object_store` crate: S3-compatible servers (`s3://`) and local directories (`file://`). Its calls block: run them off the async runtime (`spawn_blocking`), or
//! from a thread of their own; the runtime handle given drives the store's IO.

pub mod checkpoint;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore as _, ObjectStoreExt as _, PutPayload, RetryConfig};
use std::sync::Arc;
use std::time::Duration;
use tandem_backup_core::{validate_key, ObjectError, ObjectStore};
use tokio::runtime::Handle;

/// A backup target as an operator writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `file:///PATH`: a directory of this machine.
    File(std::path::PathBuf),
    /// `s3://BUCKET[/PREFIX]`: a bucket of an S3-compatible server (`S3Options` says which).
    S3 { bucket: String, prefix: String },
}

/// How to reach an S3-compatible server. What is unset comes from the usual `AWS_*`
/// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, …). Requests are path-style (`http://host/bucket/key`), which every
/// S3-compatible server answers; plain HTTP is allowed when the endpoint says `http://`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl Target {
    /// Parses `file:///PATH` or `s3://BUCKET[/PREFIX]`. Refuses anything else with what is
    /// accepted.
    pub fn parse(url: &str) -> Result<Target, ObjectError> {
        let unavailable = |detail: String| ObjectError::Unavailable { target: url.to_string(), detail };
        if let Some(path) = url.strip_prefix("file://") {
            return if path.starts_with('/') { Ok(Target::File(path.into())) } else { Err(unavailable("a file target needs an absolute path: file:///PATH".into())) };
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(unavailable("a backup target is s3://BUCKET[/PREFIX] or file:///PATH".into()));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && bucket.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && bucket.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(unavailable(format!("{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' or '.')")));
        }
        if !prefix.is_empty() {
            validate_key(prefix).map_err(|e| unavailable(format!("the prefix: {e}")))?;
        }
        Ok(Target::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File(dir) => write!(f, "file://{}", dir.display()),
            Target::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Target::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

pub struct RealObjectStore {
    target: String,
    store: Arc<dyn object_store::ObjectStore>,
    runtime: Handle,
}

/// A request to an S3 server is retried this often within this long; an unreachable target
/// is reported after it rather than after object_store's default 3 minutes.
const S3_RETRIES_MAX: usize = 3;
const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(15);
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-object requests: long enough for a large SST file on a slow link.
const S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

impl RealObjectStore {
    /// Opens `target` (creating a file target's directory), its IO driven by `runtime`.
    pub fn open(target: &Target, s3: &S3Options, runtime: Handle) -> Result<RealObjectStore, ObjectError> {
        let shown = target.to_string();
        let unavailable = |detail: String| ObjectError::Unavailable { target: shown.clone(), detail };
        let store: Arc<dyn object_store::ObjectStore> = match target {
            Target::File(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("create {}: {e}", dir.display())))?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| unavailable(e.to_string()))?)
            }
            Target::S3 { bucket, prefix } => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_virtual_hosted_style_request(false);
                if let Some(endpoint) = &s3.endpoint {
                    b = b.with_endpoint(endpoint);
                }
                let endpoint = s3.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok()).or_else(|| std::env::var("AWS_ENDPOINT").ok());
                if endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) {
                    b = b.with_allow_http(true);
                }
                if let Some(region) = &s3.region {
                    b = b.with_region(region);
                }
                if let Some(key) = &s3.access_key_id {
                    b = b.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    b = b.with_secret_access_key(secret);
                }
                let retry = RetryConfig { max_retries: S3_RETRIES_MAX, retry_timeout: S3_RETRY_TIMEOUT, ..RetryConfig::default() };
                // Key by key: replacing the client options would drop what the environment and
                // allow_http set.
                let seconds = |d: Duration| format!("{}s", d.as_secs());
                b = b
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), seconds(S3_CONNECT_TIMEOUT))
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), seconds(S3_REQUEST_TIMEOUT));
                let s3 = b.with_retry(retry).build().map_err(|e| unavailable(e.to_string()))?;
                if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix.as_str())) }
            }
        };
        Ok(RealObjectStore { target: shown, store, runtime })
    }

    /// What the target refused, said so that an operator knows what to fix.
    fn unavailable(&self, e: object_store::Error) -> ObjectError {
        let detail = match &e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                format!("the target refused the credentials (check the access key and secret: --s3-access-key / AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): {e}")
            }
            _ => e.to_string(),
        };
        ObjectError::Unavailable { target: self.target.clone(), detail }
    }

    fn path(key: &str) -> Result<Path, ObjectError> {
        validate_key(key)?;
        Path::parse(key).map_err(|_| ObjectError::InvalidKey { key: key.to_string(), reason: "the store cannot name it" })
    }
}

impl ObjectStore for RealObjectStore {
    fn put(&mut self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        let path = Self::path(key)?;
        self.runtime.block_on(self.store.put(&path, PutPayload::from(bytes))).map(|_| ()).map_err(|e| self.unavailable(e))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        let path = Self::path(key)?;
        self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map(|b| Some(b.to_vec())).map_err(|e| self.unavailable(e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.unavailable(e)),
            }
        })
    }

    fn head(&self, key: &str) -> Result<Option<u64>, ObjectError> {
        let path = Self::path(key)?;
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.unavailable(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        let prefix = if prefix.is_empty() { None } else { Some(Self::path(prefix)?) };
        let mut all: Vec<(String, u64)> = self
            .runtime
            .block_on(self.store.list(prefix.as_ref()).map_ok(|m| (m.location.to_string(), m.size)).try_collect::<Vec<_>>())
            .map_err(|e| self.unavailable(e))?;
        all.sort();
        Ok(all)
    }

    fn delete(&mut self, key: &str) -> Result<(), ObjectError> {
        let path = Self::path(key)?;
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_s3_dev::DevS3;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    #[test]
    fn a_file_target_conforms() {
        let runtime = runtime();
        let dir = tempfile::tempdir().unwrap();
        let target = Target::parse(&format!("file://{}/target", dir.path().display())).unwrap();
        let mut store = RealObjectStore::open(&target, &S3Options::default(), runtime.handle().clone()).unwrap();
        tandem_backup_core::object_store_conformance(&mut store);
        assert!(dir.path().join("target/backups/70/manifest").is_file(), "objects are files under the target");
    }

    fn dev_options(s3: &DevS3) -> S3Options {
        S3Options {
            endpoint: Some(s3.endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some(s3.access_key.clone()),
            secret_access_key: Some(s3.secret_key.clone()),
        }
    }

    #[test]
    fn an_s3_target_conforms_over_http_under_its_prefix() {
        let runtime = runtime();
        let dir = tempfile::tempdir().unwrap();
        let s3 = runtime.block_on(DevS3::start(dir.path(), &["backups"])).unwrap();
        let target = Target::parse("s3://backups/site-a/daily/").unwrap();
        assert_eq!(target.to_string(), "s3://backups/site-a/daily");
        let mut store = RealObjectStore::open(&target, &dev_options(&s3), runtime.handle().clone()).unwrap();
        tandem_backup_core::object_store_conformance(&mut store);
        // The server keeps objects as files: under the bucket, then the prefix.
        assert!(dir.path().join("backups/site-a/daily/backups/70/manifest").is_file());
        // Another prefix of the same bucket sees none of them.
        let other = RealObjectStore::open(&Target::parse("s3://backups/site-b").unwrap(), &dev_options(&s3), runtime.handle().clone()).unwrap();
        assert_eq!(other.list("").unwrap(), vec![]);
    }

    #[test]
    fn wrong_credentials_and_unreachable_targets_say_what_to_fix() {
        let runtime = runtime();
        let dir = tempfile::tempdir().unwrap();
        let s3 = runtime.block_on(DevS3::start(dir.path(), &["backups"])).unwrap();
        let target = Target::parse("s3://backups").unwrap();
        let wrong = S3Options { secret_access_key: Some("not-the-secret".into()), ..dev_options(&s3) };
        let mut store = RealObjectStore::open(&target, &wrong, runtime.handle().clone()).unwrap();
        let e = store.put("a/b", vec![1]).unwrap_err().to_string();
        assert!(e.contains("s3://backups") && e.contains("refused the credentials"), "{e}");

        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let gone = S3Options { endpoint: Some(format!("http://127.0.0.1:{port}")), ..dev_options(&s3) };
        let store = RealObjectStore::open(&target, &gone, runtime.handle().clone()).unwrap();
        let started = std::time::Instant::now();
        let e = store.list("").unwrap_err().to_string();
        assert!(e.contains("s3://backups"), "{e}");
        assert!(started.elapsed() < S3_RETRY_TIMEOUT + Duration::from_secs(10), "gave up after {:?}", started.elapsed());
    }

    #[test]
    fn targets_say_what_they_accept() {
        assert!(Target::parse("file:relative").unwrap_err().to_string().contains("file:///PATH"));
        assert!(Target::parse("ftp://x").unwrap_err().to_string().contains("s3://BUCKET[/PREFIX] or file:///PATH"));
        assert!(Target::parse("s3://Bad_Bucket/x").unwrap_err().to_string().contains("not a bucket name"));
        assert!(Target::parse("s3://ok-bucket/a//b").unwrap_err().to_string().contains("the prefix"));
        assert_eq!(Target::parse("s3://ok-bucket").unwrap(), Target::S3 { bucket: "ok-bucket".into(), prefix: String::new() });
    }
}
