//! tandem-backup-store: the real object store of `tandem_backup_core::ObjectStore`, over the
//! `object_store` crate. Its calls block: run them off the async runtime (`spawn_blocking`), or
//! from a thread of their own; the runtime handle given drives the store's IO.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};
use std::sync::Arc;
use tandem_backup_core::{validate_key, ObjectError, ObjectStore};
use tokio::runtime::Handle;

/// A backup target as an operator writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `file:///PATH`: a directory of this machine.
    File(std::path::PathBuf),
}

impl Target {
    /// Parses `file:///PATH`. Refuses anything else with what is accepted.
    pub fn parse(url: &str) -> Result<Target, ObjectError> {
        let unavailable = |detail: String| ObjectError::Unavailable { target: url.to_string(), detail };
        match url.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => Ok(Target::File(path.into())),
            Some(_) => Err(unavailable("a file target needs an absolute path: file:///PATH".into())),
            None => Err(unavailable("this build writes backups to file:///PATH targets only".into())),
        }
    }
}

pub struct RealObjectStore {
    target: String,
    store: Arc<dyn object_store::ObjectStore>,
    runtime: Handle,
}

impl RealObjectStore {
    /// Opens `target` (creating a file target's directory), its IO driven by `runtime`.
    pub fn open(target: &Target, runtime: Handle) -> Result<RealObjectStore, ObjectError> {
        match target {
            Target::File(dir) => {
                let shown = format!("file://{}", dir.display());
                let unavailable = |detail: String| ObjectError::Unavailable { target: shown.clone(), detail };
                std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("create {}: {e}", dir.display())))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| unavailable(e.to_string()))?;
                Ok(RealObjectStore { target: shown, store: Arc::new(store), runtime })
            }
        }
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> ObjectError {
        ObjectError::Unavailable { target: self.target.clone(), detail: e.to_string() }
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

    #[test]
    fn a_file_target_conforms() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = Target::parse(&format!("file://{}/target", dir.path().display())).unwrap();
        let mut store = RealObjectStore::open(&target, runtime.handle().clone()).unwrap();
        tandem_backup_core::object_store_conformance(&mut store);
        assert!(dir.path().join("target/backups/70/manifest").is_file(), "objects are files under the target");
    }

    #[test]
    fn targets_say_what_they_accept() {
        assert!(Target::parse("file:relative").unwrap_err().to_string().contains("file:///PATH"));
        assert!(Target::parse("ftp://x").unwrap_err().to_string().contains("file:///PATH targets only"));
    }
}
