//! Objects: whole byte strings under `/`-separated keys. Writes replace whole objects (no
//! appends, no conditional writes: several S3-compatible servers ignore them), reads see the
//! latest complete write, a listing is in key order, deleting a missing object is not an error.

use std::collections::BTreeMap;

pub const KEY_BYTES_MAX: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("object key {key:?} is invalid: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The store did not answer or refused (network, permissions, quota): the write may or may
    /// not have happened.
    #[error("object store {target}: {detail}")]
    Unavailable { target: String, detail: String },
}

/// Keys are relative, `/`-separated, without empty, `.` or `..` segments, at most 1 KiB.
pub fn validate_key(key: &str) -> Result<(), ObjectError> {
    let invalid = |reason| Err(ObjectError::InvalidKey { key: key.to_string(), reason });
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return invalid("it must be 1 to 1024 bytes");
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return invalid("a segment between slashes is empty, '.' or '..'");
    }
    if key.chars().any(|c| c.is_control()) {
        return invalid("it holds a control character");
    }
    Ok(())
}

/// An object store a backup writes to and a restore reads from.
pub trait ObjectStore {
    /// Writes the whole object, replacing any earlier one.
    fn put(&mut self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError>;
    /// The whole object, or None if there is none.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError>;
    /// The object's size, or None if there is none.
    fn head(&self, key: &str) -> Result<Option<u64>, ObjectError>;
    /// Keys (with sizes) that start with `prefix` followed by a `/` or that equal it; every key
    /// when `prefix` is empty. In key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError>;
    /// Deletes the object; a missing one is not an error.
    fn delete(&mut self, key: &str) -> Result<(), ObjectError>;
}

/// The in-memory twin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemObjectStore {
    objects: BTreeMap<String, Vec<u8>>,
}

impl ObjectStore for MemObjectStore {
    fn put(&mut self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        validate_key(key)?;
        self.objects.insert(key.to_string(), bytes);
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        validate_key(key)?;
        Ok(self.objects.get(key).cloned())
    }

    fn head(&self, key: &str) -> Result<Option<u64>, ObjectError> {
        validate_key(key)?;
        Ok(self.objects.get(key).map(|b| b.len() as u64))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        if !prefix.is_empty() {
            validate_key(prefix)?;
        }
        let under = format!("{prefix}/");
        Ok(self
            .objects
            .iter()
            .filter(|(k, _)| prefix.is_empty() || k.as_str() == prefix || k.starts_with(&under))
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect())
    }

    fn delete(&mut self, key: &str) -> Result<(), ObjectError> {
        validate_key(key)?;
        self.objects.remove(key);
        Ok(())
    }
}

/// What every object store passes. `store` must be empty.
pub fn object_store_conformance(store: &mut dyn ObjectStore) {
    assert_eq!(store.list("").unwrap(), vec![], "the store under test starts empty");
    store.put("backups/7/manifest", b"m1".to_vec()).unwrap();
    store.put("backups/7/objects/ab", vec![7; 5_000]).unwrap();
    store.put("backups/70/manifest", b"other".to_vec()).unwrap();
    store.put("objects/cd", Vec::new()).unwrap();
    assert_eq!(store.get("backups/7/manifest").unwrap(), Some(b"m1".to_vec()));
    assert_eq!(store.get("objects/cd").unwrap(), Some(Vec::new()), "an empty object is an object");
    assert_eq!(store.get("backups/8/manifest").unwrap(), None);
    assert_eq!(store.head("backups/7/objects/ab").unwrap(), Some(5_000));
    assert_eq!(store.head("nothing/here").unwrap(), None);
    // A prefix is a whole segment: backups/7 does not list backups/70.
    assert_eq!(
        store.list("backups/7").unwrap(),
        vec![("backups/7/manifest".to_string(), 2), ("backups/7/objects/ab".to_string(), 5_000)]
    );
    assert_eq!(store.list("").unwrap().len(), 4);
    // A write replaces the whole object.
    store.put("backups/7/manifest", b"m2-longer".to_vec()).unwrap();
    assert_eq!(store.get("backups/7/manifest").unwrap(), Some(b"m2-longer".to_vec()));
    assert_eq!(store.head("backups/7/manifest").unwrap(), Some(9));
    // Deleting is idempotent.
    store.delete("backups/7/manifest").unwrap();
    store.delete("backups/7/manifest").unwrap();
    assert_eq!(store.get("backups/7/manifest").unwrap(), None);
    assert_eq!(store.list("backups").unwrap().len(), 2);
    // Bad keys are refused with the rule, by every implementation alike.
    for bad in ["", "/abs", "a//b", "a/../b", "a/", "./a"] {
        let e = store.put(bad, vec![1]).unwrap_err();
        assert!(matches!(e, ObjectError::InvalidKey { .. }), "{bad:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twin_conforms() {
        object_store_conformance(&mut MemObjectStore::default());
    }
}
